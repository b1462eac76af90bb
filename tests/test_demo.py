"""The shipped demo models: they load through the real loaders, stay small, and make the video the
prompt asks for."""

import numpy as np
import pytest

from lumina_core import demo
from lumina_core.app.pipeline import VideoRequest, generate_video
from lumina_core.sampling import SampleConfig
from training import demo_data


def test_the_trained_demo_ships():
    """The command line's default is the trained demo; a checkout or install without its files must fail here,
    not skip (without them every component is random and the video noise)."""
    missing = [name for name in (demo.TRANSFORMER_FILE, demo.VAE_FILE, demo.TEXT_ENCODER_DIR)
               if not (demo.MODELS_DIR / name).exists()]
    assert demo.DEMO_IS_TRAINED and not missing, f"missing from {demo.MODELS_DIR}: {missing}"


@pytest.fixture(scope="module")
def components():
    return demo.load_demo()


def test_shipped_files_are_small_and_load_with_the_demo_configs(components):
    files = [path for path in demo.MODELS_DIR.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 30 * 2**20
    assert components.transformer.config == demo.TRANSFORMER_CONFIG
    assert components.vae.config.latent_channels == 16
    assert tuple(components.vae.config.block_out_channels) == demo.VAE_CONFIG["block_out_channels"]
    # The shipped tokenizer is the deterministic word-level one the DiT was trained with.
    assert components.tokenizer.get_vocab() == demo.build_tokenizer().get_vocab()
    assert components.text_model.get_input_embeddings().num_embeddings == len(components.tokenizer)


def colour_share(frames: np.ndarray, colour: str) -> float:
    """Share of the coloured (shape) pixels whose nearest demo hue is ``colour``."""
    mask = demo_data.shape_pixels(frames)
    hues = np.array([demo_data.hue_of(rgb) for rgb in frames[mask]])
    centres = np.array(list(demo_data.COLOUR_HUES.values()))
    nearest = np.abs((hues[:, None] - centres[None] + 180) % 360 - 180).argmin(axis=1)
    return float(np.mean(nearest == list(demo_data.COLOUR_HUES).index(colour))) if len(hues) else 0.0


def generate(components, prompt: str, seed: int = 0) -> np.ndarray:
    size = demo.DEMO_SIZE
    request = VideoRequest(prompt=prompt, width=size["width"], height=size["height"], frames=size["frames"], seed=seed)
    config = SampleConfig.from_official(demo.DEMO_SCHEDULE)
    return generate_video(components.transformer, components.text_model, components.tokenizer, components.vae,
                          request, config).numpy()


def test_the_prompt_steers_the_colour_of_the_shape(components):
    """Same noise, two prompts: each clip is dominated by its own prompt's colour."""
    red = generate(components, "a red circle moving left")
    yellow = generate(components, "a yellow square moving right")
    size = demo.DEMO_SIZE
    assert red.shape == (size["frames"], size["height"], size["width"], 3) and np.isfinite(red).all()
    assert demo_data.shape_colour(red) == "red" and demo_data.shape_colour(yellow) == "yellow"
    assert colour_share(red, "red") > colour_share(yellow, "red") + 0.3
    assert colour_share(yellow, "yellow") > colour_share(red, "yellow") + 0.3
