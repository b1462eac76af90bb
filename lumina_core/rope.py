"""3-D rotary position embedding of Lumina-Video (frames, rows, columns in patch units).

The head dimension is split f/h/w = hd/8*2, hd/8*3, hd/8*3 (in that order); each axis uses the
standard RoPE frequencies ``theta ** (-2i/d)``. Angles are computed in float64 and stored as
complex64, as the official ``precompute_freqs_cis`` does, but only for the grid a call needs
(the official code precomputes a fixed 64x128x128 table).
"""

from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the head given to the frame, row and column axes."""
    if head_dim % 16:
        raise ValueError(f"head_dim {head_dim} is not a multiple of 16; 3-D RoPE needs head_dim = 16k "
                         "(dim / n_heads), e.g. dim 2304 with 16 heads")
    return head_dim // 8 * 2, head_dim // 8 * 3, head_dim // 8 * 3


def _axis_angles(length: int, dim: int, theta: float) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    positions = torch.arange(length, dtype=torch.float64)
    return torch.outer(positions, freqs)  # [length, dim/2]


def rope_frequencies(head_dim: int, theta: float, frames: int, rows: int, cols: int) -> torch.Tensor:
    """Complex rotations for a frames x rows x cols token grid, flattened in (f, h, w) order.

    Returns complex64 [frames*rows*cols, head_dim/2].
    """
    parts = []
    for axis, (length, dim) in enumerate(zip((frames, rows, cols), axis_dims(head_dim))):
        cis = torch.polar(torch.ones(length, dim // 2, dtype=torch.float64), _axis_angles(length, dim, theta))
        cis = cis.to(torch.complex64)
        shape = [1, 1, 1, dim // 2]
        shape[axis] = length
        parts.append(cis.view(shape).expand(frames, rows, cols, dim // 2))
    return torch.cat(parts, dim=-1).reshape(frames * rows * cols, head_dim // 2)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` [B, L, heads, hd] by ``freqs`` [B, L, hd/2].

    Computed in float32 and returned in x's dtype.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = torch.view_as_real(pairs * freqs.unsqueeze(2)).flatten(3)
    return rotated.type_as(x)
