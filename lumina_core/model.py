"""Multi-scale Next-DiT, the Lumina-Video transformer (arXiv 2502.06782, Sec. 3).

One backbone shared by several patch embedders: ``all_x_embedder["P-F"]`` turns F x P x P latent
patches into tokens and ``all_final_layer["P-F"]`` turns tokens back, so a sampler can run early
steps on coarse patches (few tokens) and late steps on fine ones. Conditioning
``c = t_emb(t) + motion_emb(motion) + cap_embedder(mean caption feature)`` drives adaLN in every
block; captions also enter through a gated cross-attention that shares the rotated queries of
self-attention. Parameter names equal the official ``MultiScaleNextDiT`` so its checkpoints load
strictly.

Reading order: embedders -> attention -> block -> final layer -> model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .rope import apply_rope, axis_dims, rope_frequencies

ATTENTION_BACKENDS = ("sdpa", "reference")
ROPE_TABLES_KEPT = 8  # token grids whose RoPE tables are kept (one per patch pair and video size in use)
OFFICIAL_NAMES = {"all_patch_size": "patch_sizes", "all_f_patch_size": "f_patch_sizes"}


@dataclass(frozen=True)
class NextDiTConfig:
    """Architecture of a Multi-scale Next-DiT. Field meanings follow the official arguments
    (``all_patch_size`` -> ``patch_sizes``, ``all_f_patch_size`` -> ``f_patch_sizes``)."""

    patch_sizes: tuple[int, ...] = (2, 2, 4)
    f_patch_sizes: tuple[int, ...] = (1, 2, 2)
    in_channels: int = 16
    dim: int = 2304
    n_layers: int = 24
    n_heads: int = 16
    n_kv_heads: Optional[int] = 8
    qk_norm: bool = True
    cap_feat_dim: int = 2304
    rope_theta: float = 256.0
    t_scale: float = 1000.0
    motion_scale: float = 20.0
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    ffn_hidden_dim: Optional[int] = None  # explicit SwiGLU width; None = derived as officially

    def __post_init__(self):
        object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        object.__setattr__(self, "f_patch_sizes", tuple(int(p) for p in self.f_patch_sizes))
        if len(self.patch_sizes) != len(self.f_patch_sizes) or not self.patch_sizes:
            raise ValueError(f"patch_sizes {self.patch_sizes} and f_patch_sizes {self.f_patch_sizes} must be "
                             "non-empty and of equal length (one entry per patch embedder)")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        axis_dims(self.head_dim)

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, 1024)

    @property
    def patch_pairs(self) -> tuple[tuple[int, int], ...]:
        """(patch size, f-patch size) of every embedder, in config order."""
        return tuple(zip(self.patch_sizes, self.f_patch_sizes))

    @property
    def swiglu_hidden_dim(self) -> int:
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NextDiTConfig":
        """Build from our field names or the official argument names; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            key = OFFICIAL_NAMES.get(key, key)
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


