"""Benchmark (not a test): schedules fitted to time budgets on the demo, and the cost of a draft.

1. Budget curve. The demo schedule's predicted sampling time P (from a calibration of this machine) sets the
   budgets P/8, P/4, P/2 and P (each twice the one before; one below the cheapest version is refused). For
   each: the fitted schedule (lumina_core.budget: same stages and switch points, fewer grid steps), its measured
   sampling wall and CPU time (median of --runs), its fine-patch (1x1) calls, and the PSNR of its decoded frames
   against the full schedule's. Printed beside it, the other knob at the same budget: the full grid kept and the
   switch points moved later (coarse stages take more of the grid) until the prediction fits.
2. Draft cost: the first stage's predicted clean clip decoded at 1/2 and 1/4 of the width and height
   (lumina_core.draft; 1/4 is the default), timed against the run it previews (sampling + final decode), with the
   final latent compared bit for bit to a run without a draft.

Timings on a shared machine are noisy: read the ratios and medians, run it again on a quiet machine.

    python benchmarks/bench_budget.py [--runs 3] [--seeds 3] [--threads 1] [--size 64] [--frames 16] [--steps 40]
"""

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.budget import BudgetTooSmall, fit_budget  # noqa: E402
from lumina_core.cost import calibrate, predict, predicted_seconds  # noqa: E402
from lumina_core.demo import DEMO_SCHEDULE, load_demo  # noqa: E402
from lumina_core.draft import FirstStageDraft, decode_draft  # noqa: E402
from lumina_core.sampling import SampleConfig, sample, seeded_noise  # noqa: E402
from lumina_core.schedule import Stage  # noqa: E402
from lumina_core.text import encode_prompts  # noqa: E402
from lumina_core.vae import decode  # noqa: E402

PROMPT = "a red circle moving left"


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    mse = torch.mean((frames - reference) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def later_switches(base: SampleConfig, costs, budget: float) -> SampleConfig | None:
    """The base grid with switch points t_k moved to 1 - (1 - t_k) * s for the largest s (in steps of 0.01) whose
    prediction fits the budget with a call left in every stage; None when none does."""
    for hundredths in range(100, 0, -1):
        scale = hundredths / 100
        bounds = [0.0] + [1 - (1 - stage.t_start) * scale for stage in base.stages[1:]] + [1.0]
        stages = tuple(Stage(s.patch_size, s.f_patch_size, a, b) for s, a, b in zip(base.stages, bounds, bounds[1:]))
        config = replace(base, stages=stages)
        if all(s.steps_on(config.grid()) for s in stages) and predicted_seconds(config, costs) <= budget:
            return config
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per schedule and per draft (median)")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds the PSNR is averaged over")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=0, help="grid steps of the base demo schedule (0: its own 20)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = load_demo()
    model, vae = demo.transformer, demo.vae
    feats, mask = encode_prompts(demo.text_model, demo.tokenizer, [PROMPT, ""])
    captions = ((feats[:1], mask[:1]), (feats[1:], mask[1:]))
    base = SampleConfig.from_official({**DEMO_SCHEDULE, "step": args.steps or DEMO_SCHEDULE["step"]}, name="demo")
    shape = (1, 16, args.frames // 4, args.size // 8, args.size // 8)
    noises = [seeded_noise(shape, seed) for seed in range(args.seeds)]
    costs = calibrate(model, shape, feats.shape[1], torch.device("cpu"))
    full = predicted_seconds(base, costs)
    fine = base.stages[-1]

    def median_seconds(run, *arguments):
        """Median wall and CPU seconds of --runs calls of run(*arguments), and its last result."""
        wall, cpu, result = [], [], None
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = run(*arguments)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return (statistics.median(wall), statistics.median(cpu)), result

    def frames_of(config):
        return [decode(vae, sample(model, noise, *captions, config))[0] for noise in noises]

    def mean_psnr(frames):
        return statistics.mean(psnr(f, r) for f, r in zip(frames, reference))

    sample(model, noises[0], *captions, base)  # warm-up: the first run pays one-time costs (allocator, RoPE tables)
    full_seconds, full_latent = median_seconds(sample, model, noises[0], *captions, base)
    reference = frames_of(base)
    print(f"demo {args.size}x{args.size}x{args.frames}, {torch.get_num_threads()} threads, {args.runs} runs (median), "
          f"PSNR against the full schedule averaged over {args.seeds} seeds; base: {base.steps} steps, "
          f"{len(base.model_calls())} calls, predicted {full:.3f} s, measured {full_seconds[0]:.3f} s wall, "
          f"{full_seconds[1]:.3f} s CPU")
    print(f"{'budget s':>8s} {'steps':>5s} {'calls':>5s} {'1x1 calls':>9s} {'predicted s':>11s} {'wall s':>7s} "
          f"{'CPU s':>6s} {'PSNR dB':>7s} | switch points moved later: {'switches':>10s} {'1x1 calls':>9s} "
          f"{'PSNR dB':>7s}")
    previous = None
    for share in (1 / 8, 1 / 4, 1 / 2, 1):
        budget = share * full
        try:
            plan = fit_budget(base, costs, budget)
        except BudgetTooSmall as refused:
            print(f"{budget:8.3f} refused: the cheapest version needs {refused.minimum:.3f} s")
            continue
        seconds = full_seconds if plan.config == base else median_seconds(sample, model, noises[0], *captions,
                                                                           plan.config)[0]
        quality = mean_psnr(frames_of(plan.config))
        calls = {s.stage: s.calls for s in plan.stages}
        other = later_switches(base, costs, budget)
        if other is None:
            alternative = "does not fit"
        else:
            other_calls = {s.stage.patch: s.calls for s in predict(other, costs)}
            switches = ",".join(f"{s.t_start:.2f}" for s in other.stages[1:])
            alternative = f"{switches:>10s} {other_calls[fine.patch]:9d} {mean_psnr(frames_of(other)):7.2f}"
        print(f"{budget:8.3f} {plan.config.steps:5d} {len(plan.config.model_calls()):5d} {calls[fine]:9d} "
              f"{plan.predicted:11.3f} {seconds[0]:7.3f} {seconds[1]:6.3f} {quality:7.2f} | {'':27s}{alternative}",
              flush=True)
        if previous is not None:
            print(f"{'':9s}budget {budget:.3f} s vs {budget / 2:.3f} s: wall time ratio "
                  f"{seconds[0] / previous[0]:.2f}, CPU time ratio {seconds[1] / previous[1]:.2f} (2 expected)")
        previous = seconds

    clean = []
    drafted = sample(model, noises[0], *captions, base,
                     callback=FirstStageDraft(base, lambda latent, info: clean.append(latent)))
    print(f"final latent bit-identical with and without a draft: {torch.equal(drafted, full_latent)}")
    final_decode = median_seconds(decode, vae, drafted)[0]
    run = [sampling + decoding for sampling, decoding in zip(full_seconds, final_decode)]
    print(f"the run a draft previews: sampling {full_seconds[0]:.3f} s + final decode {final_decode[0]:.3f} s wall "
          f"({run[1]:.3f} s CPU)")
    for scale in (2, 4):
        draft = median_seconds(decode_draft, vae, clean[0], scale)[0]
        print(f"draft at 1/{scale} width and height: {draft[0]:.3f} s wall = {100 * draft[0] / run[0]:.1f} % of the "
              f"run ({100 * draft[1] / run[1]:.1f} % in CPU time); {100 * draft[0] / full_seconds[0]:.1f} % of the "
              "sampling alone")


if __name__ == "__main__":
    main()
