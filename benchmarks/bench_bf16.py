"""Benchmark (not a test): whole sampling runs in bf16 against fp32 on CPU, time and error.

- Demo: the command line's path (``lumina_core.app.cli`` plan + load_components with ``--dtype fp32`` / ``bf16``,
  then text encoding + sampling, then VAE decode) at the demo size (64x64, 16 frames, demo schedule) for a few
  prompts. Error: relative L2 and max error of the final latents, PSNR of the decoded frames, against fp32.
- Parity config: the fixture's whole multi-scale sampling runs (tests/data/parity) with the official random
  weights, ours in fp32 and bf16, against our fp32 and the official fp32 result.

    python benchmarks/bench_bf16.py [--repeats 3] [--threads 2]

For forward passes per patch pair see bench_forward.py. Times are medians over ``--repeats`` runs, fp32 and bf16
alternating; a ratio is the median of the ratios of adjacent runs.
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.app import cli  # noqa: E402
from lumina_core.app.pipeline import generate_latents  # noqa: E402
from lumina_core.model import NextDiT, NextDiTConfig  # noqa: E402
from lumina_core.precision import native_bf16, resolve_dtype  # noqa: E402
from lumina_core.sampling import SampleConfig, sample  # noqa: E402
from lumina_core.vae import decode  # noqa: E402

PROMPTS = [("a red circle moving left", 0), ("a blue square moving up", 1), ("a yellow ball standing still", 2)]
DTYPES = ("fp32", "bf16")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


def relative_max(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (the parity tests' measure)."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """dB, frames in [0, 1]."""
    return (-10 * torch.log10(((frames.float() - reference.float()) ** 2).mean())).item()


def demo(repeats: int) -> None:
    components, plans = {}, {}
    for dtype in DTYPES:
        args = cli.build_parser().parse_args(["generate", "--prompt", "x", "--out", "unused.mp4", "--dtype", dtype])
        config, request, _ = cli.resolve_settings(args)
        components[dtype], plans[dtype] = cli.load_components(args), (config, request)
    print(f"\ndemo, command-line path ({plans['fp32'][1].width}x{plans['fp32'][1].height}, "
          f"{plans['fp32'][1].frames} frames, {plans['fp32'][0].steps} grid steps); errors against fp32")
    print(f"{'prompt':32} {'latent rel L2':>14} {'latent rel max':>15} {'frames PSNR dB':>15}")
    times = {(dtype, part): [] for dtype in DTYPES for part in ("sample", "decode")}
    for index, (prompt, seed) in enumerate(PROMPTS):
        results = {}
        for repeat in range(repeats if index == 0 else 1):
            for dtype in DTYPES:
                model, text_model, tokenizer, vae = components[dtype]
                config, request = plans[dtype]
                request = replace(request, prompt=prompt, seed=seed)
                seconds, latents = timed(partial(generate_latents, model, text_model, tokenizer, request, config))
                decode_seconds, frames = timed(partial(decode, vae, latents))
                if index == 0 and repeat > 0:  # the first run of each dtype warms up
                    times[dtype, "sample"].append(seconds)
                    times[dtype, "decode"].append(decode_seconds)
                results[dtype] = latents, frames[0].float()
        (latents, frames), (ref_latents, ref_frames) = results["bf16"], results["fp32"]
        print(f"{prompt:32} {relative_l2(latents, ref_latents):14.2e} {relative_max(latents, ref_latents):15.2e} "
              f"{psnr(frames, ref_frames):15.1f}")
    if repeats > 1:
        print(f"{'':10} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>10}   (median of {repeats - 1} runs)")
        for part in ("sample", "decode"):
            fp32, bf16 = times["fp32", part], times["bf16", part]
            ratio = statistics.median(b / a for a, b in zip(fp32, bf16))
            label = "text+sample" if part == "sample" else part
            print(f"{label:10} {statistics.median(fp32):8.3f} {statistics.median(bf16):8.3f} {ratio:10.2f}")


def parity(repeats: int) -> None:
    from safetensors.torch import load_file

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "parity"
    meta = json.loads((data / "tiny_ref.json").read_text())
    ref = load_file(data / "tiny_ref.safetensors")
    weights = load_file(data / "tiny_weights.safetensors")
    config = NextDiTConfig.from_dict(meta["tiny_config"])
    models = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        models[name] = NextDiT(config, dtype=dtype, init_weights=False).eval()
        models[name].load_state_dict(weights)
    print("\nparity tiny config, whole sampling runs of the fixture: bf16 against our fp32 and the official fp32")
    print(f"{'run':26} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>10} {'rel max vs fp32':>16} "
          f"{'rel max vs official':>20} {'fp32 vs official':>17}")
    for run, info in meta["sample_runs"].items():
        prefix = f"sample/{run}/"
        schedule = replace(SampleConfig.from_official(info["sample_config"]), steps=info["num_steps_grid_points"])
        feats, mask = ref[prefix + "cap_feats"], ref[prefix + "cap_mask"]
        fns = {name: partial(sample, model, ref[prefix + "z"], (feats[:1], mask[:1]), (feats[1:], mask[1:]), schedule)
               for name, model in models.items()}
        times = {name: [] for name in fns}
        finals = {name: fn() for name, fn in fns.items()}
        for _ in range(repeats):
            for name, fn in fns.items():
                times[name].append(timed(fn)[0])
        ratio = statistics.median(b / a for a, b in zip(times["fp32"], times["bf16"]))
        official = ref[prefix + "final_pos"]
        print(f"{run:26} {statistics.median(times['fp32']):8.3f} {statistics.median(times['bf16']):8.3f} "
              f"{ratio:10.2f} {relative_max(finals['bf16'], finals['fp32']):16.2e} "
              f"{relative_max(finals['bf16'], official):20.2e} {relative_max(finals['fp32'], official):17.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bf16 matrix instructions: "
          f"{native_bf16('cpu')} (--dtype auto = {resolve_dtype('auto', 'cpu')})")
    demo(args.repeats + 1)
    parity(args.repeats)


if __name__ == "__main__":
    main()
