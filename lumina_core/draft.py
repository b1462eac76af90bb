"""Drafts: a cheap look at the whole clip as soon as the first (coarse) stage of a schedule ends, while the
fine stages still run.

At the first stage's last model call the sampler knows x (the latent at t) and the guided velocity v, so the
clean latent it predicts is x + (1 - t) v (one Euler step to t = 1). The draft decodes that latent with the
same VAE, every latent frame, but spatially averaged down by ``scale`` first: the default 4 leaves 1/16 of the
pixels to decode, frames at a quarter of the width and height (1248x704 -> 312x176). Measured on the demo
(benchmarks/bench_budget.py, docs/compute_budget.md), scale 2 cost about 10 % of the run it previews
(sampling + final decode), scale 4 a few percent. A draft only reads the sampler's tensors, so the final video
is bit for bit the one made without it.

A schedule of one stage has no draft: its first stage ends with the final video.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .sampling import SampleConfig
from .vae import SCALING_FACTOR, decode

DRAFT_SCALE = 4


def predicted_clean(info: dict) -> torch.Tensor:
    """The clean latent a sampler callback's step predicts: x + (1 - t) v (float32, a new tensor)."""
    return info["x"].float() + (1.0 - info["t"]) * info["velocity"].float()


def draft_latent(latent: torch.Tensor, scale: int = DRAFT_SCALE) -> torch.Tensor:
    """[B, C, T, h, w] averaged over scale x scale latent pixels: [B, C, T, ceil(h/scale), ceil(w/scale)]."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"draft scale {scale} is not a whole number >= 1; use 1 (full size), 2 or 4")
    if scale == 1:
        return latent
    frames, height, width = latent.shape[2:]
    return F.adaptive_avg_pool3d(latent, (frames, math.ceil(height / scale), math.ceil(width / scale)))


def decode_draft(vae, latent: torch.Tensor, scale: int = DRAFT_SCALE,
                 scaling_factor: float = SCALING_FACTOR) -> torch.Tensor:
    """Draft frames [B, F, H/scale, W/scale, 3] in [0, 1] of a predicted clean latent (every frame of the clip)."""
    return decode(vae, draft_latent(latent.float(), scale), scaling_factor=scaling_factor)


def draft_call(config: SampleConfig) -> Optional[int]:
    """Index (in ``config.model_calls()``) of the first stage's last model call, or None when there is no draft:
    one stage only, or a first stage that makes no call on the grid."""
    if len(config.stages) < 2:
        return None
    first = config.stages[0]
    indices = [index for index, (_, _, _, stage) in enumerate(config.model_calls()) if stage == first]
    return indices[-1] if indices else None


class FirstStageDraft:
    """A sampling callback: at the first stage's last call it hands ``on_draft(clean latent, info)`` the
    predicted clean latent, once per run; every other call passes through. ``fired`` says whether it has."""

    def __init__(self, config: SampleConfig, on_draft: Callable[[torch.Tensor, dict], None]):
        self.index = draft_call(config)
        self.on_draft = on_draft
        self.fired = False

    def __call__(self, info: dict) -> None:
        if info["index"] == self.index:
            self.on_draft(predicted_clean(info), info)
            self.fired = True
