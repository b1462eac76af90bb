"""Lumina-Video as a native ComfyUI model, with ComfyUI's own nodes in-process (COMFYUI_PATH): core
SamplerCustomAdvanced with the pack's sigmas and guider gives the pack Sampler's latent and the official code's
output, KSampler follows the attached schedule's patch pairs, and LoRA, EasyCache, context windows, torch.compile,
fp8 storage and partial loading work on the model."""

import json
from dataclasses import replace

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process, imports the pack

# isort: split
import comfy.cli_args
import comfy.model_management
import comfy.samplers
import comfy.utils
import numpy as np
import pytest
import torch
from comfy.cli_args import LatentPreviewMethod
from comfy_extras.nodes_context_windows import ContextWindowsManualNode
from comfy_extras.nodes_custom_sampler import KSamplerSelect, RandomNoise, SamplerCustomAdvanced
from comfy_extras.nodes_easycache import EasyCacheNode
from comfy_extras.nodes_torch_compile import TorchCompileModel
from conftest import relative_error
from lumina_video_pack.lumina_core.model import NextDiT, NextDiTConfig
from lumina_video_pack.lumina_core.preview import COGVIDEOX as COGVIDEOX_RGB
from lumina_video_pack.lumina_core.preview import DEMO as DEMO_RGB
from lumina_video_pack.lumina_core.preview import frame_grid
from lumina_video_pack.lumina_core.sampling import SampleConfig
from lumina_video_pack.lumina_core.vae import SCALING_FACTOR
from lumina_video_pack.nodes.guidance import LuminaVideoMSGuider, LuminaVideoMSModelSchedule, LuminaVideoMSSigmas
from lumina_video_pack.nodes.loaders import (
    LuminaVideoMSModelLoader,
    LuminaVideoMSVAELoader,
)
from lumina_video_pack.nodes.model_files import DEMO
from lumina_video_pack.nodes.motion import LuminaVideoMSMotionConditioning
from lumina_video_pack.nodes.native import OfficialCall, encode_motion, motion_at, native_model
from lumina_video_pack.nodes.sampler import LuminaVideoMSSampler
from lumina_video_pack.nodes.schedule import LuminaVideoMSScheduleJSON, LuminaVideoMSSchedulePreset
from lumina_video_pack.nodes.text import conditioning
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo, LuminaVideoMSVAEDecode, LuminaVideoMSVAEEncode

from nodes import KSampler, LoraLoaderModelOnly

SAME_PATH_TOL = 1e-4
"""Core sampler vs the pack's (fp32, CPU): the same Euler steps in exact arithmetic; ComfyUI goes through
x0 = x + sigma v and back ((x0 - x) / sigma), which rounds differently near sigma -> 0 (measured ~1e-6)."""


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def captions():
    return demo_captions("a red circle moving left", "static grey background")


@pytest.fixture(scope="module")
def latent():
    return run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 16, 1)[0]  # 4 latent frames of 4 x 4


def demo_schedule(steps=8) -> SampleConfig:
    return run(LuminaVideoMSSchedulePreset, "demo", steps)[0]


def core_sample(model, positive, negative, schedule, latent, seed=7, sampler="euler"):
    """SamplerCustomAdvanced(RandomNoise, Lumina-Video Guider, KSamplerSelect, Lumina-Video Sigmas)."""
    guider = run(LuminaVideoMSGuider, model, positive, negative, schedule)[0]
    sigmas = run(LuminaVideoMSSigmas, schedule)[0]
    return run(SamplerCustomAdvanced, run(RandomNoise, seed)[0], guider, run(KSamplerSelect, sampler)[0], sigmas,
               latent)[0]


def patch_log(model) -> tuple[list, list]:
    """Which patch embedder each model call used, and the hooks to remove."""
    network = model.model.diffusion_model
    seen = []
    handles = [embedder.register_forward_pre_hook(lambda module, args, key=key: seen.append(key))
               for key, embedder in network.all_x_embedder.items()]
    return seen, handles


