"""Benchmark (not a test): the Lumina-Video Step Cache beside uncached sampling, ComfyUI's core EasyCache and
cache-dit's DBCache, on top of multi-scale sampling, for two schedules.

    COMFYUI_PATH=../shared/comfyui .venv/bin/python benchmarks/bench_cache.py [--threads 1]

- demo: the shipped demo model, its demo schedule (2x2 -> 1x2 -> 1x1, shift 3, cfg 4 then 0 from t = 0.8) at
  the official 70 grid points, its default size 64 x 64 x 16 frames; PSNR of the decoded frames (demo VAE).
- f16F64R512: the official f16F64R512-MultiScale schedule (2x4 -> 2x2 -> 1x2 at t = 0.075 and 0.3, 70 points,
  shift 8, cfg 12 then 0 from t = 0.4, negative motion 2 then 6 from t = 0.05) on a random mid-size Next-DiT
  (dim 256, 4 layers, the official patch pairs) over a [1, 16, 8, 32, 32] latent; PSNR of the latent (no VAE
  matches), peak = its value range. Random weights make a far smoother velocity than a trained model's, so the
  PSNR there says little about quality; the call counts and FLOP ratios show the schedule's structure.

Rows: uncached through lumina_core (the reference: what the command line and the pack's Sampler run) and through
ComfyUI's SamplerCustomAdvanced + Lumina-Video Guider + Sigmas + euler; the Step Cache at several thresholds
(lumina_core, = the Sampler with a Step Cache node or --cache) and once as the node under the core sampler; core
EasyCache at its defaults (0.2, start 0.15, end 0.95) under the same core sampler: as it is, with its input copied
(see copy_input), and started after the last patch switch (what its blindness to switches costs); cache-dit's
DBCache (F1B0: it always computes the first of the 4 blocks) when cache-dit is installed (`pip install cache-dit`;
not a dependency of the pack). Columns: calls that ran the model (cache-dit: partial calls in brackets), DiT FLOPs
of the run relative to uncached (FlopCounterMode per patch pair and row count, times the calls and blocks that
ran), wall time of the sampling, PSNR against the uncached lumina_core run, and "cross": calls answered from the
state of another patch pair (a reused coarse-patch difference after a switch).
"""

import argparse
import copy
import logging
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("COMFYUI_PATH") and (ROOT.parent / "shared" / "comfyui" / "main.py").is_file():
    os.environ["COMFYUI_PATH"] = str(ROOT.parent / "shared" / "comfyui")
sys.path.insert(0, str(ROOT / "tests"))
from comfy_pack import pack  # noqa: E402,F401  (boots ComfyUI in-process and imports the pack)

# isort: split
import comfy.patcher_extension  # noqa: E402
import comfy.utils  # noqa: E402
from comfy_extras.nodes_custom_sampler import KSamplerSelect, RandomNoise, SamplerCustomAdvanced  # noqa: E402
from comfy_extras.nodes_easycache import EasyCacheNode  # noqa: E402
from lumina_video_pack.lumina_core import demo  # noqa: E402
from lumina_video_pack.lumina_core.model import NextDiT, NextDiTConfig, compute_frames, patch_key  # noqa: E402
from lumina_video_pack.lumina_core.sampling import SampleConfig, guided_velocity, sample, seeded_noise  # noqa: E402
from lumina_video_pack.lumina_core.sizes import latent_shape  # noqa: E402
from lumina_video_pack.lumina_core.step_cache import StepCache  # noqa: E402
from lumina_video_pack.lumina_core.text import encode_prompts  # noqa: E402
from lumina_video_pack.lumina_core.vae import SCALING_FACTOR, decode  # noqa: E402
from lumina_video_pack.nodes.guidance import LuminaVideoMSGuider, LuminaVideoMSSigmas  # noqa: E402
from lumina_video_pack.nodes.native import native_model  # noqa: E402
from lumina_video_pack.nodes.step_cache import LuminaVideoMSStepCache  # noqa: E402
from lumina_video_pack.nodes.text import conditioning  # noqa: E402

