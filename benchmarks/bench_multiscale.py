"""Benchmark (not a test): multi-scale patch schedule vs single-scale (1x2) sampling on CPU.

Runs the same number of grid steps with the official multi-scale schedule (patches 2x4 -> 2x2 ->
1x2 at the preset's thresholds) and with 1x2 throughout, on a randomly initialised mid-size
Next-DiT, and prints the wall-time ratio beside the FLOP ratio (FLOPs counted by torch's
FlopCounterMode on one guided call per stage; matmuls and attention).

    python benchmarks/bench_multiscale.py [--preset f16F64R512-MultiScale] [--steps 20] [--frames 12 --size 32]

Default: dim 512, 8 layers, 8 heads (4 KV), caption 32 tokens of width 256, latent
[1, 16, 12, 32, 32] (12 latent frames, not 13, because the 2x4 and 2x2 stages need a frame count
divisible by the f-patch size 2).
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.model import NextDiT, NextDiTConfig  # noqa: E402
from lumina_core.sampling import OFFICIAL_PRESETS, SampleConfig, guided_velocity, sample  # noqa: E402


def stage_flops(model, latent, cond, uncond, config) -> list[tuple[str, int, int]]:
    """(patch, calls, FLOPs per guided call) for every stage of a config."""
    rows = []
    grid = config.grid()
    for stage in config.stages:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            guided_velocity(model, latent, stage.t_start, stage, cond, uncond, 1.0, 6.0, 2.0, -1)
        rows.append((stage.patch, stage.steps_on(grid), counter.get_total_flops()))
    return rows


def timed_sample(model, latent, cond, uncond, config) -> float:
    start = time.perf_counter()
    sample(model, latent, cond, uncond, config)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="f16F64R512-MultiScale",
                        choices=[k for k in OFFICIAL_PRESETS if k.endswith("-MultiScale")])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=12, help="latent frames")
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = NextDiTConfig(in_channels=16, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, cap_feat_dim=256)
    model = NextDiT(config).eval()
    for param in model.parameters():  # the official init zeroes the outputs; randomise everything
        torch.nn.init.normal_(param, std=0.02)
    latent = torch.randn(1, 16, args.frames, args.size, args.size)
    cond = (torch.randn(1, 32, 256), torch.ones(1, 32, dtype=torch.long))
    uncond = (torch.randn(1, 8, 256), torch.ones(1, 8, dtype=torch.long))

    multi = replace(SampleConfig.preset(args.preset), steps=args.steps)
    single = replace(SampleConfig.preset(args.preset.removesuffix("-MultiScale")), steps=args.steps)
    print(f"model dim 512, 8 layers; latent {list(latent.shape)}; {args.steps - 1} calls; "
          f"{torch.get_num_threads()} threads; preset {args.preset}")

    flops = {}
    for name, cfg in (("multi-scale", multi), ("single-scale", single)):
        rows = stage_flops(model, latent, cond, uncond, cfg)
        flops[name] = sum(calls * per_call for _, calls, per_call in rows)
        for patch, calls, per_call in rows:
            print(f"  {name:12s} stage {patch}: {calls:3d} calls x {per_call / 1e9:8.1f} GFLOP")

    timed_sample(model, latent, cond, uncond, replace(single, steps=2))  # warm-up
    seconds = {name: timed_sample(model, latent, cond, uncond, cfg)
               for name, cfg in (("multi-scale", multi), ("single-scale", single))}
    print(f"single-scale: {seconds['single-scale']:.1f} s, {flops['single-scale'] / 1e12:.2f} TFLOP")
    print(f"multi-scale:  {seconds['multi-scale']:.1f} s, {flops['multi-scale'] / 1e12:.2f} TFLOP")
    print(f"time ratio multi/single  {seconds['multi-scale'] / seconds['single-scale']:.3f}")
    print(f"FLOP ratio multi/single  {flops['multi-scale'] / flops['single-scale']:.3f}")


if __name__ == "__main__":
    main()
