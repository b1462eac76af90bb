"""CogVideoX VAE: frame counts, the official decode/encode recipe, loading, tiling and errors.

Every test uses real diffusers objects: a tiny random AutoencoderKLCogVideoX (4 blocks of 8
channels, so the real 8x spatial / 4x temporal compression) built with a fixed seed.
"""

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLCogVideoX
from einops import rearrange
from safetensors.torch import save_file

from lumina_core.vae import (
    AUTO_TILING_LATENT_PIXELS,
    COGVIDEOX_2B_VAE_CONFIG,
    SCALING_FACTOR,
    MemoryPlan,
    decode,
    encode,
    frame_count_for_latents,
    latent_count_for_frames,
    load_vae,
    memory_plan,
)

# sample 96x80 -> tiles of 48x40 px (6x5 latents): the overlap/blend arithmetic of diffusers'
# tiling only gives back the full size when tile and overlap line up as in the 480x720 config.
TINY_CONFIG = {
    "block_out_channels": (8, 8, 8, 8),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 16,
    "sample_height": 96,
    "sample_width": 80,
}


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(**TINY_CONFIG).eval()


def latents(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def video(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- frame counts


@pytest.mark.parametrize("latent_frames, frames", [(1, 1), (2, 8), (3, 9), (4, 16), (5, 17), (13, 49), (24, 96)])
def test_frame_count_formula(latent_frames, frames):
    assert frame_count_for_latents(latent_frames) == frames
    assert latent_count_for_frames(frames) == latent_frames


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 4, 13])
def test_decode_frame_count_is_what_diffusers_produces(vae, latent_frames):
    frames = decode(vae, latents(1, 16, latent_frames, 2, 3))
    assert frames.shape == (1, frame_count_for_latents(latent_frames), 16, 24, 3)


@pytest.mark.parametrize("frames", [1, 8, 9, 17])
def test_encode_latent_count_is_what_diffusers_produces(vae, frames):
    z = encode(vae, video(1, frames, 16, 24, 3))
    assert z.shape == (1, 16, latent_count_for_frames(frames), 2, 3)


@pytest.mark.parametrize("frames, nearest", [(50, "49 or 56"), (10, "9 or 16"), (2, "1 or 8"), (0, "use 1")])
def test_invalid_frame_count_names_nearest_valid(frames, nearest):
    with pytest.raises(ValueError, match=rf"frame count {frames} .*8m or 8m\+1.*{nearest}"):
        latent_count_for_frames(frames)


def test_latent_frame_count_below_one_is_rejected():
    with pytest.raises(ValueError, match="latent frame count 0 is below 1"):
        frame_count_for_latents(0)


# --------------------------------------------------------------------------- recipe


def test_decode_is_the_official_recipe(vae):
    z = latents(2, 16, 3, 2, 3)
    frames = decode(vae, z)
    with torch.no_grad():
        expected = ((vae.decode(z / 1.15258426).sample + 1) / 2).clamp(0, 1)
    assert SCALING_FACTOR == 1.15258426
    assert frames.dtype == torch.float32
    assert torch.equal(frames, rearrange(expected, "b c f h w -> b f h w c"))
    assert frames.min() >= 0 and frames.max() <= 1
    assert ((frames > 0) & (frames < 1)).float().mean() > 0.05  # not everything clamped


def test_encode_is_the_posterior_mode_times_s(vae):
    frames = video(2, 9, 16, 24, 3)
    z = encode(vae, frames)
    with torch.no_grad():
        posterior = vae.encode(rearrange(frames * 2 - 1, "b f h w c -> b c f h w")).latent_dist
    assert torch.equal(z, posterior.mode() * SCALING_FACTOR)
    assert torch.equal(encode(vae, frames), z)  # mode, not a sample


def test_bfloat16_vae_returns_float32_close_to_the_float32_vae(tmp_path, vae):
    """bf16 weights and activations (8-bit mantissa) move this tiny VAE's frames by < 1% of their range
    and its latents by ~1% of their largest value (measured 0.008 / 0.010): bound 3%, far below what a
    wrong scaling or a skipped cast gives (> 10%)."""
    vae.save_pretrained(tmp_path)
    half = load_vae(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    z, frames = latents(1, 16, 2, 2, 3), video(1, 8, 16, 24, 3)
    decoded, encoded = decode(half, z), encode(half, frames)
    assert decoded.dtype == encoded.dtype == torch.float32
    assert (decoded - decode(vae, z)).abs().max() < 0.03  # frames in [0, 1]
    reference = encode(vae, frames)
    assert (encoded - reference).abs().max() < 0.03 * reference.abs().max()


# --------------------------------------------------------------------------- loading


def assert_same_weights(loaded, reference):
    assert isinstance(loaded, AutoencoderKLCogVideoX) and not loaded.training
    expected = reference.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())


