"""CogVideoX VAE: Lumina-Video latents [B,16,T,h,w] <-> frames [B,F,8h,8w,3] in [0,1].

Lumina-Video generates in the latent space of the 3-D causal VAE of THUDM/CogVideoX-2b (its
``vae/`` folder, diffusers class ``AutoencoderKLCogVideoX``): 8x spatial and 4x temporal
compression, 16 latent channels, scaling factor s = 1.15258426. The official recipe, which
``encode`` and ``decode`` follow exactly:

    latents = vae.encode(2 * frames - 1).latent_dist.mode() * s
    frames  = clamp((vae.decode(latents / s).sample + 1) / 2, 0, 1)

Frame counts. diffusers decodes the latent frames two at a time with a causal conv cache; when
T is odd the first chunk holds three latents whose first one is the causal "image" frame that
is not upsampled in time. So T latents decode to 4T frames for even T and 4(T-1)+1 for odd T
(24 -> 96 as in the f24F96 schedule, 13 -> 49, 1 -> 1), and the encoder mirrors it (8-frame
chunks plus the optional first frame). Valid frame counts are therefore 8m and 8m+1; any other
count would not survive an encode/decode round trip (10 frames encode to 3 latents, which
decode to 9 frames).

Memory. diffusers decodes two latent frames at a time and carries a causal conv cache (two
frames per conv layer) between chunks, so the decoder's peak is reached by the second chunk
and then stays flat: it grows with batch x latent height x latent width, not with T (only the
output tensor grows with T). Measured with ``benchmarks/bench_vae.py``, untiled, fp32, CPU,
CogVideoX-2b config, 16x24 latents: +1477 / 2132 / 2138 MiB for T = 2 / 4 / 8. ``memory_plan``
therefore switches batch slicing and spatial tiling on from that product; tiling blends
overlapping tiles, so its output differs slightly from an untiled decode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import load_file

from .checkpoint import check_safetensors_folder

SCALING_FACTOR = 1.15258426
LATENT_CHANNELS = 16
SPATIAL_COMPRESSION = 8
TEMPORAL_COMPRESSION = 4
EXPECTED_CLASS = "AutoencoderKLCogVideoX"
# Key of a single .safetensors file's metadata that may hold the diffusers config as JSON.
CONFIG_METADATA_KEY = "config"
# batch x latent height x latent width above which slicing / tiling switch on automatically.
# An untiled CogVideoX-2b decode peaks at about 5.6 MiB per latent pixel in fp32 (measured on
# CPU, see the module docstring), so this keeps it under ~11 GiB fp32 (~6 GiB in half
# precision); above it, tiles of 30x45 latents hold the decoder near 7.5 GiB fp32 plus the
# output frames (1248x704 untiled would need ~75 GiB, extrapolated).
AUTO_TILING_LATENT_PIXELS = 2048

# THUDM/CogVideoX-2b vae/config.json: used for a single file whose metadata holds no config.
COGVIDEOX_2B_VAE_CONFIG = {
    "_class_name": EXPECTED_CLASS,
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512],
    "down_block_types": ["CogVideoXDownBlock3D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": LATENT_CHANNELS,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 3,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_height": 480,
    "sample_width": 720,
    "scaling_factor": SCALING_FACTOR,
    "shift_factor": None,
    "temporal_compression_ratio": 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}


# ---------------------------------------------------------------------------------------------
# Frame counts (pure arithmetic: usable with any CogVideoX VAE, ComfyUI's included)
# ---------------------------------------------------------------------------------------------


def frame_count_for_latents(latent_frames: int) -> int:
    """Number of video frames that ``latent_frames`` latents decode to: 4T (even), 4(T-1)+1 (odd)."""
    if latent_frames < 1:
        raise ValueError(f"latent frame count {latent_frames} is below 1; use T >= 1 (e.g. 13 for 49 frames)")
    if latent_frames % 2 == 0:
        return TEMPORAL_COMPRESSION * latent_frames
    return TEMPORAL_COMPRESSION * (latent_frames - 1) + 1


def latent_count_for_frames(frames: int) -> int:
    """Number of latent frames for a video of ``frames`` frames: 96 -> 24, 49 -> 13, 1 -> 1.

    Valid counts are 8m and 8m+1 (see the module docstring); any other count raises, naming
    the nearest valid counts below and above.
    """
    if not is_valid_frame_count(frames):
        below = next((count for count in range(frames - 1, 0, -1) if is_valid_frame_count(count)), None)
        start = max(frames + 1, 1)
        above = next(count for count in range(start, start + 8) if is_valid_frame_count(count))
        nearest = f"{above}" if below is None else f"{below} or {above}"
        raise ValueError(
            f"frame count {frames} is not valid for the CogVideoX VAE: it must be 8m or 8m+1 "
            f"(1, 8, 9, 16, 17, ..., 49, ..., 96, 97); use {nearest}"
        )
    return frames // TEMPORAL_COMPRESSION + frames % 2  # 8m -> 2m, 8m+1 -> 2m+1


def is_valid_frame_count(frames: int) -> bool:
    """True for the frame counts the VAE round-trips: 8m (m >= 1) and 8m+1 (m >= 0)."""
    return frames >= 1 and frames % 8 in (0, 1)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_vae(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> AutoencoderKLCogVideoX:
    """Load a CogVideoX VAE from local files only (never downloads), in eval mode.

    ``path`` is a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), a
    pipeline folder such as the THUDM/CogVideoX-2b repo with a ``vae/`` subfolder, or a single
    ``.safetensors`` file (config read from its metadata key ``"config"`` as JSON when present,
    else ``COGVIDEOX_2B_VAE_CONFIG``; every key and shape of the file must fit that config).
    """
    path = Path(path)
    if path.is_dir():
        vae = _load_folder(_find_config_folder(path), dtype)
    elif path.is_file():
        vae = _load_single_file(path, dtype)
    else:
        raise FileNotFoundError(
            f"VAE path {str(path)!r} does not exist; pass the CogVideoX-2b `vae/` folder, the repo folder "
            f"holding it, or a .safetensors file"
        )
    # Built in its dtype, as diffusers asks (a later .to(dtype) would cast modules it keeps in float32)
    return vae.to(device=device).eval()


def _find_config_folder(folder: Path) -> Path:
    """``folder`` itself when it holds config.json, else its ``vae/`` subfolder."""
    for candidate in (folder, folder / "vae"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no config.json in {str(folder)!r} or {str(folder / 'vae')!r}; expected a diffusers "
        f"{EXPECTED_CLASS} folder (config.json + diffusion_pytorch_model.safetensors), e.g. THUDM/CogVideoX-2b/vae"
    )


def _load_folder(folder: Path, dtype: torch.dtype) -> AutoencoderKLCogVideoX:
    """Load a diffusers-layout VAE folder after checking its config names the CogVideoX class."""
    config_path = folder / "config.json"
    _check_class(json.loads(config_path.read_text()), str(config_path))
    check_safetensors_folder(folder, "CogVideoX VAE", "THUDM/CogVideoX-2b (its vae/ folder)")
    return AutoencoderKLCogVideoX.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True,
                                                  use_safetensors=True)


def _load_single_file(path: Path, dtype: torch.dtype) -> AutoencoderKLCogVideoX:
    """Build the VAE from the file's metadata config (or the 2B default) and load its weights in ``dtype``."""
    if path.suffix != ".safetensors":
        raise ValueError(
            f"VAE file {path.name!r} is not a .safetensors file; only safetensors single files are "
            f"loaded (pickled .pt/.ckpt files are never unpickled); convert it or pass a diffusers folder"
        )
    config = _config_from_metadata(path)
    source = f"{path} (metadata {CONFIG_METADATA_KEY!r})" if config else f"{path} (CogVideoX-2b default config)"
    config = config or COGVIDEOX_2B_VAE_CONFIG
    _check_class(config, source)
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX.from_config(config)
    state_dict = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
                  for name, tensor in load_file(str(path)).items()}
    _check_state_dict_fits(vae, state_dict, source)
    vae.load_state_dict(state_dict, strict=True, assign=True)
    return vae


