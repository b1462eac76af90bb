"""The step cache of lumina_core: which calls it skips, what it predicts for them, that it starts over at every
patch switch and guidance change, and the sampler and command line with it."""

import math

import pytest
import torch
from conftest import caption, relative_error

from lumina_core import demo
from lumina_core.sampling import SampleConfig, sample
from lumina_core.step_cache import StepCache

EXTRAPOLATION_TOL = 1e-5
"""A skipped call of an output linear in t is out_last + (t - t_last) * slope, exact in real arithmetic; float32
rounding of the slope (a difference of two outputs over a t step of ~0.03) stays far below this."""


def linear(a: float, b: float, t: float) -> torch.Tensor:
    return torch.full((2, 3), a + b * t)


class Calls:
    """compute() functions that count how often the cache really called them."""

    def __init__(self):
        self.count = 0

    def __call__(self, value: torch.Tensor):
        def compute():
            self.count += 1
            return value
        return compute


def feed(cache, calls, times, function, stage="1x2", phase=(), key="k"):
    """Run the cache over ``times`` with outputs ``function(t)`` and inputs that move with t; the returned outputs
    and which of them were real calls."""
    outs, real = [], []
    for t in times:
        before = calls.count
        outs.append(cache(key, stage, t, torch.full((2, 3), t), calls(function(t)), phase))
        real.append(calls.count > before)
    return outs, real


def test_skips_calls_and_predicts_an_output_linear_in_t():
    cache, calls = StepCache(0.5), Calls()
    times = [i / 40 for i in range(40)]
    outs, real = feed(cache, calls, times, lambda t: linear(1.0, -3.0, t))
    assert real[:2] == [True, True] and not all(real)
    assert cache.skipped == real.count(False) > 20
    for t, out in zip(times, outs):
        assert (out - linear(1.0, -3.0, t)).abs().max() < EXTRAPOLATION_TOL
    assert cache.summary() == f"skipped {cache.skipped} of 40 model calls (1x2 {cache.skipped}/40)"


@pytest.mark.parametrize("change", ["stage", "phase"])
def test_a_patch_switch_or_guidance_change_starts_over(change):
    """After the switch the first two calls are real and no prediction mixes the outputs of before (here 100 + t,
    after -5 + 2t: a reused difference from before would be off by ~100)."""
    cache, calls = StepCache(2.0), Calls()
    feed(cache, calls, [i / 40 for i in range(20)], lambda t: linear(100.0, 1.0, t), stage="2x2", phase=(4.0,))
    after = {"stage": {"stage": "1x2", "phase": (4.0,)}, "phase": {"stage": "2x2", "phase": (0.0,)}}[change]
    times = [i / 40 for i in range(20, 40)]
    outs, real = feed(cache, calls, times, lambda t: linear(-5.0, 2.0, t), **after)
    assert real[:2] == [True, True] and real.count(False) > 10
    for t, out in zip(times, outs):
        assert (out - linear(-5.0, 2.0, t)).abs().max() < EXTRAPOLATION_TOL
    if change == "stage":
        assert [(stage, count.calls) for stage, count in cache.counts.items()] == [("2x2", 20), ("1x2", 20)]


def test_streams_keep_their_own_state():
    """Two row sets interleaved (as cond + uncond and cond alone after cfg truncation): each is predicted from its
    own outputs."""
    cache, calls = StepCache(0.5), Calls()
    for i in range(30):
        t = i / 30
        for key, function in (("both", lambda t: linear(3.0, 1.0, t)), ("positive", lambda t: linear(-7.0, 4.0, t))):
            out = cache(key, "1x2", t, torch.full((2, 3), t), calls(function(t)))
            assert (out - function(t)).abs().max() < EXTRAPOLATION_TOL
    assert cache.skipped > 20


def test_threshold_zero_and_the_time_range_limit_skipping():
    calls = Calls()
    _, real = feed(StepCache(0.0), calls, [i / 20 for i in range(20)], lambda t: linear(0.0, 1.0, t))
    assert all(real)
    times = [i / 40 for i in range(40)]
    _, real = feed(StepCache(2.0, start=0.3, end=0.6), calls, times, lambda t: linear(0.0, 1.0, t))
    skipped = [t for t, was_real in zip(times, real) if not was_real]
    assert skipped and all(0.3 <= t <= 0.6 for t in skipped)