def test_load_diffusers_folder(tmp_path, vae):
    vae.save_pretrained(tmp_path)
    loaded = load_vae(tmp_path)
    assert_same_weights(loaded, vae)
    z = latents(1, 16, 2, 2, 3)
    assert torch.equal(decode(loaded, z), decode(vae, z))


def test_folder_of_pickled_weights_is_refused_unread(tmp_path, vae, monkeypatch):
    """A folder of .bin weights was read through torch.load (code in the file runs before torch 2.6)."""
    vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on the pickled weights")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ValueError, match="the CogVideoX VAE folder 'vae' holds only pickled weights "
                                         "\\(diffusion_pytorch_model.bin\\), no .safetensors file"):
        load_vae(tmp_path)


def test_load_pipeline_folder_with_vae_subfolder(tmp_path, vae):
    vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    assert_same_weights(load_vae(tmp_path), vae)


def test_load_single_file_with_config_metadata(tmp_path, vae):
    path = tmp_path / "vae.safetensors"
    save_file(vae.state_dict(), str(path), metadata={"config": vae.to_json_string()})
    loaded = load_vae(path)
    assert_same_weights(loaded, vae)
    assert list(loaded.config.block_out_channels) == [8, 8, 8, 8]


def test_load_single_file_without_metadata_uses_cogvideox_2b_config(tmp_path):
    """A metadata-free file of the real 2B shapes (one constant per tensor, 431 MB in fp16)."""
    with torch.device("meta"):
        shapes = {
            name: t.shape
            for name, t in AutoencoderKLCogVideoX.from_config(COGVIDEOX_2B_VAE_CONFIG).state_dict().items()
        }
    values = {
        name: torch.full(shape, index / 1024, dtype=torch.float16) for index, (name, shape) in enumerate(shapes.items())
    }
    path = tmp_path / "cogvideox_vae.safetensors"
    save_file(values, str(path))
    del values
    loaded = load_vae(path)
    path.unlink()  # 431 MB: do not keep it among pytest's retained tmp dirs
    assert list(loaded.config.block_out_channels) == [128, 256, 256, 512]
    assert loaded.dtype == torch.float32
    for index, (name, tensor) in enumerate(loaded.state_dict().items()):
        assert tensor.device.type == "cpu" and tensor.flatten()[0].item() == pytest.approx(index / 1024, rel=1e-3), name


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vae(tmp_path / "nope")


def test_folder_without_config_names_both_places_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config.json in .* or .*vae"):
        load_vae(tmp_path)


def test_folder_of_another_vae_class_is_rejected(tmp_path):
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="describes AutoencoderKL, expected 'AutoencoderKLCogVideoX'"):
        load_vae(tmp_path)


def test_single_file_with_another_class_in_metadata_is_rejected(tmp_path):
    other = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4)
    path = tmp_path / "sd_vae.safetensors"
    save_file(other.state_dict(), str(path), metadata={"config": other.to_json_string()})
    with pytest.raises(ValueError, match="describes AutoencoderKL, expected 'AutoencoderKLCogVideoX'"):
        load_vae(path)


def test_single_file_of_another_vae_without_metadata_names_the_keys(tmp_path):
    path = tmp_path / "sd_vae.safetensors"
    save_file(AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).state_dict(), str(path))
    with pytest.raises(ValueError, match=r"do not fit AutoencoderKLCogVideoX: \d+ missing keys .*\d+ unexpected keys"):
        load_vae(path)


def test_reduced_cogvideox_file_without_metadata_names_shapes_and_fix(tmp_path, vae):
    path = tmp_path / "tiny.safetensors"
    save_file(vae.state_dict(), str(path))
    with pytest.raises(
        ValueError, match=r"shape mismatches \(e.g. .*: file \(.*\) vs config \(.*\).*metadata under 'config'"
    ):
        load_vae(path)


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "vae.pt"
    path.write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="not a .safetensors file"):
        load_vae(path)


# --------------------------------------------------------------------------- memory: tiling / slicing


def test_tiled_decode_is_close_to_untiled(vae):
    """8x7 latents = 2x2 tiles of 6x5 latents. Measured here: mean |diff| 0.018, max 0.35 (at the
    seams); other seeds 0.016-0.021 / 0.35-0.61. Random weights make each tile's GroupNorm
    statistics differ, so the bound is loose; the real VAE's 30x45 tiles differ far less."""
    z = latents(1, 16, 2, 8, 7)
    untiled, tiled = decode(vae, z, tiled=False), decode(vae, z, tiled=True)
    assert tiled.shape == untiled.shape == (1, 8, 64, 56, 3)
    difference = (tiled - untiled).abs()
    assert difference.max() > 0  # tiling really ran
    assert difference.mean() < 0.04


