"""Sampler behaviour: stages, guidance, renorm, callbacks, errors."""

from dataclasses import replace

import pytest
import torch
from conftest import caption

from lumina_core.sampling import OFFICIAL_PRESETS, SampleConfig, guided_velocity, sample
from lumina_core.schedule import Stage, value_at


@pytest.fixture
def noise():
    return torch.randn(1, 4, 4, 16, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def captions():
    feats, mask = caption(2, 8, 48, [8, 3], seed=8)
    return (feats[:1], mask[:1]), (feats[1:, :3], mask[1:, :3])  # negative row shorter than positive


def small(config: SampleConfig, steps: int = 8) -> SampleConfig:
    return replace(config, steps=steps)


def record_batches(model):
    rows = []
    handle = model.register_forward_hook(lambda module, args, out: rows.append((args[0].shape[0], args[5], args[6])))
    return rows, handle


def test_presets_have_the_official_names():
    """configs/sample/__init__.py of the official repo: the plain name is single-scale (1x2 throughout), the
    "-MultiScale" one runs 2x4 -> 2x2 -> 1x2; both share the grid and guidance."""
    assert list(OFFICIAL_PRESETS) == ["f24F96R960-MultiScale", "f16F64R512-MultiScale", "f24F96R960", "f16F64R512"]
    for name in ("f24F96R960", "f16F64R512"):
        single, multi = SampleConfig.preset(name), SampleConfig.preset(name + "-MultiScale")
        assert [s.patch for s in single.stages] == ["1x2"] and [s.patch for s in multi.stages] == ["2x4", "2x2", "1x2"]
        assert single.to_official() == {**multi.to_official(), "P": "1x2"}


def test_from_official_reads_tuples_and_json_lists():
    as_tuples = SampleConfig.from_official(OFFICIAL_PRESETS["f24F96R960-MultiScale"])
    as_json = SampleConfig.from_official('{"P": ["2x4", [0.03, "2x2"], [0.125, "1x2"]], "step": 70, "ts": 24, '
                                         '"renorm": 2, "cfg": [20, [0.2, 0]], "motion": 6.0, '
                                         '"negMotion": [2.0, [0.05, 6.0]]}')
    assert as_tuples == as_json
    assert [s.patch for s in as_json.stages] == ["2x4", "2x2", "1x2"]
    assert as_json.cfg == (20, (0.2, 0)) and as_json.neg_motion == (2.0, (0.05, 6.0))
    assert len(as_json.model_calls()) == 69
    assert SampleConfig.from_official(as_json.to_official()) == as_json


@pytest.mark.parametrize("config, message", [
    ({"P": "1x2", "step": 1}, "step 1"),
    ({"P": ["2x4", [0.5, "1x2"], [0.3, "2x2"]]}, "not increasing"),
    ({"P": "1x2", "cfg": [4, [1.2, 0]]}, r"outside \[0, 1\]"),
    ({"P": "1x2", "steps": 30}, "unknown keys"),
    ({"step": 30}, "no 'P'"),
    ("{not json", "not valid JSON"),
])
def test_bad_official_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig.from_official(config)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, message", [
    ("shift", NAN, "time shift ts nan is not a finite number"),
    ("shift", INF, "time shift ts inf is not a finite number"),
    ("cfg", NAN, "cfg value nan is not a finite number"),
    ("cfg", (20, (0.2, INF)), "cfg value inf is not a finite number"),
    ("motion", NAN, "motion value nan is not a finite number"),
    ("neg_motion", (2.0, (0.05, -INF)), "neg_motion value -inf is not a finite number"),
    ("renorm", INF, "renorm value inf is not a finite number"),
    ("steps", INF, "step inf is not a whole number"),
])
def test_non_finite_schedule_values_are_refused_by_name(field, value, message):
    """A NaN or infinite time shift or guidance value would leave the sampler without a model call (or feed it
    NaN): every schedule is refused when it is made."""
    base = SampleConfig.preset("f24F96R960-MultiScale")
    with pytest.raises(ValueError, match=message):
        SampleConfig(**{"stages": base.stages, "steps": base.steps, "shift": base.shift, field: value})
    with pytest.raises(ValueError, match=message):
        replace(base, **{field: value})


