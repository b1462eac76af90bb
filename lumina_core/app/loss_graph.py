"""A training run's loss as a picture: every step's loss as a dot in its patch pair's colour, each pair's running
mean as a line, on a linear axis from 0 to the largest loss (drawn with Pillow, which ComfyUI itself needs; no
plotting library)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 360
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 40, 36
WINDOW = 10  # steps of a patch pair its running mean covers
PAIR_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
"""RGB of the patch pairs in the model's order (then repeated)."""


def running_mean(values: Sequence[float], window: int = WINDOW) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    return [float((sums[i + 1] - sums[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window)))
            for i in range(len(values))]


def loss_graph(records: Sequence[tuple[int, str, float]], pairs: Sequence[str]) -> np.ndarray:
    """uint8 RGB [HEIGHT, WIDTH, 3] of ``records`` (step, patch pair "FxP", loss), with a legend of ``pairs``
    (the model's patch pairs, in its order) and each pair's last running mean."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    black, grey = (0, 0, 0), (200, 200, 200)
    last_step = max((step for step, _, _ in records), default=1)
    top_loss = max((loss for _, _, loss in records if np.isfinite(loss)), default=1.0) * 1.05 or 1.0

    def point(step: float, loss: float) -> tuple[int, int]:
        x = left + (right - left) * (step - 1) / max(1, last_step - 1)
        y = bottom - (bottom - top) * min(max(loss, 0.0), top_loss) / top_loss
        return round(x), round(y)

    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):  # horizontal grid with loss labels
        y = round(bottom - (bottom - top) * fraction)
        draw.line([(left, y), (right, y)], fill=grey)
        draw.text((4, y - 6), f"{top_loss * fraction:.2f}", fill=black, font=font)
    draw.line([(left, top), (left, bottom)], fill=black)
    draw.line([(left, bottom), (right, bottom)], fill=black)
    draw.text((left - 3, bottom + 6), "1", fill=black, font=font)
    draw.text((right - 60, bottom + 6), f"step {last_step}", fill=black, font=font)
    legend_x = left
    for index, pair in enumerate(pairs):
        colour = PAIR_COLOURS[index % len(PAIR_COLOURS)]
        steps = [(step, loss) for step, name, loss in records if name == pair and np.isfinite(loss)]
        for step, loss in steps:
            x, y = point(step, loss)
            draw.ellipse([(x - 2, y - 2), (x + 2, y + 2)], fill=colour)
        means = running_mean([loss for _, loss in steps])
        if len(steps) > 1:
            draw.line([point(step, mean) for (step, _), mean in zip(steps, means)], fill=colour, width=2)
        label = f"{pair}: {len(steps)} steps" + (f", mean {means[-1]:.3f}" if means else "")
        draw.ellipse([(legend_x, 11), (legend_x + 10, 21)], fill=colour)
        draw.text((legend_x + 14, 10), label, fill=black, font=font)
        legend_x += 14 + round(draw.textlength(label, font=font)) + 16
    draw.text((left, HEIGHT - 14), f"loss per step (dots) and mean of the last {WINDOW} (lines) per patch pair "
              "(f-patch x patch)", fill=black, font=font)
    return np.asarray(image).copy()