PRESETS = {
    # Official MultiScaleNextDiT_2B_GQA as generate.py builds it (1.77B parameters).
    "2B_GQA": NextDiTConfig(),
    # The official 2B without GQA and the 4B GQA sizes, same embedders.
    "2B": NextDiTConfig(n_kv_heads=None),
    "4B_GQA": NextDiTConfig(dim=3072, n_layers=32, n_heads=24, n_kv_heads=8),
    # Tiny config of ../shared/parity-fixture (random weights; tests only).
    "tiny": NextDiTConfig(in_channels=4, dim=96, n_layers=2, n_heads=6, n_kv_heads=3, cap_feat_dim=48),
}


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar (256 channels, [cos, sin], max period 10000) -> MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, ops=nn, **factory):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            ops.Linear(frequency_embedding_size, hidden_size, **factory),
            nn.SiLU(),
            ops.Linear(hidden_size, hidden_size, **factory),
        )

    @staticmethod
    def sinusoidal(t: torch.Tensor, channels: int, max_period: float = 10000.0) -> torch.Tensor:
        half = channels // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if channels % 2:
            embedding = F.pad(embedding, (0, 1))
        return embedding

    def forward(self, t: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Embedding of t computed in ``dtype`` (the model's compute dtype; default: the weights')."""
        dtype = self.mlp[0].weight.dtype if dtype is None else dtype
        return self.mlp(self.sinusoidal(t, self.frequency_embedding_size).to(dtype))


AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
"""``fn(q, k, v, key_mask) -> out``: the contract of :func:`attention` with its backend fixed. A host
(ComfyUI) injects its own through :meth:`NextDiT.set_attention_function`."""

TokenRunner = Callable[..., torch.Tensor]
"""``fn(h, freqs, key_mask, y, y_mask, c, patch_size, f_patch_size) -> patch values``: the signature of
:meth:`NextDiT.run_tokens`, which a sequence-parallel run replaces (:meth:`NextDiT.set_token_runner`)."""


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor],
              backend: str = "sdpa") -> torch.Tensor:
    """Scaled dot-product attention with grouped KV heads.

    q [B, Hq, Lq, hd], k/v [B, Hkv, Lk, hd]; query head h reads KV head h // (Hq / Hkv);
    key_mask [B, Lk] bool (True = attend) or None. Scale 1/sqrt(hd). Returns [B, Hq, Lq, hd].
    """
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
    if backend != "reference":
        raise ValueError(f"attention backend {backend!r} is unknown; use one of {ATTENTION_BACKENDS}")
    # Reference path: explicit softmax in float32, one KV head expanded per query group.
    repeat = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(dim=-1), v.float()).to(q.dtype)


class Attention(nn.Module):
    """Self-attention over video tokens plus gated cross-attention to the caption.

    q_norm/k_norm are LayerNorms over the whole projection (all heads) applied before the head
    split and RoPE. The caption branch reuses the rotated queries; its keys and values come from
    the RMS-normed raw caption features, its softmax is separate and its output is scaled per
    head by tanh(gate) before being added to the self-attention output.
    """

    def __init__(self, config: NextDiTConfig, ops=nn, **factory):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        q_width, kv_width = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
        self.wq = ops.Linear(config.dim, q_width, bias=False, **factory)
        self.wk = ops.Linear(config.dim, kv_width, bias=False, **factory)
        self.wv = ops.Linear(config.dim, kv_width, bias=False, **factory)
        self.wk_y = ops.Linear(config.cap_feat_dim, kv_width, bias=False, **factory)
        self.wv_y = ops.Linear(config.cap_feat_dim, kv_width, bias=False, **factory)
        self.gate = nn.Parameter(torch.zeros(config.n_heads, **factory))
        self.wo = ops.Linear(q_width, config.dim, bias=False, **factory)
        if config.qk_norm:
            self.q_norm, self.k_norm, self.ky_norm = (ops.LayerNorm(width, **factory)
                                                      for width in (q_width, kv_width, kv_width))
        else:
            self.q_norm = self.k_norm = self.ky_norm = nn.Identity()
        self.attend: AttentionFunction = attention
        self.attend_caption: AttentionFunction = attention

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return rearrange(x, "b l (h d) -> b l h d", h=n, d=self.head_dim)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, x_mask: Optional[torch.Tensor],
                y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        q = apply_rope(self._heads(self.q_norm(self.wq(x)), self.n_heads), freqs)
        k = apply_rope(self._heads(self.k_norm(self.wk(x)), self.n_kv_heads), freqs)
        v = self._heads(self.wv(x), self.n_kv_heads)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = self.attend(q, k, v, x_mask)

        yk = self._heads(self.ky_norm(self.wk_y(y)), self.n_kv_heads).transpose(1, 2)
        yv = self._heads(self.wv_y(y), self.n_kv_heads).transpose(1, 2)
        out_y = self.attend_caption(q, yk, yv, y_mask)
        # The gate is a bare parameter, which a host that streams or quantises layers (ComfyUI) may keep
        # on another device or in a storage dtype: bring it to the activations before use.
        gate = self.gate.to(device=out_y.device, dtype=out_y.dtype).tanh()
        out = torch.addcmul(out, out_y, gate.view(1, -1, 1, 1))  # one pass instead of a product then a sum
        return self.wo(rearrange(out, "b h l d -> b l (h d)"))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int, ops=nn, **factory):
        super().__init__()
        self.w1 = ops.Linear(dim, hidden_dim, bias=False, **factory)
        self.w2 = ops.Linear(hidden_dim, dim, bias=False, **factory)
        self.w3 = ops.Linear(dim, hidden_dim, bias=False, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Sandwich-normed block with adaLN scale and tanh gates (no shift):
    x += tanh(gate) * norm2(sublayer(norm1(x) * (1 + scale)))."""

    def __init__(self, config: NextDiTConfig, ops=nn, **factory):
        super().__init__()
        self.attention = Attention(config, ops, **factory)
        self.feed_forward = FeedForward(config.dim, config.swiglu_hidden_dim, ops, **factory)
        self.attention_norm1 = ops.RMSNorm(config.dim, eps=config.norm_eps, **factory)
        self.attention_norm2 = ops.RMSNorm(config.dim, eps=config.norm_eps, **factory)
        self.ffn_norm1 = ops.RMSNorm(config.dim, eps=config.norm_eps, **factory)
        self.ffn_norm2 = ops.RMSNorm(config.dim, eps=config.norm_eps, **factory)
        self.attention_y_norm = ops.RMSNorm(config.cap_feat_dim, eps=config.norm_eps, **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(config.adaln_dim, 4 * config.dim, **factory))

    def forward(self, x, freqs, x_mask, y, y_mask, c):
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(4, dim=-1)
        attn_in = self.attention_norm1(x) * (1 + scale_msa)
        attn_out = self.attention_norm2(self.attention(attn_in, freqs, x_mask, self.attention_y_norm(y), y_mask))
        x = torch.addcmul(x, gate_msa.tanh(), attn_out)  # x + tanh(gate) * out in one pass
        ffn_out = self.ffn_norm2(self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp)))
        return torch.addcmul(x, gate_mlp.tanh(), ffn_out)