# -- the same video through core samplers --------------------------------------------------------------------
def test_core_sampler_with_the_pack_sigmas_and_guider_gives_the_pack_sampler_latent(model, captions, latent):
    positive, negative = captions
    schedule = demo_schedule()
    pack_out = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 7)[0]
    core_out = core_sample(model, positive, negative, schedule, latent, seed=7)
    assert core_out["samples"].shape == pack_out["samples"].shape == (1, 16, 4, 4, 4)
    assert relative_error(core_out["samples"], pack_out["samples"]) < SAME_PATH_TOL
    other_seed = core_sample(model, positive, negative, schedule, latent, seed=8)
    assert relative_error(other_seed["samples"], pack_out["samples"]) > 0.1


def test_guider_follows_time_aware_cfg_renorm_and_motion(model, captions, latent):
    """A schedule switching cfg off and motion and renorm on midway: still the pack Sampler's latent; with the
    cfg switch moved the result changes (the guider reads each value at the official t)."""
    positive, negative = captions
    official = {"P": ["2x2", [0.3, "1x2"], [0.6, "1x1"]], "step": 9, "ts": 3, "renorm": [-1, [0.4, 1.5]],
                "cfg": [5, [0.5, 0]], "motion": [4, [0.2, 9]], "negMotion": [1, [0.1, 4]]}
    schedule = SampleConfig.from_official(official)
    pack_out = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 3)[0]["samples"]
    core_out = core_sample(model, positive, negative, schedule, latent, seed=3)["samples"]
    assert relative_error(core_out, pack_out) < SAME_PATH_TOL
    moved = SampleConfig.from_official({**official, "cfg": [5, [0.9, 0]]})
    assert relative_error(core_sample(model, positive, negative, moved, latent, seed=3)["samples"], pack_out) > 1e-3


@pytest.mark.parametrize("run_name", ["f24F96R960-MultiScale", "f16F64R512-MultiScale", "custom-lowcfg-renorm"])
def test_core_sampler_reproduces_the_official_runs_of_the_parity_fixture(parity_meta, parity_ref, tiny_model,
                                                                         run_name):
    """The tiny official model and the official sampling runs of ../shared/parity-fixture, through ComfyUI's
    SamplerCustomAdvanced: the official final latent within the fixture's sampling tolerance."""
    info = parity_meta["sample_runs"][run_name]
    prefix = f"sample/{run_name}/"
    schedule = run(LuminaVideoMSScheduleJSON, json.dumps(info["sample_config"]))[0]
    schedule = replace(schedule, steps=info["num_steps_grid_points"])
    network = NextDiT(NextDiTConfig.from_dict(parity_meta["tiny_config"]))
    network.load_state_dict(tiny_model.state_dict())
    patcher = native_model(network, schedule, "fp32")
    feats, mask = parity_ref[prefix + "cap_feats"], parity_ref[prefix + "cap_mask"]
    positive, negative = conditioning(feats[:1], mask[:1]), conditioning(feats[1:], mask[1:])
    z = parity_ref[prefix + "z"]

    class OfficialNoise:  # the fixture's own starting noise, in the model's scaled space
        seed = 0

        def generate_noise(self, latent):
            return z

    guider = run(LuminaVideoMSGuider, patcher, positive, negative, schedule)[0]
    zeros = {"samples": torch.zeros_like(z)}
    out = run(SamplerCustomAdvanced, OfficialNoise(), guider, run(KSamplerSelect, "euler")[0],
              run(LuminaVideoMSSigmas, schedule)[0], zeros)[0]["samples"]
    assert relative_error(out * SCALING_FACTOR, parity_ref[prefix + "final_pos"]) < 5e-4


