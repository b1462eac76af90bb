"""LoRA fine-tuning shown on the demo: teach the demo transformer a colour word its tokenizer knows but its
training never showed (purple or orange), and check that the trained colours stay right (docs/finetune.md).

    .venv/bin/python benchmarks/finetune_colour.py --colour purple --out out/purple --steps 3000

(the shipped lumina_core/demo/loras/lumina_video_demo_purple.safetensors is that run's LoRA).

1. Checks that the demo VAE can carry the colour at all: a rendered clip of it through encode and decode must
   keep saturated pixels (the demo VAE's encoder learned purple and orange in training/vae_colours.py; a VAE
   that returns the colour as grey leaves no LoRA a way to make it). Its hue after the round trip is the
   colour's centre below.
2. Renders a data folder with the demo's own procedural renderer (training/demo_data.py): ``--clips`` clips
   and ``--stills`` stills of the new colour, plus ``--others`` clips of the six trained colours (so the LoRA
   sees the old words too), each an .mp4/.png with its .txt caption.
3. Generates "a <colour> <shape> moving <direction>" for the new and every trained colour over ``--seeds``
   seeds with the demo models, and measures the mean hue of the coloured pixels and the nearest colour.
4. Runs ``python -m lumina_core finetune`` on the folder (in-process, same code path), then generates and
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
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumina_core import demo
from lumina_core.app import cli
from lumina_core.app.pipeline import VideoRequest, decode_frames, generate_latents
from lumina_core.lora import merge_lora
from lumina_core.sampling import SampleConfig
from lumina_core.vae import decode, encode
from lumina_core.video_io import write_mp4
from training import demo_data
from training.vae_colours import NEW_COLOURS, mean_hue

PROMPTS = [("red", "circle", "left"), ("blue", "square", "right"), ("green", "triangle", "up"),
           ("yellow", "circle", "down"), ("cyan", "square", "left"), ("magenta", "triangle", "right")]


def write_data(folder: Path, new: str, clips: int, stills: int, others: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    trained = list(demo_data.COLOURS)
    with mock.patch.dict(demo_data.COLOURS, {new: NEW_COLOURS[new]}):
        for index in range(clips + others):
            colour = new if index < clips else trained[index % len(trained)]
            spec = replace(demo_data.draw_spec(rng), colour=colour)
            write_mp4(folder / f"clip{index:03d}.mp4", demo_data.render(spec), fps=demo_data.FPS, crf=10)
            (folder / f"clip{index:03d}.txt").write_text(spec.caption)
        for index in range(stills):
            spec = replace(demo_data.draw_spec(rng, still_probability=1.0), colour=new)
            Image.fromarray(demo_data.render(spec, frames=1)[0]).save(folder / f"still{index:03d}.png")
            (folder / f"still{index:03d}.txt").write_text(spec.image_caption)


def vae_round_trip(vae, new: str):
    """Frames [F, H, W, 3] of a rendered still clip of the new colour after the demo VAE's encode and decode."""
    spec = replace(demo_data.draw_spec(np.random.default_rng(1), still_probability=1.0), colour=new)
    with mock.patch.dict(demo_data.COLOURS, {new: NEW_COLOURS[new]}):
        frames = torch.from_numpy(demo_data.render(spec)).float()[None] / 255
    return decode(vae, encode(vae, frames))[0].numpy()


def measure(model, parts, prompts, centres: dict) -> dict:
    """Per colour: the mean hue of each seed's video, the nearest colour centre, and how many were right."""
    config = SampleConfig.from_official(demo.DEMO_SCHEDULE, name="demo")
    table = {}
    for colour, shape, direction, seeds in prompts:
        rows = []
        for seed in range(seeds):
            request = VideoRequest(prompt=f"a {colour} {shape} moving {direction}", negative_prompt="", seed=seed)
            latents = generate_latents(model, parts.text_model, parts.tokenizer, request, config)
            hue = mean_hue(decode_frames(parts.vae, latents).numpy())
            nearest = "none" if math.isnan(hue) else min(
                centres, key=lambda name: abs((hue - centres[name] + 180) % 360 - 180))
            rows.append((hue, nearest))
        table[colour] = {"hues": [round(h, 1) for h, _ in rows], "nearest": [n for _, n in rows],
                         "right": sum(n == colour for _, n in rows)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--colour", choices=list(NEW_COLOURS), default="purple")
    parser.add_argument("--out", type=Path, default=Path("out/colour"))
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--stills", type=int, default=8)
    parser.add_argument("--others", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    parts = demo.load_demo()
    carried = mean_hue(vae_round_trip(parts.vae, args.colour))
    rgb = NEW_COLOURS[args.colour]
    print(f"{args.colour} {rgb} (hue {demo_data.hue_of(rgb):.0f}) through the demo VAE: hue {carried:.0f}"
          if not math.isnan(carried) else
          f"{args.colour} through the demo VAE comes back without saturated pixels: the demo VAE cannot carry it")
    if math.isnan(carried):
        return
    centres = {**demo_data.COLOUR_HUES, args.colour: carried}
    prompts = [(args.colour, "circle", "left", 2 * args.seeds)] + [(*prompt, args.seeds) for prompt in PROMPTS]
    data = args.out / "data"
    if not data.exists():
        write_data(data, args.colour, args.clips, args.stills, args.others)
    before = measure(parts.transformer, parts, prompts, centres)
    lora = args.out / f"{args.colour}.safetensors"
    began = time.monotonic()
    cli.main(["finetune", "--data", str(data), "--out", str(lora), "--steps", str(args.steps), "--minutes",
              str(args.minutes), "--lr", str(args.lr), "--rank", str(args.rank), "--resume"])
    seconds = time.monotonic() - began
    merge_lora(parts.transformer, lora)
    after = measure(parts.transformer, parts, prompts, centres)
    report = {"training_seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(), "settings": vars(args),
              "centres": centres, "before": before, "after": after}
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"finetune took {seconds:.0f} s; right colour (seeds) before -> after, hue centres {centres}:")
    for colour in before:
        print(f"  {colour:8s} {before[colour]['right']} -> {after[colour]['right']} of {len(before[colour]['hues'])}  "
              f"hues {before[colour]['hues']} -> {after[colour]['hues']}")


def peak_rss_mb() -> float:
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    main()
