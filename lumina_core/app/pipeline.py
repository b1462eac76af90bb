"""Text-to-video with the loaded components: prompts -> caption features -> noise -> multi-scale
sampling -> CogVideoX decode. Size checks happen before any model runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..sampling import SampleConfig, check_runnable, sample, seeded_noise
from ..sizes import check_video_size, latent_shape
from ..step_cache import StepCache
from ..text import encode_prompts
from ..vae import decode


@dataclass(frozen=True)
class VideoRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 64
    height: int = 64
    frames: int = 16
    seed: int = 0

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        return latent_shape(self.width, self.height, self.frames)


def check_request(model, request: VideoRequest, config: SampleConfig) -> None:
    """Every size check the sampler and VAE would make, without running anything."""
    check_video_size(request.width, request.height, request.frames, config)
    check_runnable(model, request.latent_shape, config)


def initial_noise(request: VideoRequest) -> torch.Tensor:
    """float32 Gaussian noise of the request's latent shape from its seed (see sampling.seeded_noise)."""
    return seeded_noise(request.latent_shape, request.seed)


Captions = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def encode_request(model, text_model, tokenizer, request: VideoRequest) -> Captions:
    """((feats, mask) of the prompt, (feats, mask) of the negative prompt), padded to one length, on the
    model's device."""
    feats, mask = encode_prompts(text_model, tokenizer, [request.prompt, request.negative_prompt])
    device = next(model.parameters()).device
    feats, mask = feats.to(device), mask.to(device)
    return (feats[:1], mask[:1]), (feats[1:], mask[1:])


@torch.no_grad()
def sample_request(model, captions: Captions, request: VideoRequest, config: SampleConfig,
                   callback: Optional[Callable[[dict], None]] = None, cache: Optional[StepCache] = None
                   ) -> torch.Tensor:
    """The request's seeded noise sampled through ``config`` with encoded captions: the final latent."""
    check_request(model, request, config)
    noise = initial_noise(request).to(next(model.parameters()).device)
    return sample(model, noise, *captions, config, callback=callback, cache=cache)


@torch.no_grad()
def generate_latents(model, text_model, tokenizer, request: VideoRequest, config: SampleConfig,
                     callback: Optional[Callable[[dict], None]] = None, cache: Optional[StepCache] = None
                     ) -> torch.Tensor:
    captions = encode_request(model, text_model, tokenizer, request)
    return sample_request(model, captions, request, config, callback, cache)


def decode_frames(vae, latents: torch.Tensor) -> torch.Tensor:
    """Frames [F, H, W, 3] float in [0, 1] of the first video of a latent batch."""
    vae_param = next(vae.parameters())
    return decode(vae, latents.to(vae_param.device, vae_param.dtype))[0].float().cpu()


@torch.no_grad()
def generate_video(model, text_model, tokenizer, vae, request: VideoRequest, config: SampleConfig,
                   callback: Optional[Callable[[dict], None]] = None, cache: Optional[StepCache] = None
                   ) -> torch.Tensor:
    """Frames [F, H, W, 3] float in [0, 1]. ``cache``: a fresh StepCache to skip model calls (see sampling.sample)."""
    return decode_frames(vae, generate_latents(model, text_model, tokenizer, request, config, callback, cache))
