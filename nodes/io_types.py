"""The pack's own ComfyUI socket types and the objects that travel through them. The model, its
conditioning, latents, sigmas and guiders use ComfyUI's core types (MODEL, CONDITIONING, LATENT, SIGMAS,
GUIDER); only what core has no type for is the pack's: the Gemma-2 text encoder bundle, the patch schedule
and the CogVideoX VAE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..lumina_core.app import node_table

TextEncoder = io.Custom(node_table.TEXT_ENCODER)
"""A :class:`TextEncoderBundle`."""

Schedule = io.Custom(node_table.SCHEDULE)
"""A lumina_core.sampling.SampleConfig."""

Vae = io.Custom(node_table.VAE)
"""A comfy ModelPatcher whose ``.model`` is a :class:`Component` holding the CogVideoX VAE."""


class Component(torch.nn.Module):
    """Holds a transformers or diffusers model for a comfy ModelPatcher.

    The patcher writes ``model.device`` when it moves weights; Hugging Face models expose
    ``device`` as a read-only property, so they are wrapped instead of patched directly.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


@dataclass(frozen=True)
class TextEncoderBundle:
    patcher: object  # comfy ModelPatcher over a Component holding a transformers Gemma2Model
    tokenizer: object
