"""Time grids, time-aware values and patch stages of the Lumina-Video sampler.

A *time-aware value* is a constant or ``(v0, (t1, v1), (t2, v2), ...)``: v0 until t1, then v_k for
t >= t_k (thresholds strictly increasing, inside [0, 1]). The official configs express the
patch schedule this way, e.g. ``("2x4", (0.03, "2x2"), (0.125, "1x2"))``, where "FxP" means
f-patch F and patch P. A :class:`Stage` is one patch pair over a t range; a schedule is the list
of stages those thresholds imply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

from .limits import MAX_STAGES, MAX_STEPS, is_finite_number

Scalar = Union[int, float, str]


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = t / (t + s - s*t): times pushed towards 0 (noise) for s > 1, unchanged for s = 1; the sampler's grid
    shift ts and the demo training's time shift."""
    return t / (t + shift - shift * t)


def time_grid(steps: int, shift: float | None) -> torch.Tensor:
    """float32 grid linspace(0, 1, steps), shifted t' = t / (t + s - s*t) when shift s is set.

    t = 0 is noise and t = 1 data; this is ComfyUI's flow ``shift`` with sigma = 1 - t.
    """
    if not is_finite_number(steps) or int(steps) != steps:
        raise ValueError(f"step {steps!r} is not a whole number of grid points; use 2 to {MAX_STEPS} (the official "
                         "configs use 70)")
    if steps < 2:
        raise ValueError(f"step {steps} is too small: the grid needs at least 2 points (1 model call); "
                         "use step >= 2 (the official configs use 70)")
    if steps > MAX_STEPS:
        raise ValueError(f"step {steps} is above {MAX_STEPS} grid points; use at most {MAX_STEPS} (the official "
                         "configs use 70)")
    if shift is not None and not is_finite_number(shift):
        raise ValueError(f"time shift ts {shift!r} is not a finite number; use ts >= 0 (0 = no shift; official 8 "
                         "or 24)")
    t = torch.linspace(0.0, 1.0, int(steps))
    if shift:
        if shift < 0:
            raise ValueError(f"time shift ts {shift} is negative; use ts >= 0 (0 = no shift; official 8 or 24)")
        t = shift_time(t, shift)
    return t


