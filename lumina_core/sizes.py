"""Video sizes: the one rule for which width x height x frames a schedule can run (the command line and
the nodes both ask :func:`check_video_size`, so they accept and refuse the same sizes with the same
words), and the official list of usable resolutions.

The rule: the CogVideoX VAE maps 8 x 8 pixels to one latent pixel and 4 frames to one latent frame (8m
or 8m+1 frames, see :mod:`lumina_core.vae`); every stage's patch must divide the latent, so width and
height are multiples of 8 x the schedule's largest patch (32 for the official multi-scale schedules,
16 for the single-scale ones), and a stage with f-patch 2 needs an even latent frame count (8m frames)
or a single frame (an image, repeated to fill the patch).
"""

from __future__ import annotations

import math
from itertools import count
from typing import Optional, Sequence

from .limits import MAX_FRAMES, MAX_SIDE
from .sampling import SampleConfig
from .vae import (
    LATENT_CHANNELS,
    SPATIAL_COMPRESSION,
    frame_count_for_latents,
    is_valid_frame_count,
    latent_count_for_frames,
)

CUSTOM_RESOLUTION = "custom"
RESOLUTION_TARGETS = (960, 512)  # the official target sizes (f24F96R960, f16F64R512)
RESOLUTION_PATCH_PIXELS = 32  # the official code sizes its resolution lists by the largest patch: 8 x 4 pixels


def crop_sizes(num_patches: int, patch_pixels: int, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """The usable (width, height) pairs of the official ``imgproc.generate_crop_size_list``: at most
    ``num_patches`` square patches of ``patch_pixels``, sides at most ``max_ratio`` apart.

    In the official order: the staircase under w * h <= num_patches (in patch units), walked from the
    widest size to the tallest; each width w (descending) takes the heights from the previous, wider
    width's largest one up to its own largest, num_patches // w.
    """
    if num_patches < 1 or patch_pixels < 1 or max_ratio < 1.0:
        raise ValueError(f"crop sizes need num_patches >= 1, patch_pixels >= 1 and max_ratio >= 1; got "
                         f"{num_patches}, {patch_pixels}, {max_ratio}")
    sizes = []
    for w in range(num_patches, 0, -1):
        for h in range(max(1, num_patches // (w + 1)), num_patches // w + 1):
            if max(w, h) <= max_ratio * min(w, h):
                sizes.append((w * patch_pixels, h * patch_pixels))
    return sizes


COMMON_RATIOS = ((1, 1), (5, 4), (4, 3), (3, 2), (8, 5), (16, 9), (2, 1), (21, 9), (3, 1), (4, 1))  # long:short


def resolution_label(width: int, height: int, target: int) -> str:
    """E.g. "1248x704 (960p, ~16:9)": the nearest common aspect ratio, "~" when it is not exact."""
    long, short = max(width, height), min(width, height)
    a, b = min(COMMON_RATIOS, key=lambda ratio: abs(math.log(long * ratio[1] / (short * ratio[0]))))
    exact = "" if long * b == short * a else "~"
    ratio = f"{a}:{b}" if width >= height else f"{b}:{a}"
    return f"{width}x{height} ({target}p, {exact}{ratio})"


OFFICIAL_RESOLUTIONS: dict[str, tuple[int, int]] = {
    resolution_label(width, height, target): (width, height)
    for target in RESOLUTION_TARGETS
    for width, height in crop_sizes((target // RESOLUTION_PATCH_PIXELS) ** 2, RESOLUTION_PATCH_PIXELS)
}


def resolution_size(resolution: str, width: int, height: int) -> tuple[int, int]:
    """(width, height) of an official resolution label, or the given width and height for "custom"."""
    if resolution == CUSTOM_RESOLUTION:
        return width, height
    if resolution not in OFFICIAL_RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r} is not one of the official sizes (e.g. "
                         f"{next(iter(OFFICIAL_RESOLUTIONS))!r}); pick one from the list or {CUSTOM_RESOLUTION!r}")
    return OFFICIAL_RESOLUTIONS[resolution]


def pixel_multiple(config: Optional[SampleConfig] = None) -> int:
    """Width and height must be multiples of this: 8 (the VAE) x the schedule's largest patch."""
    return SPATIAL_COMPRESSION * (1 if config is None else max(stage.patch_size for stage in config.stages))


def check_video_size(width: int, height: int, frames: int, config: Optional[SampleConfig] = None) -> None:
    """Raise, naming the nearest valid values, unless the schedule ``config`` can run this size; without a
    schedule, only what no schedule can run (sides not multiples of 8, frame counts the VAE can't make)."""
    multiple = pixel_multiple(config)
    if config is None:
        reason = "the CogVideoX VAE's 8x8 pixels per latent pixel"
    else:
        coarse = max(config.stages, key=lambda stage: stage.patch_size)
        reason = f"the VAE's 8 x patch {coarse.patch_size} of the schedule's {coarse.patch} stage"
    for name, value in (("width", width), ("height", height)):
        if value > MAX_SIDE:
            raise ValueError(f"{name} {value} is above {MAX_SIDE} pixels; use at most {MAX_SIDE}")
        if value < multiple or value % multiple:
            lower = value // multiple * multiple
            nearest = f"{multiple}" if lower < multiple else f"{lower} or {lower + multiple}"
            raise ValueError(f"{name} {value} is not a positive multiple of {multiple} pixels ({reason}); "
                             f"use {nearest}")
    if frames > MAX_FRAMES:
        raise ValueError(f"frames {frames} is above {MAX_FRAMES}; use at most {MAX_FRAMES} (the official videos have "
                         "96)")
    latents = latent_count_for_frames(frames)
    if config is None:
        return
    grouped = max(config.stages, key=lambda stage: stage.f_patch_size)
    f_patch = grouped.f_patch_size

    def fits(n: int) -> bool:
        return n == 1 or (is_valid_frame_count(n) and latent_count_for_frames(n) % f_patch == 0)

    if not fits(frames):
        below = next(n for n in range(frames - 1, 0, -1) if fits(n))
        above = next(n for n in count(frames + 1) if fits(n))
        raise ValueError(f"frames {frames} make {latents} latent frames, which the schedule's {grouped.patch} stage "
                         f"cannot split into groups of {f_patch}; use {below} or {above} frames, or a schedule "
                         f"whose stages all have f-patch 1 (e.g. f24F96R960)")


def latent_shape(width: int, height: int, frames: int, batch: int = 1) -> tuple[int, int, int, int, int]:
    """The latent [batch, 16, latent frames, height / 8, width / 8] the VAE makes of ``batch`` videos of this size."""
    return (batch, LATENT_CHANNELS, latent_count_for_frames(frames), height // SPATIAL_COMPRESSION,
            width // SPATIAL_COMPRESSION)


def check_latent_video_size(latent_shape: Sequence[int], config: SampleConfig) -> None:
    """:func:`check_video_size` for a latent [B, C, T, h, w]: 8h x 8w pixels, the frames T latents decode to."""
    if len(latent_shape) != 5:
        raise ValueError(f"latent shape {tuple(latent_shape)} is not [B, C, F, H, W]; use a video latent such as "
                         "Lumina-Video Empty Latent Video's")
    latent_frames, latent_height, latent_width = latent_shape[2:]
    check_video_size(latent_width * SPATIAL_COMPRESSION, latent_height * SPATIAL_COMPRESSION,
                     frame_count_for_latents(latent_frames), config)
