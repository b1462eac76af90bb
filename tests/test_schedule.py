"""Time grid, time-aware values and patch stages."""

import pytest
import torch

from lumina_core.limits import MAX_STAGES, MAX_STEPS
from lumina_core.schedule import (
    Stage,
    check_contiguous,
    normalize_time_aware,
    parse_patch,
    patch_schedule_from_stages,
    stages_from_patch_schedule,
    time_grid,
    value_at,
)


def test_unshifted_grid_is_linspace_and_shift_matches_formula():
    assert torch.equal(time_grid(5, None), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    shifted = time_grid(5, 3.0)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(shifted, t / (3.0 - 2.0 * t))
    assert shifted[1].item() == pytest.approx(0.1)  # 0.25 / (0.25 + 3 - 0.75)
    assert shifted.dtype == torch.float32


@pytest.mark.parametrize("steps", [1, 0, -3, 2.5])
def test_grid_needs_two_points(steps):
    with pytest.raises(ValueError, match="step"):
        time_grid(steps, None)


def test_time_aware_value_switches_at_thresholds():
    value = normalize_time_aware([20, [0.2, 0]], "cfg")
    assert value == (20, (0.2, 0))
    assert value_at(value, 0.0) == 20
    assert value_at(value, 0.19999) == 20
    assert value_at(value, 0.2) == 0  # v_k applies for t >= t_k
    assert value_at(value, 1.0) == 0
    three = normalize_time_aware(("a", (0.1, "b"), (0.5, "c")), "P")
    assert [value_at(three, t) for t in (0.05, 0.1, 0.3, 0.5, 0.9)] == ["a", "b", "b", "c", "c"]
    assert value_at(6.0, 0.7) == 6.0


@pytest.mark.parametrize("value, message", [
    ((1, (0.5, 2), (0.3, 3)), "not increasing"),
    ((1, (0.5, 2), (0.5, 3)), "not increasing"),
    ((1, (1.5, 2)), r"outside \[0, 1\]"),
    ((1, (-0.1, 2)), r"outside \[0, 1\]"),
    ((1, 0.5), "pair"),
    (None, "sequence"),
    ([], "sequence"),
])
def test_bad_time_aware_values_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        normalize_time_aware(value, "cfg")


def test_patch_strings_are_f_patch_by_patch():
    assert parse_patch("2x4") == (4, 2)
    assert parse_patch("1x2") == (2, 1)
    for bad in ("2-4", "x2", "0x2", "abc"):
        with pytest.raises(ValueError, match="patch"):
            parse_patch(bad)


def test_official_patch_schedule_becomes_stages_and_back():
    schedule = ("2x4", (0.03, "2x2"), (0.125, "1x2"))
    stages = stages_from_patch_schedule(schedule)
    assert stages == (Stage(4, 2, 0.0, 0.03), Stage(2, 2, 0.03, 0.125), Stage(2, 1, 0.125, 1.0))
    assert patch_schedule_from_stages(stages) == schedule
    assert stages_from_patch_schedule("1x2") == (Stage(2, 1, 0.0, 1.0),)


def test_stage_step_counts_on_the_official_960p_grid():
    """DESIGN.md: f24F96R960-MultiScale (70 steps, ts 24) makes 30 / 24 / 15 calls at 2x4 / 2x2 / 1x2."""
    grid = time_grid(70, 24.0)
    counts = [s.steps_on(grid) for s in stages_from_patch_schedule(("2x4", (0.03, "2x2"), (0.125, "1x2")))]
    assert counts == [30, 24, 15]


def test_empty_stage_range_is_refused():
    with pytest.raises(ValueError, match="empty or outside"):
        Stage(2, 1, 0.5, 0.5)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("steps, shift, message", [
    (NAN, None, "step nan is not a whole number"),
    (INF, None, "step inf is not a whole number"),
    ("70", None, "step '70' is not a whole number"),
    (MAX_STEPS + 1, None, f"step {MAX_STEPS + 1} is above {MAX_STEPS} grid points"),
    (10, NAN, "time shift ts nan is not a finite number"),
    (10, INF, "time shift ts inf is not a finite number"),
])
def test_grid_refuses_non_finite_and_oversized_values(steps, shift, message):
    with pytest.raises(ValueError, match=message):
        time_grid(steps, shift)


@pytest.mark.parametrize("value, shown", [
    (NAN, "nan"), (-INF, "-inf"), ((4.0, (0.5, NAN)), "nan"), ((INF, (0.5, 1.0)), "inf"), ((4.0, (0.5, None)), "None"),
])
def test_time_aware_numbers_must_be_finite(value, shown):
    with pytest.raises(ValueError, match=f"cfg value {shown} is not a finite number"):
        normalize_time_aware(value, "cfg", numeric=True)
    with pytest.raises(ValueError, match="cfg value 'high' is not a finite number"):
        normalize_time_aware((4.0, (0.5, "high")), "cfg", numeric=True)
    assert normalize_time_aware(("2x4", (0.5, "1x2")), "P") == ("2x4", (0.5, "1x2"))  # strings where not numeric


@pytest.mark.parametrize("t_start, t_end", [(NAN, 1.0), (0.0, NAN), (0.0, INF)])
def test_stage_times_must_be_finite(t_start, t_end):
    with pytest.raises(ValueError, match=r"stage t_(start|end) (nan|inf) is not a finite number"):
        Stage(2, 1, t_start, t_end)


def test_a_schedule_has_at_most_max_stages_stages_and_switch_points():
    switches = (4.0, *((i / (MAX_STAGES + 2), 4.0) for i in range(1, MAX_STAGES + 2)))
    with pytest.raises(ValueError, match=f"cfg switches {MAX_STAGES + 1} times; at most {MAX_STAGES}"):
        normalize_time_aware(switches, "cfg")
    patches = ("1x2", *((t, "1x2") for t, _ in switches[1:]))
    with pytest.raises(ValueError, match=f"P switches {MAX_STAGES + 1} times"):
        stages_from_patch_schedule(patches)
    bounds = [i / (MAX_STAGES + 1) for i in range(MAX_STAGES + 2)]
    stages = [Stage(2, 1, start, end) for start, end in zip(bounds, bounds[1:])]
    with pytest.raises(ValueError, match=f"the schedule has {MAX_STAGES + 1} stages; at most {MAX_STAGES}"):
        check_contiguous(stages)
    check_contiguous(stages[:MAX_STAGES - 1] + [Stage(2, 1, bounds[MAX_STAGES - 1], 1.0)])
