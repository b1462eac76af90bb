"""The Lumina-Video training objective: flow matching with a per-patch-pair time shift and the loss
MSE + (1 - cosine similarity) of the predicted velocity; and a token runner that checkpoints each block
(gradient checkpointing). The demo trainer (``training/``) and LoRA fine-tuning (``app/finetune``) share it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .model import NextDiT, patch_key
from .schedule import shift_time


def time_shift(pair: tuple[int, int], pairs, video: bool) -> float:
    """How far a patch pair's training t is pushed towards noise (official recipe, train_exps/*/task.py:
    the video stages train with time shift 2, 4 and 8 from the finest to the coarsest patch pair, so each
    pair sees mostly the noise levels at which the multi-scale schedule runs it; images use 1)."""
    if not video:
        return 1.0
    by_tokens = sorted(pairs, key=lambda p: p[0] * p[0] * p[1])  # finest (most tokens) first
    return 2.0 ** (by_tokens.index(tuple(pair)) + 1)


def flow_matching_loss(model, x1: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor, motion: torch.Tensor,
                       patch_size: int, f_patch_size: int, generator: torch.Generator, shift: float = 1.0,
                       bf16: bool = False) -> torch.Tensor:
    """Per-item loss MSE + (1 - cosine similarity) of the predicted velocity (Lumina-Video recipe).

    t = shift_time(u, shift) with u ~ U[0, 1] (0 = noise, 1 = data), x_t = t x1 + (1 - t) x0 with
    x0 ~ N(0, I), target x1 - x0: the velocity lumina_core.sampling integrates from t = 0 to t = 1.
    Noise and t are drawn on the CPU generator (the same numbers on every device) and moved to x1's
    device. ``bf16`` runs the model under bfloat16 autocast (weights and loss stay float32).
    """
    batch, device = x1.shape[0], x1.device
    t = shift_time(torch.rand(batch, generator=generator), shift).to(device)
    x0 = torch.randn(x1.shape, generator=generator).to(device)
    t_ = t.view(-1, 1, 1, 1, 1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        velocity = model(t_ * x1 + (1 - t_) * x0, t, feats, mask, motion.to(device), patch_size, f_patch_size)
    target = (x1 - x0).flatten(1)
    predicted = velocity.float().flatten(1)
    mse = (predicted - target).pow(2).mean(dim=1)
    cosine = F.cosine_similarity(predicted, target, dim=1)
    return mse + 1 - cosine


def checkpointed_runner(model: NextDiT):
    """A token runner (``NextDiT.set_token_runner``) that recomputes each block's activations in the backward
    pass instead of keeping them: ``NextDiT.run_tokens`` with activation memory of one block."""
    def run(h: torch.Tensor, freqs: torch.Tensor, key_mask: Optional[torch.Tensor], y: torch.Tensor,
            y_mask: torch.Tensor, c: torch.Tensor, patch_size: int, f_patch_size: int) -> torch.Tensor:
        for layer in model.layers:
            h = checkpoint(layer, h, freqs, key_mask, y, y_mask, c, use_reentrant=False)
        return model.all_final_layer[patch_key(patch_size, f_patch_size)](h, c)
    return run