class FinalLayer(nn.Module):
    """LayerNorm without affine (eps 1e-6) scaled by 1 + adaLN(c), then a linear to patch values."""

    def __init__(self, config: NextDiTConfig, patch_size: int, f_patch_size: int, ops=nn, **factory):
        super().__init__()
        self.norm_final = ops.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6, **factory)
        self.linear = ops.Linear(config.dim, f_patch_size * patch_size * patch_size * config.in_channels, **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(config.adaln_dim, config.dim, **factory))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x) * (1 + self.adaLN_modulation(c)[:, None]))


def compute_frames(frames: int, f_patch_size: int) -> int:
    """Frames the embedder sees: an image (one frame) is repeated f-patch times to fill one patch."""
    return f_patch_size if frames == 1 else frames


def check_latent_size(size: Sequence[int], patch_size: int, f_patch_size: int) -> None:
    """Raise a clear error unless latent frames/height/width divide by a stage's patch sizes."""
    frames, height, width = size
    if compute_frames(frames, f_patch_size) % f_patch_size:
        raise ValueError(f"latent frame count {frames} is not divisible by f-patch size {f_patch_size}; "
                         f"use a multiple of {f_patch_size} (or 1 frame for an image), or a stage with f-patch 1")
    for name, value in (("height", height), ("width", width)):
        if value % patch_size:
            lower = value // patch_size * patch_size
            raise ValueError(f"latent {name} {value} is not divisible by patch size {patch_size}; use "
                             f"{lower} or {lower + patch_size} (pixels: x8 for the CogVideoX VAE)")


def patch_key(patch_size: int, f_patch_size: int) -> str:
    """Module key of a patch pair, as in the official checkpoints ("P-F")."""
    return f"{patch_size}-{f_patch_size}"


