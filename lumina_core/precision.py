"""Compute dtypes by name, and which one a device runs fastest.

bf16 halves the weights' memory and, where the hardware has bf16 matrix instructions, runs matmuls and
convolutions faster than fp32: on a 2-core AMD EPYC with AVX512-BF16 (no AMX) matmuls ran 2.3x faster than
fp32, a dim-512 Next-DiT forward 1.3-1.6x (benchmarks/bench_forward.py), the demo's sampling 1.1x and its VAE
decode 5x, at 54-61 dB PSNR from the fp32 video (benchmarks/bench_bf16.py). Without those instructions bf16 is
emulated and slower than fp32.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` has bf16 matrix instructions: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, check, lambda: False)()
                   for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def resolve_dtype(name: str, device: str | torch.device) -> str:
    """The dtype name ``name`` stands for on ``device``: ``auto`` is bf16 where :func:`native_bf16`, else fp32;
    any other name is itself."""
    if name != AUTO:
        return name
    return "bf16" if native_bf16(device) else "fp32"
