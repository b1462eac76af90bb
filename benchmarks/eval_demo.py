"""Evaluate the demo models against the demo's target table (docs/demo_training.md).

    .venv/bin/python benchmarks/eval_demo.py                    # full table (about 4 min on one CPU core)
    .venv/bin/python benchmarks/eval_demo.py --quick            # small counts for CI (~30 s)
    .venv/bin/python benchmarks/eval_demo.py --model out/demo/dit/transformer.safetensors --json eval.json

Every prompt set and seed is fixed, so two runs of one model give the same numbers. All measures
read generated frames (uint8 [F, H, W, 3]) with the tools that made the training data:
- motion: the optical-flow motion score of the training labels (demo_data.measured_motion);
- colour: the hue most coloured pixels are nearest to (demo_data.shape_colour); direction: the
  travel of the coloured pixels' centroid, first to last frame, dominant axis and sign
  (demo_data.shape_direction);
- shape: a nearest-centroid classifier on features of the colour mask's largest blob, fitted on
  procedural clips (its accuracy on held-out procedural frames is a row of the table), one vote
  per frame;
- temporal flicker as VBench defines it: (255 - mean |frame[i+1] - frame[i]|) / 255.

The reference table applies the same measures to procedural clips of the same prompts (ground
truth), raw and after a round trip through the demo VAE, to show what the measures give on real
data and what the VAE alone costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumina_core import demo
from lumina_core.app.pipeline import VideoRequest, check_request, initial_noise
from lumina_core.sampling import SampleConfig, sample
from lumina_core.schedule import Stage
from lumina_core.text import encode_prompts
from lumina_core.vae import decode, encode
from training import demo_data

ROOT = Path(__file__).resolve().parent.parent
DIRECTIONS = tuple(demo_data.DIRECTIONS)
NORMAL_SPEED = float(np.mean(demo_data.SPEEDS[""]))  # px per frame of the reference clips of "moving" prompts
GAPS = ((4.0, 4.0), (8.0, 2.0), (12.0, 0.0))  # (motion, negMotion) of the trend row: gaps 0, 6, 12
README_COMMAND = ["generate", "--prompt", "a red circle moving left", "--motion", "6", "--seed", "0"]
SEEDS = {"still": 0, "direction": 100, "motion": 200, "gap": 300, "classifier_fit": 10_000, "classifier_test": 20_000}


@dataclass(frozen=True)
class Counts:
    still: int  # "standing still" prompts at motion 0
    direction: int  # "moving <direction>" prompts (every colour x direction in turn)
    motion_clips: int  # prompt/seed pairs, each generated at every level
    levels: tuple  # requested motion scores
    speeds: tuple  # px per frame of the reference clips standing in for the levels
    gap_clips: int  # clips per (motion, negMotion) gap
    timing: int  # prompts sampled multi- and single-scale for the time ratio
    classifier_clips: int  # procedural clips to fit the shape classifier on (and as many held out)


FULL = Counts(still=6, direction=24, motion_clips=6, levels=(0, 2, 4, 6, 8, 12),
             speeds=(0.0, 0.6, 1.2, 1.8, 2.4, 3.0), gap_clips=6, timing=6, classifier_clips=90)
QUICK = Counts(still=1, direction=4, motion_clips=1, levels=(0, 6, 12), speeds=(0.0, 1.5, 3.0),
              gap_clips=1, timing=1, classifier_clips=12)


# -- measures: small pure functions of frames -------------------------------------------------------

def to_uint8(frames) -> np.ndarray:
    """uint8 frames from uint8 or float frames in [0, 1]."""
    frames = np.asarray(frames)
    return frames if frames.dtype == np.uint8 else (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def temporal_flicker(frames) -> float:
    """VBench's temporal flickering score: (255 - mean absolute difference of consecutive frames) / 255."""
    frames = to_uint8(frames).astype(np.float64)
    return float((255 - np.abs(np.diff(frames, axis=0)).mean()) / 255)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
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


def motion_control(levels, measured) -> dict:
    """Motion control of clips [N, L] measured at requested ``levels`` [L]: mean of the per-clip
    Spearman (a clip whose measured motion is constant counts 0: no control) and the Spearman of the
    level means."""
    measured = np.asarray(measured, dtype=np.float64)
    per_clip = np.nan_to_num([spearman(levels, row) for row in measured], nan=0.0)
    means = measured.mean(axis=0)
    return {"per_clip": float(per_clip.mean()), "level_means": spearman(levels, means),
            "means": [float(m) for m in means]}


