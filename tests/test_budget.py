"""Schedules for a time budget: the base schedule's stages, order and switch points on the finest grid whose
predicted sampling time fits; more budget, more fine-patch calls; a budget below the cheapest version refused with
the seconds it needs; the command line's --time-budget."""

import os
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lumina_core import cost
from lumina_core.budget import BudgetTooSmall, fit_budget
from lumina_core.cost import CallCosts, CostKey, predict, predicted_seconds
from lumina_core.sampling import SampleConfig
from lumina_core.schedule import Stage, parse_patch, value_at

ROOT = Path(__file__).resolve().parents[1]
KEY = CostKey("abc", "float32", "test device", (1, 16, 12, 32, 32), 32)
# The official 2B's relative costs: a 1x2 call has 8x the tokens of a 2x4 call.
COSTS = CallCosts(KEY, guided={"2x4": 0.25, "2x2": 0.5, "1x2": 2.0}, unguided={"2x4": 0.125, "2x2": 0.25, "1x2": 1.0})
F24 = SampleConfig.preset("f24F96R960-MultiScale")


def calls(plan) -> dict[str, int]:
    return {stage.stage.patch: stage.calls for stage in plan.stages}


def test_a_budget_that_covers_the_base_returns_it_unchanged():
    full = predicted_seconds(F24, COSTS)
    plan = fit_budget(F24, COSTS, full)
    assert plan.config == F24 and plan.predicted == pytest.approx(full)
    assert "nothing traded" in plan.summary()


@pytest.mark.parametrize("share", [0.2, 0.35, 0.5, 0.8])
def test_the_fitted_schedule_is_the_finest_grid_within_the_budget(share):
    budget = share * predicted_seconds(F24, COSTS)
    plan = fit_budget(F24, COSTS, budget)
    config = plan.config
    assert plan.predicted == pytest.approx(predicted_seconds(config, COSTS)) and plan.predicted <= budget
    assert config.steps < F24.steps
    assert replace(config, steps=F24.steps) == F24  # stages, switch points, shift and guidance kept
    finer = [replace(F24, steps=steps) for steps in range(config.steps + 1, F24.steps)]
    # every finer grid that keeps a call in every stage would be over budget
    assert all(predicted_seconds(c, COSTS) > budget for c in finer if all(s.steps_on(c.grid()) for s in c.stages))


def test_more_budget_buys_more_fine_patch_calls():
    full = predicted_seconds(F24, COSTS)
    budgets = [full * share for share in (0.1, 0.2, 0.4, 0.8)]
    plans = [fit_budget(F24, COSTS, budget) for budget in budgets]
    fine = [calls(plan)["1x2"] for plan in plans]
    assert fine == sorted(fine) and fine[0] < fine[-1], fine
    assert all(plan.predicted <= budget for plan, budget in zip(plans, budgets))
    for small, large in zip(plans, plans[1:]):  # twice the budget, about twice the sampling
        assert large.predicted > 1.5 * small.predicted, (small.predicted, large.predicted)


def test_the_summary_names_what_was_traded():
    plan = fit_budget(F24, COSTS, 0.4 * predicted_seconds(F24, COSTS))
    summary = plan.summary()
    assert "counts sampling only" in summary and "decoding" in summary
    assert f"{plan.config.steps} steps (was 70)" in summary
    for stage, before in zip(plan.stages, plan.base_stages):
        assert f"{stage.stage.patch} t {stage.stage.t_start:g}-{stage.stage.t_end:g}: {stage.calls} calls " \
               f"(was {before.calls})" in summary
    assert "switch points t = 0.03, 0.125" in summary


def test_a_budget_below_the_cheapest_schedule_is_refused_with_its_minimum():
    cheapest = min(predicted_seconds(replace(F24, steps=steps), COSTS) for steps in range(2, 71)
                   if all(s.steps_on(replace(F24, steps=steps).grid()) for s in F24.stages))
    with pytest.raises(BudgetTooSmall) as refused:
        fit_budget(F24, COSTS, 0.99 * cheapest)
    assert refused.value.minimum == pytest.approx(cheapest)
    assert f"at least {cheapest:.3g} s" in str(refused.value)
    assert fit_budget(F24, COSTS, cheapest).predicted == pytest.approx(cheapest)
    for budget in (0, -1.0):
        with pytest.raises(ValueError, match=f"time budget {budget} s is not positive"):
            fit_budget(F24, COSTS, budget)


