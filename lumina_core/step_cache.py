"""Step cache: skip model calls whose output is predicted to change little, safe across patch switches.

The decision is EasyCache's (Zhou et al. 2025, arXiv 2507.02860; ComfyUI's core EasyCache node): between two
real calls the output changes about k times as much as the input (k, the *transformation rate*, is measured on
the last two real calls), so each later call adds k * |x - x_last| / |out_last| to an accumulated relative
change; while that stays under the threshold the call is skipped. A skipped call returns a first-order
extrapolation in t of the last two real outputs (out_last + (t - t_last) * slope) rather than EasyCache's cached
output-minus-input difference: along a flow-matching trajectory the velocity drifts smoothly in t, and the
slope follows the drift (benchmarks/bench_cache.py compares the two on the same schedules).

Multi-scale sampling changes the function being cached: at a patch switch the model runs another embedder on
another token grid, and guidance values (cfg truncation, a motion switch) change what the guided output is.
So every call names its *segment* (stage and phase); when a segment changes, the estimate and the cached
outputs are dropped, and the first two calls of every segment are real (they give the slope and k again).
Independent streams of calls (the guided call of the sampler; each set of prompt rows, or context window, of
a ComfyUI model) keep separate state under their own key, so dropping the negative row after cfg truncation
starts a fresh stream instead of breaking one.

Outputs are compared with mean absolute values (L1), as EasyCache does. ``t`` may be any time coordinate
linear in the model's (official t or sigma = 1 - t); the extrapolation does not depend on which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import torch

MAX_THRESHOLD = 2.0
"""Far past the useful range (0.1-0.5): near it only the two calls that start each stage still run the model."""


def mean_abs(x: torch.Tensor) -> float:
    return x.abs().mean().item()


@dataclass
class _Stream:
    """What one stream of calls remembers within its current segment."""

    segment: tuple
    t: Optional[float] = None
    x: Optional[torch.Tensor] = None  # input of the last real call (float32 copy)
    out: Optional[torch.Tensor] = None  # its output (float32 copy)
    slope: Optional[torch.Tensor] = None  # d out / d t between the last two real calls
    rate: Optional[float] = None  # |out change| / |x change| between the last two real calls
    accumulated: float = 0.0
    dtype: Optional[torch.dtype] = None

    def predict(self, t: float, x: torch.Tensor, threshold: float) -> Optional[torch.Tensor]:
        """The extrapolated output when the accumulated predicted change stays under the threshold, else None
        (the caller must then compute the call)."""
        if self.slope is None or self.rate is None:
            return None
        scale = mean_abs(self.out)
        change = self.rate * mean_abs(x.float() - self.x) / scale if scale > 0 else float("inf")
        self.accumulated += change
        if not self.accumulated < threshold:
            return None
        return (self.out + (t - self.t) * self.slope).to(self.dtype)

    def record(self, t: float, x: torch.Tensor, out: torch.Tensor) -> None:
        x, out32 = x.to(torch.float32, copy=True), out.to(torch.float32, copy=True)
        if self.t is not None:
            step, moved = t - self.t, mean_abs(x - self.x)
            self.slope = (out32 - self.out) / step if step != 0 else None
            self.rate = mean_abs(out32 - self.out) / moved if moved > 0 else None
        self.t, self.x, self.out, self.dtype = t, x, out32, out.dtype
        self.accumulated = 0.0


@dataclass
class StageCount:
    calls: int = 0
    skipped: int = 0


@dataclass
class StepCache:
    """Decides, call by call, whether to run the model or reuse an extrapolation of its last outputs.

    ``threshold``: accumulated predicted relative output change allowed before a real call, 0 (never skip) to
    MAX_THRESHOLD; 0.1-0.5 is the useful range (see benchmarks/bench_cache.py). Calls at t outside
    [start, end] (official t: 0 = noise, 1 = data) are never skipped. One object holds one sampling run's
    state: start each run with ``fresh()``.
    """

    threshold: float
    start: float = 0.0
    end: float = 1.0
    counts: dict[str, StageCount] = field(default_factory=dict, init=False, repr=False)
    _streams: dict[Hashable, _Stream] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.threshold <= MAX_THRESHOLD:
            raise ValueError(f"step cache threshold {self.threshold} is outside [0, {MAX_THRESHOLD}]; use 0 (no "
                             "skipping) up to about 0.5 (0.1-0.5 skip half to three quarters of the demo's calls)")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"step cache range start {self.start}, end {self.end} is not 0 <= start <= end <= 1; "
                             "give official times t (0 = noise, 1 = data), e.g. start 0, end 1 for the whole run")

    def fresh(self) -> "StepCache":
        """The same settings with no state: what each sampling run starts from."""
        return StepCache(self.threshold, self.start, self.end)

    def __call__(self, key: Hashable, stage: str, t: float, x: torch.Tensor, compute: Callable[[], torch.Tensor],
                 phase: tuple = ()) -> torch.Tensor:
        """The output of one model call: ``compute()`` or a prediction of it.

        ``key`` names the stream of calls (one trajectory of one set of rows), ``stage`` the patch pair (counted
        per stage), ``phase`` any further values whose change makes a different function (guidance, motion);
        a change of stage or phase starts the stream over.
        """
        segment = (stage, phase)
        stream = self._streams.get(key)
        if stream is None or stream.segment != segment:
            stream = self._streams[key] = _Stream(segment)
        count = self.counts.setdefault(stage, StageCount())
        count.calls += 1
        if self.start <= t <= self.end:
            predicted = stream.predict(t, x, self.threshold)
            if predicted is not None:
                count.skipped += 1
                return predicted
        out = compute()
        stream.record(t, x, out)
        return out

    @property
    def skipped(self) -> int:
        return sum(count.skipped for count in self.counts.values())

    def summary(self) -> str:
        """E.g. "skipped 30 of 69 model calls (2x2 5/17, 1x2 12/29, 1x1 13/23)"."""
        calls = sum(count.calls for count in self.counts.values())
        stages = ", ".join(f"{stage} {count.skipped}/{count.calls}" for stage, count in self.counts.items())
        return f"skipped {self.skipped} of {calls} model calls ({stages})"
