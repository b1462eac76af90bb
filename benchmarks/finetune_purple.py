"""LoRA fine-tuning shown on the demo: teach the demo transformer a colour word its tokenizer knows but its
training never showed (purple), and check that the trained colours stay right (docs/finetune.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_purple.py --out out/purple --minutes 8

1. Renders a data folder with the demo's own procedural renderer (training/demo_data.py): ``--purple`` clips
   and ``--stills`` stills of a purple shape, plus ``--others`` clips of the six trained colours (so the LoRA
   sees the old words too), each an .mp4/.png with its .txt caption.
2. Generates "a <colour> <shape> moving <direction>" for purple and every trained colour over ``--seeds``
   seeds with the demo models, and measures the hue of the coloured pixels (demo_data's colour measure, with
   purple added to its hue table).
3. Runs ``python -m lumina_core finetune`` on the folder (in-process, same code path), then generates and
   measures again with the LoRA merged, and prints both tables and the training time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumina_core import demo
from lumina_core.app import cli
from lumina_core.app.pipeline import VideoRequest, decode_frames, generate_latents
from lumina_core.lora import merge_lora
from lumina_core.sampling import SampleConfig
from lumina_core.video_io import write_mp4
from training import demo_data

PURPLE = (0.55, 0.15, 0.90)  # hue 272: between blue (230) and magenta (304)
PROMPTS = [("purple", "circle", "left"), ("red", "circle", "left"), ("blue", "square", "right"),
           ("green", "triangle", "up"), ("yellow", "circle", "down"), ("cyan", "square", "left"),
           ("magenta", "triangle", "right")]


def write_data(folder: Path, purple: int, stills: int, others: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    trained = list(demo_data.COLOURS)
    with mock.patch.dict(demo_data.COLOURS, purple=PURPLE):
        for index in range(purple + others):
            colour = "purple" if index < purple else trained[index % len(trained)]
            spec = replace(demo_data.draw_spec(rng), colour=colour)
            write_mp4(folder / f"clip{index:03d}.mp4", demo_data.render(spec), fps=demo_data.FPS, crf=10)
            (folder / f"clip{index:03d}.txt").write_text(spec.caption)
        for index in range(stills):
            spec = replace(demo_data.draw_spec(rng, still_probability=1.0), colour="purple")
            Image.fromarray(demo_data.render(spec, frames=1)[0]).save(folder / f"still{index:03d}.png")
            (folder / f"still{index:03d}.txt").write_text(spec.image_caption)


def hue_table(frames) -> tuple[float, str]:
    """(circular mean hue in degrees, nearest colour name incl. purple) of the saturated pixels."""
    frames = np.asarray(frames, dtype=np.float32)
    pixels = frames[demo_data.shape_pixels(frames)]
    if len(pixels) < demo_data.MIN_SHAPE_PIXELS * len(frames):
        return math.nan, "none"
    hues = np.radians([demo_data.hue_of(p) for p in pixels[:: max(1, len(pixels) // 2000)]])
    mean = math.degrees(math.atan2(np.sin(hues).mean(), np.cos(hues).mean())) % 360
    centres = {**demo_data.COLOUR_HUES, "purple": demo_data.hue_of(PURPLE)}
    nearest = min(centres, key=lambda name: abs((mean - centres[name] + 180) % 360 - 180))
    return mean, nearest


def measure(model, parts, seeds: int) -> dict:
    config = SampleConfig.from_official(demo.DEMO_SCHEDULE, name="demo")
    table = {}
    for colour, shape, direction in PROMPTS:
        rows = []
        for seed in range(seeds):
            request = VideoRequest(prompt=f"a {colour} {shape} moving {direction}", negative_prompt="", seed=seed)
            latents = generate_latents(model, parts.text_model, parts.tokenizer, request, config)
            rows.append(hue_table(decode_frames(parts.vae, latents).numpy()))
        table[colour] = {"hues": [round(h, 1) for h, _ in rows], "nearest": [n for _, n in rows],
                         "right": sum(n == colour for _, n in rows)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/purple"))
    parser.add_argument("--purple", type=int, default=24)
    parser.add_argument("--stills", type=int, default=8)
    parser.add_argument("--others", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    data = args.out / "data"
    if not data.exists():
        write_data(data, args.purple, args.stills, args.others)
    parts = demo.load_demo()
    before = measure(parts.transformer, parts, args.seeds)
    lora = args.out / "purple.safetensors"
    began = time.monotonic()
    cli.main(["finetune", "--data", str(data), "--out", str(lora), "--steps", str(args.steps), "--minutes",
              str(args.minutes), "--lr", str(args.lr), "--rank", str(args.rank), "--resume"])
    seconds = time.monotonic() - began
    merge_lora(parts.transformer, lora)
    after = measure(parts.transformer, parts, args.seeds)
    report = {"training_seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(), "settings": vars(args),
              "before": before, "after": after}
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"finetune took {seconds:.0f} s; right colour (of {args.seeds} seeds) before -> after:")
    for colour in before:
        print(f"  {colour:8s} {before[colour]['right']} -> {after[colour]['right']}   hues {before[colour]['hues']} "
              f"-> {after[colour]['hues']}")


def peak_rss_mb() -> float:
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    main()
