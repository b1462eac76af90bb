"""The official list of usable resolutions (the official imgproc.generate_crop_size_list, rewritten) and the
labels Empty Latent Video offers. The size rule itself is checked by the table in size_rule.py."""

import pytest

from lumina_core.limits import MAX_FRAMES
from lumina_core.sampling import SampleConfig
from lumina_core.sizes import (
    CUSTOM_RESOLUTION,
    OFFICIAL_RESOLUTIONS,
    check_latent_video_size,
    check_video_size,
    crop_sizes,
    resolution_size,
)


def test_crop_sizes_walk_the_staircase_under_the_patch_budget():
    # By hand for 6 patches of 1 px: widths 6..1 take heights from the wider width's largest (6 // (w + 1)) up to
    # their own (6 // w); (6, 1), (5, 1), (1, 5) and (1, 6) are more than 4:1.
    assert crop_sizes(6, 1) == [(4, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 4)]
    assert crop_sizes(6, 1, max_ratio=1.0) == [(2, 2)]


@pytest.mark.parametrize("target, count", [(960, 91), (512, 49)])
def test_official_lists_for_960_and_512(target, count):
    """(target / 32)^2 patches of 32 px, as the official README computes them. The 4:1 staircase runs from
    (4n, n) to (n, 4n) patches (n = target / 64): 3n steps left and 3n up, so 6n + 1 sizes."""
    n = target // 64
    sizes = crop_sizes((target // 32) ** 2, 32)
    assert len(sizes) == count == 6 * n + 1
    assert sizes[0] == (4 * n * 32, n * 32) and sizes[-1] == (n * 32, 4 * n * 32)
    assert (target, target) in sizes
    for (w0, h0), (w1, h1) in zip(sizes, sizes[1:]):
        assert (w0 - w1, h1 - h0) in ((32, 0), (0, 32))
    assert all(w * h <= target * target for w, h in sizes)


def test_960_list_holds_the_official_1248x704_and_its_siblings():
    sizes = crop_sizes(900, 32)
    # 1248 = 39 patches: 900 // 40 = 22 and 900 // 39 = 23, so heights 704 and 736
    assert {(1248, 704), (1248, 736), (704, 1248), (960, 960)} <= set(sizes)
    assert (1280, 720) not in sizes  # not a multiple of 32


def test_empty_latent_video_labels():
    assert len(OFFICIAL_RESOLUTIONS) == 91 + 49
    assert OFFICIAL_RESOLUTIONS["1248x704 (960p, ~16:9)"] == (1248, 704)
    assert OFFICIAL_RESOLUTIONS["704x1248 (960p, ~9:16)"] == (704, 1248)
    assert OFFICIAL_RESOLUTIONS["960x960 (960p, 1:1)"] == (960, 960)
    assert OFFICIAL_RESOLUTIONS["512x512 (512p, 1:1)"] == (512, 512)
    assert resolution_size("1248x704 (960p, ~16:9)", 64, 64) == (1248, 704)
    assert resolution_size(CUSTOM_RESOLUTION, 64, 96) == (64, 96)
    with pytest.raises(ValueError, match=r"resolution '1280x720' is not one of the official sizes .* or 'custom'"):
        resolution_size("1280x720", 64, 64)


def test_latent_size_is_checked_in_pixels():
    config = SampleConfig.preset("f24F96R960-MultiScale")
    check_latent_video_size((1, 16, 24, 88, 156), config)  # 1248x704, 96 frames
    with pytest.raises(ValueError, match=r"width 1240 is not a positive multiple of 32 pixels"):
        check_latent_video_size((1, 16, 24, 88, 155), config)
    with pytest.raises(ValueError, match=r"frames 49 make 13 latent frames"):
        check_latent_video_size((1, 16, 13, 88, 156), config)
    with pytest.raises(ValueError, match=r"latent shape \(16, 88, 156\) is not \[B, C, F, H, W\]"):
        check_latent_video_size((16, 88, 156), config)


@pytest.mark.parametrize("frames, message", [
    (MAX_FRAMES + 7, f"frames {MAX_FRAMES + 7} is above {MAX_FRAMES}"),
    (-9, "frame count -9 is not valid for the CogVideoX VAE.*use 1$"),
    (-1000, "frame count -1000 is not valid for the CogVideoX VAE.*use 1$"),
])
def test_frame_counts_outside_the_widget_range_are_refused(frames, message):
    with pytest.raises(ValueError, match=message):
        check_video_size(64, 64, frames)
