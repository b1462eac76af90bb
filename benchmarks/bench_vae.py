"""Peak memory and time of a CogVideoX VAE decode with and without tiling (CPU, random weights).

    python benchmarks/bench_vae.py                                 # reduced width, 320x480 x 16 frames
    python benchmarks/bench_vae.py --latents 4 60 90               # reduced width, 480x720 x 16 frames
    python benchmarks/bench_vae.py --config 2b --latents 2 32 48   # real CogVideoX-2b config, 256x384

Each case (untiled, tiled) runs in its own child process so that its peak is its own. The peak
is the resident set size (psutil, sampled every 2 ms) above the level just before the decode;
the kernel's lifetime maximum (ru_maxrss) is printed as a cross-check. glibc keeps some freed
memory mapped, so RSS can exceed the live tensors; ``--live-rss`` makes every large allocation
its own mapping (MALLOC_MMAP_THRESHOLD_) so the peak tracks live memory, at some cost in time.
Weights are random (seed 0): only memory, time and how far tiling moves the output mean anything.
The decoder's peak is reached from the second 2-latent chunk on, so use T >= 4 for steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from diffusers import AutoencoderKLCogVideoX

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lumina_core.vae import COGVIDEOX_2B_VAE_CONFIG, decode, frame_count_for_latents

CONFIGS = {
    "2b": COGVIDEOX_2B_VAE_CONFIG,
    # Same depth, tile size and compression; a quarter of the width (1/16 of the FLOPs).
    "reduced": {**COGVIDEOX_2B_VAE_CONFIG, "block_out_channels": [32, 64, 64, 128]},
}


def timed_peak_rss(run: Callable[[], torch.Tensor], interval_s: float = 0.002) -> tuple[torch.Tensor, float, int, int]:
    """``run()``'s result, its seconds, the peak RSS above the start (bytes, sampled) and the start RSS."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss - baseline)
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        result = run()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return result, seconds, peak, baseline


def run_case(config: str, latent_shape: tuple[int, int, int], tiled: bool, out: Path) -> dict:
    """Build the VAE, decode once, save the frames to ``out``; return time and memory."""
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX.from_config(CONFIGS[config]).eval()
    latents = torch.randn(1, 16, *latent_shape, generator=torch.Generator().manual_seed(1))
    frames, seconds, peak, baseline = timed_peak_rss(lambda: decode(vae, latents, tiled=tiled))
    torch.save(frames, out)
    return {
        "seconds": seconds,
        "peak_mib": peak / 2**20,
        "rss_before_mib": baseline / 2**20,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(args: argparse.Namespace, tiled: bool, out: Path) -> dict:
    """Run one case in a fresh interpreter and parse the JSON line it prints."""
    command = [sys.executable, __file__, "--config", args.config, "--latents", *map(str, args.latents)]
    command += ["--threads", str(args.threads), "--case", "tiled" if tiled else "untiled", "--out", str(out)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"} if args.live_rss else None
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace) -> None:
    """Run untiled and tiled decodes in children and print the comparison."""
    latent_frames, height, width = args.latents
    widths = CONFIGS[args.config]["block_out_channels"]
    allocator = "MALLOC_MMAP_THRESHOLD_=65536 (live RSS)" if args.live_rss else "default glibc malloc"
    print(f"config {args.config} (block_out_channels {widths}), random weights, fp32, CPU")
    print(f"{args.threads} threads, {allocator}")
    print(
        f"latents [1,16,{latent_frames},{height},{width}] -> frames "
        f"[1,{frame_count_for_latents(latent_frames)},{8 * height},{8 * width},3]"
    )
    with tempfile.TemporaryDirectory() as folder:
        outputs = {tiled: Path(folder) / f"{tiled}.pt" for tiled in (False, True)}
        results = {tiled: run_child(args, tiled, outputs[tiled]) for tiled in (False, True)}
        difference = (torch.load(outputs[True]) - torch.load(outputs[False])).abs()
    for tiled, result in results.items():
        print(
            f"  {'tiled  ' if tiled else 'untiled'}  {result['seconds']:7.1f} s  peak +{result['peak_mib']:8.0f} MiB"
            f"  (rss before {result['rss_before_mib']:.0f} MiB, ru_maxrss {result['ru_maxrss_mib']:.0f} MiB)"
        )
    untiled, tiled = results[False], results[True]
    time_ratio, peak_ratio = tiled["seconds"] / untiled["seconds"], tiled["peak_mib"] / untiled["peak_mib"]
    print(f"  tiled/untiled: time x{time_ratio:.2f}, peak x{peak_ratio:.2f}")
    print(f"  untiled peak per latent pixel (h*w): {untiled['peak_mib'] / (height * width):.2f} MiB")
    print(f"  |tiled - untiled| on [0,1] frames: mean {difference.mean():.4f}, max {difference.max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="reduced")
    parser.add_argument("--latents", nargs=3, type=int, default=[4, 40, 60], metavar=("T", "h", "w"))
    parser.add_argument("--live-rss", action="store_true", help="large allocations via mmap: RSS = live memory")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--case", choices=["untiled", "tiled"], help="internal: run one case in this process")
    parser.add_argument("--out", type=Path, help="internal: where the child saves its frames")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case is None:
        report(args)
    else:
        print(json.dumps(run_case(args.config, tuple(args.latents), args.case == "tiled", args.out)))


if __name__ == "__main__":
    main()
