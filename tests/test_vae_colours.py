"""The demo VAE carries the colours its encoder was fine-tuned on (training/vae_colours.py): purple and orange
clips keep their hue through encode + decode, and the fine-tune trains the encoder only (the decoder, which
draws every video of the demo transformer, stays as it was)."""

import numpy as np
import torch

from lumina_core import demo
from lumina_core.vae import decode, encode, load_vae
from training import demo_data, vae_colours

HUE_TOLERANCE = 25.0
"""Degrees from the rendered hue; the nearest trained hues are 42 (purple: blue 230, magenta 304) and 25 (orange:
red 3, yellow 53) away, and the VAE before its fine-tune returned purple as grey (no coloured pixel) and moving
orange at hue 309-329 (magenta)."""


def hue_distance(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_the_shipped_demo_vae_keeps_the_new_colours_through_a_round_trip():
    vae = load_vae(demo.MODELS_DIR / demo.VAE_FILE).eval()
    for colour, rgb in vae_colours.NEW_COLOURS.items():
        clips = np.stack([vae_colours.new_colour_frames(colour, np.random.default_rng([5, index]), still)
                          for index, still in enumerate((0.0, 0.0, 1.0))])
        decoded = decode(vae, encode(vae, torch.from_numpy(clips).float() / 255)).numpy()
        hues = [vae_colours.mean_hue(clip) for clip in decoded]
        assert all(hue_distance(hue, demo_data.hue_of(rgb)) < HUE_TOLERANCE for hue in hues), (colour, hues)


def test_shape_window_shows_the_shape():
    rng = np.random.default_rng(0)
    for _ in range(6):
        clip = vae_colours.new_colour_frames("purple", rng, still_probability=0.0)
        window = vae_colours.shape_window(clip, 8, 32, rng)
        assert window.shape == (8, 32, 32, 3)
        assert demo_data.shape_pixels(window).sum() >= 0.5 * demo_data.shape_pixels(clip).sum() * 8 / len(clip)


def test_a_fine_tune_step_changes_the_encoder_and_leaves_the_decoder(tmp_path):
    source = demo.MODELS_DIR / demo.VAE_FILE
    written = vae_colours.train(vae_colours.build_parser().parse_args(
        ["--out", str(tmp_path), "--steps", "1", "--batch", "1", "--keep-batch", "1", "--report-clips", "1"]))
    before, after = load_vae(source).state_dict(), load_vae(written).state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], value) for key, value in before.items() if not key.startswith("encoder."))
    assert any(not torch.equal(after[key], value) for key, value in before.items() if key.startswith("encoder."))
    assert (tmp_path / "state.pt").is_file() and "after step 1" in (tmp_path / "log.txt").read_text()