def monotone_increasing(values) -> bool:
    """True when every value is larger than the one before (the trend check)."""
    return bool(np.all(np.diff(np.asarray(values, dtype=np.float64)) > 0))


def shape_features(mask: np.ndarray) -> np.ndarray | None:
    """Features of the largest blob of a bool mask [H, W]: bounding-box fill ratio, aspect (w / h),
    circularity 4 pi A / P^2, vertical skew (normalised moment nu03) and -log10 of the first Hu
    moment. None when the blob has fewer than demo_data.MIN_SHAPE_PIXELS pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    area = stats[largest, cv2.CC_STAT_AREA]
    if area < demo_data.MIN_SHAPE_PIXELS:
        return None
    blob = (labels == largest).astype(np.uint8)
    width, height = stats[largest, cv2.CC_STAT_WIDTH], stats[largest, cv2.CC_STAT_HEIGHT]
    moments = cv2.moments(blob, binaryImage=True)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = max(cv2.arcLength(max(contours, key=len), True), 1.0)
    hu1 = cv2.HuMoments(moments)[0, 0]
    return np.array([area / (width * height), width / height, 4 * np.pi * area / perimeter**2, moments["nu03"],
                     -np.log10(hu1)])


SHAPE_SCORES = ("shape", "shape_vae")


class ShapeClassifier:
    """Nearest class centroid of standardised shape_features; a clip gets its frames' majority vote."""

    def __init__(self, features: np.ndarray, labels):
        labels = np.asarray(labels)
        self.mean, self.std = features.mean(axis=0), features.std(axis=0) + 1e-9
        self.names = tuple(name for name in demo_data.SHAPES if (labels == name).any())
        scaled = (features - self.mean) / self.std
        self.centroids = np.stack([scaled[labels == name].mean(axis=0) for name in self.names])

    def predict(self, features: np.ndarray) -> list[str]:
        scaled = (np.atleast_2d(features) - self.mean) / self.std
        distance = ((scaled[:, None] - self.centroids[None]) ** 2).sum(axis=-1)
        return [self.names[index] for index in distance.argmin(axis=1)]

    def classify_clip(self, frames) -> str | None:
        """The most frequent shape over the frames that show one (None if none does)."""
        features = [f for f in map(shape_features, demo_data.shape_pixels(frames)) if f is not None]
        if not features:
            return None
        votes = self.predict(np.stack(features))
        return max(self.names, key=votes.count)


def procedural_frames(seeds, vae=None) -> tuple[np.ndarray, list[str]]:
    """shape_features and shape names of every frame (with a shape) of the training-data clips of ``seeds``;
    with ``vae``, of the clips after a VAE round trip (the shapes the demo pipeline can show at all)."""
    features, labels = [], []
    clips = [demo_data.make_clip(seed) for seed in seeds]
    if vae is not None:
        clips = list(zip(vae_round_trip(vae, [frames for frames, _ in clips]), (spec for _, spec in clips)))
    for frames, spec in clips:
        for mask in demo_data.shape_pixels(frames):
            values = shape_features(mask)
            if values is not None:
                features.append(values)
                labels.append(spec.shape)
    return np.stack(features), labels


def procedural_clip(colour: str, shape: str, direction: str, speed: float, seed: int) -> np.ndarray:
    """A training-style clip of one prompt: size, background and off-axis position drawn from ``seed``,
    the travel centred in the frame. ``direction`` is one of demo_data.DIRECTIONS or STILL."""
    base = demo_data.draw_spec(np.random.default_rng([seed, 3]), still_probability=1.0)
    step = demo_data.DIRECTIONS.get(direction, (0, 0))
    travel = speed * (demo_data.FRAMES - 1)
    start = tuple(centre if not axis else extent / 2 - axis * travel / 2
                  for centre, axis, extent in zip(base.start, step, (demo_data.WIDTH, demo_data.HEIGHT)))
    spec = replace(base, colour=colour, shape=shape, direction=direction, speed=speed, start=start)
    return demo_data.render(spec)


