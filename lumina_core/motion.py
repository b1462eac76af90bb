"""Motion score of a video: mean optical-flow magnitude, following the official Lumina-Video recipe.

Recipe (official data tooling, UniMatch flow): sample the frames at ``round(t * fps)`` for
t = 0, 0.5, ..., 4.0 s, stopping at the end of the clip (at least 2 frames); transpose portrait
frames (H > W) to landscape (an axis swap, not a rotation); resize to exactly 320 x 576 (H x W)
with bilinear interpolation (``align_corners=True``, aspect ratio ignored); compute dense flow
between consecutive sampled frames; the score is the mean of ``|flow|`` over all pairs, pixels
and both flow components. A horizontal shift of d pixels (at 320 x 576) per 0.5 s therefore scores
d / 2, and a diagonal shift (d, d) scores d.

The official flow is UniMatch (a learned network); here it is OpenCV's DIS flow (preset MEDIUM),
a classical method measuring the same quantity. See ``docs/motion_score.md`` for calibration.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .video_io import check_fps, read_frames, to_uint8_frames, video_fps

SAMPLE_TIMES = tuple(0.5 * step for step in range(9))  # seconds: 0, 0.5, ..., 4.0
FLOW_SIZE = (320, 576)  # (H, W) at which flow is measured
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for R, G, B


def recipe_indices(fps: float) -> list[int]:
    """Frame indices the recipe asks for at this frame rate: ``round(t * fps)`` for each sample time.

    Python's ``round`` (ties to even) as in the official code, so 25 fps gives 0, 12, 25, 38, ...
    """
    fps = check_fps(fps)
    return [round(t * fps) for t in SAMPLE_TIMES]


def sample_indices(num_frames: int, fps: float) -> list[int]:
    """Recipe frame indices that exist in a clip of ``num_frames`` frames (stops at the end)."""
    if num_frames < 0:
        raise ValueError(f"num_frames {num_frames} is negative; pass the clip's frame count")
    return [index for index in recipe_indices(fps) if index < num_frames]


def flow_frames(frames) -> np.ndarray:
    """Prepare sampled frames for flow: uint8 grey ``[N, 320, 576]``.

    Portrait frames are transposed (H <-> W), then converted to luma and resized bilinearly
    (``align_corners=True``, as the official ``F.interpolate`` call) to exactly 320 x 576.
    """
    frames = to_uint8_frames(frames)
    if frames.shape[1] > frames.shape[2]:  # contiguous, so the luma product sees the layout of a landscape clip
        frames = np.ascontiguousarray(frames.transpose(0, 2, 1, 3))
    luma = torch.from_numpy(frames).float() @ torch.tensor(_LUMA)  # [N, H, W]
    resized = F.interpolate(luma[:, None], size=FLOW_SIZE, mode="bilinear", align_corners=True)[:, 0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def optical_flow(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Dense flow ``[H, W, 2]`` (dx, dy in pixels) from one uint8 grey image to the next.

    DIS (preset MEDIUM) was the most accurate OpenCV method on the calibration in
    ``docs/motion_score.md``. A fresh instance per call keeps it deterministic and thread-safe.
    """
    cv2 = opencv()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(previous, following, None)


def opencv():
    """OpenCV's ``cv2``, imported when a flow is measured. It is not a requirement of the pack: ComfyUI does not
    install it, other packs bring one of its four wheels (opencv-python, opencv-python-headless and their contrib
    builds), and a second wheel beside the first overwrites the same ``cv2`` files."""
    try:
        import cv2
    except ImportError:
        raise ImportError("measuring a motion score needs OpenCV (the cv2 module), which this Python does not have: "
                          "install one OpenCV wheel, e.g. `pip install opencv-python-headless` with ComfyUI's Python, "
                          "and restart. Any of opencv-python, opencv-python-headless, opencv-contrib-python works; "
                          "have only one of them") from None
    return cv2


def motion_score_frames(frames) -> float:
    """Motion score of already-sampled frames (one every 0.5 s), ``[N, H, W, 3]`` with N >= 2.

    Frames may be uint8 or float in [0, 1] (e.g. a ComfyUI IMAGE batch); pick them with
    :func:`sample_indices` first.
    """
    grey = flow_frames(frames)
    if len(grey) < 2:
        raise ValueError(
            f"got {len(grey)} frame(s); the motion score needs at least 2 sampled frames (0.5 s apart)"
        )
    pairs = zip(grey[:-1], grey[1:], strict=True)
    magnitudes = [np.abs(optical_flow(a, b)).mean(dtype=np.float64) for a, b in pairs]
    return float(np.mean(magnitudes))


def _warn_if_short(num_sampled: int, fps: float) -> None:
    """Warn when the clip ends before the recipe's last sample time (4.0 s)."""
    if num_sampled < len(SAMPLE_TIMES):
        seconds = SAMPLE_TIMES[num_sampled - 1]
        warnings.warn(
            f"clip is shorter than the {SAMPLE_TIMES[-1]:g} s the motion-score recipe samples "
            f"(frame {recipe_indices(fps)[-1]} at {fps:g} fps); scoring the {num_sampled} frames "
            f"up to {seconds:g} s that exist",
            UserWarning,
            stacklevel=3,
        )


def _too_short(source: str, fps: float) -> ValueError:
    """Error for clips too short to hold two sampled frames (0.5 s apart)."""
    second = recipe_indices(fps)[1]
    return ValueError(
        f"{source} is shorter than 0.5 s at {fps:g} fps (it has no frame {second}); the motion "
        f"score compares frames 0.5 s apart, so pass a clip of at least {second + 1} frames"
    )


def motion_score(video, fps: float | None = None) -> float:
    """Motion score of a video file or of a frame array, by the official sampling recipe.

    Args:
        video: path to a video file, or frames ``[T, H, W, 3]`` (uint8, or float in [0, 1]).
        fps: frame rate of ``video``. Required for arrays; for files it overrides the stream's
            average frame rate (leave None to use the file's).

    Returns the mean flow magnitude per component per 0.5 s at 320 x 576 (see module docs).
    Warns when the clip is shorter than 4 s; raises ValueError when it is shorter than 0.5 s.
    """
    if isinstance(video, (str, os.PathLike)):
        fps = check_fps(fps) if fps is not None else video_fps(video)
        frames, _ = read_frames(video, recipe_indices(fps))
        source = str(video)
    else:
        if fps is None:
            raise ValueError("fps is required when video is an array of frames; pass e.g. fps=24")
        fps = check_fps(fps)
        if getattr(video, "ndim", None) == 4:  # pick the sampled frames first: only they are converted to uint8
            source = f"the video of {len(video)} frame(s)"
            frames = to_uint8_frames(video[sample_indices(len(video), fps)], name="video")
        else:  # let the conversion name what is wrong with the shape
            frames = to_uint8_frames(video, name="video")
            source = f"the video of {len(frames)} frame(s)"
    if len(frames) < 2:
        raise _too_short(source, fps)
    _warn_if_short(len(frames), fps)
    return motion_score_frames(frames)
