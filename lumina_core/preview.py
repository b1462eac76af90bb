"""Latent previews: a linear map from latent channels to RGB per latent pixel ("latent2rgb"), one for each
latent space the pack samples in, and a grid that lays every latent frame of a video side by side so one
preview image shows the whole clip.

Conventions are ComfyUI's (latent_preview.Latent2RGBPreviewer): the latent is the one the model samples
(the VAE latent times ``SCALING_FACTOR``, what a sampler's x0 holds), and the map gives RGB in [-1, 1]
(-1 black, 1 white): ``rgb = latent . factors + bias`` over the channel axis.

The latent spaces:

- ``cogvideox``: the real CogVideoX VAE (THUDM/CogVideoX-2b ``vae/``). The table is published in
  kijai/ComfyUI-CogVideoXWrapper (``pipeline_cogvideox.py``, ``CogVideoXLatentFormat``), where it maps
  5 x the pipeline's latent, declared with the CogVideoX-5b scale 0.7 (the same 3-D VAE as 2b's, whose
  diffusers config scales by 1.15258426 instead). Over our latent, 1.15258426 x the VAE's, the factors
  are therefore the published ones times 5 x 0.7 / 1.15258426; the bias is the published one. No
  CogVideoX VAE is available here to refit them; ComfyUI 0.8.0 ships no CogVideoX latent format.
- ``demo``: the built-in demo VAE (``lumina_core.demo``), fitted by least squares with
  ``python -m training.fit_preview`` (see ``DEMO``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vae import SCALING_FACTOR, TEMPORAL_COMPRESSION, frame_count_for_latents


@dataclass(frozen=True)
class LatentRGB:
    """A latent-to-RGB map: ``factors`` [channels][3] (R, G, B per latent channel) and ``bias`` [3]; RGB in
    [-1, 1] from the model's (scaled) latent."""

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float]

    @property
    def channels(self) -> int:
        return len(self.factors)

    def to_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3, ...] in about [-1, 1] (unclamped) of a latent [B, C, ...]."""
        if latent.shape[1] != self.channels:
            raise ValueError(f"latent has {latent.shape[1]} channels but this latent-to-RGB map reads "
                             f"{self.channels}; use the map of the VAE that made the latent")
        factors = torch.tensor(self.factors, dtype=torch.float32, device=latent.device)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=latent.device)
        rgb = torch.einsum("bc...,cr->br...", latent.float(), factors)
        return rgb + bias.view(1, 3, *([1] * (latent.dim() - 2)))


def scaled(factors, bias, scale: float) -> LatentRGB:
    """A map of published ``factors`` (rows of 3) over a latent ``scale`` times ours."""
    return LatentRGB(tuple(tuple(scale * value for value in row) for row in factors), tuple(bias))


# kijai/ComfyUI-CogVideoXWrapper, pipeline_cogvideox.py, CogVideoXLatentFormat (see the module docstring).
PUBLISHED_COGVIDEOX_FACTORS = (
    (0.03197404301362048, 0.04091260743347359, 0.0015679806301828524),
    (0.005517101026578029, 0.0052348639043457755, -0.005613441650464035),
    (0.0012485338264583965, -0.016096744206117782, 0.025023940031635054),
    (0.01760126794276171, 0.0036818415416642893, -0.0006019202528157255),
    (0.000444954842288864, 0.006102128982092191, 0.0008457999272962447),
    (-0.010531904354560697, -0.0032275501924977175, -0.00886595780267917),
    (-0.0001454543946122991, 0.010199210750845965, -0.00012702234832386188),
    (0.02078497279904325, -0.001669617778939972, 0.006712703698951264),
    (0.005529571599763264, 0.009733929789086743, 0.001887302765339838),
    (0.012138415094654218, 0.024684961927224837, 0.037211249767461915),
    (0.0010364484570000384, 0.01983636315929172, 0.009864602025627755),
    (0.006802862648143341, -0.0010509255113510681, -0.007026003345126021),
    (0.0003532208468418043, 0.005351971582801936, -0.01845912126717106),
    (-0.009045079994694397, -0.01127941143183089, 0.0042294057970470806),
    (0.002548289972720752, 0.025224244654428216, -0.0006086130121693347),
    (-0.011135669222532816, 0.0018181308593668505, 0.02794541485349922),
)
PUBLISHED_COGVIDEOX_BIAS = (-0.023, 0.0, -0.017)
PUBLISHED_LATENT_SCALE = 5 * 0.7  # the published factors read 5 x (0.7 x the VAE's latent)
COGVIDEOX = scaled(PUBLISHED_COGVIDEOX_FACTORS, PUBLISHED_COGVIDEOX_BIAS, PUBLISHED_LATENT_SCALE / SCALING_FACTOR)
# The demo VAE: least squares over the 24 procedural clips of seeds 0-23 (python -m training.fit_preview), RMS
# error 0.057 in [-1, 1] RGB (2.8 % of the range); tests/test_preview.py refits it on 8 clips and checks this table.
DEMO = LatentRGB(
    factors=(
        (-0.0044, -0.0162, 0.0023),
        (0.0232, -0.0153, 0.0054),
        (-0.0198, -0.0417, 0.0731),
        (0.0294, -0.0236, -0.0609),
        (0.1188, 0.0274, -0.0585),
        (0.0158, 0.0283, -0.1029),
        (-0.0108, -0.0281, 0.1414),
        (-0.0190, -0.0485, -0.0072),
        (0.0334, -0.0360, 0.0025),
        (-0.0225, 0.0565, -0.0320),
        (0.0079, 0.0038, -0.0582),
        (-0.0291, 0.0396, -0.0088),
        (-0.0339, 0.0435, -0.0358),
        (-0.0076, 0.0019, -0.0091),
        (-0.0610, -0.1220, -0.0347),
        (0.0100, -0.0119, -0.0087),
    ),
    bias=(-0.0357, -0.0799, -0.0170),
)
LATENT_RGB = {"cogvideox": COGVIDEOX, "demo": DEMO}
"""The latent-to-RGB map of each latent space, by name (the model loader names the space of its model)."""


# -- every latent frame in one image ---------------------------------------------------------------------------
def grid_layout(frames: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``frames`` frames of height x width, filled row by row, as near square
    as whole frames allow (one row for two square frames, 5 x 3 for 13 frames of 88 x 156)."""
    if min(frames, height, width) < 1:
        raise ValueError(f"a preview grid needs frames, height and width >= 1, got {frames}, {height}, {width}")
    columns = min(frames, math.ceil(math.sqrt(frames * height / width)))
    return math.ceil(frames / columns), columns