def test_ksampler_runs_the_patch_pairs_of_the_attached_schedule(model, captions, latent):
    """Plain KSampler with a core scheduler: every call runs the patch pair the schedule gives t = 1 - sigma."""
    positive, negative = captions
    schedule = demo_schedule()
    scheduled = run(LuminaVideoMSModelSchedule, model, schedule)[0]
    seen, handles = patch_log(scheduled)
    try:
        (out,) = KSampler().sample(scheduled, 1, 6, 3.0, "euler", "simple", positive, negative, latent)
    finally:
        for handle in handles:
            handle.remove()
    sigmas = comfy.samplers.calculate_sigmas(scheduled.get_model_object("model_sampling"), "simple", 6)
    expected = []
    for sigma in sigmas[:-1].tolist():
        stage = next((s for s in schedule.stages if s.covers(1.0 - sigma)), schedule.stages[-1])
        expected += [f"{stage.patch_size}-{stage.f_patch_size}"]  # cond and uncond batch into one call
    assert seen == expected and len(set(seen)) > 1
    assert torch.isfinite(out["samples"]).all()
    assert scheduled.get_model_object("model_sampling").shift == schedule.shift


def test_ksampler_previews_every_latent_frame_with_the_demo_vae_map(model, captions, latent, monkeypatch):
    """Under a core sampler the preview is ComfyUI's latent2rgb through the model's latent format: the demo VAE's
    map (the demo model was loaded) over a 2 x 2 grid of the 4 latent frames of 4 x 4."""
    positive, negative = captions
    previews = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: previews.append(preview))
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    (out,) = KSampler().sample(model, 1, 3, 3.0, "euler", "simple", positive, negative, latent)
    kind, image, _ = previews[-1]
    assert len(previews) == 3 and kind == "JPEG" and image.size == (8, 8)
    # Euler's last x0 is the result: the image is the demo map of its grid (+-1 for uint8 rounding).
    rgb = DEMO_RGB.to_rgb(frame_grid(out["samples"] * SCALING_FACTOR))[0, :, 0].permute(1, 2, 0)
    expected = ((rgb + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).max() <= 1
    assert model.model.latent_format.latent_rgb_factors == [list(row) for row in DEMO_RGB.factors]


def test_a_checkpoints_latent_format_has_the_cogvideox_map_when_16_channels_wide(model, tiny_model):
    """A model not loaded as the demo samples CogVideoX latents: the real VAE's map; a model of another latent
    width (the parity fixture's tiny one) has none, so ComfyUI shows no latent2rgb preview for it."""
    network = model.model.diffusion_model
    schedule = network.default_schedule
    latent_format = native_model(network, schedule).model.latent_format
    assert latent_format.latent_rgb_factors == [list(row) for row in COGVIDEOX_RGB.factors]
    assert latent_format.latent_rgb_factors_bias == list(COGVIDEOX_RGB.bias)
    tiny = native_model(tiny_model, SampleConfig.preset("f16F64R512")).model.latent_format
    assert tiny.latent_channels == tiny_model.config.in_channels != 16 and tiny.latent_rgb_factors is None


def test_motion_travels_per_row_and_batches(model, captions, latent):
    """Positive and negative rows with their own time-aware motion batch into one call (the motion tensor is
    exact: int64 bits of float64), and a conditioning's own motion wins over the schedule's."""
    encoded = torch.cat([encode_motion((2.0, (0.05, 6.0))), encode_motion(None)])
    assert motion_at(encoded[:1], 0.0499).tolist() == [2.0] and motion_at(encoded[:1], 0.05).tolist() == [6.0]
    assert torch.isnan(motion_at(encoded[1:], 0.5)).all()
    positive, negative = captions
    own = run(LuminaVideoMSMotionConditioning, positive, 12.0, 1.0, 6.0)[0]
    schedule = demo_schedule()
    base = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 2)[0]["samples"]
    with_own = run(LuminaVideoMSSampler, model, own, negative, latent, schedule, 2)[0]["samples"]
    as_schedule = run(LuminaVideoMSSampler, model, positive, negative, latent,
                      replace(schedule, motion=12.0), 2)[0]["samples"]
    assert torch.equal(with_own, as_schedule) and not torch.equal(with_own, base)  # same numbers, same path
    core_own = core_sample(model, own, negative, schedule, latent, seed=2)["samples"]
    assert relative_error(core_own, with_own) < SAME_PATH_TOL


ROW_TOL = 1e-5
"""A row in a batch vs the same row alone (fp32, CPU): the same arithmetic over other batch shapes (measured
below 1e-6)."""


