"""Time grid, time-aware values and patch stages."""

import pytest
import torch

from lumina_core.schedule import (
    Stage,
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