def shipped_mib(models_dir: Path, replacements: dict[str, Path | None]) -> float:
    """MiB of the demo files as they would ship: ``models_dir``'s files, with each entry name
    (a file or folder of ``models_dir``) replaced by the given path where one is given."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    total = 0
    for entry in models_dir.iterdir():
        total += size(replacements.get(entry.name) or entry)
    return total / 2**20


# -- generation -----------------------------------------------------------------------------------

class Generator:
    """Generates frames with one set of demo components (as lumina_core.app.pipeline does)."""

    def __init__(self, components: demo.DemoComponents):
        self.components = components

    def latents(self, prompt: str, seed: int, config: SampleConfig) -> tuple[torch.Tensor, float]:
        """The sampled latent and the seconds spent in the sampler alone (prompt encoding and VAE decoding
        cost the same for every schedule)."""
        c = self.components
        size = demo.DEMO_SIZE
        request = VideoRequest(prompt=prompt, width=size["width"], height=size["height"], frames=size["frames"],
                               seed=seed)
        check_request(c.transformer, request, config)
        feats, mask = encode_prompts(c.text_model, c.tokenizer, [request.prompt, request.negative_prompt])
        noise = initial_noise(request)
        start = time.perf_counter()
        latents = sample(c.transformer, noise, (feats[:1], mask[:1]), (feats[1:], mask[1:]), config)
        return latents, time.perf_counter() - start

    def __call__(self, prompt: str, seed: int, config: SampleConfig) -> np.ndarray:
        """uint8 frames [F, H, W, 3]."""
        return to_uint8(decode(self.components.vae, self.latents(prompt, seed, config)[0])[0].numpy())


def vae_round_trip(vae, clips: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """uint8 clips after encode -> decode through ``vae`` (lumina_core.vae), ``batch`` clips at a time."""
    out = []
    for start in range(0, len(clips), batch):
        frames = torch.from_numpy(np.stack(clips[start:start + batch])).float() / 255
        out += [to_uint8(clip) for clip in decode(vae, encode(vae, frames)).numpy()]
    return out


def single_scale(config: SampleConfig) -> SampleConfig:
    """The same schedule (steps, shift, guidance) on the finest patch pair only."""
    finest = min(config.stages, key=lambda s: (s.patch_size, s.f_patch_size))
    return replace(config, stages=(Stage(finest.patch_size, finest.f_patch_size, 0.0, 1.0),))


# -- prompt sets ----------------------------------------------------------------------------------

def prompt_set(count: int, still: bool = False) -> list[tuple[str, str, str, str]]:
    """(prompt, colour, shape, direction) of ``count`` prompts "a {colour} {shape} moving {direction}"
    (or "... standing still"): colours in turn, and over 24 prompts every colour with every direction
    and several shapes. No speed word: the motion score alone says how fast."""
    prompts = []
    for index in range(count):
        colour = list(demo_data.COLOURS)[index % len(demo_data.COLOURS)]
        shape = demo_data.SHAPES[(index + index // 6) % len(demo_data.SHAPES)]
        direction = demo_data.STILL if still else DIRECTIONS[(index + index // 6) % len(DIRECTIONS)]
        action = "standing still" if still else f"moving {direction}"
        prompts.append((f"a {colour} {shape} {action}", colour, shape, direction))
    return prompts


# -- evaluation -----------------------------------------------------------------------------------

def clip_scores(clips, prompts, classifiers: dict) -> dict:
    """Per-clip measures of clips made for ``prompts`` (prompt, colour, shape, direction); one shape
    score per classifier (key "shape": fitted on procedural frames, "shape_vae": on the same after
    the VAE round trip)."""
    return {
        "motion": [demo_data.measured_motion(clip) for clip in clips],
        "flicker": [temporal_flicker(clip) for clip in clips],
        "colour": [demo_data.shape_colour(clip) == p[1] for clip, p in zip(clips, prompts)],
        **{name: [classifier.classify_clip(clip) == p[2] for clip, p in zip(clips, prompts)]
           for name, classifier in classifiers.items()},
        "direction": [demo_data.shape_direction(clip) == p[3] for clip, p in zip(clips, prompts)],
    }


def summary(still: dict, moving: dict, control: dict) -> dict:
    """The table's adherence numbers from clip_scores of the still and the moving prompts."""
    return {"still_motion": float(np.mean(still["motion"])), "flicker": float(np.mean(still["flicker"])),
            "direction": float(np.mean(moving["direction"])),
            "colour": float(np.mean(still["colour"] + moving["colour"])),
            **{name: float(np.mean(still[name] + moving[name])) for name in SHAPE_SCORES if name in still},
            "spearman_clip": control["per_clip"], "spearman_means": control["level_means"]}


