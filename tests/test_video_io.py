"""Video files: mp4 round trips, metadata ComfyUI can read, PNG frames, contact sheets, safe writes."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from lumina_core import video_io
from lumina_core.video_io import (
    contact_sheet,
    read_frames,
    read_video,
    to_uint8_frames,
    write_contact_sheet,
    write_mp4,
    write_png_frames,
)


def smooth_clip(frames: int = 10, height: int = 64, width: int = 96) -> np.ndarray:
    """Colourful moving sinusoids, uint8 [frames, height, width, 3] (smooth enough for yuv420p)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    channels = [
        np.sin((x + 2 * t) / 15.0),
        np.cos((y - t) / 12.0),
        np.sin((x + y + 3 * t) / 20.0),
    ]
    return np.rint(127.5 + 100 * np.stack(channels, axis=-1)).astype(np.uint8)


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- mp4 ------------------------------------------------------------------------------------


def test_round_trip_keeps_count_size_fps_and_pixels(tmp_path):
    clip = smooth_clip()
    path = write_mp4(tmp_path / "clip.mp4", clip, fps=8)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert fps == 8.0
    assert mean_error(frames, clip) < 3.0  # 4:2:0 chroma subsampling + crf 18
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")


def test_ntsc_frame_rate_is_stored_exactly(tmp_path):
    path = write_mp4(tmp_path / "ntsc.mp4", smooth_clip(frames=3), fps=24000 / 1001)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(24000, 1001)


def test_float_frames_are_rounded_and_clipped_to_uint8(tmp_path):
    values = np.array([-0.1, 0.0, 0.5, 1 / 255, 1.0, 1.2]).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(to_uint8_frames(values).ravel(), [0, 0, 128, 1, 255, 255])
    clip = smooth_clip(frames=4)
    frames, _ = read_video(write_mp4(tmp_path / "float.mp4", clip / 255.0, fps=4))
    assert mean_error(frames, clip) < 3.0


def test_odd_sizes_are_padded_by_one_pixel(tmp_path):
    clip = smooth_clip(frames=4, height=33, width=47)
    frames, _ = read_video(write_mp4(tmp_path / "odd.mp4", clip, fps=4))
    assert frames.shape == (4, 34, 48, 3)
    assert mean_error(frames[:, :33, :47], clip) < 3.0
    assert mean_error(frames[:, 33], frames[:, 32]) < 3.0  # padding repeats the last row


def test_metadata_tags_are_readable_by_pyav_and_comfyui(tmp_path):
    workflow = json.dumps({"nodes": [{"id": 1, "type": "LuminaVideoMSSampler"}]})
    metadata = {"prompt": {"1": {"class_type": "KSampler"}}, "workflow": workflow, "comment": "motion 6"}
    path = write_mp4(tmp_path / "tagged.mp4", smooth_clip(frames=2), fps=4, metadata=metadata)
    with av.open(str(path)) as container:
        tags = dict(container.metadata)
    assert tags["prompt"] == json.dumps(metadata["prompt"])  # non-strings stored as JSON, like ComfyUI
    assert tags["workflow"] == workflow
    assert tags["comment"] == "motion 6"
    # ComfyUI's frontend reads 'mdta' keys (movflags=use_metadata_tags) to load the workflow
    data = path.read_bytes()
    assert b"mdtaworkflow" in data and workflow.encode() in data


def test_read_frames_returns_requested_indices_that_exist(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4", smooth_clip(), fps=8)
    everything, _ = read_video(path)
    picked, fps = read_frames(path, [0, 3, 3, 9, 50])
    assert fps == 8.0
    np.testing.assert_array_equal(picked, everything[[0, 3, 3, 9]])


# --- PNG and contact sheets -----------------------------------------------------------------


def test_png_frames_carry_text_chunks(tmp_path):
    clip = smooth_clip(frames=3, height=16, width=24)
    paths = write_png_frames(tmp_path / "frames", clip, metadata={"prompt": {"3": {}}, "workflow": "{}"})
    assert [p.name for p in paths] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    for path, frame in zip(paths, clip, strict=True):
        with Image.open(path) as image:
            assert image.text == {"prompt": '{"3": {}}', "workflow": "{}"}
            np.testing.assert_array_equal(np.asarray(image), frame)


def test_contact_sheet_tiles_evenly_spaced_frames():
    frames = np.stack([np.full((8, 12, 3), 10 * (i + 1), np.uint8) for i in range(10)])
    sheet = contact_sheet(frames, columns=4, max_frames=6, gap=2)
    assert sheet.shape == (2 * 8 + 2, 4 * 12 + 3 * 2, 3) and sheet.dtype == np.uint8
    tiles = [sheet[r * 10 : r * 10 + 8, c * 14 : c * 14 + 12, 0].mean() for r in range(2) for c in range(4)]
    assert tiles == [10, 30, 50, 60, 80, 100, 0, 0]  # frames 0, 2, 4, 5, 7, 9; empty cells stay black
    assert sheet[8:10].max() == 0  # gap between rows


def test_write_contact_sheet_png(tmp_path):
    path = write_contact_sheet(
        tmp_path / "sheet.png",
        smooth_clip(frames=5, height=16, width=24),
        metadata={"comment": "seed 1"},
        columns=5,
    )
    with Image.open(path) as image:
        assert image.size == (5 * 24 + 4 * 2, 16)
        assert image.text == {"comment": "seed 1"}


# --- errors and safe writes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((2, 8, 8, 3), np.int32), "dtype int32"),
        (np.zeros((2, 8, 8), np.uint8), r"shape \(2, 8, 8\); expected \[T, H, W, 3\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        (np.full((1, 8, 8, 3), np.nan), "NaN"),
    ],
)
def test_bad_frames_are_rejected(frames, message):
    with pytest.raises(ValueError, match=message):
        to_uint8_frames(frames)


@pytest.mark.parametrize("fps", [0, -24, float("nan"), "fast"])
def test_bad_fps_is_rejected(tmp_path, fps):
    with pytest.raises(ValueError, match="fps .* positive"):
        write_mp4(tmp_path / "x.mp4", smooth_clip(frames=2), fps=fps)
    assert not any(tmp_path.iterdir())


def test_bad_crf_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="crf 60 is out of range"):
        write_mp4(tmp_path / "x.mp4", smooth_clip(frames=2), fps=8, crf=60)


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        read_video(tmp_path / "absent.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(junk)


class _FailingVideoFrame:
    """Stand-in for av.VideoFrame whose third frame fails, as a full disk would mid-write."""

    real = av.VideoFrame
    calls = 0

    @classmethod
    def from_ndarray(cls, array, format):
        cls.calls += 1
        if cls.calls == 3:
            raise OSError("No space left on device")
        return cls.real.from_ndarray(array, format=format)


def test_failed_mp4_write_leaves_existing_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "result.mp4"
    target.write_bytes(b"previous video")
    monkeypatch.setattr(_FailingVideoFrame, "calls", 0)
    monkeypatch.setattr(video_io.av, "VideoFrame", _FailingVideoFrame)
    with pytest.raises(OSError, match="No space left"):
        write_mp4(target, smooth_clip(frames=5), fps=8)
    assert target.read_bytes() == b"previous video"
    assert [p.name for p in tmp_path.iterdir()] == ["result.mp4"]


def test_failed_png_write_leaves_existing_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "sheet.png"
    target.write_bytes(b"previous sheet")

    def half_write(image, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(OSError, match="No space left"):
        write_contact_sheet(target, smooth_clip(frames=2, height=8, width=8))
    assert target.read_bytes() == b"previous sheet"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
