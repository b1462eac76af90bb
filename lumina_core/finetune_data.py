"""A fine-tuning data folder and its cache: clips (.mp4) and stills (.png/.jpg), each with a same-named .txt
caption, turned once into what training reads — VAE latents at one size and frame count, caption features and
each clip's motion score (``lumina_core.motion``) — so that neither the VAE nor the text encoder is resident
while the transformer trains.

Each clip's first ``frames`` frames and each still are scaled to cover ``width`` x ``height`` and centre-cropped
to it. Bad data fails before any encoding, naming the file: a missing or empty caption, an unreadable video or
image, a clip with too few frames; and a size off the model's grid names the value and the nearest fits.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .flow_matching import EMPTY_CAPTION
from .model import NextDiTConfig
from .vae import SPATIAL_COMPRESSION, is_valid_frame_count, latent_count_for_frames

CLIP_SUFFIXES = (".mp4",)
STILL_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Sample:
    """One training item: a clip or a still, and its caption."""

    path: Path
    caption: str

    @property
    def is_clip(self) -> bool:
        return self.path.suffix.lower() in CLIP_SUFFIXES


def scan_folder(folder: str | os.PathLike) -> list[Sample]:
    """Every clip and still of ``folder`` (not recursive, sorted by name) with its caption."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} does not exist or is not a folder; give a folder of .mp4/.png/.jpg "
                         "files, each with a same-named .txt caption")
    samples = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in CLIP_SUFFIXES + STILL_SUFFIXES:
            continue
        caption_path = path.with_suffix(".txt")
        if not caption_path.is_file():
            raise ValueError(f"{path} has no caption: write what it shows into {caption_path}")
        caption = caption_path.read_text(encoding="utf-8").strip()
        if not caption:
            raise ValueError(f"caption {caption_path} is empty; write what {path.name} shows into it")
        samples.append(Sample(path, caption))
    if not samples:
        raise ValueError(f"data folder {folder} holds no {'/'.join(CLIP_SUFFIXES + STILL_SUFFIXES)} files; add clips "
                         "or stills with same-named .txt captions")
    return samples


def check_training_size(width: int, height: int, frames: int, config: NextDiTConfig) -> None:
    """Raise, naming the nearest valid values, unless every patch pair of the model can train on clips of
    ``frames`` frames at ``width`` x ``height`` (stills train at the same size)."""
    multiple = SPATIAL_COMPRESSION * max(config.patch_sizes)
    for name, value in (("width", width), ("height", height)):
        if value < multiple or value % multiple:
            lower = value // multiple * multiple
            nearest = f"{multiple}" if lower < multiple else f"{lower} or {lower + multiple}"
            raise ValueError(f"--{name} {value} is not on the model's grid: a positive multiple of {multiple} pixels "
                             f"(the VAE's 8 x the largest patch size {max(config.patch_sizes)}); use {nearest}")
    f_patch = max(config.f_patch_sizes)

    def fits(n: int) -> bool:
        return n > 1 and is_valid_frame_count(n) and latent_count_for_frames(n) % f_patch == 0

    if not fits(frames):
        above = next(n for n in range(max(frames + 1, 2), frames + 64) if fits(n))
        below = next((n for n in range(frames - 1, 1, -1) if fits(n)), None)
        nearest = f"{above}" if below is None else f"{below} or {above}"
        raise ValueError(f"--frames {frames} is not on the model's grid: clips need 8m or 8m+1 frames (the VAE) whose "
                         f"latent frames divide by the largest f-patch size {f_patch}; use {nearest}")


def fit_frames(frames: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] scaled to cover ``width`` x ``height``, centre-cropped: float [F, height,
    width, 3] in [0, 1]."""
    video = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float() / 255
    scale = max(width / video.shape[3], height / video.shape[2])
    size = (max(height, round(video.shape[2] * scale)), max(width, round(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return video[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1).clamp(0, 1)


def read_sample(sample: Sample, width: int, height: int, frames: int) -> torch.Tensor:
    """A clip's first ``frames`` frames, or a still as one frame, fitted to the size: [F, height, width, 3]."""
    if sample.is_clip:
        from .video_io import read_video

        try:
            pixels, _ = read_video(sample.path)
        except Exception as error:  # av raises its own error classes for damaged or non-video files
            raise ValueError(f"{sample.path} is not a readable video ({error}); re-encode it as H.264 .mp4 or "
                             "remove it") from None
        if len(pixels) < frames:
            raise ValueError(f"{sample.path} has {len(pixels)} frames; training at --frames {frames} needs at least "
                             f"{frames}: give a longer clip, remove it, or lower --frames")
        return fit_frames(pixels[:frames], width, height)
    try:
        with Image.open(sample.path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises several classes for damaged or non-image files
        raise ValueError(f"{sample.path} is not a readable image ({error}); save it again as .png or .jpg or "
                         "remove it") from None
    return fit_frames(pixels[None], width, height)


def clip_motion(sample: Sample) -> float:
    """The clip's motion score by the pack's measurement (``lumina_core.motion``), naming the file on failure."""
    from .motion import motion_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clips shorter than 4 s are scored on the frames they have
        return motion_score(sample.path)


@torch.no_grad()
def cache_samples(samples: Sequence[Sample], vae, text_model, tokenizer, width: int, height: int, frames: int,
                  progress: bool = True) -> dict:
    """Encode a data set once. Returns {clip_latents [N, C, T, h, w], clip_caption [N], clip_motion [N],
    image_latents [M, C, 1, h, w], image_caption [M], captions (row 0 = ""), caption_feats [R, L, D] float32,
    caption_mask [R, L], sources (file names, clips first)}. Every file is read and checked before the first
    encoding, so bad data fails fast."""
    from .text import encode_prompts
    from .vae import encode

    clips = [sample for sample in samples if sample.is_clip]
    stills = [sample for sample in samples if not sample.is_clip]
    pixels = {sample.path: read_sample(sample, width, height, frames) for sample in samples}
    motion = [clip_motion(sample) for sample in clips]
    captions = sorted({sample.caption for sample in samples})
    captions.insert(EMPTY_CAPTION, "")
    row = {caption: index for index, caption in enumerate(captions)}
    feats, mask = encode_prompts(text_model, tokenizer, captions)

    def latents_of(group: list[Sample]) -> torch.Tensor:
        rows = [encode(vae, pixels[sample.path][None])
                for sample in tqdm(group, desc="VAE latents", disable=not progress or not group)]
        return torch.cat(rows).cpu() if rows else torch.zeros(0)

    return {
        "clip_latents": latents_of(clips),
        "clip_caption": torch.tensor([row[sample.caption] for sample in clips], dtype=torch.long),
        "clip_motion": torch.tensor(motion, dtype=torch.float32),
        "image_latents": latents_of(stills),
        "image_caption": torch.tensor([row[sample.caption] for sample in stills], dtype=torch.long),
        "captions": captions,
        "caption_feats": feats.float().cpu(),
        "caption_mask": mask.cpu(),
        "sources": [sample.path.name for sample in clips + stills],
    }