def test_tiled_encode_encodes_each_tile_on_its_own(vae):
    """With tiling, a latent inside the first 48x40 px tile depends on that tile's pixels only: new content
    outside it leaves those latents bit-identical (same tile, same kernels), while an untiled encode (one
    pass, global GroupNorm statistics) changes everywhere. The random encoder's tiles differ a lot from an
    untiled pass (mean |diff| 0.23), so closeness to it is not the check."""
    frames = video(1, 9, 64, 56, 3)
    elsewhere = frames.clone()
    elsewhere[:, :, 48:] = video(1, 9, 16, 56, 3, seed=1)
    elsewhere[:, :, :, 40:] = video(1, 9, 64, 16, 3, seed=2)
    tiled, tiled_elsewhere = encode(vae, frames, tiled=True), encode(vae, elsewhere, tiled=True)
    untiled, untiled_elsewhere = encode(vae, frames, tiled=False), encode(vae, elsewhere, tiled=False)
    assert tiled.shape == untiled.shape == (1, 16, 3, 8, 7)
    corner = (..., slice(0, 4), slice(0, 4))  # latents of pixels 0..31 x 0..31, away from any blended seam
    assert torch.equal(tiled[corner], tiled_elsewhere[corner])
    assert (untiled[corner] - untiled_elsewhere[corner]).abs().max() > 0.05
    assert not torch.equal(tiled[..., 4:, 4:], tiled_elsewhere[..., 4:, 4:])


def test_slicing_decodes_each_video_alone(vae):
    z = latents(2, 16, 2, 2, 3)
    sliced = decode(vae, z, tiled=True)  # 2x3 latents fit one tile: slicing only
    assert torch.allclose(sliced[1:], decode(vae, z[1:], tiled=False), atol=1e-6)


def test_memory_plan_auto_threshold():
    side = int(AUTO_TILING_LATENT_PIXELS**0.5)
    assert memory_plan(1, side, side) == MemoryPlan(slicing=False, tiling=False)
    assert memory_plan(1, side, side + 1) == MemoryPlan(slicing=True, tiling=True)
    assert memory_plan(2, side, side // 2 + 1) == MemoryPlan(slicing=True, tiling=False)
    assert memory_plan(1, 2, 2, tiled=True) == MemoryPlan(slicing=True, tiling=True)
    assert memory_plan(8, 500, 500, tiled=False) == MemoryPlan(slicing=False, tiling=False)


def test_auto_below_threshold_is_the_untiled_decode_and_settings_are_restored(vae):
    z = latents(1, 16, 2, 8, 7)  # larger than one 6x5 tile
    assert torch.equal(decode(vae, z), decode(vae, z, tiled=False))
    small = latents(1, 16, 1, 2, 3)
    vae.enable_tiling()
    try:
        decode(vae, small, tiled=False)
        assert vae.use_tiling and not vae.use_slicing
    finally:
        vae.disable_tiling()
    decode(vae, small, tiled=True)
    assert not vae.use_tiling and not vae.use_slicing


# --------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    "shape, message",
    [
        ((16, 2, 2, 3), r"shape \(16, 2, 2, 3\) \(4 dims\).*\[B,16,T,h,w\].*latents\[None\]"),
        ((1, 4, 2, 2, 3), r"4 channels .*expected 16"),
        ((1, 2, 16, 2, 3), r"2 channels .*expected 16.*permute\(0, 2, 1, 3, 4\)"),
    ],
)
def test_bad_latents_are_named(vae, shape, message):
    with pytest.raises(ValueError, match=message):
        decode(vae, latents(*shape))


def test_integer_latents_are_rejected(vae):
    with pytest.raises(ValueError, match="dtype torch.int64.*latents.float"):
        decode(vae, torch.zeros(1, 16, 1, 2, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "frames, message",
    [
        (video(1, 9, 3, 16, 24), r"shape \(1, 9, 3, 16, 24\); expected \[B,F,H,W,3\]"),
        (video(9, 16, 24, 3), r"expected \[B,F,H,W,3\].*frames\[None\]"),
        (video(1, 10, 16, 24, 3), r"frame count 10 .*use 9 or 16"),
        (video(1, 9, 20, 24, 3), r"frame height 20 is not a multiple of 8; resize or crop/pad to 16 or 24"),
        (video(1, 9, 16, 24, 3) * 255, r"frame values span \[.*\]; expected \[0, 1\].*x / 255"),
        (video(1, 9, 16, 24, 3) * 2 - 1, r"frame values span \[-.*\]; expected \[0, 1\].*\(x \+ 1\) / 2"),
        ((video(1, 9, 16, 24, 3) * 255).to(torch.uint8), r"dtype torch.uint8.*frames.float\(\) / 255"),
    ],
)
def test_bad_frames_are_named(vae, frames, message):
    with pytest.raises(ValueError, match=message):
        encode(vae, frames)