def _config_from_metadata(path: Path) -> dict | None:
    """The diffusers config stored as JSON under ``CONFIG_METADATA_KEY``, or None."""
    with safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get(CONFIG_METADATA_KEY)
    return json.loads(text) if text else None


def _check_class(config: dict, source: str) -> None:
    """Raise unless the config's ``_class_name`` is AutoencoderKLCogVideoX."""
    found = config.get("_class_name") or "no _class_name"
    if found != EXPECTED_CLASS:
        raise ValueError(
            f"{source} describes {found}, expected {EXPECTED_CLASS!r} "
            f"(the THUDM/CogVideoX-2b `vae/` folder); Lumina-Video latents only decode with the CogVideoX VAE"
        )


def _check_state_dict_fits(vae: AutoencoderKLCogVideoX, state_dict: dict, source: str) -> None:
    """Raise naming missing, unexpected and wrongly shaped keys when the file does not fit the config."""
    expected = {name: tuple(tensor.shape) for name, tensor in vae.state_dict().items()}
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong_shape = [
        f"{name}: file {tuple(state_dict[name].shape)} vs config {expected[name]}"
        for name in sorted(expected.keys() & state_dict.keys())
        if tuple(state_dict[name].shape) != expected[name]
    ]
    if not (missing or unexpected or wrong_shape):
        return
    problems = [
        f"{len(items)} {label} (e.g. {', '.join(items[:3])})"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong_shape),
        )
        if items
    ]
    raise ValueError(
        f"the weights in {source} do not fit {EXPECTED_CLASS}: {'; '.join(problems)}. Pass the diffusers "
        f"`vae/` folder (config.json + weights), or store the matching diffusers config as JSON in the "
        f"file's metadata under {CONFIG_METADATA_KEY!r}"
    )


