"""The pack's registry icon (pyproject's [tool.comfy] Icon): the multi-scale idea in one square. A grey frame is
cut into patches that get finer from top to bottom (coarse patches early in sampling, fine ones late), and a red
disc crosses it with a fading trail (the motion score), as in the demo's clips of one coloured shape.

    .venv/bin/python scripts/icon.py [--out docs/icon.png] [--size 256]

Drawn with numpy and Pillow from fixed numbers, so the file is the same on every run.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BANDS = (4, 8, 16)  # patches per side in the top, middle and bottom third: coarse to fine
RED = np.array([222, 52, 44], dtype=np.float64)
TRAIL = (0.12, 0.25, 0.45)  # opacity of the disc's earlier positions, oldest first


def draw(size: int) -> np.ndarray:
    """An RGB uint8 icon of ``size`` x ``size`` pixels."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.empty((size, size, 3))
    image[:] = 38 + 40 * (1 - y[..., None])  # dark grey, lighter at the top
    band = np.minimum((y * len(BANDS)).astype(int), len(BANDS) - 1)
    for index, patches in enumerate(BANDS):  # a checker of light and dark patches, one patch size per band
        shade = ((x * patches).astype(int) + (y * patches).astype(int)) % 2
        image[band == index] += (18 * shade)[band == index, None]
        edge = (np.minimum((x * patches) % 1, (y * patches) % 1) < 0.04 * patches / BANDS[-1])
        image[(band == index) & edge] = 24
    radius, centre_y = 0.2, 0.5
    for offset, opacity in zip((0.36, 0.27, 0.18), TRAIL):
        inside = (x - (0.5 - offset + 0.18)) ** 2 + (y - centre_y) ** 2 < radius**2
        image[inside] = (1 - opacity) * image[inside] + opacity * RED
    inside = (x - 0.68) ** 2 + (y - centre_y) ** 2 < radius**2
    image[inside] = RED
    return np.clip(image, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "icon.png")
    parser.add_argument("--size", type=int, default=256, help="pixels per side (the registry allows up to 400 high)")
    args = parser.parse_args()
    if not 16 <= args.size <= 400:
        raise SystemExit(f"--size {args.size} is outside 16..400; the registry shows icons up to 800 x 400 pixels")
    Image.fromarray(draw(args.size)).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.size} x {args.size})")


if __name__ == "__main__":
    main()
