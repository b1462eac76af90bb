"""Benchmark (not a test): the cost model's predicted sampling time against the measured one.

For the demo model and a mid-size random Next-DiT (dim 512, 8 layers, the official patch pairs), each at
three sizes: calibrate (one warm-up, one timed guided and one timed unguided call per patch pair), predict the
schedule's sampling time, then time whole sampling runs and print measured / predicted (median of the runs).
Wall time is what the cost model predicts; on a busy shared machine it is inflated at random by the other
processes, so the same is also done with the process's CPU time (calibrated and measured with
time.process_time): with one thread that is the wall time a quiet machine would show. Read the ratios, and run
it again on a quiet machine.

    python benchmarks/bench_cost.py [--runs 3] [--threads 1] [--repeats 1] [--only demo|mid]
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.cost import calibrate, predict  # noqa: E402
from lumina_core.demo import DEMO_SCHEDULE, load_demo  # noqa: E402
from lumina_core.model import NextDiT, NextDiTConfig  # noqa: E402
from lumina_core.sampling import SampleConfig, sample  # noqa: E402
from lumina_core.text import encode_prompts  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
MID = NextDiTConfig(in_channels=16, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, cap_feat_dim=256)


def cases(only: str | None):
    """(name, model, latent shape, captions, schedule) of every measured case."""
    if only in (None, "demo"):
        demo = load_demo()
        feats, mask = encode_prompts(demo.text_model, demo.tokenizer, ["a red circle moving left", ""])
        captions = ((feats[:1], mask[:1]), (feats[1:], mask[1:]))
        schedule = SampleConfig.from_official(DEMO_SCHEDULE, name="demo")
        for frames, size in ((8, 32), (16, 64), (16, 128)):  # pixels: latent (frames / 4, size / 8, size / 8)
            yield f"demo {size}x{size}x{frames}", demo.transformer, (1, 16, frames // 4, size // 8, size // 8), \
                captions, schedule
    if only in (None, "mid"):
        torch.manual_seed(0)
        model = NextDiT(MID).eval()
        for param in model.parameters():  # the official init zeroes the outputs; randomise everything
            torch.nn.init.normal_(param, std=0.02)
        captions = ((torch.randn(1, 64, 256), torch.ones(1, 64, dtype=torch.long)),
                    (torch.randn(1, 64, 256), torch.ones(1, 64, dtype=torch.long)))
        schedule = replace(SampleConfig.preset("f16F64R512-MultiScale"), steps=12)
        for latent in ((1, 16, 4, 16, 16), (1, 16, 8, 16, 24), (1, 16, 8, 24, 32)):
            yield f"mid {'x'.join(map(str, latent[2:]))}", model, latent, captions, schedule


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed sampling runs per case (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", choices=["demo", "mid"])
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per patch pair and guidance (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, {args.repeats} timed call(s) per pair and guidance in the calibration, "
          f"{args.runs} sampling runs per case (median); ratio = measured / predicted")
    print(f"{'case':22s} {'clock':5s} {'calls':>5s} {'calibration s':>13s} {'predicted s':>11s} {'measured s':>10s} "
          f"{'ratio':>6s}  per-stage predicted s")
    for name, model, shape, captions, schedule in cases(args.only):
        start = time.perf_counter()
        costs = {clock: calibrate(model, shape, captions[0][0].shape[1], torch.device("cpu"), repeats=args.repeats,
                                  clock=CLOCKS[clock]) for clock in CLOCKS}
        calibration = (time.perf_counter() - start) / len(CLOCKS)
        predicted = {clock: predict(schedule, costs[clock]) for clock in CLOCKS}
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        runs = {clock: [] for clock in CLOCKS}
        for _ in range(args.runs):
            start = {clock: CLOCKS[clock]() for clock in CLOCKS}
            sample(model, noise, *captions, schedule)
            for clock in CLOCKS:
                runs[clock].append(CLOCKS[clock]() - start[clock])
        for clock in CLOCKS:
            total = sum(stage.seconds for stage in predicted[clock])
            measured = statistics.median(runs[clock])
            per_stage = " ".join(f"{s.stage.patch}:{s.seconds:.2f}" for s in predicted[clock])
            print(f"{name:22s} {clock:5s} {len(schedule.model_calls()):5d} {calibration:13.2f} {total:11.2f} "
                  f"{measured:10.2f} {measured / total:6.2f}  {per_stage}  "
                  f"(runs {', '.join(f'{r:.2f}' for r in runs[clock])})", flush=True)

if __name__ == "__main__":
    main()
