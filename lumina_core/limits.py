"""The bounds on what a user gives the pack, in one place: the node widgets' limits, the schedule and size checks,
the command line and the server routes read them here, so every path accepts the same values.

JSON from a user (an official sample-config text, a route's request body) is read within a size and a nesting
depth, with finite numbers only: JSON has no NaN or Infinity (Python's reader accepts them, and reads 1e400 as
inf), and a schedule holding one samples nothing (a NaN time shift leaves no grid point in any stage, so the
sampler returns its noise).
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from typing import Any

MAX_STEPS = 1000  # time-grid points of a schedule (official 70, demo 20)
MAX_STAGES = 32  # patch stages of a schedule, and switch points of a time-aware value (official: 3 and 2)
MAX_SHIFT = 100.0  # time shift ts of the grid (official 8 and 24)
MIN_BUDGET_SECONDS = 0.01  # Schedule for Time Budget
MAX_BUDGET_SECONDS = 1e6
MAX_SIDE = 8192  # pixels of a video's width or height
MAX_FRAMES = 1025  # frames of a video (official 96)
MAX_BATCH = 64  # videos generated at once
MAX_TRAIN_STEPS = 100_000  # optimiser steps of one Train LoRA run
MAX_LORA_RANK = 256
MAX_LORA_ALPHA = 4096.0
MIN_LEARNING_RATE, MAX_LEARNING_RATE = 1e-6, 1.0
MAX_JSON_BYTES = 64 * 1024  # a schedule's JSON needs well under 1 KiB
MAX_JSON_DEPTH = 8  # lists and objects inside each other (a sample config needs 3, a route request 5)
FLOAT_DIGITS = 310  # a JSON integer with more characters is beyond the float range


def is_finite_number(value: Any) -> bool:
    """True for a real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def nesting_depth(text: str, limit: int) -> int:
    """How deep lists and objects nest in JSON text (brackets inside strings do not count); counting stops once
    it passes ``limit``."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def load_json(text: str | bytes, what: str) -> Any:
    """``text`` read as JSON within the limits: at most MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH deep,
    finite numbers only. Raises ``json.JSONDecodeError`` for text that is not JSON and ``ValueError``, naming
    ``what`` and the value, for one outside the limits."""
    size = len(text) if isinstance(text, bytes) else len(text.encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{what} is {size} bytes long; the limit is {MAX_JSON_BYTES} bytes (a schedule needs "
                         "well under 1 KiB)")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if nesting_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests lists and objects more than {MAX_JSON_DEPTH} deep; a schedule needs 3 "
                         "levels, a request to the pack's routes 5")

    def not_finite(number: str):
        shown = number if len(number) <= 24 else f"{number[:12]}... ({len(number)} characters)"
        raise ValueError(f"{what} holds {shown}, which is not a finite number; use finite numbers only")

    def finite_float(number: str) -> float:
        value = float(number)
        return value if math.isfinite(value) else not_finite(number)

    def finite_int(number: str) -> int:
        value = int(number) if len(number) <= FLOAT_DIGITS else None  # longer ones are beyond any float
        return value if value is not None and abs(value) <= sys.float_info.max else not_finite(number)

    return json.loads(text, parse_constant=not_finite, parse_float=finite_float, parse_int=finite_int)
