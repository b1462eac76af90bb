"""Schedules that fit a time budget: the base schedule (an official preset or the user's stages) on a coarser
time grid, chosen with the machine's cost model (:mod:`lumina_core.cost`).

What is kept: the stages, their order (coarse patches early, fine late, as the paper runs them), their
switch points in t, the time shift and the guidance values. What is traded: the number of grid points, so
every stage makes fewer calls, each in proportion to its share of the base grid. The fitted schedule is the
one with the most grid points whose predicted sampling time is within the budget; more budget therefore
means more fine-patch calls, and a budget that covers the base schedule returns it unchanged. The cheapest
schedule keeps one call in every stage: a budget below it is refused with the seconds it would need.

Moving the switch points later instead (more of the full grid on the cheap coarse patches) was measured as
the other knob on the demo (docs/compute_budget.md): at the same budget it scored about 20 dB PSNR against the
full schedule where fewer steps scored 32-42 dB.

The budget counts sampling only (the model calls); loading, text encoding and VAE decoding come on top.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .cost import CallCosts, StageCost, predict
from .limits import is_finite_number
from .sampling import SampleConfig

BUDGET_SCOPE = "The budget counts sampling only (the model calls); loading, text encoding and decoding come on top."


class BudgetTooSmall(ValueError):
    """The budget is below the cheapest version of the base schedule; ``minimum`` is what that needs."""

    def __init__(self, message: str, minimum: float):
        super().__init__(message)
        self.minimum = minimum


@dataclass(frozen=True)
class BudgetPlan:
    base: SampleConfig
    config: SampleConfig
    budget: float
    base_stages: tuple[StageCost, ...]
    stages: tuple[StageCost, ...]

    @property
    def predicted(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def base_predicted(self) -> float:
        return sum(stage.seconds for stage in self.base_stages)

    def summary(self) -> str:
        """What was kept and what was traded, one fact a line."""
        base_calls = sum(stage.calls for stage in self.base_stages)
        calls = sum(stage.calls for stage in self.stages)
        lines = [f"Time budget {self.budget:.3g} s. {BUDGET_SCOPE}",
                 f"Base {self.base.name or 'schedule'}: {self.base.steps} steps, {base_calls} calls, "
                 f"predicted {self.base_predicted:.3g} s."]
        if self.config.steps == self.base.steps:
            lines.append("The base schedule fits: nothing traded.")
            return "\n".join(lines)
        lines.append(f"Fitted: {self.config.steps} steps (was {self.base.steps}), {calls} calls (was {base_calls}), "
                     f"predicted {self.predicted:.3g} s:")
        for now, before in zip(self.stages, self.base_stages):
            stage = now.stage
            lines.append(f"  {stage.patch} t {stage.t_start:g}-{stage.t_end:g}: {now.calls} calls (was "
                         f"{before.calls}), {now.seconds:.3g} s")
        switches = ", ".join(f"{stage.t_start:g}" for stage in self.config.stages[1:]) or "none"
        lines.append(f"Kept: stage order, switch points t = {switches}, time shift {self.config.shift or 0:g}, "
                     "guidance; traded: grid steps in every stage.")
        return "\n".join(lines)


def _costed(config: SampleConfig, costs: CallCosts) -> tuple[StageCost, ...]:
    return tuple(predict(config, costs))


def fit_budget(base: SampleConfig, costs: CallCosts, budget: float) -> BudgetPlan:
    """The base schedule on the finest grid (at most its own) whose predicted sampling time is at most
    ``budget`` seconds and where every stage still makes a call. Raises :class:`BudgetTooSmall` (naming the
    minimum) when no such grid exists.

    Every grid from the base's down is tried in turn: the predicted time is not monotone in the step count (one
    more point can move a call from a guided to an unguided t, or out of a short stage), so a bisection could
    miss the finest grid that fits. Each try counts the calls in a few tensor operations per stage
    (:func:`~lumina_core.cost.predict`), and the grid has at most MAX_STEPS points."""
    if not is_finite_number(budget) or not budget > 0:
        raise ValueError(f"time budget {budget} s is not positive and finite; give the seconds sampling may take, "
                         "e.g. 60")
    base_stages = _costed(base, costs)
    cheapest = None
    for steps in range(base.steps, 1, -1):
        config = base if steps == base.steps else replace(base, steps=steps)
        stages = _costed(config, costs)
        if any(stage.calls == 0 for stage in stages):
            continue
        seconds = sum(stage.seconds for stage in stages)
        if seconds <= budget:
            return BudgetPlan(base, config, float(budget), base_stages, stages)
        if cheapest is None or seconds < cheapest[0]:
            cheapest = (seconds, steps, stages)
    name = base.name or "the schedule"
    if cheapest is None:
        raise ValueError(f"{name} has a stage that makes no model call on any grid of at most {base.steps} steps; "
                         "widen that stage's t range or use more steps")
    seconds, steps, stages = cheapest
    calls = ", ".join(f"{stage.stage.patch} {stage.calls}" for stage in stages)
    raise BudgetTooSmall(f"time budget {budget:.3g} s is below the {seconds:.3g} s that the cheapest version of "
                         f"{name} needs at this size on this machine ({steps} steps, calls {calls}: one or more "
                         f"in every stage); raise the budget to at least {seconds:.3g} s, or make the video "
                         "smaller", seconds)
