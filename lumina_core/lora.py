"""LoRA (low-rank adaptation, Hu et al. 2021) on the Next-DiT's attention and feed-forward linears: the
trainable layers, the file format and merging a file into a model's weights.

A LoRA adds ``strength * alpha / rank * up @ down`` to a linear's weight [out, in], with ``down`` [rank, in]
and ``up`` [out, rank]. The file is a .safetensors whose keys are the model's own weight names under
``diffusion_model.`` with ComfyUI's generic suffixes, e.g.

    diffusion_model.layers.0.attention.wq.lora_down.weight   [rank, in]
    diffusion_model.layers.0.attention.wq.lora_up.weight     [out, rank]
    diffusion_model.layers.0.attention.wq.alpha              [] (scalar)

ComfyUI names a diffusion model's weights ``diffusion_model.<state-dict key>`` and maps every such weight
for LoRA files (``comfy.lora.model_lora_keys_unet``), so its LoraLoaderModelOnly loads every key of these
files on the pack's native model; ``merge_lora`` applies the same files to a lumina_core NextDiT.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model import NextDiT

PREFIX = "diffusion_model."
TARGETS = ("attention.wq", "attention.wk", "attention.wv", "attention.wk_y", "attention.wv_y", "attention.wo",
           "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
"""The linears a LoRA adapts in every transformer block (module paths inside ``layers.<i>``)."""


class LoRALinear(nn.Module):
    """A frozen linear plus a trainable low-rank update: ``base(x) + alpha / rank * up(down(x))``.
    ``up`` starts at zero, so a fresh LoRA leaves the model's output unchanged."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.base = base
        self.rank, self.alpha = rank, float(alpha)
        factory = {"device": base.weight.device, "dtype": torch.float32}
        self.down = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.up = nn.Linear(rank, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=generator)  # nn.Linear's own init
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.up(self.down(x.to(self.down.weight.dtype))) * (self.alpha / self.rank)
        return self.base(x) + update.to(x.dtype)


def check_rank(rank: int, alpha: float) -> None:
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank {rank!r} must be a whole number >= 1, e.g. 4, 8 or 16")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"LoRA alpha {alpha!r} must be a positive number, e.g. the rank (scale 1)")


def target_names(model: NextDiT) -> list[str]:
    """Module names of every linear a LoRA adapts, e.g. ``layers.0.attention.wq``."""
    return [f"layers.{index}.{target}" for index in range(len(model.layers)) for target in TARGETS]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return model.get_submodule(path), leaf


def add_lora(model: NextDiT, rank: int, alpha: Optional[float] = None, seed: int = 0) -> dict[str, LoRALinear]:
    """Freeze ``model`` and wrap each target linear in a LoRALinear (in place); returns them by module name.
    ``alpha`` defaults to ``rank`` (scale 1); ``seed`` draws the down projections (the same LoRA every run)."""
    alpha = float(rank if alpha is None else alpha)
    check_rank(rank, alpha)
    model.requires_grad_(False)
    layers = {}
    generator = torch.Generator().manual_seed(seed)
    for name in target_names(model):
        parent, leaf = _parent(model, name)
        base = getattr(parent, leaf)
        if isinstance(base, LoRALinear):
            raise ValueError(f"{name} already carries a LoRA; add LoRA layers to a model once")
        layers[name] = LoRALinear(base, rank, alpha, generator)
        setattr(parent, leaf, layers[name])
    return layers


def lora_layers(model: NextDiT) -> dict[str, LoRALinear]:
    """The LoRALinear modules of a model ``add_lora`` prepared, by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def lora_tensors(model: NextDiT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's LoRA as the tensors of a LoRA file (keys in the module docstring)."""
    tensors = {}
    for name, layer in lora_layers(model).items():
        key = PREFIX + name
        tensors[key + ".lora_down.weight"] = layer.down.weight.detach().to("cpu", dtype).contiguous()
        tensors[key + ".lora_up.weight"] = layer.up.weight.detach().to("cpu", dtype).contiguous()
        tensors[key + ".alpha"] = torch.tensor(layer.alpha, dtype=dtype)
    if not tensors:
        raise ValueError("the model has no LoRA layers; call add_lora first")
    return tensors