@pytest.mark.parametrize("sigmas", [(0.5, 0.3), (0.95, 0.3)], ids=["same-stage", "two-stages"])
def test_each_row_runs_at_its_own_sigma(model, captions, sigmas):
    """A batch whose rows carry different sigmas (ComfyUI's Train LoRA, or any batch_size > 1 training batch) runs
    each row at its own t, and at the patch pair the schedule gives that t (demo: t 0.05 -> 2x2, 0.5 and
    0.7 -> 1x1): each row equals that row run alone."""
    network = model.model.diffusion_model
    features, extras = captions[0][0]
    context, mask = features.repeat(2, 1, 1), extras["attention_mask"].repeat(2, 1)
    x = torch.randn((2, 16, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor(sigmas)
    batch = network(x, sigma, context, attention_mask=mask, transformer_options={})
    for row in range(2):
        alone = network(x[row:row + 1], sigma[row:row + 1], context[:1], attention_mask=mask[:1],
                        transformer_options={})
        assert relative_error(batch[row:row + 1], alone) < ROW_TOL, row


# -- what ComfyUI's model nodes do with it ---------------------------------------------------------------------
def lora_file(model, path, rank=4, scale=0.0, seed=0) -> dict:
    """A LoRA over every attention projection of the model, in `diffusion_model.` keys (how ComfyUI names
    model weights), up @ down = scale * random."""
    generator = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name, weight in model.model.diffusion_model.state_dict().items():
        if ".attention.w" in name and name.endswith(".weight"):
            key = "diffusion_model." + name[: -len(".weight")]
            up = torch.randn(weight.shape[0], rank, generator=generator) * scale
            down = torch.randn(rank, weight.shape[1], generator=generator) * 0.1
            tensors[key + ".lora_up.weight"], tensors[key + ".lora_down.weight"] = up, down
            deltas[name] = up @ down
    comfy.utils.save_torch_file(tensors, str(path))
    return deltas


def test_core_lora_loader_patches_the_model(model, captions, latent, tmp_path, monkeypatch):
    import folder_paths
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    positive, negative = captions
    schedule = demo_schedule(5)
    original = {name: weight.clone() for name, weight in model.model.diffusion_model.state_dict().items()}
    base = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 4)[0]["samples"]
    lora_file(model, tmp_path / "zero.safetensors", scale=0.0)
    deltas = lora_file(model, tmp_path / "random.safetensors", scale=0.05)
    (zero,) = LoraLoaderModelOnly().load_lora_model_only(model, "zero.safetensors", 1.0)
    (random,) = LoraLoaderModelOnly().load_lora_model_only(model, "random.safetensors", 1.0)
    assert len(random.patches) == len(deltas)  # every key mapped (none left as "lora key not loaded")
    zero_out = run(LuminaVideoMSSampler, zero, positive, negative, latent, schedule, 4)[0]["samples"]
    random_out = run(LuminaVideoMSSampler, random, positive, negative, latent, schedule, 4)[0]["samples"]
    assert torch.equal(zero_out, base)  # W + 0 = W exactly
    assert relative_error(random_out, base) > 1e-3
    by_hand = NextDiT(model.model.diffusion_model.config)
    by_hand.load_state_dict({k: v + deltas[k] if k in deltas else v for k, v in original.items()})
    by_hand_out = run(LuminaVideoMSSampler, native_model(by_hand, schedule), positive, negative, latent, schedule,
                      4)[0]["samples"]
    assert relative_error(random_out, by_hand_out) < 1e-5  # the same weights up to the order of two additions
    comfy.model_management.unload_all_models()


def test_easycache_and_context_windows_run_on_the_model(model, captions):
    positive, negative = captions
    schedule = demo_schedule(12)
    long_latent = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 48, 1)[0]  # 12 latent frames
    base = core_sample(model, positive, negative, schedule, long_latent, seed=5)["samples"]
    cached_model = run(EasyCacheNode, model, 0.2, 0.15, 0.95, False)[0]
    cached = core_sample(cached_model, positive, negative, schedule, long_latent, seed=5)["samples"]
    assert cached.shape == base.shape and torch.isfinite(cached).all()
    windowed_model = run(ContextWindowsManualNode, model, 4, 2, "standard_static", 1, False, "pyramid", 2, False)[0]
    seen, handles = patch_log(windowed_model)
    try:
        windowed = core_sample(windowed_model, positive, negative, schedule, long_latent, seed=5)["samples"]
    finally:
        for handle in handles:
            handle.remove()
    calls = len(schedule.model_calls())
    assert len(seen) > calls  # several windows per step
    assert windowed.shape == base.shape and torch.isfinite(windowed).all()
    assert relative_error(windowed, base) > 1e-4  # windows of 4 latent frames, not the whole clip at once


