"""Benchmark (not a test): the cost model of lumina_core.parallel on paper, and its overhead measured here.

    python benchmarks/bench_parallel.py            # paper table (2B_GQA, 1248x704x96, f24F96R960-MultiScale)
    python benchmarks/bench_parallel.py --measure  # + CPU ratios: degree-1 path / sample, 2 gloo processes / sample

Paper model (no GPU here; every GPU number is an assumption, stated in docs/parallel.md): per model call
compute = FLOPs / (peak x MFU), communication = bytes per process / link bandwidth, no overlap of the two.
FLOPs per row: per layer 2 L (2 d^2 + 2 d kv + 3 d hidden) for the linears, 4 L^2 d for self-attention and
4 L Lc d for the caption attention. Bytes per process per call (bf16 activations):
- Ulysses degree U: 4 all-to-alls per layer (q, k, v, out), each sending (U-1)/U of this process's slice;
- ring degree R: per layer R-1 passes of this process's K and V block;
- the patch values gathered once after the final layer, and with cfg=2 one float32 velocity exchanged.
Guided calls with cfg=2 give each cfg rank one row; calls after the cfg truncation have one row, which
all processes share (ring degree R x 2).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumina_core.model import PRESETS  # noqa: E402
from lumina_core.parallel import ParallelPlan  # noqa: E402
from lumina_core.sampling import SampleConfig, guidance_at  # noqa: E402

PEAK_FLOPS = 989e12  # H100/H200 SXM dense bf16 (NVIDIA datasheet); the H200 has the H100's compute
MFU = 0.4  # assumed share of peak for long-sequence attention + GEMMs (FlashAttention-class kernels)
LINKS = {"NVLink": 450e9, "PCIe5": 64e9}  # bytes/s per direction: NVLink 4 (900 GB/s both ways), PCIe Gen5 x16
BYTES = 2  # bf16 activations
LATENT = (16, 24, 88, 156)  # 96 frames of 1248x704 (960p) through the CogVideoX VAE
CAPTION_TOKENS = 128
PLANS = ["cfg=2", "ulysses=2", "cfg=2,ulysses=2", "ulysses=4", "cfg=2,ulysses=4", "cfg=2,ulysses=2,ring=2"]


def tokens(stage) -> int:
    channels, frames, height, width = LATENT
    return frames // stage.f_patch_size * (height // stage.patch_size) * (width // stage.patch_size)


def row_flops(config, length: int) -> float:
    kv = config.kv_heads * config.head_dim
    d = config.dim
    per_layer = (2 * length * (2 * d * d + 2 * d * kv + 3 * d * config.swiglu_hidden_dim)
                 + 4 * length * length * d + 4 * length * CAPTION_TOKENS * d)
    return per_layer * config.n_layers


def comm_bytes(config, length: int, stage, ulysses: int, ring: int, rows: int) -> float:
    """Bytes one process sends in one call of ``rows`` rows split over ulysses x ring processes."""
    degree = ulysses * ring
    share = -(-length // degree)
    kv = max(config.kv_heads, ulysses) * config.head_dim  # KV heads repeated up to the Ulysses degree
    ulysses_bytes = (ulysses - 1) / ulysses * share * (2 * config.dim + 2 * kv) * BYTES
    ring_bytes = (ring - 1) * (ulysses * share) * 2 * kv // ulysses * BYTES
    gather = (degree - 1) / degree * length * stage.f_patch_size * stage.patch_size ** 2 * config.in_channels * BYTES
    return rows * (config.n_layers * (ulysses_bytes + ring_bytes) + gather)


def schedule_seconds(config, schedule, plan: ParallelPlan, bandwidth: float) -> tuple[float, float]:
    """(seconds, GB sent per process) of the schedule's model calls under ``plan``."""
    seconds = sent = 0.0
    for _, t, _, stage in schedule.model_calls():
        length = tokens(stage)
        guided = guidance_at(schedule, t)[0] > 0
        if guided and plan.cfg == 2:
            rows, ulysses, ring = 1, plan.ulysses, plan.ring
            extra = LATENT[0] * LATENT[1] * LATENT[2] * LATENT[3] * 4  # the velocity exchange (float32)
        else:
            rows, ulysses, ring = (2 if guided else 1), plan.ulysses, plan.ring * plan.cfg
            extra = 0.0
        compute = rows * row_flops(config, length) / (PEAK_FLOPS * MFU) / (ulysses * ring)
        moved = comm_bytes(config, length, stage, ulysses, ring, rows) + extra
        seconds += compute + moved / bandwidth
        sent += moved
    return seconds, sent / 1e9


