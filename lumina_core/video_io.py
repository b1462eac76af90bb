"""Video files: read clips with PyAV, write H.264 mp4, PNG frames and contact sheets.

Frames are numpy arrays ``[T, H, W, 3]`` (RGB): uint8 in [0, 255], or float in [0, 1] (ComfyUI
IMAGE batches, also as torch tensors). Writers never leave a half-written file behind: they write
to a hidden temporary file in the target folder and rename it over the target only on success,
so a failed write keeps any existing file untouched.

Metadata is stored the way ComfyUI 0.8.0 stores it, so ComfyUI can read our files back:
mp4 files are muxed with ``movflags=use_metadata_tags`` (arbitrary keys such as ``prompt`` and
``workflow`` become container tags), PNG files get one text chunk per key (as ``SaveImage`` does
with ``PngInfo``). String values are written as they are; any other value is written as JSON.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PathLike = str | os.PathLike

DEFAULT_CRF = 18  # libx264 quality: 0 lossless .. 51 worst; 18 is visually near-lossless
_MAX_FPS_DENOMINATOR = 1001  # keeps NTSC rates exact (24000/1001)


# --------------------------------------------------------------------------------------------
# Frame validation and conversion


def to_uint8_frames(frames, name: str = "frames") -> np.ndarray:
    """Return ``frames`` as a C-contiguous uint8 array ``[T, H, W, 3]``.

    Accepts numpy arrays or torch tensors, uint8 in [0, 255] or float in [0, 1] (values outside
    [0, 1] are clipped, then rounded to the nearest uint8). Raises ValueError naming the bad
    dtype or shape and the fix.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{name} has shape {tuple(frames.shape)}; expected [T, H, W, 3] RGB frames "
            "(add a leading frame axis for a single image, drop any alpha channel)"
        )
    if 0 in frames.shape:
        raise ValueError(
            f"{name} is empty (shape {tuple(frames.shape)}); pass at least one frame of at least 1x1 pixels"
        )
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all():
            raise ValueError(f"{name} contains NaN or infinite values; float frames must lie in [0, 1]")
        return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(
        f"{name} has dtype {frames.dtype}; pass uint8 values in [0, 255] or float values in [0, 1]"
    )


def check_fps(fps) -> float:
    """Return ``fps`` as a float, or raise ValueError if it is not a positive finite number."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps {fps!r} is not a number; pass a positive frame rate such as 24") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps {fps!r} is out of range; the frame rate must be a positive number such as 24")
    return value


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one pixel (repeating the last row/column) for yuv420p.

    yuv420p stores colour at half resolution, so H.264 needs even sizes. Padding keeps every
    input pixel; a 33x47 clip is written as 34x48.
    """
    pad_h = frames.shape[1] % 2
    pad_w = frames.shape[2] % 2
    if pad_h == 0 and pad_w == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _metadata_text(metadata: Mapping | None) -> dict[str, str]:
    """Validate metadata keys and turn values into text (strings as-is, anything else as JSON)."""
    if metadata is None:
        return {}
    text = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata key {key!r} must be a non-empty string (e.g. 'prompt', 'workflow')")
        text[key] = value if isinstance(value, str) else json.dumps(value)
    return text


# --------------------------------------------------------------------------------------------
# Writing


