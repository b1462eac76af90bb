"""The fine-tuning data folder: clips and stills with captions become cached latents, caption features and motion
scores; bad data fails naming the file, and a size off the model's grid names the nearest fits."""

import numpy as np
import pytest
import torch
from PIL import Image

from lumina_core import demo
from lumina_core.finetune_data import EMPTY_CAPTION, cache_samples, check_training_size, read_sample, scan_folder
from lumina_core.video_io import write_mp4


def square_clip(frames: int = 16, step: int = 3, size: int = 64, colour=(160, 40, 200)) -> np.ndarray:
    """A coloured square crossing a grey background by ``step`` pixels per frame (0 = still)."""
    video = np.full((frames, size, size, 3), 128, dtype=np.uint8)
    for index in range(frames):
        left = 4 + (index * step) % (size - 24)
        video[index, 20:40, left:left + 16] = colour
    return video


def add_clip(folder, name, caption, **kwargs):
    write_mp4(folder / f"{name}.mp4", square_clip(**kwargs), fps=8)
    (folder / f"{name}.txt").write_text(caption)


@pytest.fixture(scope="module")
def parts():
    tokenizer = demo.build_tokenizer()
    return demo.build_vae(), demo.build_text_model(len(tokenizer)), tokenizer


def test_clips_and_stills_are_cached_with_latents_captions_and_motion(tmp_path, parts):
    add_clip(tmp_path, "moving", "a purple square moving right", step=3)
    add_clip(tmp_path, "still", "a purple square standing still", step=0)
    Image.fromarray(square_clip(frames=1, size=96)[0]).save(tmp_path / "photo.png")
    (tmp_path / "photo.txt").write_text("a purple square\n")
    (tmp_path / "notes.md").write_text("not data")
    samples = scan_folder(tmp_path)
    assert [(s.path.name, s.is_clip) for s in samples] == [("moving.mp4", True), ("photo.png", False),
                                                          ("still.mp4", True)]
    cached = cache_samples(samples, *parts, width=64, height=32, frames=16, progress=False)
    assert cached["clip_latents"].shape == (2, 16, 4, 4, 8)
    assert cached["image_latents"].shape == (1, 16, 1, 4, 8)
    assert cached["captions"][EMPTY_CAPTION] == "" and len(cached["captions"]) == 4
    assert [cached["captions"][i] for i in cached["clip_caption"]] == ["a purple square moving right",
                                                                       "a purple square standing still"]
    assert cached["caption_feats"].shape[:2] == cached["caption_mask"].shape
    moving, still = cached["clip_motion"].tolist()
    assert moving > 1.0 and still < 0.1 * moving  # the pack's motion score of each clip
    assert cached["sources"] == ["moving.mp4", "still.mp4", "photo.png"]


def test_bad_data_is_refused_naming_the_file(tmp_path, parts):
    add_clip(tmp_path, "ok", "a red square")
    (tmp_path / "lonely.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"lonely\.png has no caption: write what it shows into .*lonely\.txt"):
        scan_folder(tmp_path)
    (tmp_path / "lonely.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"caption .*lonely\.txt is empty"):
        scan_folder(tmp_path)
    (tmp_path / "lonely.txt").write_text("a square")
    with pytest.raises(ValueError, match=r"lonely\.png is not a readable image"):
        cache_samples(scan_folder(tmp_path), *parts, width=64, height=64, frames=16, progress=False)
    (tmp_path / "lonely.png").unlink()
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "broken.txt").write_text("a square")
    with pytest.raises(ValueError, match=r"broken\.mp4 is not a readable video"):
        cache_samples(scan_folder(tmp_path), *parts, width=64, height=64, frames=16, progress=False)
    (tmp_path / "broken.mp4").unlink()
    add_clip(tmp_path, "short", "a square", frames=9)
    with pytest.raises(ValueError, match=r"short\.mp4 has 9 frames; training at --frames 16 needs at least 16"):
        cache_samples(scan_folder(tmp_path), *parts, width=64, height=64, frames=16, progress=False)
    with pytest.raises(ValueError, match=r"data folder .*missing does not exist"):
        scan_folder(tmp_path / "missing")


@pytest.mark.parametrize("size, message", [
    ((70, 64, 16), r"--width 70 is not on the model's grid: a positive multiple of 16 pixels .*use 64 or 80"),
    ((64, 8, 16), r"--height 8 is not on the model's grid: .*use 16"),
    ((64, 64, 12), r"--frames 12 is not on the model's grid: .*use 8 or 16"),
    ((64, 64, 9), r"--frames 9 is not on the model's grid: .*largest f-patch size 2; use 8 or 16"),
    ((64, 64, 1), r"--frames 1 is not on the model's grid: .*use 8"),
])
def test_a_size_off_the_model_grid_names_the_nearest_fits(size, message):
    with pytest.raises(ValueError, match=message):
        check_training_size(*size, demo.TRANSFORMER_CONFIG)
    check_training_size(64, 32, 16, demo.TRANSFORMER_CONFIG)


def test_stills_are_scaled_to_cover_and_centre_cropped(tmp_path, parts):
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # a white centre band: after cover-scaling to 32 x 64 and cropping to 32 x 32, all white
    Image.fromarray(image).save(tmp_path / "band.png")
    (tmp_path / "band.txt").write_text("a white square")
    pixels = read_sample(scan_folder(tmp_path)[0], 32, 32, 16)
    assert pixels.shape == (1, 32, 32, 3)
    assert torch.all(pixels[:, :, 2:30] > 0.95)