def evaluate_generated(generate: Generator, config: SampleConfig, counts: Counts, classifiers: dict,
                       log) -> dict:
    still_prompts, moving_prompts = prompt_set(counts.still, still=True), prompt_set(counts.direction)
    still_config = replace(config, motion=0.0)
    log(f"{len(still_prompts)} still + {len(moving_prompts)} moving prompts")
    still = [generate(p[0], SEEDS["still"] + i, still_config) for i, p in enumerate(still_prompts)]
    moving = [generate(p[0], SEEDS["direction"] + i, config) for i, p in enumerate(moving_prompts)]

    prompts = [p[0] for p in prompt_set(counts.motion_clips)]
    log(f"{len(prompts)} clips x levels {list(counts.levels)}")
    measured = [[demo_data.measured_motion(generate(prompt, SEEDS["motion"] + i, replace(config, motion=float(level))))
                 for level in counts.levels] for i, prompt in enumerate(prompts)]
    control = motion_control(counts.levels, measured)

    log(f"{counts.gap_clips} clips x gaps {list(GAPS)}")
    gap_motion = [float(np.mean([demo_data.measured_motion(
        generate(prompts[i % len(prompts)], SEEDS["gap"] + i, replace(config, motion=pos, neg_motion=neg)))
        for i in range(counts.gap_clips)])) for pos, neg in GAPS]

    log(f"time multi- vs single-scale on {counts.timing} prompts")
    timed = moving_prompts[: counts.timing]
    timing = [sum(generate.latents(p[0], SEEDS["direction"] + i, c)[1] for i, p in enumerate(timed))
              for c in (config, single_scale(config))]

    result = summary(clip_scores(still, still_prompts, classifiers), clip_scores(moving, moving_prompts, classifiers),
                     control)
    result.update(level_means=dict(zip(counts.levels, control["means"])), gap_motion=gap_motion,
                  gap_monotone=monotone_increasing(gap_motion), multi_seconds=timing[0], single_seconds=timing[1],
                  n_still=len(still), n_moving=len(moving), n_motion_clips=len(prompts))
    return result


def evaluate_reference(vae, counts: Counts, classifiers: dict) -> dict:
    """The generated clips' measures on procedural clips of the same prompts and seeds, raw and after
    the VAE; motion control with counts.speeds (px per frame) standing in for the levels."""
    still_prompts, moving_prompts = prompt_set(counts.still, still=True), prompt_set(counts.direction)
    still = [procedural_clip(c, s, d, 0.0, SEEDS["still"] + i) for i, (_, c, s, d) in enumerate(still_prompts)]
    moving = [procedural_clip(c, s, d, NORMAL_SPEED, SEEDS["direction"] + i)
              for i, (_, c, s, d) in enumerate(moving_prompts)]
    speeds = counts.speeds
    sweeps = [[procedural_clip(p[1], p[2], p[3], speed, SEEDS["motion"] + i) for speed in speeds]
              for i, p in enumerate(prompt_set(counts.motion_clips))]
    result = {"speeds": list(speeds)}
    for name, convert in (("raw", lambda clips: clips), ("vae", lambda clips: vae_round_trip(vae, clips))):
        measured = [[demo_data.measured_motion(clip) for clip in convert(sweep)] for sweep in sweeps]
        result[name] = summary(clip_scores(convert(still), still_prompts, classifiers),
                               clip_scores(convert(moving), moving_prompts, classifiers),
                               motion_control(speeds, measured))
    return result


def time_generate(args) -> float | None:
    """Wall seconds of the README's generate command as a subprocess (None if it fails)."""
    extra = [arg for flag, value in (("--model", args.model), ("--vae", args.vae),
                                     ("--text-encoder", args.text_encoder)) if value for arg in (flag, str(value))]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lumina_core", *README_COMMAND, "--out",
                               str(Path(folder) / "demo.mp4"), *extra], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        print(f"generate failed:\n{done.stderr}", file=sys.stderr)
        return None
    return seconds


# -- table ----------------------------------------------------------------------------------------

def row(measure: str, value, target: str, passed, shown: str) -> dict:
    return {"measure": measure, "value": value, "target": target, "pass": passed, "shown": shown}