def finest_fitting_steps(base: SampleConfig, costs: CallCosts, budget: float) -> int | None:
    """The reference: every grid from the base's down, each walked call by call (SampleConfig.model_calls)."""
    for steps in range(base.steps, 1, -1):
        calls = replace(base, steps=steps).model_calls()
        seconds = sum(costs.call_seconds(stage, float(value_at(base.cfg, t))) for _, t, _, stage in calls)
        if {stage for _, _, _, stage in calls} == set(base.stages) and seconds <= budget:
            return steps
    return None


def random_schedule(rng: random.Random) -> SampleConfig:
    """Up to 4 stages of the calibrated pairs (switch points on round and random t, some stages a hair apart, as
    float widgets leave them) and a cfg that switches on and off."""
    bounds = sorted({rng.choice([0.03, 0.125, 0.25, 0.5, round(rng.random(), 2), rng.random()])
                     for _ in range(rng.randint(0, 3))} - {0.0})
    starts, ends = [0.0, *bounds], [*bounds, 1.0]
    starts = [start + rng.choice([0.0, 0.0, 1e-10, -1e-10]) if index else start for index, start in enumerate(starts)]
    stages = tuple(Stage(*parse_patch(rng.choice(list(COSTS.guided))), start, end) for start, end in zip(starts, ends))
    switches = sorted({rng.choice([0.0, 0.2, 0.5, rng.random()]) for _ in range(rng.randint(0, 3))})
    cfg = (rng.choice([0.0, 4.0]), *((t, rng.choice([0.0, 3.0])) for t in switches))
    return SampleConfig(stages=stages, steps=rng.randint(2, 120), shift=rng.choice([None, 3.0, 24.0, 100.0]),
                        cfg=cfg if switches else cfg[0])


def test_predictions_count_the_calls_on_the_grid_without_walking_the_plan(monkeypatch):
    """predict counts each stage's guided and unguided calls on the whole grid at once (no step-by-step walk, which
    made fitting quadratic in the step count) with the plan's own rules, and fit_budget still returns the finest
    grid that fits: the same as trying every grid call by call."""
    rng = random.Random(0)
    cases = []
    for _ in range(60):
        base = random_schedule(rng)
        calls = [sum(1 for _, _, _, stage in base.model_calls() if stage == s) for s in base.stages]
        budget = rng.uniform(0.05, 1.2) * predicted_seconds(base, COSTS)
        cases.append((base, calls, budget, finest_fitting_steps(base, COSTS, budget)))
    monkeypatch.setattr(SampleConfig, "model_calls", lambda self: pytest.fail("a prediction walked the calls"))
    for base, calls, budget, expected in cases:
        assert [stage.calls for stage in predict(base, COSTS)] == calls
        if expected is None:
            with pytest.raises(ValueError):
                fit_budget(base, COSTS, budget)
        else:
            assert fit_budget(base, COSTS, budget).config.steps == expected, (base, budget)


def test_a_budget_that_is_not_a_finite_number_is_refused():
    for budget in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"time budget {budget} s is not positive and finite"):
            fit_budget(F24, COSTS, budget)


def cli(tmp_path, *extra):
    return subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a red circle moving left",
                           "--out", str(tmp_path / "clip.mp4"), "--steps", "8", *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, cost.CALIBRATION_DIR_ENV: str(tmp_path / "cache")})


def test_cli_time_budget_fits_the_schedule_or_refuses_with_the_minimum(tmp_path):
    refused = cli(tmp_path, "--time-budget", "0.000001")
    assert refused.returncode == 2, refused.stderr
    assert "calibrated this machine" in refused.stderr
    minimum = float(re.search(r"raise the budget to at least ([\d.e+-]+) s", refused.stderr).group(1))
    assert not (tmp_path / "clip.mp4").exists()
    generous = cli(tmp_path, "--time-budget", "100000")
    assert generous.returncode == 0, generous.stderr
    assert "calibrated this machine" not in generous.stderr  # the calibration was cached by the first run
    assert "The base schedule fits: nothing traded." in generous.stderr
    assert minimum > 0 and (tmp_path / "clip.mp4").is_file()
