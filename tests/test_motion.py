"""Motion score: the official sampling recipe and the flow scale, on synthetic moving textures.

A translation of d pixels (at 320 x 576) per 0.5 s must score d / 2 (horizontal) or d (diagonal),
because the score is the mean of |flow| over both components.
"""

import tracemalloc

import cv2
import numpy as np
import pytest
import torch

from lumina_core.motion import flow_frames, motion_score, motion_score_frames, recipe_indices, sample_indices
from lumina_core.video_io import write_mp4


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random RGB uint8 texture with structure at every scale (1/f noise, blurred by ~2 px)."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    freq[0, 0] = 1.0
    spectrum = np.exp(-2 * (np.pi * 2.0 * freq) ** 2) / freq
    spectrum[0, 0] = 0.0
    noise = rng.standard_normal((3, height, width))
    image = np.fft.irfft2(np.fft.rfft2(noise) * spectrum, s=(height, width))
    image = (image - image.mean()) / image.std()
    return np.clip(128 + 50 * image, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def translating_video(dx: int, dy: int, frames: int = 9, height: int = 320, width: int = 576, seed: int = 0):
    """Frames [frames, height, width, 3] cropped from a larger canvas, moving (dx, dy) px per frame."""
    canvas = texture(height + dy * (frames - 1), width + dx * (frames - 1), seed)
    return np.stack([canvas[k * dy : k * dy + height, k * dx : k * dx + width] for k in range(frames)])


def zooming_video(scale: float, frames: int = 9, height: int = 320, width: int = 576, seed: int = 0):
    """Frames zooming into the centre of a texture by ``scale`` per frame (flow (scale-1)*(p-centre))."""
    canvas = texture(2 * height, 2 * width, seed)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    video = []
    for k in range(frames):
        zoom = scale**k
        # output pixel p samples the canvas at canvas_centre + (p - centre) / zoom
        offset = 2 * centre + 0.5 - centre / zoom
        inverse = np.array([[1 / zoom, 0, offset[0]], [0, 1 / zoom, offset[1]]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        video.append(cv2.warpAffine(canvas, inverse, (width, height), flags=flags))
    return np.stack(video)


def within(score: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(score - expected) <= tolerance * expected


# --- sampling recipe ------------------------------------------------------------------------


def test_recipe_samples_every_half_second_up_to_four_seconds():
    assert recipe_indices(24) == [0, 12, 24, 36, 48, 60, 72, 84, 96]
    assert recipe_indices(2) == list(range(9))
    # Python's round (ties to even), as in the official code
    assert recipe_indices(25) == [0, 12, 25, 38, 50, 62, 75, 88, 100]


def test_sampling_stops_at_the_end_of_the_clip():
    assert sample_indices(97, 24) == recipe_indices(24)
    assert sample_indices(96, 24) == [0, 12, 24, 36, 48, 60, 72, 84]
    assert sample_indices(10, 30) == [0]


def test_only_the_recipe_frames_are_scored():
    """At 4 fps the recipe takes every second frame; garbage in between must not matter."""
    clean = translating_video(8, 0)
    garbage = np.random.default_rng(1).integers(0, 256, clean.shape, dtype=np.uint8)
    video = np.empty((17, *clean.shape[1:]), np.uint8)
    video[0::2] = clean
    video[1::2] = garbage[:8]
    # exact: the same 9 frames reach the same flow code in the same order
    assert motion_score(video, fps=4) == motion_score_frames(clean)


# --- flow scale (calibration) ---------------------------------------------------------------


@pytest.mark.parametrize("shift", [2, 4, 8, 16, 24, 48])
def test_horizontal_shift_scores_half_the_shift(shift):
    score = motion_score(translating_video(shift, 0, seed=shift), fps=2)
    assert within(score, shift / 2), score


@pytest.mark.parametrize("shift", [2, 8, 16, 24])
def test_diagonal_shift_scores_the_shift(shift):
    score = motion_score(translating_video(shift, shift, seed=shift), fps=2)
    assert within(score, shift), score


def test_zoom_scores_the_mean_radial_flow():
    """Zooming by 5 % per 0.5 s moves pixel p by 0.05 * (p - centre): a non-uniform flow field."""
    offsets_x = np.abs(np.arange(576) - 287.5).mean()
    offsets_y = np.abs(np.arange(320) - 159.5).mean()
    expected = 0.05 * (offsets_x + offsets_y) / 2  # = 5.6
    assert within(motion_score(zooming_video(1.05), fps=2), expected)


def test_still_video_scores_near_zero():
    still = translating_video(0, 0)
    noisy = np.clip(still + np.random.default_rng(2).normal(0, 3, still.shape), 0, 255).astype(np.uint8)
    assert motion_score(still, fps=2) < 0.1
    assert motion_score(noisy, fps=2) < 0.1


def test_faster_motion_scores_higher():
    scores = [motion_score(translating_video(shift, 0, seed=3), fps=2) for shift in (0, 1, 3, 6, 12, 30)]
    assert all(a < b for a, b in zip(scores[:-1], scores[1:], strict=True)), scores


# --- frame geometry -------------------------------------------------------------------------


def test_portrait_frames_are_transposed_not_rotated():
    landscape = translating_video(8, 0)
    portrait = landscape.transpose(0, 2, 1, 3).copy()  # 576 x 320, moving vertically
    assert portrait.shape[1:3] == (576, 320)
    # What flow sees: the transposed portrait is the landscape clip, pixel for pixel (pure data movement and
    # the same resize, so exact). A rotated clip comes out mirrored: within one grey level of the mirror
    # image (the resize weights of mirrored pixels round differently), far from the unmirrored one.
    np.testing.assert_array_equal(flow_frames(portrait), flow_frames(landscape))
    seen, landscape_seen = flow_frames(np.rot90(landscape, axes=(1, 2)).copy()).astype(int), flow_frames(landscape)
    assert np.abs(seen - landscape_seen[:, :, ::-1]).max() <= 1
    assert np.abs(seen - landscape_seen).mean() > 10
    # The scores agree up to the order OpenCV sums the transposed flow in: 1e-9 relative is far below
    # any scale error (a wrong resize moves the score by percents) and far above float64 rounding.
    assert motion_score(portrait, fps=2) == pytest.approx(motion_score(landscape, fps=2), rel=1e-9)


@pytest.mark.parametrize("height, width", [(160, 288), (240, 320)])
def test_frames_are_resized_to_320x576_ignoring_aspect(height, width):
    """A 4 px horizontal shift becomes 4 * 575 / (width - 1) px at 576 wide (align_corners)."""
    score = motion_score(translating_video(4, 0, height=height, width=width), fps=2)
    assert within(score, 4 * 575 / (width - 1) / 2), score


# --- inputs and determinism -----------------------------------------------------------------


def test_same_input_gives_identical_score():
    video = translating_video(6, 2, seed=4)
    assert motion_score(video, fps=2) == motion_score(video.copy(), fps=2)  # determinism: same input, same path


def test_float_and_torch_frames_score_like_uint8():
    video = translating_video(6, 0, seed=5)
    expected = motion_score(video, fps=2)
    # exact: float frames in [0, 1] round back to the same uint8 frames before anything else happens
    assert motion_score(video / 255.0, fps=2) == expected
    assert motion_score(torch.from_numpy(video).float() / 255, fps=2) == expected


def test_only_the_sampled_frames_of_a_long_clip_are_converted():
    """A 10 s float clip at 24 fps (240 frames) is scored from its 9 sampled frames; converting the whole batch to
    uint8 first cost 2-3 times the clip's size in extra memory. numpy's allocations are traced by tracemalloc."""
    clip = np.zeros((240, 90, 160, 3), dtype=np.float32)  # 41 MB
    clip[:, :, :80] = 0.5
    tracemalloc.start()
    try:
        motion_score(clip, fps=24)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < clip.nbytes / 4, f"{peak / 2**20:.1f} MiB traced for a {clip.nbytes / 2**20:.0f} MiB clip"


def test_mp4_file_scores_like_the_frames(tmp_path):
    """Codec noise from H.264 must barely move the score."""
    video = translating_video(10, 0, seed=6)
    path = write_mp4(tmp_path / "pan.mp4", video, fps=2)
    assert within(motion_score(path), 5.0)
    assert within(motion_score(str(path)), motion_score(video, fps=2), 0.02)
    still = write_mp4(tmp_path / "still.mp4", translating_video(0, 0), fps=2)
    assert motion_score(still) < 0.1


def test_fps_overrides_the_file_rate(tmp_path):
    """Read at 4 fps, a 9-frame file at 2 fps is only 2 s long: frames 0, 2, 4, 6, 8 are used."""
    path = write_mp4(tmp_path / "pan.mp4", translating_video(4, 0, seed=7), fps=2)
    with pytest.warns(UserWarning, match="shorter than the 4 s"):
        score = motion_score(path, fps=4)
    assert within(score, 4.0)


# --- short clips and errors -----------------------------------------------------------------


def test_short_clip_warns_and_scores_what_exists():
    with pytest.warns(UserWarning, match=r"scoring the 5 frames up to 2 s"):
        score = motion_score(translating_video(8, 0, frames=5), fps=2)
    assert within(score, 4.0)


@pytest.mark.parametrize("frames, fps", [(1, 2), (12, 24)])
def test_clip_under_half_a_second_is_an_error(frames, fps):
    video = np.zeros((frames, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=rf"shorter than 0.5 s .* at least {round(fps / 2) + 1} frames"):
        motion_score(video, fps=fps)


def test_frames_need_two_samples():
    with pytest.raises(ValueError, match="at least 2 sampled frames"):
        motion_score_frames(np.zeros((1, 32, 32, 3), np.uint8))


def test_array_without_fps_is_an_error():
    with pytest.raises(ValueError, match="fps is required"):
        motion_score(np.zeros((9, 32, 32, 3), np.uint8))


def test_missing_file_error_names_the_path(tmp_path):
    path = tmp_path / "nowhere.mp4"
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        motion_score(path)


def test_unreadable_file_error_names_the_path(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        motion_score(path)