def table_rows(g: dict, classifier_accuracy: dict, generate_seconds, size_mib: float, counts: Counts) -> list[dict]:
    def pct(value):
        return f"{value:.0%}"
    levels = ", ".join(f"{level:g}: {value:.1f}" for level, value in g["level_means"].items())
    gaps = ", ".join(f"({pos:g},{neg:g}): {value:.1f}" for (pos, neg), value in zip(GAPS, g["gap_motion"]))
    n_adherence = g["n_still"] + g["n_moving"]
    ratio = g["multi_seconds"] / g["single_seconds"]
    rows = [
        row(f"measured motion of still prompts at motion 0 (mean, {g['n_still']} clips)", g["still_motion"], "< 2",
            g["still_motion"] < 2, f"{g['still_motion']:.2f}"),
        row(f"motion Spearman per clip (mean of {g['n_motion_clips']} clips x {len(counts.levels)} levels)",
            g["spearman_clip"], ">= 0.9", g["spearman_clip"] >= 0.9, f"{g['spearman_clip']:.2f}"),
        row(f"motion Spearman over level means (means {levels})", g["spearman_means"], ">= 0.9",
            g["spearman_means"] >= 0.9, f"{g['spearman_means']:.2f}"),
        row(f"direction adherence ({g['n_moving']} moving prompts)", g["direction"], ">= 75%",
            g["direction"] >= 0.75, pct(g["direction"])),
        row("shape classifier on held-out procedural frames", classifier_accuracy["shape"], ">= 95%",
            classifier_accuracy["shape"] >= 0.95, pct(classifier_accuracy["shape"])),
        row(f"shape adherence ({n_adherence} clips), classifier fitted on procedural frames", g["shape"], ">= 75%",
            g["shape"] >= 0.75, pct(g["shape"])),
        row("shape classifier fitted on VAE round trips, on held-out round-trip clips (per clip)",
            classifier_accuracy["shape_vae"], "(the ceiling)", None, pct(classifier_accuracy["shape_vae"])),
        row(f"shape adherence ({n_adherence} clips), classifier fitted on VAE round trips", g["shape_vae"],
            ">= 75%", g["shape_vae"] >= 0.75, pct(g["shape_vae"])),
        row(f"colour adherence ({n_adherence} clips)", g["colour"], ">= 95%", g["colour"] >= 0.95, pct(g["colour"])),
        row(f"temporal flicker of still prompts ({g['n_still']} clips)", g["flicker"], ">= 0.98",
            g["flicker"] >= 0.98, f"{g['flicker']:.3f}"),
        row(f"motion per (motion, negMotion) gap: {gaps}", g["gap_motion"], "monotone", g["gap_monotone"],
            "monotone" if g["gap_monotone"] else "not monotone"),
        row("README generate command, wall", generate_seconds, "< 60 s",
            None if generate_seconds is None else generate_seconds < 60,
            "skipped" if generate_seconds is None else f"{generate_seconds:.1f} s"),
        row("demo files as shipped", size_mib, "<= 40 MiB", size_mib <= 40, f"{size_mib:.1f} MiB"),
        row(f"sampling time multi / single-scale (1x1), {counts.timing} prompts", ratio, "(paper 0.34)", None,
            f"{g['multi_seconds']:.1f} s / {g['single_seconds']:.1f} s = {ratio:.2f}"),
    ]
    return rows


def print_tables(rows: list[dict], reference: dict, header: str) -> None:
    print(header)
    print("| measure | value | target | pass |")
    print("|---|---|---|---|")
    for r in rows:
        verdict = "" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        print(f"| {r['measure']} | {r['shown']} | {r['target']} | {verdict} |")
    raw, vae = reference["raw"], reference["vae"]
    print("\nreference: the same measures on procedural clips of the same prompts and seeds "
          f"(motion control: speeds {reference['speeds']} px/frame as the levels)")
    print("| measure | procedural clips | after demo VAE round trip |")
    print("|---|---|---|")
    for key, label, fmt in (("still_motion", "measured motion of still clips (mean)", "{:.2f}"),
                            ("spearman_clip", "motion Spearman per clip (mean)", "{:.2f}"),
                            ("spearman_means", "motion Spearman over level means", "{:.2f}"),
                            ("direction", "direction adherence", "{:.0%}"),
                            ("shape", "shape adherence (classifier fitted on procedural frames)", "{:.0%}"),
                            ("shape_vae", "shape adherence (classifier fitted on VAE round trips)", "{:.0%}"),
                            ("colour", "colour adherence", "{:.0%}"), ("flicker", "temporal flicker of still clips",
                                                                        "{:.3f}")):
        print(f"| {label} | {fmt.format(raw[key])} | {fmt.format(vae[key])} |")