def normalize_time_aware(value: Any, name: str, numeric: bool = False) -> Scalar | tuple:
    """Validate a time-aware value (JSON lists accepted) and return it with tuples. Its values are numbers or
    strings (numbers only when ``numeric``), and numbers must be finite."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} {value!r} is not a number/string or a (v0, (t1, v1), ...) sequence")
    if isinstance(value, (int, float, str)):
        return _checked_entry(value, name, numeric)
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} {value!r} is not a number/string or a (v0, (t1, v1), ...) sequence")
    first, rest = value[0], value[1:]
    if not isinstance(first, (int, float, str)) or isinstance(first, bool):
        raise ValueError(f"{name}: the first entry {first!r} must be the value used from t = 0")
    _checked_entry(first, name, numeric)
    if len(rest) > MAX_STAGES:
        raise ValueError(f"{name} switches {len(rest)} times; at most {MAX_STAGES} switch points are allowed")
    pairs = []
    previous = None
    for entry in rest:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"{name}: entry {entry!r} must be a (threshold, value) pair")
        threshold, item = entry
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{name}: threshold {threshold!r} is outside [0, 1]; thresholds are times t "
                             "(0 = noise, 1 = data)")
        if previous is not None and threshold <= previous:
            raise ValueError(f"{name}: thresholds {previous} then {threshold} are not increasing; "
                             "list the (t, value) pairs in increasing t")
        previous = threshold
        pairs.append((float(threshold), _checked_entry(item, name, numeric)))
    return (first, *pairs) if pairs else first


def _checked_entry(item: Any, name: str, numeric: bool) -> Scalar:
    """One value of a time-aware value: a finite number, or a string unless ``numeric``."""
    if isinstance(item, str) and not numeric:
        return item
    if not is_finite_number(item):
        kind = "a finite number" if numeric else "a finite number or a string"
        raise ValueError(f"{name} value {item!r} is not {kind}; give {kind} (NaN and infinity are refused)")
    return item


def value_at(value: Scalar | Sequence, t: float) -> Any:
    """Read a (normalized) time-aware value at time t: v_k for the last threshold t_k <= t."""
    if not isinstance(value, (list, tuple)):
        return value
    result = value[0]
    for threshold, item in value[1:]:
        if t < threshold:
            break
        result = item
    return result


def parse_patch(text: str) -> tuple[int, int]:
    """ "FxP" (f-patch x patch, as in the official configs) -> (patch_size, f_patch_size)."""
    try:
        f_patch, patch = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"patch {text!r} is not of the form 'FxP' (f-patch x patch size), "
                         "e.g. '1x2' or '2x4'") from None
    if f_patch < 1 or patch < 1:
        raise ValueError(f"patch {text!r} has a size below 1; sizes are positive integers, e.g. '1x2'")
    return patch, f_patch


def format_patch(patch_size: int, f_patch_size: int) -> str:
    return f"{f_patch_size}x{patch_size}"


@dataclass(frozen=True)
class Stage:
    """Denoise grid points t_start <= t < t_end with one patch pair."""

    patch_size: int
    f_patch_size: int
    t_start: float = 0.0
    t_end: float = 1.0

    def __post_init__(self):
        for name in ("t_start", "t_end"):
            if not is_finite_number(getattr(self, name)):
                raise ValueError(f"stage {name} {getattr(self, name)!r} is not a finite number; use 0 <= t_start < "
                                 "t_end <= 1")
        if not 0.0 <= self.t_start < self.t_end <= 1.0:
            raise ValueError(f"stage t range [{self.t_start}, {self.t_end}) is empty or outside [0, 1]; "
                             "use 0 <= t_start < t_end <= 1")
        if self.patch_size < 1 or self.f_patch_size < 1:
            raise ValueError(f"stage patch {self.f_patch_size}x{self.patch_size} has a size below 1")

    @property
    def patch(self) -> str:
        return format_patch(self.patch_size, self.f_patch_size)

    def covers(self, t: float) -> bool:
        return self.t_start <= t < self.t_end

    def steps_on(self, grid: torch.Tensor) -> int:
        """Number of model calls this stage makes on a grid (its last point is never evaluated)."""
        return sum(1 for t in grid[:-1].tolist() if self.covers(t))


def stages_from_patch_schedule(schedule: Scalar | Sequence) -> tuple[Stage, ...]:
    """The official time-aware "P" value as stages, e.g. ("2x4", (0.03, "2x2")) ->
    (Stage(4, 2, 0, 0.03), Stage(2, 2, 0.03, 1))."""
    schedule = normalize_time_aware(schedule, "P")
    entries = [(0.0, schedule)] if not isinstance(schedule, tuple) else [(0.0, schedule[0]), *schedule[1:]]
    if len(entries) > 1 and entries[1][0] == 0.0:
        entries = entries[1:]  # a pair at t = 0 replaces the initial value
    bounds = [start for start, _ in entries[1:]] + [1.0]
    return tuple(Stage(*parse_patch(patch), t_start=start, t_end=end)
                 for (start, patch), end in zip(entries, bounds))


def patch_schedule_from_stages(stages: Sequence[Stage]) -> Scalar | tuple:
    """Inverse of :func:`stages_from_patch_schedule` for contiguous stages starting at 0."""
    check_contiguous(stages)
    if len(stages) == 1:
        return stages[0].patch
    return (stages[0].patch, *((s.t_start, s.patch) for s in stages[1:]))


def check_contiguous(stages: Sequence[Stage], whole: bool = True) -> None:
    """Stages must follow each other in order without gap or overlap; ``whole``: and tile [0, 1]."""
    if not stages:
        raise ValueError("the schedule has no stage; give at least one patch stage")
    if len(stages) > MAX_STAGES:
        raise ValueError(f"the schedule has {len(stages)} stages; at most {MAX_STAGES} are allowed (the official "
                         "ones have 1 or 3)")
    expected = 0.0 if whole else stages[0].t_start
    for stage in stages:
        if abs(stage.t_start - expected) > 1e-9:
            raise ValueError(f"stage {stage.patch} starts at t = {stage.t_start} but the stage before it ends at "
                             f"t = {expected}; stages must follow each other without gap or overlap")
        expected = stage.t_end
    if whole and abs(expected - 1.0) > 1e-9:
        raise ValueError(f"the last stage ends at t = {expected}; it must end at t = 1 (the finished video)")
