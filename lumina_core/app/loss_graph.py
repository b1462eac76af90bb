"""A training run's loss as a picture: every step's loss as a dot in its patch pair's colour, each pair's running
mean as a line, on a linear axis from 0 to the largest loss (drawn with OpenCV, no plotting library)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

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
    image = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (200, 200, 200)
    last_step = max((step for step, _, _ in records), default=1)
    top_loss = max((loss for _, _, loss in records if np.isfinite(loss)), default=1.0) * 1.05 or 1.0

    def point(step: float, loss: float) -> tuple[int, int]:
        x = left + (right - left) * (step - 1) / max(1, last_step - 1)
        y = bottom - (bottom - top) * min(max(loss, 0.0), top_loss) / top_loss
        return round(x), round(y)

    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):  # horizontal grid with loss labels
        y = round(bottom - (bottom - top) * fraction)
        cv2.line(image, (left, y), (right, y), grey, 1)
        cv2.putText(image, f"{top_loss * fraction:.2f}", (4, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.line(image, (left, top), (left, bottom), black, 1)
    cv2.line(image, (left, bottom), (right, bottom), black, 1)
    cv2.putText(image, "1", (left - 3, bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(image, f"step {last_step}", (right - 60, bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    legend_x = left
    for index, pair in enumerate(pairs):
        colour = PAIR_COLOURS[index % len(PAIR_COLOURS)]
        steps = [(step, loss) for step, name, loss in records if name == pair and np.isfinite(loss)]
        for step, loss in steps:
            cv2.circle(image, point(step, loss), 2, colour, -1, cv2.LINE_AA)
        means = running_mean([loss for _, loss in steps])
        line = np.array([point(step, mean) for (step, _), mean in zip(steps, means)], dtype=np.int32)
        if len(line) > 1:
            cv2.polylines(image, [line], False, colour, 2, cv2.LINE_AA)
        label = f"{pair}: {len(steps)} steps" + (f", mean {means[-1]:.3f}" if means else "")
        cv2.circle(image, (legend_x + 5, 16), 5, colour, -1, cv2.LINE_AA)
        cv2.putText(image, label, (legend_x + 14, 20), font, 0.4, black, 1, cv2.LINE_AA)
        legend_x += 14 + cv2.getTextSize(label, font, 0.4, 1)[0][0] + 16
    cv2.putText(image, f"loss per step (dots) and mean of last {WINDOW} (lines) per patch pair (f-patch x patch)",
                (left, HEIGHT - 6), font, 0.35, black, 1, cv2.LINE_AA)
    return image
