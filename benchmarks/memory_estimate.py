"""Estimate (not a measurement) of the GPU memory that sampling with the official 2B_GQA Multi-scale Next-DiT
needs, per schedule preset and video size, from the model's own numbers:

- weights: the parameters of ``lumina_core.model.PRESETS["2B_GQA"]`` (built on the meta device), 2 bytes each in
  bf16; with fp8 storage the Linear weights take 1 byte;
- activations: the largest model call of the schedule, its tokens times its batch rows (2 while cfg > 0: the prompt
  and the negative prompt in one batch, 1 after cfg truncation), times the bytes alive per token at a block's peak.
  That peak is the SwiGLU feed-forward: the residual stream and the feed-forward's input (2 x dim) plus its three
  hidden-wide tensors (silu(w1 x), w3 x and their product), plus the token's RoPE row (complex64, head_dim / 2).
  Attention adds no token x token matrix: torch's SDPA and ComfyUI's attention run fused kernels without one, and
  the self-attention of one video has no mask.

Tokens of a call at patch P, frame patch F: (latent frames / F) x (height / 8 / P) x (width / 8 / P). Not counted:
the CUDA context (~0.5 GB), the allocator's slack, the text encoder and the VAE (ComfyUI moves them off the GPU when
the transformer needs the room) and the VAE decode's own activations. Measure with benchmarks/bench_gpu.py.

    python benchmarks/memory_estimate.py          # prints the table of docs/memory.md
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.cost import guidance_scale  # noqa: E402
from lumina_core.model import PRESETS, NextDiT, compute_frames  # noqa: E402
from lumina_core.sampling import SampleConfig  # noqa: E402
from lumina_core.sizes import latent_shape  # noqa: E402

GB = 1e9
BF16 = 2
ROPE_BYTES = 8  # one complex64 rotation per channel pair
SIZES = [  # (label, width, height, frames, presets)
    ("960p, ~16:9", 1248, 704, 96, ("f24F96R960-MultiScale", "f24F96R960")),
    ("960p, square", 960, 960, 96, ("f24F96R960-MultiScale", "f24F96R960")),
    ("960p, ~16:9", 1248, 704, 49, ("f24F96R960",)),
    ("512p, ~16:9", 672, 384, 64, ("f16F64R512-MultiScale", "f16F64R512")),
    ("512p, square", 512, 512, 64, ("f16F64R512-MultiScale", "f16F64R512")),
    ("960p image", 1248, 704, 1, ("f24F96R960-MultiScale", "f24F96R960")),
]


def weight_bytes(model: NextDiT, fp8: bool = False) -> int:
    """Bytes of the weights in bf16, or with every Linear weight in fp8 (1 byte) and the rest in bf16."""
    linear = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    total = model.parameter_count()
    return total * BF16 - (linear * (BF16 - 1) if fp8 else 0)


def bytes_per_token(model: NextDiT) -> int:
    """Activation bytes alive per token and batch row at a block's peak (bf16): see the module docstring."""
    config = model.config
    return (2 * config.dim + 3 * config.swiglu_hidden_dim) * BF16 + config.head_dim // 2 * ROPE_BYTES


def tokens(latent: tuple, patch_size: int, f_patch_size: int) -> int:
    frames, height, width = latent
    return compute_frames(frames, f_patch_size) // f_patch_size * (height // patch_size) * (width // patch_size)


def largest_call(config: SampleConfig, latent: tuple) -> tuple[int, int, str]:
    """(tokens, batch rows, patch pair "FxP") of the model call with the most token rows in the schedule."""
    points = config.grid()[:-1].double()
    guided = guidance_scale(config.cfg, points) > 0
    calls = []
    for stage in config.stages:
        inside = (points >= stage.t_start) & (points < stage.t_end)
        if inside.any():
            rows = 2 if (inside & guided).any() else 1
            calls.append((tokens(latent, stage.patch_size, stage.f_patch_size), rows, stage.patch))
    return max(reversed(calls), key=lambda call: call[0] * call[1])  # on a tie, the later (finer) stage


def table() -> str:
    with torch.device("meta"):
        model = NextDiT(PRESETS["2B_GQA"])
    per_token = bytes_per_token(model)
    bf16, fp8 = weight_bytes(model) / GB, weight_bytes(model, fp8=True) / GB
    lines = [f"2B_GQA: {model.parameter_count():,} parameters, {bf16:.2f} GB in bf16, {fp8:.2f} GB with fp8 Linear "
             f"weights; {per_token:,} bytes per token and batch row at a block's peak (bf16). Estimates, not measured.",
             "",
             "| size | presets | largest call: patch, tokens x rows | activations | total, bf16 weights "
             "| total, fp8 weights |",
             "|---|---|---|---|---|---|"]
    for label, width, height, frames, presets in SIZES:
        latent = latent_shape(width, height, frames)[2:]
        calls = {name: largest_call(SampleConfig.preset(name), latent) for name in presets}
        for call in dict.fromkeys(calls.values()):  # presets with the same largest call share a row
            count, rows, patch = call
            names = ", ".join(f"`{name}`" for name in presets if calls[name] == call)
            activations = count * rows * per_token / GB
            lines.append(f"| {label}: {width}x{height}, {frames} frame{'s' * (frames > 1)} | {names} "
                         f"| {patch}: {count:,} x {rows} | {activations:.1f} GB | {bf16 + activations:.1f} GB "
                         f"| {fp8 + activations:.1f} GB |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