# ---------------------------------------------------------------------------------------------
# Memory plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Which of diffusers' memory savers a decode/encode uses.

    ``slicing``: one video of the batch at a time (exact). ``tiling``: overlapping spatial tiles
    of the VAE's own tile size (blended, so slightly different from an untiled pass).
    """

    slicing: bool
    tiling: bool


def memory_plan(batch: int, latent_height: int, latent_width: int, tiled: bool | None = None) -> MemoryPlan:
    """Slicing/tiling for a batch of ``latent_height`` x ``latent_width`` latents.

    ``tiled`` True/False forces both on/off; None (auto) slices when batch x h x w exceeds
    ``AUTO_TILING_LATENT_PIXELS`` and tiles when one video's h x w alone exceeds it.
    """
    if tiled is not None:
        return MemoryPlan(slicing=tiled, tiling=tiled)
    pixels = latent_height * latent_width
    return MemoryPlan(slicing=batch * pixels > AUTO_TILING_LATENT_PIXELS, tiling=pixels > AUTO_TILING_LATENT_PIXELS)


@contextmanager
def _memory_saving(vae: AutoencoderKLCogVideoX, plan: MemoryPlan) -> Iterator[None]:
    """Switch the VAE's slicing/tiling to ``plan`` for the block, then restore the caller's setting."""
    saved = (vae.use_slicing, vae.use_tiling)
    vae.use_slicing, vae.use_tiling = plan.slicing, plan.tiling
    try:
        yield
    finally:
        vae.use_slicing, vae.use_tiling = saved


# ---------------------------------------------------------------------------------------------
# Decode / encode
# ---------------------------------------------------------------------------------------------


def decode(vae: AutoencoderKLCogVideoX, latents: torch.Tensor, tiled: bool | None = None,
           scaling_factor: float = SCALING_FACTOR) -> torch.Tensor:
    """Latents [B,16,T,h,w] (scaled by s) -> frames [B,F,8h,8w,3] float32 in [0,1].

    F = ``frame_count_for_latents(T)``. Runs in the VAE's dtype and device; the frames come back
    on the latents' device. ``tiled``: None = automatic (see ``memory_plan``), True/False forces.
    ``scaling_factor`` 1.0 decodes raw (unscaled) latents, as ComfyUI's LATENT holds them.
    """
    _check_latents(vae, latents)
    batch, _, _, height, width = latents.shape
    z = (latents.float() / scaling_factor).to(device=vae.device, dtype=vae.dtype)
    with torch.no_grad(), _memory_saving(vae, memory_plan(batch, height, width, tiled)):
        video = vae.decode(z).sample
    # Older diffusers keep the causal conv cache inside the modules; the official code clears it.
    clear_cache = getattr(vae, "_clear_fake_context_parallel_cache", None)
    if clear_cache is not None:
        clear_cache()
    frames = ((video.float() + 1) / 2).clamp(0, 1)
    return rearrange(frames, "b c f h w -> b f h w c").to(latents.device)


def encode(vae: AutoencoderKLCogVideoX, frames: torch.Tensor, tiled: bool | None = None,
           scaling_factor: float = SCALING_FACTOR) -> torch.Tensor:
    """Frames [B,F,H,W,3] in [0,1] -> latents [B,16,T,H/8,W/8] float32, scaled by s.

    Uses the posterior mode (deterministic), as the official code does for video-to-video and
    training. T = ``latent_count_for_frames(F)``; the latents come back on the frames' device.
    ``scaling_factor`` 1.0 returns raw latents, as ComfyUI's LATENT holds them.
    """
    _check_frames(frames)
    batch, _, height, width, _ = frames.shape
    x = rearrange(frames.float() * 2 - 1, "b f h w c -> b c f h w").to(device=vae.device, dtype=vae.dtype)
    plan = memory_plan(batch, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION, tiled)
    with torch.no_grad(), _memory_saving(vae, plan):
        latents = vae.encode(x).latent_dist.mode()
    return (latents.float() * scaling_factor).to(frames.device)


def _check_latents(vae: AutoencoderKLCogVideoX, latents: torch.Tensor) -> None:
    """Raise naming the shape/dtype and the fix unless latents are floating [B,C,T,h,w], C = VAE's."""
    channels = vae.config.latent_channels
    shape = tuple(latents.shape)
    if latents.ndim != 5:
        raise ValueError(
            f"latents have shape {shape} ({latents.ndim} dims); the CogVideoX VAE decodes 5-D latents "
            f"[B,{channels},T,h,w]; add a batch dim with latents[None] or pass the LATENT's 'samples'"
        )
    if shape[1] != channels:
        hint = (
            f"they look like [B,T,{channels},h,w]; use latents.permute(0, 2, 1, 3, 4)"
            if shape[2] == channels
            else "pass latents made for the CogVideoX VAE (Lumina-Video), not an image model's"
        )
        raise ValueError(f"latents have {shape[1]} channels (shape {shape}); expected {channels}: {hint}")
    if not latents.is_floating_point():
        raise ValueError(f"latents have dtype {latents.dtype}; expected a floating dtype; use latents.float()")