def test_torch_compile_node_compiles_the_model(model, captions):
    """TorchCompileModel (inductor, which on CPU builds C++ kernels) runs the model: the same latent as eager
    within float rounding of the fused kernels."""
    positive, negative = captions
    schedule = demo_schedule(3)
    small = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 8, 1)[0]
    compiled = run(TorchCompileModel, model, "inductor")[0]
    eager = core_sample(model, positive, negative, schedule, small, seed=6)["samples"]
    out = core_sample(compiled, positive, negative, schedule, small, seed=6)["samples"]
    assert relative_error(out, eager) < SAME_PATH_TOL


@pytest.fixture
def graph_counter(monkeypatch):
    """The graphs torch.compile compiles (TorchCompileModel's backend swapped for one that counts graphs and
    runs them eagerly: inductor is too slow for these tests)."""
    graphs = []

    def counting(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    original = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: original(*args, **{**kwargs, "backend": counting}))
    torch._dynamo.reset()
    yield graphs
    torch._dynamo.reset()
    comfy.model_management.unload_all_models()


GRAPHS_PER_SIZE = 4  # the demo schedule's patch pair and batch shapes: 2x2, 1x2, 1x1 with the negative row, 1x1


def test_torch_compile_node_compiles_once_per_patch_pair_and_batch(model, captions, graph_counter):
    """TorchCompileModel on the native MODEL: the run compiles at most one graph per patch pair and batch
    shape of the demo schedule, and a second run with another seed compiles nothing."""
    positive, negative = captions
    schedule = demo_schedule(8)
    small = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 8, 1)[0]
    compiled = run(TorchCompileModel, model, "inductor")[0]
    core_sample(compiled, positive, negative, schedule, small, seed=6)
    first = len(graph_counter)
    core_sample(compiled, positive, negative, schedule, small, seed=7)
    assert 1 <= first <= GRAPHS_PER_SIZE
    assert len(graph_counter) == first


def test_torch_compile_node_with_lora_strengths_and_fp8(model, captions, graph_counter, tmp_path, monkeypatch):
    """A LoRA on the compiled model, at two strengths, changes the weights and the video but compiles
    nothing (weights are graph inputs, not constants); fp8 weights compile their own graphs (another weight
    dtype) just as few, and a second fp8 run compiles nothing."""
    import folder_paths
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    positive, negative = captions
    schedule = demo_schedule(8)
    small = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 8, 1)[0]
    compiled = run(TorchCompileModel, model, "inductor")[0]
    base = core_sample(compiled, positive, negative, schedule, small, seed=6)["samples"]
    first = len(graph_counter)
    lora_file(model, tmp_path / "random.safetensors", scale=0.05)
    outs = [core_sample(LoraLoaderModelOnly().load_lora_model_only(compiled, "random.safetensors", strength)[0],
                        positive, negative, schedule, small, seed=6)["samples"] for strength in (0.5, 1.0)]
    assert len(graph_counter) == first
    assert relative_error(outs[0], base) > 1e-4 and relative_error(outs[1], outs[0]) > 1e-4
    fp8 = run(TorchCompileModel, run(LuminaVideoMSModelLoader, DEMO, "fp8_e4m3fn")[0], "inductor")[0]
    core_sample(fp8, positive, negative, schedule, small, seed=6)
    fp8_graphs = len(graph_counter) - first
    core_sample(fp8, positive, negative, schedule, small, seed=7)
    assert 1 <= fp8_graphs <= GRAPHS_PER_SIZE
    assert len(graph_counter) == first + fp8_graphs