def paper_table() -> str:
    config = PRESETS["2B_GQA"]
    schedule = SampleConfig.preset("f24F96R960-MultiScale")
    single, _ = schedule_seconds(config, schedule, ParallelPlan(), 1.0)
    lines = [f"2B_GQA, latent {LATENT} (1248x704, 96 frames), {schedule.name}: {len(schedule.model_calls())} calls; "
             f"1 GPU: {single:.0f} s at {PEAK_FLOPS / 1e12:.0f} TFLOP/s x MFU {MFU}",
             "", "| patch | tokens | guided calls | unguided calls | TFLOP per row |", "|---|---|---|---|---|"]
    for stage in schedule.stages:
        calls = [t for _, t, _, s in schedule.model_calls() if s == stage]
        guided = sum(guidance_at(schedule, t)[0] > 0 for t in calls)
        lines.append(f"| {stage.patch} | {tokens(stage)} | {guided} | {len(calls) - guided} | "
                     f"{row_flops(config, tokens(stage)) / 1e12:.0f} |")
    lines += ["", "| GPUs | plan | GB sent per GPU (schedule) | speed-up NVLink | speed-up PCIe5 |",
              "|---|---|---|---|---|"]
    for text in PLANS:
        plan = ParallelPlan.parse(text, 0)
        nvlink, sent = schedule_seconds(config, schedule, plan, LINKS["NVLink"])
        pcie, _ = schedule_seconds(config, schedule, plan, LINKS["PCIe5"])
        lines.append(f"| {plan.world_size} | {plan} | {sent:.1f} | {single / nvlink:.2f} | {single / pcie:.2f} |")
    return "\n".join(lines)


def demo_inputs():
    """The demo model, the demo schedule and fixed inputs (64x64, 16 frames) every measured run uses."""
    from lumina_core.demo import DEMO_SCHEDULE, build_transformer
    from lumina_core.sampling import seeded_noise

    gen = torch.Generator().manual_seed(0)
    cond = (torch.randn(1, 8, 64, generator=gen), torch.ones(1, 8, dtype=torch.long))
    uncond = (torch.randn(1, 8, 64, generator=gen), torch.ones(1, 8, dtype=torch.long))
    return (build_transformer().eval(), seeded_noise((1, 16, 4, 8, 8), 0), cond, uncond,
            SampleConfig.from_official(DEMO_SCHEDULE))


def best_seconds(run, repeats=3) -> float:
    """The shortest of ``repeats`` wall times of ``run()``."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def measure() -> str:
    """Wall-time ratios on this CPU with the demo model and the demo schedule (64x64, 16 frames)."""
    from lumina_core.parallel import parallel_sample
    from lumina_core.sampling import sample

    model, noise, cond, uncond, config = demo_inputs()
    plain = best_seconds(lambda: sample(model, noise, cond, uncond, config))
    degree_one = best_seconds(lambda: parallel_sample(model, noise, cond, uncond, config, ParallelPlan()))
    lines = [f"sample: {plain:.3f} s; parallel_sample at degree 1: {degree_one / plain:.3f} x"]
    for text in ("cfg=2", "ulysses=2", "ring=2"):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", __file__, "--worker", text], capture_output=True, text=True, timeout=600)
        seconds = float(result.stdout.strip().splitlines()[-1])
        lines.append(f"2 gloo processes, {text}: {seconds / plain:.2f} x sample's time")
    return "\n".join(lines)


def worker(text: str) -> None:
    """One rank of a measured 2-process run: prints the best of 3 sampling times on rank 0."""
    from lumina_core.parallel import init_process_group, parallel_sample

    rank, world_size = init_process_group()
    model, noise, cond, uncond, config = demo_inputs()
    plan = ParallelPlan.parse(text, world_size)
    seconds = best_seconds(lambda: parallel_sample(model, noise, cond, uncond, config, plan))
    if rank == 0:
        print(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="also time the CPU paths (a minute or two)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    print(paper_table())
    if args.measure:
        print()
        print(measure())


if __name__ == "__main__":
    main()