THRESHOLDS = (0.1, 0.2, 0.5, 1.0)
NODE_THRESHOLD = 0.2
SEED = 7


def run(node, *args):
    return node.execute(*args).result


class Meter:
    """Per step of a run: which patch embedder ran with how many rows, and which blocks ran on how many tokens
    (hooks on a network). A step with no embedder call was answered by a cache."""

    def __init__(self, network):
        self.steps, self.current = [], []
        self.handles = [embedder.register_forward_pre_hook(
            lambda module, args, key=key: self.current.append(("embed", key, args[0].shape[0])))
            for key, embedder in network.all_x_embedder.items()]
        self.handles += [layer.register_forward_pre_hook(
            lambda module, args: self.current.append(("block", args[0].shape[0], args[0].shape[1])))
            for layer in network.layers]

    def close_step(self, *_):
        self.steps.append(self.current)
        self.current = []

    def remove(self):
        for handle in self.handles:
            handle.remove()


class FlopTable:
    """FLOPs of one call per (patch pair, rows): the blocks per (rows, tokens) and the rest (embedders, final layer,
    conditioning) per (patch pair, rows), counted once by FlopCounterMode."""

    def __init__(self, model, latent, cond, uncond, config):
        self.block, self.outside = {}, {}
        for stage in config.stages:
            for cfg in (1.0, 0.0):  # 2 rows (prompt + negative), then 1
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    guided_velocity(model, latent, stage.t_start, stage, cond, uncond, cfg, 6.0, 2.0, -1.0)
                counts = counter.get_flop_counts()
                per_block = sum(counts["NextDiT.layers.0"].values())
                rows = 2 if cfg else 1
                frames, height, width = latent.shape[2:]
                tokens = (compute_frames(frames, stage.f_patch_size) // stage.f_patch_size
                          * (height // stage.patch_size) * (width // stage.patch_size))
                self.block[(rows, tokens)] = per_block
                key = patch_key(stage.patch_size, stage.f_patch_size)
                self.outside[(key, rows)] = counter.get_total_flops() - per_block * len(model.layers)

    def of(self, steps) -> int:
        total = 0
        for events in steps:
            for kind, *what in events:
                total += self.outside[tuple(what)] if kind == "embed" else self.block[tuple(what)]
        return total


def tally(steps, config, n_layers) -> dict:
    """Full / partial calls and cross-switch answers of a run's steps."""
    full = partial = cross = 0
    last_pair = None
    for events, (_, _, _, stage) in zip(steps, config.model_calls()):
        pair = patch_key(stage.patch_size, stage.f_patch_size)
        blocks = sum(kind == "block" for kind, *_ in events)
        if blocks == n_layers:
            full += 1
            last_pair = pair
            continue
        partial += blocks > 0
        cross += last_pair != pair
    return {"full": full, "partial": partial, "cross": cross}


def psnr(actual: torch.Tensor, expected: torch.Tensor, peak: float) -> float:
    mse = ((actual.float() - expected.float()) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


class Case:
    """One model + schedule + inputs, and the runs on it."""

    def __init__(self, name, model, config, noise, cond, uncond, compare):
        self.name, self.model, self.config, self.noise = name, model.eval(), config, noise
        self.cond, self.uncond, self.compare = cond, uncond, compare  # compare(latent, reference) -> PSNR
        self.flops = FlopTable(self.model, noise, cond, uncond, config)
        self.patcher = native_model(self.model, config, "fp32")
        self.positive, self.negative = conditioning(*cond), conditioning(*uncond)
        self.rows, self.reference = [], None

    def lumina_core(self, label, cache=None, model=None):
        model = model or self.model
        meter = Meter(model)
        start = time.perf_counter()
        out = sample(model, self.noise, self.cond, self.uncond, self.config, callback=meter.close_step, cache=cache)
        self.add(label, out, time.perf_counter() - start, meter)

    def core(self, label, patcher):
        """SamplerCustomAdvanced(RandomNoise, Lumina-Video Guider, euler, Lumina-Video Sigmas) on the same seed."""
        meter = Meter(patcher.model.diffusion_model)
        meter.handles.append(patcher.model.diffusion_model.register_forward_pre_hook(
            lambda module, args: meter.close_step() if meter.current or meter.steps else None))
        guider = run(LuminaVideoMSGuider, patcher, self.positive, self.negative, self.config)[0]
        latent = {"samples": torch.zeros_like(self.noise)}
        start = time.perf_counter()
        out = run(SamplerCustomAdvanced, run(RandomNoise, SEED)[0], guider, run(KSamplerSelect, "euler")[0],
                  run(LuminaVideoMSSigmas, self.config)[0], latent)[0]["samples"] * SCALING_FACTOR
        seconds = time.perf_counter() - start
        meter.close_step()
        self.add(label, out, seconds, meter)

    def add(self, label, out, seconds, meter):
        meter.remove()
        counts = tally(meter.steps, self.config, len(self.model.layers))
        flops = self.flops.of(meter.steps)
        if self.reference is None:
            self.reference, self.reference_flops = out, flops
        quality = self.compare(out, self.reference)
        self.rows.append((label, counts, flops / self.reference_flops, seconds, quality))

    def print(self, psnr_of: str):
        calls = len(self.config.model_calls())
        print(f"\n{self.name}: {calls} grid steps; PSNR of {psnr_of} vs the uncached lumina_core run")
        print(f"| {'run':48s} | calls run | DiT FLOPs | FLOP saving | time s | PSNR dB | cross |")
        print(f"|{'-' * 50}|-----------|-----------|-------------|--------|---------|-------|")
        for label, counts, ratio, seconds, quality in self.rows:
            ran = f"{counts['full']}" + (f" (+{counts['partial']})" if counts["partial"] else "")
            print(f"| {label:48s} | {ran:>9s} | {ratio:9.3f} | {1 / ratio:10.2f}x | {seconds:6.1f} | "
                  f"{quality:7.1f} | {counts['cross']:5d} |")


def run_case(case: Case, cache_dit):
    case.lumina_core("uncached (lumina_core: CLI, pack Sampler)")
    case.core("uncached (core SamplerCustomAdvanced)", case.patcher)
    for threshold in THRESHOLDS:
        case.lumina_core(f"Step Cache {threshold} (lumina_core)", StepCache(threshold))
    cached = run(LuminaVideoMSStepCache, case.patcher, NODE_THRESHOLD, 0.0, 1.0)[0]
    case.core(f"Step Cache node {NODE_THRESHOLD} (core sampler)", cached)
    case.core("core EasyCache 0.2 / 0.15 / 0.95, as is", run(EasyCacheNode, case.patcher, 0.2, 0.15, 0.95, False)[0])
    copied = case.patcher.clone()
    copied.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "copy_input", copy_input)
    case.core("core EasyCache 0.2 / 0.15 / 0.95, input copied", run(EasyCacheNode, copied, 0.2, 0.15, 0.95, False)[0])
    start = after_last_switch(case.config)
    case.core(f"  same, from {start:.3f} (after the last switch)", run(EasyCacheNode, copied, 0.2, start, 0.95,
                                                                        False)[0])
    if cache_dit is not None:
        for label, settings in cache_dit_settings(cache_dit, len(case.config.model_calls())):
            model = copy.deepcopy(case.model)
            enable_cache_dit(cache_dit, model, *settings)
            case.lumina_core(label, model=model)


def copy_input(executor, x, *args, **kwargs):
    """Hands EasyCache (the next wrapper) a copy of x. Its skipped calls add the cached difference into x in place,
    and for flow models ComfyUI computes x0 = x - sigma * out from that same tensor when no dtype cast copied it
    (fp32 weights, as here): x0 then comes out as (1 - sigma) * out. With bf16 weights the cast copies x."""
    return executor(x.clone(), *args, **kwargs)


def after_last_switch(config: SampleConfig) -> float:
    """EasyCache's start_percent of the last stage's start: its percent p means sigma = shift(1 - p) (ComfyUI's
    percent_to_sigma for flow models), and sigma = 1 - t; rounded up to 3 decimals so it starts inside the stage."""
    sigma, shift = 1.0 - config.stages[-1].t_start, config.shift
    return math.ceil((1.0 - sigma / (shift - (shift - 1.0) * sigma)) * 1000) / 1000


def cache_dit_settings(cache_dit, calls):
    from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

    def config(threshold):
        return DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=threshold,
                             num_inference_steps=calls)

    taylor = TaylorSeerCalibratorConfig(taylorseer_order=1)
    return [("cache-dit DBCache F1B0 0.08 (its default)", (config(0.08), None)),
            ("cache-dit DBCache F1B0 0.2 + TaylorSeer 1", (config(0.2), taylor))]


def enable_cache_dit(cache_dit, model, cache_config, calibrator_config):
    """cache-dit on lumina_core's NextDiT: its blocks take (hidden states, *args) and return hidden states."""
    from cache_dit import BlockAdapter, ForwardPattern

    adapter = BlockAdapter(transformer=model, blocks=model.layers, forward_pattern=ForwardPattern.Pattern_3,
                           check_forward_pattern=False)
    cache_dit.enable_cache(adapter, cache_config=cache_config, calibrator_config=calibrator_config)


def demo_case() -> Case:
    components = demo.load_demo()
    config = replace(SampleConfig.from_official(demo.DEMO_SCHEDULE, name="demo"), steps=70)
    feats, mask = encode_prompts(components.text_model, components.tokenizer, ["a red circle moving left", ""])
    size = demo.DEMO_SIZE
    noise = seeded_noise(latent_shape(size["width"], size["height"], size["frames"]), SEED)
    vae = components.vae
    frames = {}

    def compare(latent, reference):
        if "reference" not in frames:
            frames["reference"] = decode(vae, reference)
        return psnr(decode(vae, latent), frames["reference"], 1.0)

    return Case("demo model, demo schedule at 70 points, 64x64x16", components.transformer, config, noise,
                (feats[:1], mask[:1]), (feats[1:], mask[1:]), compare)


def official_case() -> Case:
    torch.manual_seed(0)
    model = NextDiT(NextDiTConfig(in_channels=16, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, cap_feat_dim=256,
                                  multiple_of=64))
    for param in model.parameters():  # the official init zeroes the outputs; randomise everything
        torch.nn.init.normal_(param, std=0.02)
    generator = torch.Generator().manual_seed(1)
    cond = (torch.randn(1, 32, 256, generator=generator), torch.ones(1, 32, dtype=torch.long))
    uncond = (torch.randn(1, 8, 256, generator=generator), torch.ones(1, 8, dtype=torch.long))
    noise = seeded_noise((1, 16, 8, 32, 32), SEED)

    def compare(latent, reference):
        return psnr(latent, reference, (reference.max() - reference.min()).item())

    return Case("random dim-256 Next-DiT, official f16F64R512-MultiScale, latent 16x8x32x32", model,
                SampleConfig.preset("f16F64R512-MultiScale"), noise, cond, uncond, compare)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine 2 threads ran ~30x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.WARNING)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    try:
        import cache_dit
    except ImportError:
        cache_dit = None
        print("cache-dit is not installed: its rows are left out (pip install cache-dit to add them)")
    print(f"{torch.get_num_threads()} thread(s); StepCache thresholds {THRESHOLDS}")
    for make, psnr_of in ((demo_case, "decoded frames"), (official_case, "latents")):
        case = make()
        with torch.no_grad():
            run_case(case, cache_dit)
        case.print(psnr_of)


if __name__ == "__main__":
    main()