@contextmanager
def atomic_target(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the body succeeds (the old file
    stays whole when anything fails). Used by the writers here and by lumina_core.cost's calibration cache."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # same folder as the target, so the final rename is atomic
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_mp4(
    path: PathLike, frames, fps: float, metadata: Mapping | None = None, crf: int = DEFAULT_CRF
) -> Path:
    """Write frames as an H.264 (libx264, yuv420p) mp4 file and return its path.

    Args:
        path: output file; parent folders are created. An existing file is replaced only when
            the whole video was written.
        frames: ``[T, H, W, 3]`` uint8 or float in [0, 1]; odd sizes are padded by one pixel.
        fps: frame rate stored in the stream (e.g. 24 or 24000/1001).
        metadata: container tags, e.g. ``{"prompt": ..., "workflow": ...}`` as ComfyUI writes them.
        crf: libx264 constant rate factor, 0 (lossless) to 51.
    """
    frames = pad_to_even(to_uint8_frames(frames))
    rate = Fraction(check_fps(fps)).limit_denominator(_MAX_FPS_DENOMINATOR)
    tags = _metadata_text(metadata)
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(
            f"crf {crf!r} is out of range; use an integer from 0 (lossless) to 51 (default {DEFAULT_CRF})"
        )
    with atomic_target(path) as temp:
        _encode_mp4(temp, frames, rate, tags, crf)
    return Path(path)


def _encode_mp4(path: Path, frames: np.ndarray, rate: Fraction, tags: dict[str, str], crf: int) -> None:
    """Encode uint8 frames with even sizes into an mp4 file at ``path``."""
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        container.metadata.update(tags)
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _save_png(image: np.ndarray, path: PathLike, tags: dict[str, str]) -> Path:
    """Write one uint8 ``[H, W, 3]`` image as PNG with one text chunk per metadata key."""
    info = PngInfo()
    for key, value in tags.items():
        info.add_text(key, value)
    with atomic_target(path) as temp:
        Image.fromarray(image).save(temp, format="PNG", pnginfo=info, compress_level=4)
    return Path(path)


def write_png_frames(
    folder: PathLike, frames, metadata: Mapping | None = None, prefix: str = "frame"
) -> list[Path]:
    """Write each frame as ``{prefix}_{index:05d}.png`` in ``folder`` and return the paths.

    Every PNG carries the metadata as text chunks (readable with ``PIL.Image.open(p).text``).
    Each file is replaced atomically; if writing stops midway, the frames before it are new
    and the rest keep their previous content.
    """
    frames = to_uint8_frames(frames)
    tags = _metadata_text(metadata)
    folder = Path(folder)
    return [
        _save_png(image, folder / f"{prefix}_{index:05d}.png", tags) for index, image in enumerate(frames)
    ]


def contact_sheet(frames, columns: int = 4, max_frames: int = 16, gap: int = 2) -> np.ndarray:
    """Tile up to ``max_frames`` evenly spaced frames into one uint8 image ``[H', W', 3]``.

    The first and last frames are always shown; tiles fill rows left to right, ``columns`` per
    row, separated by ``gap`` black pixels.
    """
    frames = to_uint8_frames(frames)
    for label, value, low in (("columns", columns, 1), ("max_frames", max_frames, 1), ("gap", gap, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{label} {value!r} is out of range; use an integer >= {low}")
    count = min(len(frames), max_frames)
    picked = frames[np.rint(np.linspace(0, len(frames) - 1, count)).astype(int)]
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    height, width = frames.shape[1:3]
    sheet = np.zeros((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), np.uint8)
    for index, image in enumerate(picked):
        top = (index // columns) * (height + gap)
        left = (index % columns) * (width + gap)
        sheet[top : top + height, left : left + width] = image
    return sheet


def write_contact_sheet(
    path: PathLike, frames, metadata: Mapping | None = None, columns: int = 4, max_frames: int = 16
) -> Path:
    """Write :func:`contact_sheet` of ``frames`` as a PNG (metadata as text chunks)."""
    sheet = contact_sheet(frames, columns=columns, max_frames=max_frames)
    return _save_png(sheet, path, _metadata_text(metadata))


# --------------------------------------------------------------------------------------------
# Reading


@contextmanager
def _open_video(path: PathLike) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``path`` for decoding; raise FileNotFoundError / ValueError naming the path."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}; pass an mp4/webm/mov/... video file") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream; pass a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream


def _stream_fps(stream: av.VideoStream, path: PathLike) -> float:
    """Average frame rate of ``stream`` (the rate decord's ``get_avg_fps`` reports)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise ValueError(f"cannot read the frame rate of {path}; pass fps explicitly")
    return float(rate)


def _decoded_frames(container, stream, path: PathLike) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream`` in presentation order; decode errors name the path."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from None


def video_fps(path: PathLike) -> float:
    """Frame rate of the first video stream of ``path`` (no decoding)."""
    with _open_video(path) as (_, stream):
        return _stream_fps(stream, path)


def read_video(path: PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of ``path``: returns (uint8 frames ``[T, H, W, 3]`` RGB, fps)."""
    with _open_video(path) as (container, stream):
        fps = _stream_fps(stream, path)
        frames = [frame.to_ndarray(format="rgb24") for frame in _decoded_frames(container, stream, path)]
    if not frames:
        raise ValueError(f"{path} contains no decodable video frames")
    return np.stack(frames), fps


def read_frames(path: PathLike, indices: Sequence[int]) -> tuple[np.ndarray, float]:
    """Decode only the frames at ``indices`` (ascending, repeats allowed): returns (frames, fps).

    Decoding stops after the last wanted frame, and only wanted frames are converted to RGB, so
    sampling a few frames from the start of a long clip is cheap. Indices past the end of the
    clip are dropped: the result holds the frames for the leading indices that exist (possibly
    fewer than asked for; ``len(result)`` tells how many).
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given; pass at least one index")
    if indices[0] < 0 or indices != sorted(indices):
        raise ValueError(f"frame indices {indices} must be non-negative and ascending")
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    decoded = 0
    with _open_video(path) as (container, stream):
        fps = _stream_fps(stream, path)
        with closing(_decoded_frames(container, stream, path)) as frames:
            for frame in frames:
                if decoded in wanted:
                    found[decoded] = frame.to_ndarray(format="rgb24")
                decoded += 1
                if decoded > indices[-1]:
                    break
    if indices[0] not in found:
        raise ValueError(f"{path} has {decoded} decodable frame(s); frame {indices[0]} does not exist")
    return np.stack([found[i] for i in indices if i in found]), fps
