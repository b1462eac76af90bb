"""The Lumina-Video training recipe: joint clip + still batches drawn from an encoded data set with caption and
motion dropout, flow matching with a per-patch-pair time shift, the loss MSE + (1 - cosine similarity) of the
predicted velocity, one optimiser step; and a token runner that checkpoints each block (gradient checkpointing).
The demo trainer (``training/``) and LoRA fine-tuning (``app/finetune``) share it.

An encoded data set is a dict: clip_latents [N, C, T, h, w], clip_caption [N] (caption rows), clip_motion [N],
image_latents [M, C, 1, h, w], image_caption [M], caption_feats [R, L, D], caption_mask [R, L], with row
``EMPTY_CAPTION`` the empty prompt (``finetune_data.cache_samples`` and the demo trainer make them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .model import NextDiT, patch_key
from .schedule import shift_time

CAPTION_DROPOUT = 0.1  # share of samples trained on the empty prompt (what the negative prompt "" gives)
MOTION_DROPOUT = 0.3  # share of clips whose motion score is replaced by -1 ("no motion condition")
EMPTY_CAPTION = 0  # row of the caption table holding the empty prompt


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


def draw_batch(encoded: dict, videos: int, images: int, generator: torch.Generator,
               caption_dropout: float = CAPTION_DROPOUT, motion_dropout: float = MOTION_DROPOUT) -> list[dict]:
    """One joint batch as a list of parts (videos, stills), each {latents, caption rows, motion}.

    Caption rows are replaced by the empty prompt with p = caption_dropout; clip motion scores by
    -1 with p = motion_dropout; stills always carry -1 (they have no motion to condition on).
    """
    parts = []
    for kind, count in (("clip", videos), ("image", images)):
        if count <= 0 or len(encoded[f"{kind}_latents"]) == 0:
            continue
        index = torch.randint(len(encoded[f"{kind}_latents"]), (count,), generator=generator)
        rows = encoded[f"{kind}_caption"][index].clone()
        rows[torch.rand(count, generator=generator) < caption_dropout] = EMPTY_CAPTION
        if kind == "clip":
            motion = encoded["clip_motion"][index].clone()
            motion[torch.rand(count, generator=generator) < motion_dropout] = -1.0
        else:
            motion = torch.full((count,), -1.0)
        parts.append({"latents": encoded[f"{kind}_latents"][index], "rows": rows, "motion": motion})
    return parts


def training_step(model, optimizer, encoded: dict, patch: tuple[int, int], videos: int, images: int,
                  generator: torch.Generator, caption_dropout: float = CAPTION_DROPOUT,
                  motion_dropout: float = MOTION_DROPOUT, bf16: bool = False) -> float:
    """One optimiser step on a joint video + still batch at one patch pair; returns the mean loss.
    The encoded data set's tensors may live on any device (the model's); indices and noise come from the CPU
    ``generator``, so a run draws the same batches on every device."""
    patch_size, f_patch_size = patch
    losses = []
    for part in draw_batch(encoded, videos, images, generator, caption_dropout, motion_dropout):
        rows = part["rows"].to(encoded["caption_feats"].device)
        feats, mask = encoded["caption_feats"][rows], encoded["caption_mask"][rows]
        shift = time_shift(patch, model.config.patch_pairs, video=part["latents"].shape[2] > 1)
        losses.append(flow_matching_loss(model, part["latents"], feats, mask, part["motion"], patch_size,
                                         f_patch_size, generator, shift, bf16))
    loss = torch.cat(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def checkpointed_runner(model: NextDiT):
    """A token runner (``NextDiT.set_token_runner``) that recomputes each block's activations in the backward
    pass instead of keeping them: ``NextDiT.run_tokens`` with activation memory of one block."""
    def run(h: torch.Tensor, freqs: torch.Tensor, key_mask: Optional[torch.Tensor], y: torch.Tensor,
            y_mask: torch.Tensor, c: torch.Tensor, patch_size: int, f_patch_size: int) -> torch.Tensor:
        for layer in model.layers:
            h = checkpoint(layer, h, freqs, key_mask, y, y_mask, c, use_reentrant=False)
        return model.all_final_layer[patch_key(patch_size, f_patch_size)](h, c)
    return run