def test_fp8_storage_halves_the_weights_and_stays_close(model, captions, latent):
    positive, negative = captions
    schedule = demo_schedule(6)
    loaded = {name: run(LuminaVideoMSModelLoader, DEMO, name)[0] for name in ("bf16", "fp8_e4m3fn", "fp32")}

    def linear_bytes(patcher):
        network = patcher.model.diffusion_model
        return sum(m.weight.numel() * m.weight.element_size() for m in network.modules()
                   if isinstance(m, torch.nn.Linear))

    assert linear_bytes(loaded["fp8_e4m3fn"]) * 2 == linear_bytes(loaded["bf16"])
    reference = run(LuminaVideoMSSampler, loaded["fp32"], positive, negative, latent, schedule, 1)[0]["samples"]
    fp8 = run(LuminaVideoMSSampler, loaded["fp8_e4m3fn"], positive, negative, latent, schedule, 1)[0]["samples"]
    # e4m3 keeps 3 mantissa bits (weights off by up to 6%); over 5 guided steps the latent moved by ~0.1 of its
    # largest value on the demo model: bound 0.3, while a wrong scale or a skipped cast gives ~1 or nan
    assert torch.isfinite(fp8).all() and relative_error(fp8, reference) < 0.3
    comfy.model_management.unload_all_models()


def test_partial_loading_below_the_model_size_gives_the_full_load_output(model, captions, latent):
    positive, negative = captions
    schedule = demo_schedule(4)
    full = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 9)[0]["samples"]
    partial = model.clone()
    size = partial.model_size()
    comfy.model_management.unload_all_models()
    partial.load(comfy.model_management.get_torch_device(), lowvram_model_memory=size // 3)
    streamed = [m for m in partial.model.modules() if getattr(m, "comfy_cast_weights", False)]
    assert partial.model.model_lowvram and streamed  # layers left to be cast in at each use
    network = partial.model.diffusion_model
    from lumina_video_pack.lumina_core.sampling import sample, seeded_noise
    from lumina_video_pack.nodes.sampler import caption_rows
    x = seeded_noise(latent["samples"].shape, 9)
    cond = caption_rows(positive, 1, network.config.cap_feat_dim, "positive")
    uncond = caption_rows(negative, 1, network.config.cap_feat_dim, "negative")
    out = sample(OfficialCall(network), x, cond, uncond, schedule) / SCALING_FACTOR
    partial.detach()
    # the same weights reach the same kernels, only later: equal up to float rounding of the casts (none in fp32)
    assert relative_error(out, full) < 1e-6


def test_vae_encode_gives_a_latent_for_video_to_video(model, captions):
    """VAE Encode turns frames into a raw LATENT that decodes back to them (the demo VAE's round trip, measured
    mean |diff| 0.04 of [0, 1]; a latent scaled twice or not at all decodes to garbage), and a core sampler at
    denoise < 1 stays nearer to it than a full denoise."""
    positive, negative = captions
    schedule = demo_schedule()
    vae = run(LuminaVideoMSVAELoader, DEMO, "default")[0]
    latent = run(LuminaVideoMSEmptyLatentVideo, "custom", 64, 64, 16, 1)[0]
    sampled = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 7)[0]
    frames = run(LuminaVideoMSVAEDecode, vae, sampled, "auto", 8.0)[0]
    encoded = run(LuminaVideoMSVAEEncode, vae, frames, "auto")[0]
    assert encoded["samples"].shape == sampled["samples"].shape == (1, 16, 4, 8, 8)
    again = run(LuminaVideoMSVAEDecode, vae, encoded, "auto", 8.0)[0]
    assert (again - frames).abs().mean() < 0.1
    scheduled = run(LuminaVideoMSModelSchedule, model, schedule)[0]
    light, full = (KSampler().sample(scheduled, 3, 8, 5.0, "euler", "simple", positive, negative, encoded,
                                     denoise=denoise)[0]["samples"] for denoise in (0.3, 1.0))
    assert relative_error(light, encoded["samples"]) < 0.5 * relative_error(full, encoded["samples"])