def frame_grid(latent: torch.Tensor) -> torch.Tensor:
    """The first video of a latent [B, C, T, h, w] as one frame [1, C, 1, rows*h, columns*w] holding its T
    frames in ``grid_layout`` order (cells past the last frame are zero latent, the map's bias colour). Any
    other shape passes through unchanged."""
    if latent.dim() != 5:
        return latent
    video = latent[:1]
    _, channels, frames, height, width = video.shape
    rows, columns = grid_layout(frames, height, width)
    video = F.pad(video, (0, 0, 0, 0, 0, rows * columns - frames))
    grid = video.reshape(1, channels, rows, columns, height, width).permute(0, 1, 2, 4, 3, 5)
    return grid.reshape(1, channels, 1, rows * height, columns * width)


# -- fitting a map -------------------------------------------------------------------------------------------------
def frames_per_latent(latent_frames: int, frames: int) -> list[int]:
    """How many video frames each latent frame stands for: 4 each for 4T frames (even T), 1 then 4 each for
    4(T-1)+1 (odd T)."""
    expected = frame_count_for_latents(latent_frames)
    if frames != expected:
        raise ValueError(f"{frames} frames do not decode from {latent_frames} latent frames; the VAE decodes them "
                         f"to {expected}: pass the frames decoded from these latents")
    if latent_frames % 2 == 0:
        return [TEMPORAL_COMPRESSION] * latent_frames
    return [1] + [TEMPORAL_COMPRESSION] * (latent_frames - 1)


def rgb_at_latent_resolution(frames: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
    """Frames [B, F, H, W, 3] in [0, 1] as RGB [B, 3, T, h, w] in [-1, 1]: each latent pixel's mean over the
    frames and pixels it stands for."""
    _, _, latent_frames, height, width = latent_shape
    groups = frames.float().split(frames_per_latent(latent_frames, frames.shape[1]), dim=1)
    means = torch.stack([group.mean(dim=1) for group in groups], dim=1)  # [B, T, H, W, 3]
    pooled = F.adaptive_avg_pool3d(means.permute(0, 4, 1, 2, 3), (latent_frames, height, width))
    return pooled * 2 - 1


def fit_latent_rgb(latents: torch.Tensor, frames: torch.Tensor) -> tuple[LatentRGB, float]:
    """The least-squares latent-to-RGB map of latents [B, C, T, h, w] (the model's scaled latent) to the frames
    [B, F, 8h, 8w, 3] in [0, 1] they decode to, and the fit's RMS error in [-1, 1] RGB units."""
    target = rgb_at_latent_resolution(frames, latents.shape)
    inputs = latents.double().movedim(1, -1).reshape(-1, latents.shape[1])
    inputs = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    outputs = target.double().movedim(1, -1).reshape(-1, 3)
    solution = torch.linalg.lstsq(inputs, outputs).solution
    error = (inputs @ solution - outputs).pow(2).mean().sqrt().item()
    factors = tuple(tuple(float(value) for value in row) for row in solution[:-1])
    return LatentRGB(factors, tuple(float(value) for value in solution[-1])), error
