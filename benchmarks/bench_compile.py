"""Benchmark (not a test): torch.compile of the transformer's blocks (``NextDiT.compile_blocks``), per patch
pair: the seconds the first call at a size takes (compiling), the graphs it compiles, the graphs a second call
at that size and a call at a new size compile, and the steady-state time of a compiled call against eager.

    OMP_NUM_THREADS=2 python benchmarks/bench_compile.py [--arch demo|2b] [--device cpu|cuda] [--regional]

``--arch demo``: the demo transformer (seeded random weights) at the demo video (64x64, 16 frames: latent
[2, 16, 4, 8, 8], batch 2 = the positive and negative rows); ``--arch 2b``: the official 2B_GQA architecture
with random bf16 weights at 1024x512, 32 frames (latent [2, 16, 8, 64, 128]), for a GPU. Each pair runs its
first call, a second call with other values (0 graphs expected), then ``--repeats`` eager and compiled calls
alternating (the ratio is the median of adjacent ratios, which cancels most drift of a shared machine), then
one call at the new size (frames, height, width and caption length changed; 0 graphs expected: the lengths
are marked dynamic).
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.demo import TRANSFORMER_CONFIG, seeded_transformer  # noqa: E402
from lumina_core.model import PRESETS, NextDiT  # noqa: E402

ARCHS = {  # latent [C, F, H, W] sizes: the first, then the new one; caption lengths likewise
    "demo": ((4, 8, 8), (8, 16, 12), (24, 31)),
    "2b": ((8, 64, 128), (12, 60, 104), (128, 100)),
}


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_inputs(model: NextDiT, size, caption_length: int, seed: int, device, dtype):
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(2, config.in_channels, *size, generator=gen).to(device, dtype)
    feats = torch.randn(2, caption_length, config.cap_feat_dim, generator=gen).to(device, dtype)
    mask = torch.ones(2, caption_length, dtype=torch.long, device=device)
    mask[1, caption_length // 2:] = 0  # the negative row's caption is shorter
    return x, torch.full((2,), 0.5, device=device), feats, mask, torch.tensor([6.0, 2.0], device=device)


def timed(model, inputs, pair, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(*inputs, *pair)
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--regional", action="store_true", help="compile block by block")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.arch == "demo":
        model, dtype = seeded_transformer().to(device), torch.float32
        pairs = TRANSFORMER_CONFIG.patch_pairs
    else:
        dtype = torch.bfloat16
        model = NextDiT(PRESETS["2B_GQA"], device=device, dtype=dtype).eval()
        pairs = PRESETS["2B_GQA"].patch_pairs
    first_size, new_size, (first_caption, new_caption) = ARCHS[args.arch]
    eager = copy.deepcopy(model)  # the same weights, never compiled
    model.compile_blocks(regional=args.regional, backend=args.backend)
    print(f"{args.arch} on {device} ({torch.get_num_threads()} threads), backend {args.backend}, "
          f"{'regional' if args.regional else 'whole'}; latent {first_size} then {new_size}")
    print("pair | compile s | graphs | 2nd call graphs | eager ms | compiled ms | compiled/eager | new size s | "
          "new size graphs")
    for seed, pair in enumerate(pairs):
        inputs = make_inputs(model, first_size, first_caption, seed, device, dtype)
        before = graphs()
        compile_seconds = timed(model, inputs, pair, device)
        compiled_graphs = graphs() - before
        before = graphs()
        timed(model, make_inputs(model, first_size, first_caption, seed + 100, device, dtype), pair, device)
        second_graphs = graphs() - before
        eager_times, compiled_times = [], []
        for _ in range(args.repeats):
            compiled_times.append(timed(model, inputs, pair, device))
            eager_times.append(timed(eager, inputs, pair, device))
        ratio = statistics.median(c / e for c, e in zip(compiled_times, eager_times))
        before = graphs()
        new_seconds = timed(model, make_inputs(model, new_size, new_caption, seed, device, dtype), pair, device)
        new_graphs = graphs() - before
        print(f"{pair[1]}x{pair[0]} | {compile_seconds:.1f} | {compiled_graphs} | {second_graphs} | "
              f"{1000 * statistics.median(eager_times):.1f} | {1000 * statistics.median(compiled_times):.1f} | "
              f"{ratio:.2f} | {new_seconds:.1f} | {new_graphs}", flush=True)


if __name__ == "__main__":
    main()