class NextDiT(nn.Module):
    """Multi-scale Next-DiT predicting the flow-matching velocity (data - noise).

    ``forward(x, t, cap_feats, cap_mask, motion_score, patch_size, f_patch_size)``:
    x [B,C,F,H,W] or a list of [C,F,H,W] of different sizes (list in -> list out); t [B] in [0, 1]
    (0 = noise, 1 = data); cap_feats [B,L,D]; cap_mask [B,L] (1 = token); motion_score [B]
    (< 0 = no motion condition).

    ``operations`` is the namespace its Linear / LayerNorm / RMSNorm layers are built from (default
    ``torch.nn``), so a host can substitute layers that cast, quantise or stream weights (ComfyUI's
    ``comfy.ops``); ``device``/``dtype`` place the parameters at construction. ``init_weights=False``
    leaves them uninitialised, for a model whose weights are loaded next.
    """

    def __init__(self, config: NextDiTConfig, operations=None, device=None, dtype=None, init_weights: bool = True):
        super().__init__()
        self.config = config
        ops = nn if operations is None else operations
        factory = {"device": device, "dtype": dtype}
        self.all_x_embedder = nn.ModuleDict({
            patch_key(p, f): ops.Linear(f * p * p * config.in_channels, config.dim, **factory)
            for p, f in config.patch_pairs})
        self.all_final_layer = nn.ModuleDict({
            patch_key(p, f): FinalLayer(config, p, f, ops, **factory) for p, f in config.patch_pairs})
        self.t_embedder = TimestepEmbedder(config.adaln_dim, ops=ops, **factory)
        self.motion_embedder = TimestepEmbedder(config.adaln_dim, ops=ops, **factory)
        self.cap_embedder = nn.Sequential(ops.LayerNorm(config.cap_feat_dim, eps=1e-5, **factory),
                                          ops.Linear(config.cap_feat_dim, config.adaln_dim, **factory))
        self.layers = nn.ModuleList(TransformerBlock(config, ops, **factory) for _ in range(config.n_layers))
        # Kept for checkpoint compatibility; the official forward pass never reads it.
        self.pad_token = nn.Parameter(torch.empty(config.dim, **factory))
        self._rope_tables: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.token_runner: Optional[TokenRunner] = None
        self.compiled_blocks: Optional[Callable[..., torch.Tensor]] = None
        if init_weights:
            self.initialize_weights()

    def initialize_weights(self):
        """Initialisation of the official model (zero adaLN, output and caption projections)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embedder in (self.t_embedder, self.motion_embedder):
            for linear in (embedder.mlp[0], embedder.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(self.motion_embedder.mlp[2].weight)
        nn.init.zeros_(self.cap_embedder[1].weight)
        for layer in self.layers:
            nn.init.zeros_(layer.adaLN_modulation[1].weight)
        for final in self.all_final_layer.values():
            nn.init.zeros_(final.linear.weight)
            nn.init.zeros_(final.adaLN_modulation[1].weight)
        nn.init.normal_(self.pad_token, std=0.02)

    # -- options -----------------------------------------------------------------------------
    def set_attention_backend(self, backend: str) -> None:
        """"sdpa" (torch scaled_dot_product_attention) or "reference" (explicit float32 softmax)."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {backend!r} is unknown; use one of {ATTENTION_BACKENDS}")
        self.set_attention_function(partial(attention, backend=backend))

    def set_attention_function(self, function: AttentionFunction) -> None:
        """Route every attention call (self and caption) through ``function(q, k, v, key_mask)``."""
        for layer in self.layers:
            layer.attention.attend = layer.attention.attend_caption = function

    def set_token_runner(self, runner: Optional[TokenRunner]) -> None:
        """Run the blocks and final layer through ``runner`` (same signature as :meth:`run_tokens`) instead
        of :meth:`run_tokens`; None restores it. :mod:`lumina_core.parallel` installs a sequence-parallel one."""
        self.token_runner = runner

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations are computed in: the weights' (a host that stores weights in another
        dtype, e.g. fp8, overrides this)."""
        return self.all_x_embedder[patch_key(*self.config.patch_pairs[0])].weight.dtype

    def has_patch(self, patch_size: int, f_patch_size: int) -> bool:
        return patch_key(patch_size, f_patch_size) in self.all_x_embedder

    def check_patch(self, patch_size: int, f_patch_size: int) -> None:
        if not self.has_patch(patch_size, f_patch_size):
            offered = ", ".join(f"{f}x{p}" for p, f in self.config.patch_pairs)
            raise ValueError(f"patch pair {f_patch_size}x{patch_size} (f-patch x patch) is not in this model; "
                             f"it has embedders for {offered}: pick one of those")

    # -- patches -----------------------------------------------------------------------------
    def _rope(self, grid: tuple[int, int, int], device) -> torch.Tensor:
        """RoPE table of a token grid on ``device``; the last ROPE_TABLES_KEPT grids' tables are kept."""
        key = (grid, torch.device(device))
        if key in self._rope_tables:
            self._rope_tables.move_to_end(key)
        else:
            self._rope_tables[key] = rope_frequencies(self.config.head_dim, self.config.rope_theta, *grid).to(device)
            while len(self._rope_tables) > ROPE_TABLES_KEPT:
                self._rope_tables.popitem(last=False)
        return self._rope_tables[key]

    def _apply(self, fn, recurse=True):
        # .to() / .cuda() / offloading: kept RoPE tables must not stay on a device the model left.
        self._rope_tables.clear()
        return super()._apply(fn, recurse)

    def _patchify(self, item: torch.Tensor, patch_size: int, f_patch_size: int) -> torch.Tensor:
        frames = item.shape[1]
        if frames == 1 and f_patch_size > 1:
            item = item.repeat(1, f_patch_size, 1, 1)
        return rearrange(item, "c (f pf) (h ph) (w pw) -> (f h w) (pf ph pw c)",
                         pf=f_patch_size, ph=patch_size, pw=patch_size)

    def _unpatchify(self, tokens: torch.Tensor, size, patch_size: int, f_patch_size: int) -> torch.Tensor:
        frames, height, width = size
        item = rearrange(tokens, "(f h w) (pf ph pw c) -> c (f pf) (h ph) (w pw)",
                         f=compute_frames(frames, f_patch_size) // f_patch_size,
                         h=height // patch_size, w=width // patch_size,
                         pf=f_patch_size, ph=patch_size, pw=patch_size)
        return item[:, :frames]

    # -- conditioning ------------------------------------------------------------------------
    def condition(self, t: torch.Tensor, cap_feats: torch.Tensor, cap_mask: torch.Tensor,
                  motion_score: torch.Tensor) -> torch.Tensor:
        """adaLN input c = t_emb(t*t_scale) + motion_emb(motion*motion_scale) + cap_embedder(mean caption)."""
        dtype = self.compute_dtype
        t_emb = self.t_embedder(t.float() * self.config.t_scale, dtype)
        motion = motion_score.float().to(t_emb.device) * self.config.motion_scale
        no_motion = motion < 0
        motion_emb = self.motion_embedder(motion.masked_fill(no_motion, 0.0), dtype)
        motion_emb = motion_emb.masked_fill(no_motion[:, None], 0.0)
        weights = cap_mask.to(cap_feats.dtype).unsqueeze(-1)
        pooled = (cap_feats * weights).sum(dim=1) / weights.sum(dim=1)
        return t_emb + self.cap_embedder(pooled) + motion_emb

    def _check_caption(self, cap_feats: torch.Tensor, cap_mask: torch.Tensor, batch: int) -> None:
        if cap_feats.dim() != 3 or cap_feats.shape[-1] != self.config.cap_feat_dim:
            raise ValueError(f"caption features have shape {tuple(cap_feats.shape)}; this model needs "
                             f"[B, L, {self.config.cap_feat_dim}] (the text encoder's hidden size must be "
                             f"{self.config.cap_feat_dim}: use the text encoder the model was trained with)")
        if cap_mask.shape != cap_feats.shape[:2]:
            raise ValueError(f"caption mask shape {tuple(cap_mask.shape)} does not match the features' "
                             f"[B, L] = {tuple(cap_feats.shape[:2])}")
        if cap_feats.shape[0] != batch:
            raise ValueError(f"{cap_feats.shape[0]} caption rows for {batch} latents; give one caption row per latent")
        if bool((cap_mask.sum(dim=1) == 0).any()):
            raise ValueError("a caption row has no tokens (mask all zero); every row needs at least the BOS token")

    # -- forward -----------------------------------------------------------------------------
    # torch.compile of the whole model (ComfyUI's TorchCompileModel does that) traces none of forward's own
    # Python: checks, the RoPE cache and a data-dependent check run eagerly (_prepare, _finish), and only the
    # frame the block path runs in, run_blocks, becomes a graph: one per patch pair and batch shape, with no
    # guard on the cache and no graph break.
    @torch.compiler.disable(recursive=False)
    def forward(self, x, t, cap_feats, cap_mask, motion_score, patch_size: int, f_patch_size: int):
        h, freqs, x_mask, y, y_mask, c, layout = self._prepare(x, t, cap_feats, cap_mask, motion_score,
                                                               patch_size, f_patch_size)
        out = (self.token_runner or self.run_tokens)(h, freqs, x_mask, y, y_mask, c, patch_size, f_patch_size)
        return self._finish(out, layout, patch_size, f_patch_size)

    @torch.compiler.disable
    def _prepare(self, x, t, cap_feats, cap_mask, motion_score, patch_size: int, f_patch_size: int):
        """Checks, patches, RoPE tables, masks, conditioning and the patch embedding, run eagerly."""
        self.check_patch(patch_size, f_patch_size)
        is_tensor = isinstance(x, torch.Tensor)
        items = list(x.unbind(0)) if is_tensor else list(x)
        batch = len(items)
        self._check_caption(cap_feats, cap_mask, batch)
        for name, value in (("t", t), ("motion_score", motion_score)):
            if value.shape != (batch,):
                raise ValueError(f"{name} has shape {tuple(value.shape)}; expected [{batch}], one per latent")
        sizes = [tuple(item.shape[1:]) for item in items]
        for item, size in zip(items, sizes):
            if item.dim() != 4 or item.shape[0] != self.config.in_channels:
                raise ValueError(f"latent item shape {tuple(item.shape)}; "
                                 f"expected [{self.config.in_channels}, F, H, W]")
            check_latent_size(size, patch_size, f_patch_size)

        dtype = self.compute_dtype
        device = items[0].device
        tokens = [self._patchify(item.to(dtype), patch_size, f_patch_size) for item in items]
        grids = [(compute_frames(f, f_patch_size) // f_patch_size, h // patch_size, w // patch_size)
                 for f, h, w in sizes]
        lengths = [len(tok) for tok in tokens]
        longest = max(lengths)
        x_seq = torch.stack([F.pad(tok, (0, 0, 0, longest - len(tok))) for tok in tokens])
        freqs = torch.stack([F.pad(self._rope(g, device), (0, 0, 0, longest - n)) for g, n in zip(grids, lengths)])
        x_mask = None
        if min(lengths) != longest:
            x_mask = torch.arange(longest, device=device)[None] < torch.tensor(lengths, device=device)[:, None]

        y_mask = cap_mask.to(device).bool()
        # Padded caption positions are zeroed so that no value there (even inf/nan) can leak.
        y = torch.where(y_mask[..., None], cap_feats.to(device, dtype), 0.0)
        c = self.condition(t.to(device), y, y_mask, motion_score).to(dtype)
        h = self.all_x_embedder[patch_key(patch_size, f_patch_size)](x_seq)
        return h, freqs, x_mask, y, y_mask, c, (is_tensor, sizes, lengths)

    @torch.compiler.disable
    def _finish(self, out: torch.Tensor, layout, patch_size: int, f_patch_size: int):
        """Patch values back to latents (a batch tensor or a list, as the input came)."""
        is_tensor, sizes, lengths = layout
        outputs = [self._unpatchify(out[i, :n], sizes[i], patch_size, f_patch_size) for i, n in enumerate(lengths)]
        return torch.stack(outputs) if is_tensor else outputs

    @torch.compiler.disable(recursive=False)
    def run_tokens(self, h: torch.Tensor, freqs: torch.Tensor, key_mask: Optional[torch.Tensor], y: torch.Tensor,
                   y_mask: torch.Tensor, c: torch.Tensor, patch_size: int, f_patch_size: int) -> torch.Tensor:
        """The blocks and the final layer on embedded tokens h [B, L, dim] with their RoPE table freqs
        [B, L, hd/2]: patch values [B, L, F*P*P*C]. key_mask [B, Lk] (True = attend; None = all) masks the
        self-attention keys; Lk may exceed L when another process holds the other tokens."""
        final = self.all_final_layer[patch_key(patch_size, f_patch_size)]
        for tensor in (h, freqs, key_mask, y, y_mask):  # token and caption lengths: dynamic from the first compile
            if tensor is not None:
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
        return (self.compiled_blocks or self.run_blocks)(h, freqs, key_mask, y, y_mask, c, final)

    def run_blocks(self, h: torch.Tensor, freqs: torch.Tensor, key_mask: Optional[torch.Tensor], y: torch.Tensor,
                   y_mask: torch.Tensor, c: torch.Tensor, final: FinalLayer) -> torch.Tensor:
        """The region :meth:`compile_blocks` compiles: tensors and the patch pair's final layer in, patch
        values out; no checks, no caches, no Python-side branching on values."""
        for layer in self.layers:
            h = layer(h, freqs, key_mask, y, y_mask, c)
        return final(h, c)

    def compile_blocks(self, regional: bool = False, **options) -> None:
        """torch.compile the block path (``options`` go to torch.compile: backend, mode, dynamic, ...).

        Whole (default): :meth:`run_blocks` as one graph per patch pair and batch shape. ``regional``: each
        block on its own (blocks share code, so one block's graph serves all of them: compiling is several
        times faster, the speed-up a little smaller). The first call pays the compile time; the token and
        caption lengths (frames, height, width, prompt) are marked dynamic, so a new size compiles nothing.
        :meth:`uncompile` restores eager."""
        self.uncompile()
        if regional:
            for layer in self.layers:
                layer.compile(**options)
        else:
            self.compiled_blocks = torch.compile(self.run_blocks, **options)

    def uncompile(self) -> None:
        """Drop what :meth:`compile_blocks` compiled (eager again)."""
        self.compiled_blocks = None
        for layer in self.layers:
            layer._compiled_call_impl = None

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