def _check_frames(frames: torch.Tensor) -> None:
    """Raise naming the bad shape/count/range and the fix unless frames are [B,F,H,W,3] in [0,1]."""
    shape = tuple(frames.shape)
    if frames.ndim != 5 or shape[-1] != 3:
        raise ValueError(
            f"frames have shape {shape}; expected [B,F,H,W,3] (RGB last); "
            f"for a ComfyUI IMAGE [F,H,W,3] use frames[None]"
        )
    if not frames.is_floating_point():
        raise ValueError(f"frames have dtype {frames.dtype}; expected floats in [0,1]; use frames.float() / 255")
    latent_count_for_frames(shape[1])
    for name, size in (("height", shape[2]), ("width", shape[3])):
        if size % SPATIAL_COMPRESSION:
            below = size - size % SPATIAL_COMPRESSION
            above = below + SPATIAL_COMPRESSION
            nearest = f"{above}" if below == 0 else f"{below} or {above}"
            raise ValueError(
                f"frame {name} {size} is not a multiple of {SPATIAL_COMPRESSION}; resize or crop/pad to {nearest}"
            )
    low, high = frames.min().item(), frames.max().item()
    if low < 0 or high > 1:
        raise ValueError(
            f"frame values span [{low:.4g}, {high:.4g}]; expected [0, 1]; for [-1, 1] data use (x + 1) / 2, "
            f"for 0..255 use x / 255, or clamp(0, 1)"
        )