# -- command line ---------------------------------------------------------------------------------

def add_component_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="transformer .safetensors to evaluate (default: the shipped demo)")
    parser.add_argument("--vae", type=Path, help="VAE .safetensors (default: the shipped demo VAE)")
    parser.add_argument("--text-encoder", type=Path, help="text encoder folder with its tokenizer (default: demo's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, which follows OMP_NUM_THREADS)")


def load_components(args) -> demo.DemoComponents:
    components = demo.load_demo()
    if args.model is not None:
        from lumina_core.checkpoint import load_model

        components.transformer = load_model(args.model)
    if args.vae is not None:
        from lumina_core.vae import load_vae

        components.vae = load_vae(args.vae)
    if args.text_encoder is not None:
        from lumina_core.text import load_text_encoder

        components.text_model, components.tokenizer = load_text_encoder(args.text_encoder)
    return components


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts for CI (~30 s); skips the generate timing")
    parser.add_argument("--json", type=Path, help="also write the tables and details to this JSON file")
    parser.add_argument("--schedule", help="sample-config JSON (default: demo.DEMO_SCHEDULE)")
    add_component_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:5.1f} s] {message}", file=sys.stderr, flush=True)

    if args.model is None and not demo.DEMO_IS_TRAINED:
        print("note: no trained demo ships; evaluating the random stand-ins", file=sys.stderr)
    counts = QUICK if args.quick else FULL
    components = load_components(args)
    generate = Generator(components)
    config = SampleConfig.from_official(args.schedule or demo.DEMO_SCHEDULE, name="demo")

    log(f"fitting the shape classifier on {counts.classifier_clips} procedural clips")
    fit = range(SEEDS["classifier_fit"], SEEDS["classifier_fit"] + counts.classifier_clips)
    test = range(SEEDS["classifier_test"], SEEDS["classifier_test"] + counts.classifier_clips)
    classifiers = {"shape": ShapeClassifier(*procedural_frames(fit)),
                   "shape_vae": ShapeClassifier(*procedural_frames(fit, components.vae))}
    test_features, test_labels = procedural_frames(test)
    held_out = [demo_data.make_clip(seed) for seed in test]
    classifier_accuracy = {
        "shape": float(np.mean(np.array(classifiers["shape"].predict(test_features)) == np.array(test_labels))),
        "shape_vae": float(np.mean([classifiers["shape_vae"].classify_clip(clip) == spec.shape for clip, spec in
                                    zip(vae_round_trip(components.vae, [c for c, _ in held_out]),
                                        (spec for _, spec in held_out))]))}

    generated = evaluate_generated(generate, config, counts, classifiers, log)
    log("reference clips")
    reference = evaluate_reference(components.vae, counts, classifiers)
    if args.quick:
        generate_seconds = None
    else:
        log("README generate command")
        generate_seconds = time_generate(args)
    size_mib = shipped_mib(demo.MODELS_DIR, {demo.TRANSFORMER_FILE: args.model, demo.VAE_FILE: args.vae,
                                             demo.TEXT_ENCODER_DIR: args.text_encoder})
    rows = table_rows(generated, classifier_accuracy, generate_seconds, size_mib, counts)

    schedule = " -> ".join(f"{s.patch}@{s.t_start:g}" for s in config.stages)
    model = args.model or demo.MODELS_DIR / demo.TRANSFORMER_FILE
    header = (f"demo evaluation ({'quick' if args.quick else 'full'}; model {model}; schedule {schedule}, "
              f"{config.steps} steps, cfg {config.cfg}, shift {config.shift}; motion {config.motion}, "
              f"negMotion {config.neg_motion}; still prompts at motion 0)")
    print_tables(rows, reference, header)
    seconds = time.perf_counter() - start
    print(f"\neval wall time {seconds:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "mode": "quick" if args.quick else "full", "model": str(model), "schedule": config.to_official(),
            "rows": rows, "reference": reference, "generated": generated, "seeds": SEEDS,
            "gaps": [list(gap) for gap in GAPS], "wall_seconds": seconds}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
