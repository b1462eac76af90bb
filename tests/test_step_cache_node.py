"""Lumina-Video Step Cache node (in-process ComfyUI, COMFYUI_PATH): it skips calls under ComfyUI's own sampler and
under the pack's samplers, never the first calls after a patch switch or after cfg truncation drops the negative
row, logs what it skipped per stage, and a cancel still stops a run at a skipped call."""

import logging

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process, imports the pack

# isort: split
import comfy.model_management
import pytest
import torch
from comfy_extras.nodes_custom_sampler import KSamplerSelect, RandomNoise, SamplerCustomAdvanced
from lumina_video_pack.lumina_core.sampling import SampleConfig, sample, seeded_noise
from lumina_video_pack.lumina_core.step_cache import StepCache
from lumina_video_pack.lumina_core.vae import SCALING_FACTOR
from lumina_video_pack.nodes.guidance import LuminaVideoMSGuider, LuminaVideoMSSigmas
from lumina_video_pack.nodes.native import OfficialCall
from lumina_video_pack.nodes.sampler import LuminaVideoMSSampler, LuminaVideoMSStageSampler, caption_rows
from lumina_video_pack.nodes.step_cache import LuminaVideoMSStepCache
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo

THRESHOLD = 0.3
SCHEDULE = SampleConfig.from_official({"P": ["2x2", [0.1, "1x2"], [0.4, "1x1"]], "step": 40, "ts": 3.0,
                                       "renorm": -1, "cfg": [4.0, [0.6, 0.0]], "motion": 6.0, "negMotion": 2.0})
CACHED_TOL = 0.05
"""|cached - uncached| / |uncached| (L2 over the latent), demo model at threshold 0.3 (about half the calls
skipped): measured 0.031 here and 0.021 through lumina_core (calls near the threshold may go either way, as the
two paths round differently); a cache never started over (one stream across switches and row sets) gives 0.074,
an extrapolation of the wrong sign 0.070."""


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def cached_model(model):
    return run(LuminaVideoMSStepCache, model, THRESHOLD, 0.0, 1.0)[0]


@pytest.fixture(scope="module")
def captions():
    return demo_captions("a red circle moving left", "static grey background")


@pytest.fixture(scope="module")
def latent():
    return run(LuminaVideoMSEmptyLatentVideo, "custom", 64, 64, 16, 1)[0]  # the demo size: 4 latent frames of 8 x 8


def core_sample(model, positive, negative, latent, seed=7):
    """SamplerCustomAdvanced(RandomNoise, Lumina-Video Guider, euler, Lumina-Video Sigmas)."""
    guider = run(LuminaVideoMSGuider, model, positive, negative, SCHEDULE)[0]
    return run(SamplerCustomAdvanced, run(RandomNoise, seed)[0], guider, run(KSamplerSelect, "euler")[0],
               run(LuminaVideoMSSigmas, SCHEDULE)[0], latent)[0]["samples"]


class CallLog:
    """Every call of the MODEL's network (rows, patch pair run or None when the cache answered), by hooks on the
    network (every call) and its patch embedders (real calls only)."""

    def __init__(self, patcher):
        network = patcher.model.diffusion_model
        self.calls = []
        self.handles = [network.register_forward_pre_hook(lambda module, args: self.calls.append([args[0].shape[0],
                                                                                                   None]))]
        for key, embedder in network.all_x_embedder.items():
            self.handles.append(embedder.register_forward_pre_hook(lambda module, args, key=key: self.ran(key)))

    def ran(self, key):
        if self.calls:  # the pack samplers call the embedder without the network's forward (OfficialCall)
            self.calls[-1][1] = key

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def expected_patch(t: float) -> str:
    return next(f"{s.patch_size}-{s.f_patch_size}" for s in SCHEDULE.stages if s.covers(t))


def test_core_sampler_skips_calls_but_not_after_a_switch_or_cfg_truncation_and_logs_them(
        model, cached_model, captions, latent, caplog):
    positive, negative = captions
    uncached = core_sample(model, positive, negative, latent)
    with caplog.at_level(logging.INFO), CallLog(cached_model) as log:
        cached = core_sample(cached_model, positive, negative, latent)
    plan = SCHEDULE.model_calls()
    assert len(log.calls) == len(plan)  # cond and uncond batch into one call per step
    segments = {}  # (patch pair, rows) -> patch run per call (None = skipped)
    for (rows, ran), (_, t, _, _) in zip(log.calls, plan):
        assert rows == (2 if t < 0.6 else 1) and ran in (None, expected_patch(t))
        segments.setdefault((expected_patch(t), rows), []).append(ran)
    assert list(segments) == [("2-2", 2), ("2-1", 2), ("1-1", 2), ("1-1", 1)]
    for (patch, _), ran in segments.items():
        assert ran[:2] == [patch, patch]  # the first two calls of each patch pair and row set run the model
        assert None in ran  # and each skips later, after cfg truncation too
    skipped = sum(ran.count(None) for ran in segments.values())
    counts = {patch: (ran.count(None), len(ran)) for patch, ran in
              {"2x2": segments[("2-2", 2)], "1x2": segments[("2-1", 2)],
               "1x1": segments[("1-1", 2)] + segments[("1-1", 1)]}.items()}
    stages = ", ".join(f"{patch} {skip}/{total}" for patch, (skip, total) in counts.items())
    assert f"Lumina-Video Step Cache (threshold {THRESHOLD}): skipped {skipped} of 39 model calls ({stages})" \
        in caplog.text
    assert 0 < relative_l2(cached, uncached) < CACHED_TOL


