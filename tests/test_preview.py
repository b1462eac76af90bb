"""Latent previews: the demo VAE's latent-to-RGB map gives a shape's colour and the grey background, the stored
map matches a fresh least-squares fit, the real VAE's map is the published table rescaled to our latent, and
the grid holds every latent frame in order."""

import numpy as np
import pytest
import torch

from lumina_core import demo
from lumina_core.preview import (
    COGVIDEOX,
    DEMO,
    PUBLISHED_COGVIDEOX_BIAS,
    PUBLISHED_COGVIDEOX_FACTORS,
    fit_latent_rgb,
    frame_grid,
    frames_per_latent,
    grid_layout,
    rgb_at_latent_resolution,
)
from lumina_core.vae import SCALING_FACTOR, encode
from training.demo_data import COLOUR_HUES, COLOURS, ClipSpec, hue_of, render
from training.fit_preview import demo_latents_and_frames

REFIT_CLIPS = 8
REFIT_PREDICTION_TOL = 0.05
"""RMS distance (RGB in [-1, 1]) between the stored map's and a fresh 8-clip fit's colours of those clips; the
8-clip fit is 0.023 from the stored 24-clip one. Compared as colours, not table entries: the latent channels are
correlated, so equally good tables differ by up to 0.06 per entry."""
REFIT_ERROR_MARGIN = 0.01
"""How much worse than the fresh fit the stored map may fit its clips (measured 0.052 vs 0.046)."""
HUE_TOL = {"red": 15.0, "yellow": 15.0, "green": 40.0, "cyan": 15.0, "blue": 15.0, "magenta": 15.0}
"""Degrees between the map's and the drawn hue of a shape (measured 10, 1, 37, 1, 8, 12). Green comes out
yellow-green (83 for 120 degrees; the VAE itself decodes it at 119): the limit of a linear per-pixel map on this
VAE, which even a fit on six green-to-magenta stills alone misses by 12 degrees."""


@pytest.fixture(scope="module")
def vae():
    return demo.build_vae()


def still_clip(colour: str) -> torch.Tensor:
    """A still square of ``colour``, radius 12 px, centred on a 0.5 grey background: frames [1, 16, 64, 64, 3]."""
    spec = ClipSpec(colour, "square", "still", "", 0.0, 12.0, (32.0, 32.0), 0.5)
    return torch.from_numpy(render(spec))[None].float() / 255


@pytest.mark.parametrize("colour", list(COLOURS))
def test_demo_map_shows_the_shape_colour_on_grey(vae, colour):
    rgb = (DEMO.to_rgb(encode(vae, still_clip(colour)))[0] + 1) / 2  # [3, T, 8, 8] in about [0, 1]
    shape = rgb[:, :, 3:5, 3:5].mean(dim=(1, 2, 3))  # latent pixels 3-4 = pixels 24-39, inside the square
    hue_error = abs((hue_of(shape) - COLOUR_HUES[colour] + 180) % 360 - 180)
    assert hue_error < HUE_TOL[colour], (colour, shape.tolist(), hue_of(shape))
    assert shape.max() - shape.min() > 0.3  # saturated, as the drawn colour is (e.g. red 0.90, 0.12, 0.10)
    corner = rgb[:, :, 0, 0].mean(dim=1)  # background only
    assert corner.max() - corner.min() < 0.1 and abs(corner.mean() - 0.5) < 0.1, corner.tolist()
    assert np.isclose(float(shape.max()), max(COLOURS[colour]), atol=0.2)


def test_stored_demo_map_matches_a_fresh_least_squares_fit():
    latents, frames = demo_latents_and_frames(REFIT_CLIPS)
    fitted, fit_error = fit_latent_rgb(latents, frames)
    target = rgb_at_latent_resolution(frames, latents.shape)
    stored_error = (DEMO.to_rgb(latents) - target).pow(2).mean().sqrt().item()
    distance = (DEMO.to_rgb(latents) - fitted.to_rgb(latents)).pow(2).mean().sqrt().item()
    assert distance < REFIT_PREDICTION_TOL and stored_error < fit_error + REFIT_ERROR_MARGIN, (distance, stored_error,
                                                                                              fit_error)


def test_least_squares_recovers_a_linear_map():
    torch.manual_seed(0)
    factors, bias = torch.randn(16, 3) * 0.05, torch.tensor([0.1, -0.2, 0.05])
    latents = torch.randn(2, 16, 3, 4, 4)  # odd T: the first latent frame stands for one frame, the others for 4
    rgb = torch.einsum("bcthw,cr->brthw", latents, factors) + bias.view(1, 3, 1, 1, 1)
    frames = ((rgb + 1) / 2).repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
    frames = torch.cat([frames[:, :, :1], frames[:, :, 1:].repeat_interleave(4, dim=2)], dim=2).permute(0, 2, 3, 4, 1)
    assert frames_per_latent(3, frames.shape[1]) == [1, 4, 4]
    fitted, error = fit_latent_rgb(latents, frames)
    assert error < 1e-5
    assert torch.allclose(torch.tensor(fitted.factors), factors, atol=1e-5)
    assert torch.allclose(torch.tensor(fitted.bias), bias, atol=1e-5)


def test_frames_that_do_not_decode_from_the_latents_are_refused():
    with pytest.raises(ValueError, match="10 frames do not decode from 3 latent frames; the VAE decodes them to 9"):
        frames_per_latent(3, 10)


def test_real_vae_map_is_the_published_table_over_our_latent():
    """The published factors read 5 x (0.7 x the VAE latent); ours read 1.15258426 x the VAE latent."""
    z = torch.randn(1, 16, 2, 3, 3)
    published = torch.einsum("bc...,cr->br...", 5 * 0.7 * z, torch.tensor(PUBLISHED_COGVIDEOX_FACTORS))
    published = published + torch.tensor(PUBLISHED_COGVIDEOX_BIAS).view(1, 3, 1, 1, 1)
    assert torch.allclose(COGVIDEOX.to_rgb(z * SCALING_FACTOR), published, atol=1e-5)


@pytest.mark.parametrize("frames, height, width, layout", [
    (1, 8, 8, (1, 1)), (2, 4, 4, (1, 2)), (4, 8, 8, (2, 2)), (13, 88, 156, (5, 3)), (24, 88, 156, (6, 4)),
    (3, 2, 4, (2, 2)),
])
def test_grid_layout_is_near_square(frames, height, width, layout):
    assert grid_layout(frames, height, width) == layout


def test_frame_grid_holds_every_frame_of_the_first_video_in_order():
    latent = torch.arange(2 * 16 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 16, 3, 2, 4)
    grid = frame_grid(latent)
    assert grid.shape == (1, 16, 1, 4, 8)  # 2 x 2 cells of 2 x 4
    cells = {(0, 0): latent[0, :, 0], (0, 1): latent[0, :, 1], (1, 0): latent[0, :, 2],
             (1, 1): torch.zeros(16, 2, 4)}
    for (row, column), expected in cells.items():
        assert torch.equal(grid[0, :, 0, 2 * row:2 * row + 2, 4 * column:4 * column + 4], expected)
    image = torch.zeros(1, 16, 4, 4)
    assert frame_grid(image) is image  # not a video: unchanged


def test_the_map_refuses_a_latent_of_another_width():
    with pytest.raises(ValueError, match="latent has 4 channels but this latent-to-RGB map reads 16"):
        DEMO.to_rgb(torch.zeros(1, 4, 2, 2))