def test_an_output_that_changes_much_more_than_its_input_is_computed():
    """Outputs flipping between -10 and 10 while the input moves by 1/40 per call: a predicted relative change of
    20 / (1/40) * (1/40) / 10 = 2 per call, far over threshold 0.2, so no call is skipped."""
    calls = Calls()
    times = [i / 40 for i in range(40)]
    _, real = feed(StepCache(0.2), calls, times, lambda t: torch.full((2, 3), 10.0 * (-1) ** round(40 * t)))
    assert all(real)


@pytest.mark.parametrize("settings, message", [
    ({"threshold": -0.1}, r"threshold -0.1 is outside \[0, 2.0\]; use 0"),
    ({"threshold": 2.5}, r"threshold 2.5 is outside \[0, 2.0\]"),
    ({"threshold": math.nan}, r"threshold nan is outside"),
    ({"threshold": 0.2, "start": 0.7, "end": 0.3}, r"start 0.7, end 0.3 is not 0 <= start <= end <= 1"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        StepCache(**settings)


# -- in the sampler -------------------------------------------------------------------------------------------
SCHEDULE = SampleConfig.from_official({"P": ["2x2", [0.1, "1x2"], [0.4, "1x1"]], "step": 40, "ts": 3.0,
                                       "renorm": -1, "cfg": [4.0, [0.6, 0.0]], "motion": 6.0, "negMotion": 2.0})
CACHED_TOL = 0.05
"""Max relative error of the demo model's latent at threshold 0.3 against the uncached run. Measured with the
shipped demo (DiT step 14000): 0.034; reusing the last output without the slope 0.030, a slope of the wrong sign
0.091 (with the previous demo: 0.015 / 0.030 / 0.065). So this bound catches a wrong-sign extrapolation, not the
absence of the slope, which on this model and schedule is no worse (benchmarks/bench_cache.py compares them)."""


@pytest.fixture(scope="module")
def demo_model():
    return demo.build_transformer()


@pytest.fixture
def noise():
    return torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(7))  # the demo's 64 x 64 x 16


@pytest.fixture
def captions():
    feats, mask = caption(2, 8, 64, [8, 3], seed=8)
    return (feats[:1], mask[:1]), (feats[1:, :3], mask[1:, :3])


def traced_sample(model, noise, captions, config, cache=None):
    """The latent, and per step (patch, rows of the model call or 0 when skipped)."""
    batches, steps = [], []
    handle = model.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))

    def callback(info):
        steps.append((f"{info['f_patch_size']}x{info['patch_size']}", batches.pop() if batches else 0))

    try:
        out = sample(model, noise, *captions, config, callback=callback, cache=cache)
    finally:
        handle.remove()
    return out, steps


def test_sampler_skips_calls_but_never_the_first_two_of_a_stage_or_after_cfg_truncation(demo_model, noise,
                                                                                          captions):
    uncached, _ = traced_sample(demo_model, noise, captions, SCHEDULE)
    cache = StepCache(0.3)
    cached, steps = traced_sample(demo_model, noise, captions, SCHEDULE, cache)
    segments = {}  # (patch, cfg on) -> rows per step, in order
    for (patch, rows), (_, t, _, _) in zip(steps, SCHEDULE.model_calls()):
        segments.setdefault((patch, t < 0.6), []).append(rows)
    assert list(segments) == [("2x2", True), ("1x2", True), ("1x1", True), ("1x1", False)]
    for (_, guided), rows in segments.items():
        assert rows[:2] == ([2, 2] if guided else [1, 1])  # the first two calls run the model
        assert set(rows) <= {0, 2 if guided else 1}
    assert all(0 in rows for rows in segments.values())  # every segment skips, after truncation too
    skipped = sum(rows.count(0) for rows in segments.values())
    assert cache.skipped == skipped and cache.summary().startswith(f"skipped {skipped} of 39 model calls (2x2 ")
    assert 0 < relative_error(cached, uncached) < CACHED_TOL


def test_a_fresh_cache_per_run_repeats_the_run(demo_model, noise, captions):
    settings = StepCache(0.3)
    first, second = (sample(demo_model, noise, *captions, SCHEDULE, cache=settings.fresh()) for _ in range(2))
    assert torch.equal(first, second)
    assert settings.counts == {}  # the settings object itself is never run
