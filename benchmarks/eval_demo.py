"""Evaluate the demo models: prompt adherence, motion control and multi-scale vs single-scale.

    .venv/bin/python benchmarks/eval_demo.py            # full table (a few minutes on 2 CPU cores)
    .venv/bin/python benchmarks/eval_demo.py --quick    # small version for CI (< 60 s)

Everything is measured on generated frames with the same tools as the training data:
- colour adherence: the colour whose hue most coloured pixels are nearest to (demo_data.shape_colour)
  equals the prompt's colour; direction adherence: the shape centroid's travel (shape_direction)
  matches the prompt's direction;
- motion control: Spearman rank correlation between the requested motion score and the motion
  score measured with optical flow (lumina_core.motion, the recipe used for the training labels),
  over all samples and over the per-level means;
- multi-scale vs single-scale: the demo schedule against the same step count on the finest
  patch only (1x1), same prompts and seeds: sampling time ratio and colour adherence difference.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumina_core import demo, demo_data
from lumina_core.pipeline import VideoRequest, check_request, initial_noise
from lumina_core.sampling import SampleConfig, sample
from lumina_core.schedule import Stage
from lumina_core.text import encode_prompts
from lumina_core.vae import decode

DIRECTIONS = ("left", "right", "up", "down")


def adherence_prompts(count: int) -> list[tuple[str, str, str]]:
    """(prompt, colour, direction) covering every colour and direction, shapes in turn."""
    combos = itertools.product(demo_data.COLOURS, DIRECTIONS)
    prompts = []
    for index, (colour, direction) in enumerate(itertools.islice(itertools.cycle(combos), count)):
        shape = demo_data.SHAPES[index % len(demo_data.SHAPES)]
        prompts.append((f"a {colour} {shape} moving {direction}", colour, direction))
    return prompts


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(values):
        values = np.asarray(values, dtype=np.float64)
        order = values.argsort(kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values))
        for value in np.unique(values):
            tied = values == value
            result[tied] = result[tied].mean()
        return result
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class Generator:
    """Generates frames with one set of demo components (as lumina_core.pipeline does), timing the
    sampling alone: prompt encoding and VAE decoding cost the same for every schedule."""

    def __init__(self, components: demo.DemoComponents):
        self.components = components
        self.sampling_seconds = 0.0

    def __call__(self, prompt: str, seed: int, config: SampleConfig) -> np.ndarray:
        c = self.components
        size = demo.DEMO_SIZE
        request = VideoRequest(prompt=prompt, width=size["width"], height=size["height"], frames=size["frames"],
                               seed=seed)
        check_request(c.transformer, request, config)
        feats, mask = encode_prompts(c.text_model, c.tokenizer, [request.prompt, request.negative_prompt])
        noise = initial_noise(request)
        start = time.perf_counter()
        latents = sample(c.transformer, noise, (feats[:1], mask[:1]), (feats[1:], mask[1:]), config)
        self.sampling_seconds += time.perf_counter() - start
        return decode(c.vae, latents)[0].numpy()


def evaluate_adherence(generate: Generator, prompts, config: SampleConfig, seed: int = 0) -> dict:
    colour_hits, direction_hits, none = 0, 0, 0
    for index, (prompt, colour, direction) in enumerate(prompts):
        frames = generate(prompt, seed + index, config)
        found = demo_data.shape_colour(frames)
        none += found is None
        colour_hits += found == colour
        direction_hits += demo_data.shape_direction(frames) == direction
    n = len(prompts)
    return {"colour": colour_hits / n, "direction": direction_hits / n, "no_shape": none / n, "n": n}


def evaluate_motion(generate: Generator, prompts: list[str], levels, seeds, config: SampleConfig) -> dict:
    requested, measured = [], []
    for prompt, level, seed in itertools.product(prompts, levels, seeds):
        frames = generate(prompt, seed, replace(config, motion=float(level)))
        requested.append(level)
        measured.append(demo_data.measured_motion((frames * 255).round().astype(np.uint8)))
    requested, measured = np.array(requested, dtype=float), np.array(measured)
    means = [measured[requested == level].mean() for level in levels]
    return {"spearman": spearman(requested, measured), "spearman_means": spearman(levels, means),
            "means": dict(zip(levels, means)), "n": len(requested)}


def single_scale(config: SampleConfig) -> SampleConfig:
    """The same schedule (steps, shift, guidance) on the finest patch pair only."""
    finest = min(config.stages, key=lambda s: (s.patch_size, s.f_patch_size))
    return replace(config, stages=(Stage(finest.patch_size, finest.f_patch_size, 0.0, 1.0),))


def load_components(args) -> demo.DemoComponents:
    components = demo.load_demo()
    if args.transformer is not None:
        from lumina_core.checkpoint import load_model

        components.transformer = load_model(args.transformer)
    if args.vae is not None:
        from lumina_core.vae import load_vae

        components.vae = load_vae(args.vae)
    return components


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small version for CI (< 60 s)")
    parser.add_argument("--transformer", type=Path, help="evaluate this transformer instead of the shipped one")
    parser.add_argument("--vae", type=Path, help="evaluate this VAE instead of the shipped one")
    parser.add_argument("--schedule", help="sample-config JSON (default: demo.DEMO_SCHEDULE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.transformer is None and not demo.DEMO_IS_TRAINED:
        print("note: no trained demo ships; evaluating the random stand-ins", file=sys.stderr)
    generate = Generator(load_components(args))
    config = SampleConfig.from_official(args.schedule or demo.DEMO_SCHEDULE, name="demo")

    count, levels, seeds = (6, (0, 3, 6, 9, 12), (0,)) if args.quick else (24, (0, 2, 4, 6, 8, 12), (0, 1, 2))
    motion_prompts = ["a red circle moving left", "a blue square moving right"][: 1 if args.quick else 2]
    prompts = adherence_prompts(count)

    start = time.perf_counter()
    generate.sampling_seconds = 0.0
    multi = evaluate_adherence(generate, prompts, config)
    multi_time = generate.sampling_seconds
    generate.sampling_seconds = 0.0
    single = evaluate_adherence(generate, prompts, single_scale(config))
    single_time = generate.sampling_seconds
    motion = evaluate_motion(generate, motion_prompts, levels, seeds, config)

    schedule = " -> ".join(f"{s.patch}@{s.t_start:g}" for s in config.stages)
    print(f"demo evaluation ({'quick' if args.quick else 'full'}; schedule {schedule}, {config.steps} steps, "
          f"cfg {config.cfg}, shift {config.shift})")
    print("| measure | multi-scale | single-scale (1x1) | target |")
    print("|---|---|---|---|")
    print(f"| colour adherence ({multi['n']} prompts) | {multi['colour']:.0%} | {single['colour']:.0%} | >= 80% |")
    print(f"| direction adherence ({multi['n']} prompts) | {multi['direction']:.0%} | {single['direction']:.0%} | |")
    print(f"| no shape found | {multi['no_shape']:.0%} | {single['no_shape']:.0%} | |")
    print(f"| sampling time ({multi['n']} clips) | {multi_time:.1f} s | {single_time:.1f} s | |")
    print(f"| time ratio multi / single | {multi_time / single_time:.2f} | 1 | paper: 0.34 |")
    print(f"| motion Spearman, all {motion['n']} samples | {motion['spearman']:.2f} | | >= 0.9 |")
    print(f"| motion Spearman, level means ({len(levels)} levels) | {motion['spearman_means']:.2f} | | >= 0.9 |")
    means = ", ".join(f"{level:g}->{value:.2f}" for level, value in motion["means"].items())
    print(f"\nmeasured motion per requested level (prompts {motion_prompts}, seeds {list(seeds)}): {means}")
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