@pytest.mark.parametrize("text, message", [
    ('{"P": "1x2", "ts": NaN}', "sample config holds NaN, which is not a finite number"),
    ('{"P": "1x2", "ts": Infinity}', "sample config holds Infinity, which is not a finite number"),
    ('{"P": "1x2", "cfg": [4, [0.5, -Infinity]]}', "sample config holds -Infinity"),
    ('{"P": "1x2", "cfg": 1e400}', "sample config holds 1e400, which is not a finite number"),
    ('{"P": "1x2", "motion": 1' + "0" * 400 + "}", r"sample config holds 100000000000\.\.\. \(401 characters\)"),
    ('{"P": "1x2", "motion": ' + "[" * 5000 + "]" * 5000 + "}", "nests lists and objects more than 8 deep"),
    ('{"P": "1x2", "motion": 6.0' + " " * 70000 + "}", "sample config is 70027 bytes long; the limit is 65536"),
])
def test_official_json_holds_finite_numbers_within_the_limits(text, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig.from_official(text)


@pytest.mark.parametrize("key, value, message", [
    ("ts", NAN, "time shift ts nan"), ("cfg", [NAN, [0.5, 0]], "cfg value nan"), ("motion", INF, "motion value inf"),
    ("negMotion", [2.0, [0.05, NAN]], "neg_motion value nan"), ("renorm", NAN, "renorm value nan"),
])
def test_official_dicts_with_non_finite_values_are_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig.from_official({"P": "1x2", "step": 10, key: value})


def test_running_stages_one_at_a_time_equals_one_call_bit_for_bit(tiny_model, noise, captions):
    config = small(SampleConfig.preset("f24F96R960-MultiScale"), steps=12)
    whole = sample(tiny_model, noise, *captions, config)
    chained = noise
    for part in config.split():
        chained = sample(tiny_model, chained, *captions, part)
    assert len(config.split()) == 3
    assert torch.equal(whole, chained)


def test_callback_reports_every_step_in_order(tiny_model, noise, captions):
    config = small(SampleConfig.preset("f16F64R512-MultiScale"), steps=10)
    seen = []
    final = sample(tiny_model, noise, *captions, config, callback=seen.append)
    assert [d["step"] for d in seen] == list(range(9)) and [d["index"] for d in seen] == list(range(9))
    assert all(d["total"] == 9 for d in seen)
    grid = config.grid()
    for d in seen:
        assert d["t"] == grid[d["step"]].item() and d["t_next"] == grid[d["step"] + 1].item()
        assert (d["f_patch_size"], d["patch_size"]) == {"2x4": (2, 4), "2x2": (2, 2), "1x2": (1, 2)}[
            next(s.patch for s in config.stages if s.covers(d["t"]))]
    # x is the latent before each step: x_{i+1} = x_i + dt * velocity_i.
    for before, after in zip(seen, seen[1:]):
        assert torch.equal(after["x"], before["x"] + (grid[after["step"]] - grid[before["step"]]) * before["velocity"])
    last = seen[-1]
    assert torch.equal(final, last["x"] + (grid[-1] - grid[-2]) * last["velocity"])


def test_exception_in_callback_stops_sampling_and_leaves_inputs_untouched(tiny_model, noise, captions):
    original = noise.clone()
    calls = []

    def cancel(info):
        calls.append(info["step"])
        if info["step"] == 2:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        sample(tiny_model, noise, *captions, small(SampleConfig.preset("f16F64R512-MultiScale")), callback=cancel)
    assert calls == [0, 1, 2]
    assert torch.equal(noise, original)


def test_zero_cfg_drops_the_negative_row(tiny_model, noise, captions):
    rows, handle = record_batches(tiny_model)
    try:
        config = SampleConfig.from_official({"P": "2x4", "step": 6, "ts": 3.0, "cfg": [4.0, [0.5, 0.0]],
                                             "renorm": -1, "motion": 6.0, "negMotion": 2.0})
        sample(tiny_model, noise, *captions, config)
    finally:
        handle.remove()
    grid = config.grid()[:-1].tolist()
    assert [r[0] for r in rows] == [2 if t < 0.5 else 1 for t in grid]


def test_guidance_and_renorm_follow_the_formula(tiny_model, noise, captions):
    (pos_f, pos_m), (neg_f, neg_m) = captions
    stage = Stage(2, 2)
    t = 0.3
    with torch.no_grad():
        v_pos = tiny_model(noise, torch.tensor([t]), pos_f, pos_m, torch.tensor([5.0]), 2, 2)
        v_neg = tiny_model(noise, torch.tensor([t]), neg_f, neg_m, torch.tensor([1.0]), 2, 2)
    guided = v_pos + 3.0 * (v_pos - v_neg)
    plain = guided_velocity(tiny_model, noise, t, stage, captions[0], captions[1], 3.0, 5.0, 1.0, renorm=-1)
    assert torch.allclose(plain, guided, atol=1e-5, rtol=1e-5)
    ratio = (guided.norm() / v_pos.norm()).item()
    assert ratio > 1.5
    capped = guided_velocity(tiny_model, noise, t, stage, captions[0], captions[1], 3.0, 5.0, 1.0, renorm=1.5)
    assert capped.norm().item() == pytest.approx(1.5 * v_pos.norm().item(), rel=1e-5)
    assert torch.allclose(capped / capped.norm(), guided / guided.norm(), atol=1e-6)
    loose = guided_velocity(tiny_model, noise, t, stage, captions[0], captions[1], 3.0, 5.0, 1.0, renorm=ratio + 1)
    assert torch.allclose(loose, guided, atol=1e-5, rtol=1e-5)


def test_motion_values_reach_the_model(tiny_model, noise, captions):
    seen = []
    handle = tiny_model.register_forward_hook(lambda m, args, out: seen.append(args[4].tolist()))
    try:
        config = SampleConfig.from_official({"P": "1x2", "step": 4, "ts": 0, "cfg": 2.0, "renorm": -1,
                                             "motion": [-1.0, [0.5, 4.0]], "negMotion": [2.0, [0.3, 6.0]]})
        sample(tiny_model, noise, *captions, config)
    finally:
        handle.remove()
    # grid 0, 1/3, 2/3: motion -1 until 0.5 then 4; negMotion 2 until 0.3 then 6.
    assert seen == [[-1.0, 2.0], [-1.0, 6.0], [4.0, 6.0]]


def test_unknown_patch_pair_is_refused_before_any_model_call(tiny_model, noise, captions):
    rows, handle = record_batches(tiny_model)
    try:
        with pytest.raises(ValueError, match=r"1x4 .*has embedders for 1x2, 2x2, 2x4"):
            sample(tiny_model, noise, *captions, SampleConfig.from_official({"P": ["2x4", [0.5, "1x4"]], "step": 5}))
    finally:
        handle.remove()
    assert rows == []


def test_indivisible_latent_is_refused_for_the_stage_that_needs_it(tiny_model, captions):
    latent = torch.zeros(1, 4, 4, 10, 32)  # 10 rows: fine for patch 2, not for patch 4
    with pytest.raises(ValueError, match="height 10 is not divisible by patch size 4; use 8 or 12"):
        sample(tiny_model, latent, *captions, small(SampleConfig.preset("f24F96R960-MultiScale")))
    sample(tiny_model, latent, *captions, small(SampleConfig.preset("f24F96R960"), steps=3))


def test_caption_width_and_missing_negative_are_refused(tiny_model, noise, captions):
    config = small(SampleConfig.preset("f16F64R512-MultiScale"), steps=4)
    wide = caption(1, 8, 64, [8])
    with pytest.raises(ValueError, match="hidden size must be 48"):
        sample(tiny_model, noise, wide, wide, config)
    with pytest.raises(ValueError, match="needs a negative caption"):
        sample(tiny_model, noise, captions[0], None, config)
    no_cfg = replace(config, cfg=0.0)
    assert sample(tiny_model, noise, captions[0], None, no_cfg).shape == noise.shape


def test_stages_with_a_gap_are_refused():
    with pytest.raises(ValueError, match="without gap or overlap"):
        SampleConfig(stages=(Stage(4, 2, 0.0, 0.2), Stage(2, 1, 0.3, 1.0)))


def test_stage_chain_builds_the_official_schedule():
    """Appending stages with per-stage guidance reproduces f24F96R960-MultiScale's time-aware values: split where the
    patch, cfg (t = 0.2) or negative motion (t = 0.05) switch, every model call gets the official patch pair,
    cfg, motion, negative motion and renorm."""
    official = SampleConfig.from_official({  # the official f24F96R960-MultiScale config
        "P": ["2x4", [0.03, "2x2"], [0.125, "1x2"]], "step": 70, "ts": 24, "renorm": 2,
        "cfg": [20, [0.2, 0]], "motion": 6.0, "negMotion": [2.0, [0.05, 6.0]]})
    first = SampleConfig(stages=(Stage(4, 2, 0.0, 0.03),), steps=70, shift=24.0, cfg=20, motion=6.0,
                         neg_motion=2.0, renorm=2)
    config = (first.with_stage(Stage(2, 2, 0.03, 0.05), cfg=20, motion=6.0, neg_motion=2.0, renorm=2)
                   .with_stage(Stage(2, 2, 0.05, 0.125), cfg=20, motion=6.0, neg_motion=6.0, renorm=2)
                   .with_stage(Stage(2, 1, 0.125, 0.2), cfg=20, motion=6.0, neg_motion=6.0, renorm=2)
                   .with_stage(Stage(2, 1, 0.2, 1.0), cfg=0, motion=6.0, neg_motion=6.0, renorm=2))

    def per_call(schedule):
        return [(step, t, stage.patch, *(value_at(getattr(schedule, name), t)
                                        for name in ("cfg", "motion", "neg_motion", "renorm")))
                for step, t, _, stage in schedule.model_calls()]

    assert len(official.model_calls()) == 69
    assert per_call(config) == per_call(official)
    switched = first.with_stage(Stage(2, 1, 0.03, 1.0), cfg=0, motion=6.0, neg_motion=6.0, renorm=2)
    assert switched.cfg == (20, (0.03, 0)) and switched.neg_motion == (2.0, (0.03, 6.0))
    assert switched.motion == 6.0
    with pytest.raises(ValueError, match="without gap or overlap"):
        first.with_stage(Stage(2, 1, 0.5, 1.0), cfg=1, motion=1, neg_motion=1, renorm=1)
