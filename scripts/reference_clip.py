"""Writes example_workflows/motion_reference.mp4, the reference clip the motion-from-video and video-to-video
example workflows load: a red circle crossing a grey, lightly textured background from right to left, 256x256,
33 frames at 8 fps (4 s: every frame the motion-score recipe samples). Procedural and seeded, so the file is
the same on every run.

    .venv/bin/python scripts/reference_clip.py [--out example_workflows/motion_reference.mp4]

ComfyUI's Load Video lists the files in ComfyUI/input only: copy the clip there, or pick it with the node's
upload button (the workflows' notes say so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumina_core.motion import motion_score  # noqa: E402
from lumina_core.video_io import write_mp4  # noqa: E402

SIDE, FRAMES, FPS = 256, 33, 8
RADIUS, SPEED = 36, 5  # pixels; the circle moves SPEED px per frame (40 px per 0.5 s)
RED, GREY = (220, 40, 40), 120


def reference_frames() -> np.ndarray:
    """[FRAMES, SIDE, SIDE, 3] uint8: the circle over a fixed texture (a still background gives the flow a
    reference; the texture lets it see that the background stands still)."""
    rng = np.random.default_rng(0)
    background = np.clip(GREY + rng.normal(0, 12, (SIDE // 8, SIDE // 8, 1)), 0, 255)
    background = np.repeat(np.repeat(background, 8, 0), 8, 1).repeat(3, 2).astype(np.uint8)
    y, x = np.mgrid[:SIDE, :SIDE]
    frames = np.repeat(background[None], FRAMES, 0)
    for index, frame in enumerate(frames):
        centre = SIDE - RADIUS - 8 - SPEED * index
        frame[(x - centre) ** 2 + (y - SIDE // 2) ** 2 <= RADIUS**2] = RED
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "example_workflows" / "motion_reference.mp4")
    args = parser.parse_args()
    path = write_mp4(args.out, reference_frames(), fps=FPS)
    print(f"{path}: {path.stat().st_size} bytes, motion score {motion_score(path):.2f}")


if __name__ == "__main__":
    main()