def save_lora(model: NextDiT, path: str | os.PathLike, metadata: Optional[dict] = None) -> Path:
    """Write the model's LoRA to ``path`` (.safetensors), with string ``metadata``."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"LoRA file {path} must end in .safetensors")
    from .video_io import atomic_target  # video_io brings av; the command line imports this module at start

    with atomic_target(path) as temp:  # an interrupted write leaves no half file a loader would pick up
        save_file(lora_tensors(model), str(temp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def read_lora(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A LoRA file as {weight name: (up, down, alpha)}, weight names as in the model's state dict
    (``layers.0.attention.wq.weight``). Accepts lora_up/lora_down and lora_B/lora_A suffixes; alpha defaults
    to the rank (scale 1), as ComfyUI does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist; give a .safetensors file finetune wrote")
    tensors = load_file(str(path))
    pairs = {}
    for key, tensor in tensors.items():
        for down, up in ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight")):
            if key.endswith(down):
                module = key[: -len(down)]
                if module + up not in tensors:
                    raise ValueError(f"{path}: {key} has no {module + up}; the file is incomplete")
                pairs[module] = (tensors[module + up], tensor)
    used = {f"{module}{suffix}" for module in pairs for suffix in (".lora_down.weight", ".lora_up.weight",
                                                                   ".lora_A.weight", ".lora_B.weight", ".alpha")}
    unknown = sorted(set(tensors) - used)
    if unknown or not pairs:
        raise ValueError(f"{path}: {len(unknown)} key(s) are not LoRA pairs (first: {unknown[:1]}); "
                         "expected <module>.lora_down.weight / .lora_up.weight / .alpha")
    result = {}
    for module, (up, down) in pairs.items():
        alpha = tensors.get(module + ".alpha")
        name = module[len(PREFIX):] if module.startswith(PREFIX) else module
        result[name + ".weight"] = (up, down, float(alpha) if alpha is not None else float(down.shape[0]))
    return result


def merge_lora(model: NextDiT, path: str | os.PathLike, strength: float = 1.0) -> int:
    """Add ``strength * alpha / rank * up @ down`` of the file's every pair to ``model``'s weights (in place,
    computed in fp32); returns the number of weights changed. Every key must name a weight of the model with
    matching shapes, so a LoRA of another model fails instead of silently doing nothing."""
    if not math.isfinite(strength):
        raise ValueError(f"LoRA strength {strength!r} must be a finite number, e.g. 1.0 (0 = off)")
    weights = dict(model.named_parameters())
    pairs = read_lora(path)
    for name, (up, down, _alpha) in pairs.items():
        if name not in weights:
            raise ValueError(f"{path}: {name} is not a weight of this model (a LoRA for another model?)")
        shape = tuple(weights[name].shape)
        if (up.shape[0], down.shape[1]) != shape or up.shape[1] != down.shape[0]:
            raise ValueError(f"{path}: {name} LoRA of shape {tuple(up.shape)} @ {tuple(down.shape)} does not fit "
                             f"the weight {shape} (a LoRA for another model size?)")
    with torch.no_grad():
        for name, (up, down, alpha) in pairs.items():
            weight = weights[name]
            delta = (strength * alpha / down.shape[0]) * (up.float() @ down.float())
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return len(pairs)


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """``FILE[:STRENGTH]`` of ``--lora`` as (path, strength); strength defaults to 1."""
    path, strength = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            strength = float(tail)
        except ValueError:
            strength = None
        if strength is not None:
            path = head
        else:
            strength = 1.0
    if not math.isfinite(strength):
        raise ValueError(f"--lora {text}: strength {tail} must be a finite number, e.g. FILE:0.8")
    return Path(path), strength
