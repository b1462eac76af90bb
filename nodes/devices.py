"""Devices and dtypes of the text encoder and the VAE (Hugging Face modules), loaded through ComfyUI's model
management so --cpu and unloading between runs apply to them. They load whole: ComfyUI streams only layers
built from its own operations, which the Lumina-Video transformer is (see native.py), these are not."""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch

from ..lumina_core.precision import DTYPES

DEFAULT = "default"


def dtype_for(choice: str, load_device: torch.device) -> torch.dtype:
    """The dtype named by a weight_dtype combo; "default" = bf16 where the device runs it natively
    (the official inference dtype), else fp32 (CPU)."""
    if choice == DEFAULT:
        return torch.bfloat16 if comfy.model_management.should_use_bf16(load_device) else torch.float32
    if choice not in DTYPES:
        raise ValueError(f"weight_dtype {choice!r} is unknown; use one of {DEFAULT}, {', '.join(DTYPES)}")
    return DTYPES[choice]


def patcher(module: torch.nn.Module, load_device, offload_device) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_device)


def loaded(model_patcher: comfy.model_patcher.ModelPatcher) -> torch.nn.Module:
    """Move the patcher's module to its load device (whole: the modules are plain torch layers that
    ComfyUI cannot stream piecewise) and return it."""
    comfy.model_management.load_models_gpu([model_patcher], force_full_load=True)
    return model_patcher.model
