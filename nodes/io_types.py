"""The pack's ComfyUI socket types and the objects that travel through them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

Model = io.Custom("LUMINA_VIDEO_MODEL")
"""A comfy ModelPatcher whose ``.model`` is a lumina_core NextDiT."""

TextEncoder = io.Custom("LUMINA_VIDEO_TEXT_ENCODER")
"""A :class:`TextEncoderBundle`."""

Conditioning = io.Custom("LUMINA_VIDEO_CONDITIONING")
"""``{"feats": [1, L, D] caption features, "mask": [1, L] (1 = token)}``."""

Schedule = io.Custom("LUMINA_VIDEO_SCHEDULE")
"""A lumina_core.sampling.SampleConfig."""

Vae = io.Custom("LUMINA_VIDEO_VAE")
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
