"""A contact sheet of the demo model: six prompts (rows) x three motion scores (columns), each cell a strip
of frames of the generated clip (demo schedule, fixed seed).

    .venv/bin/python scripts/contact_sheet.py [--out docs/demo_contact_sheet.png] [--model step.safetensors]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eval_demo import Generator, add_component_args, load_components
from lumina_core import demo
from lumina_core.sampling import SampleConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("a red circle moving left", "a yellow square moving right", "a green triangle moving up",
           "a cyan circle moving down", "a blue triangle moving left quickly", "a magenta square standing still")
MOTIONS = (0.0, 6.0, 12.0)
FRAME_INDICES = (0, 5, 10, 15)
SCALE = 2  # pixels per frame pixel
LABEL_WIDTH = 240
HEADER = 28
GAP = 8
FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = 255
INK = (0, 0, 0)


def strip(frames: np.ndarray) -> np.ndarray:
    """The frames FRAME_INDICES side by side, enlarged SCALE times (nearest), with a 2 px white gap."""
    tiles = [cv2.resize(frames[i], None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST) for i in FRAME_INDICES]
    gap = np.full((tiles[0].shape[0], 2, 3), BACKGROUND, np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def sheet(cells: list[list[np.ndarray]], prompts, motions) -> np.ndarray:
    """RGB sheet of cells[row][column] strips, rows labelled with ``prompts``, columns with ``motions``."""
    cell_h, cell_w = cells[0][0].shape[:2]
    height = HEADER + len(cells) * (cell_h + GAP)
    width = LABEL_WIDTH + len(motions) * (cell_w + GAP)
    out = np.full((height, width, 3), BACKGROUND, np.uint8)
    for column, motion in enumerate(motions):
        x = LABEL_WIDTH + column * (cell_w + GAP)
        label = f"motion {motion:g}  (frames {', '.join(map(str, FRAME_INDICES))})"
        cv2.putText(out, label, (x, HEADER - 9), FONT, 0.55, INK, 1, cv2.LINE_AA)
    for row, (prompt, strips) in enumerate(zip(prompts, cells)):
        y = HEADER + row * (cell_h + GAP)
        cv2.putText(out, prompt, (6, y + cell_h // 2 + 5), FONT, 0.45, INK, 1, cv2.LINE_AA)
        for column, image in enumerate(strips):
            x = LABEL_WIDTH + column * (cell_w + GAP)
            out[y : y + cell_h, x : x + cell_w] = image
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo_contact_sheet.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", help="sample-config JSON (default: demo.DEMO_SCHEDULE)")
    add_component_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    generate = Generator(load_components(args))
    config = SampleConfig.from_official(args.schedule or demo.DEMO_SCHEDULE, name="demo")
    cells = [[strip(generate(prompt, args.seed, replace(config, motion=motion))) for motion in MOTIONS]
             for prompt in PROMPTS]
    image = sheet(cells, PROMPTS, MOTIONS)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {args.out}")
    print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