def test_pack_samplers_honour_the_node(model, cached_model, captions, latent, caplog):
    """The Sampler gives lumina_core's sample with the same StepCache (the same code on the same numbers: equal),
    and a chain of Stage Samplers the whole Sampler's latent, since the cache starts over at each stage."""
    positive, negative = captions
    schedule = SampleConfig.from_official({**SCHEDULE.to_official(), "cfg": [4.0, [0.4, 0.0]]})  # cfg per stage
    with caplog.at_level(logging.INFO):
        whole = run(LuminaVideoMSSampler, cached_model, positive, negative, latent, schedule, 7)[0]["samples"]
    assert "Lumina-Video Step Cache (threshold 0.3): skipped " in caplog.text
    network = model.model.diffusion_model
    cond = caption_rows(positive, 1, network.config.cap_feat_dim, "positive")
    uncond = caption_rows(negative, 1, network.config.cap_feat_dim, "negative")
    cache = StepCache(THRESHOLD)
    direct = sample(OfficialCall(network), seeded_noise(latent["samples"].shape, 7), cond, uncond, schedule,
                    cache=cache)
    assert cache.skipped > 0 and torch.equal(whole, direct / SCALING_FACTOR)
    chained = latent
    for stage, cfg in zip(schedule.stages, (4.0, 4.0, 0.0)):
        chained = run(LuminaVideoMSStageSampler, cached_model, positive, negative, chained, 7, stage.patch,
                      stage.t_start, stage.t_end, schedule.steps, schedule.shift, cfg, 6.0, 2.0, -1.0)[0]
    assert torch.equal(chained["samples"], whole)


@pytest.mark.parametrize("path", ["core sampler", "pack sampler"])
def test_cancel_stops_a_cached_run_at_the_next_call(cached_model, captions, latent, path):
    """A cancel pressed during the real call before a skipped one stops the run at that skipped call: a skipped
    call runs no ComfyUI layer (where core samplers notice a cancel), so the cache checks for it itself."""
    positive, negative = captions

    def sample_once():
        if path == "core sampler":
            return core_sample(cached_model, positive, negative, latent)
        return run(LuminaVideoMSSampler, cached_model, positive, negative, latent, SCHEDULE, 7)

    cancel_after = 5  # real calls; the pack Sampler checks for a cancel after every step
    if path == "core sampler":
        with CallLog(cached_model) as log:
            sample_once()
        ran = [patch is not None for _, patch in log.calls]
        call = next(i for i in range(2, len(ran) - 1) if ran[i] and not ran[i + 1])  # a real call, then a skipped one
        cancel_after = sum(ran[:call + 1])
    network = cached_model.model.diffusion_model
    real_calls = []

    def press_cancel(module, args, out):
        real_calls.append(len(real_calls))
        if len(real_calls) == cancel_after:
            comfy.model_management.interrupt_current_processing(True)

    handles = [layer.register_forward_hook(press_cancel) for layer in network.all_final_layer.values()]
    try:
        with CallLog(cached_model) as log, pytest.raises(comfy.model_management.InterruptProcessingException):
            sample_once()
    finally:
        for handle in handles:
            handle.remove()
        comfy.model_management.interrupt_current_processing(False)
    assert len(real_calls) == cancel_after  # no model call ran after the cancel
    if path == "core sampler":
        assert len(log.calls) == call + 2  # it stopped at the next call, a skipped one


def test_settings_are_checked(model, cached_model):
    with pytest.raises(ValueError, match=r"start 0.8, end 0.2 is not 0 <= start <= end <= 1"):
        run(LuminaVideoMSStepCache, model, 0.2, 0.8, 0.2)
    with pytest.raises(ValueError, match=r"already has a Lumina-Video Step Cache \(threshold 0.3\); chain one"):
        run(LuminaVideoMSStepCache, cached_model, 0.5, 0.0, 1.0)
