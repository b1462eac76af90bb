"""Benchmark (not a test) for a CUDA GPU: the official 2B_GQA Multi-scale Next-DiT with random bf16 weights at
the two official video sizes, per patch pair and over the whole multi-scale schedule.

    python benchmarks/bench_gpu.py [--preset f24F96R960-MultiScale ...] [--repeats 3] [--steps 70]
    python benchmarks/bench_gpu.py --cpu-check     # the same logic on CPU with a tiny model (seconds)

For each preset (f24F96R960-MultiScale: 1248x704, 96 frames -> latent 16x24x88x156; f16F64R512-MultiScale:
672x384, 64 frames -> latent 16x16x48x84) it prints, per patch pair of the schedule: seconds per model call with
the CFG batch of 2 (positive and negative caption, as the sampler's guided stages run), peak GPU memory, and
which torch SDPA kernels ran (flash / cudnn / efficient / math, counted from the profiler); then the same call
with the Linear weights of the blocks stored in fp8 (e4m3fn, cast to bf16 per call; the embedders and final
layers stay bf16) and, when the optional ``sageattention`` package is installed, with SageAttention for the
unmasked self-attention; then the whole schedule (``lumina_core.sampling.sample``, its calls as the preset
makes them), seconds and peak memory. Errors are max |a - b| / max |b| against the bf16 SDPA output.

On a machine without a CUDA GPU it refuses with one line, unless ``--cpu-check``.
"""

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.model import PRESETS, NextDiT, NextDiTConfig, attention, patch_key  # noqa: E402
from lumina_core.sampling import SampleConfig, sample  # noqa: E402

SIZES = {"f24F96R960-MultiScale": (16, 24, 88, 156), "f16F64R512-MultiScale": (16, 16, 48, 84)}
CPU_CHECK_CONFIG = NextDiTConfig(in_channels=16, dim=96, n_layers=2, n_heads=6, n_kv_heads=3, cap_feat_dim=48)
CPU_CHECK_LATENT = (16, 4, 8, 16)
CAPTION_LENGTHS = (120, 12)  # positive and negative prompt tokens (padded to the longer, as the sampler does)
SDPA_KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_attention_math": "math",
}


class Fp8Linear(nn.Linear):
    """A Linear whose weight may be stored in float8; cast to the activations' dtype at each call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


FP8_OPERATIONS = SimpleNamespace(Linear=Fp8Linear, LayerNorm=nn.LayerNorm, RMSNorm=nn.RMSNorm)


def random_model(config: NextDiTConfig, device, operations=None) -> NextDiT:
    """bf16 weights drawn on the device (std 0.02; norm weights near 1), seed 0."""
    model = NextDiT(config, operations=operations, device=device, dtype=torch.bfloat16, init_weights=False).eval()
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.02, generator=generator)
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and module.weight is not None:
                module.weight.add_(1.0)
    return model


def store_blocks_in_fp8(model: NextDiT) -> None:
    for module in model.layers.modules():
        if isinstance(module, nn.Linear):
            module.weight.data = module.weight.data.to(torch.float8_e4m3fn)


def sage_attention():
    """An attention function running SageAttention on unmasked calls (torch SDPA for the padded caption), or
    None when the ``sageattention`` package is not installed."""
    try:
        from sageattention import sageattn
    except ImportError:
        return None

    def attend(q, k, v, key_mask):
        if key_mask is not None:
            return attention(q, k, v, key_mask)
        if k.shape[1] != q.shape[1]:
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        return sageattn(q, k, v, tensor_layout="HND", is_causal=False)

    return attend


def captions(config: NextDiTConfig, device) -> tuple:
    """(positive, negative) captions: random features, right-padded rows of CAPTION_LENGTHS tokens."""
    generator = torch.Generator(device).manual_seed(1)
    rows = []
    for length in CAPTION_LENGTHS:
        feats = torch.randn(1, max(CAPTION_LENGTHS), config.cap_feat_dim, device=device, generator=generator)
        mask = (torch.arange(max(CAPTION_LENGTHS), device=device) < length).long()[None]
        rows.append((feats.to(torch.bfloat16), mask))
    return tuple(rows)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gib(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**30:.2f}"


def measure(fn, device, repeats: int, warm_up: bool = True) -> tuple[float, str, object]:
    """(median seconds, peak memory in GiB ("n/a" off CUDA), last output) of ``fn``, after a warm-up call."""
    if warm_up:
        fn()
        synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = gib(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
    return statistics.median(times), peak, out


def sdpa_kernels(fn) -> str:
    """The torch SDPA kernels one call of ``fn`` ran, with counts, e.g. "flash x48"."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fn()
    counts = Counter()
    for event in profile.key_averages():
        if event.key in SDPA_KERNELS:
            counts[SDPA_KERNELS[event.key]] += event.count
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())) or "none"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def bench_preset(name: str, models: dict, latent_shape, device, repeats: int, steps) -> None:
    schedule = SampleConfig.preset(name)
    if steps is not None:
        schedule = replace(schedule, steps=steps)
    model = models["bf16"]
    cond, uncond = captions(model.config, device)
    feats = torch.cat([cond[0], uncond[0]])
    mask = torch.cat([cond[1], uncond[1]])
    x = torch.randn(2, *latent_shape, device=device, generator=torch.Generator(device).manual_seed(2))
    x = x.to(torch.bfloat16)
    t = torch.full((2,), 0.5, device=device)
    motion = torch.tensor([6.0, 2.0], device=device)
    print(f"\n{name}: latent {list(latent_shape)}, CFG batch 2, caption {max(CAPTION_LENGTHS)} tokens; "
          f"{len(schedule.model_calls())} calls over the schedule")
    print(f"{'pair':>5} {'tokens':>7} {'s/call':>8} {'peak GiB':>9} {'SDPA kernels':>28}   "
          "variants (s/call, rel. error)")
    grid = schedule.grid()
    for stage in schedule.stages:
        pair = (stage.patch_size, stage.f_patch_size)

        def forward(network, pair=pair):
            with torch.no_grad():
                return network(x, t, feats, mask, motion, *pair)

        seconds, peak, reference = measure(lambda: forward(model), device, repeats)
        kernels = sdpa_kernels(lambda: forward(model))
        frames, height, width = latent_shape[1:]
        tokens = (frames // stage.f_patch_size) * (height // stage.patch_size) * (width // stage.patch_size)
        variants = []
        fp8_seconds, _, fp8_out = measure(lambda: forward(models["fp8"]), device, repeats)
        variants.append(f"fp8 {fp8_seconds:.3f} s, {relative_error(fp8_out, reference):.1e}")
        if models["sage"] is None:
            variants.append("sageattention not installed")
        else:
            model.set_attention_function(models["sage"])
            try:
                sage_seconds, _, sage_out = measure(lambda: forward(model), device, repeats)
                variants.append(f"sage {sage_seconds:.3f} s, {relative_error(sage_out, reference):.1e}")
            except Exception as error:  # an optional kernel (e.g. a head dim it lacks): report why it did not run
                variants.append(f"sage failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
            finally:
                model.set_attention_function(attention)
        print(f"{patch_key(*pair):>5} {tokens:>7} {seconds:8.3f} {peak:>9} {kernels:>28}   "
              f"{'; '.join(variants)}  [{stage.steps_on(grid)} calls]")
    noise = torch.randn(1, *latent_shape, device=device, generator=torch.Generator(device).manual_seed(3))
    # every patch pair's kernels are warm from the calls above
    seconds, peak, _ = measure(lambda: sample(model, noise, cond, uncond, schedule), device, 1, warm_up=False)
    print(f"whole schedule: {seconds:.2f} s, peak {peak} GiB")


def fp8_storage_bytes(model: NextDiT) -> tuple[int, int]:
    """(bytes of the block Linear weights, bytes of all parameters)."""
    block = sum(m.weight.numel() * m.weight.element_size() for m in model.layers.modules() if isinstance(m, nn.Linear))
    return block, sum(p.numel() * p.element_size() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (after one warm-up)")
    parser.add_argument("--steps", type=int, help="grid steps of the schedule (default: the preset's 70)")
    parser.add_argument("--cpu-check", action="store_true",
                        help="run the logic on CPU with a tiny model and latent, to check the script without a GPU")
    args = parser.parse_args()
    if args.cpu_check:
        device, config = torch.device("cpu"), CPU_CHECK_CONFIG
    elif torch.cuda.is_available():
        device, config = torch.device("cuda"), PRESETS["2B_GQA"]
    else:
        raise SystemExit("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine "
                         "with one, or add --cpu-check to check its logic on CPU with a tiny model")

    models = {"bf16": random_model(config, device), "fp8": random_model(config, device, FP8_OPERATIONS),
              "sage": sage_attention()}
    store_blocks_in_fp8(models["fp8"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--cpu-check, tiny model)"
    bf16_bytes, fp8_bytes = fp8_storage_bytes(models["bf16"]), fp8_storage_bytes(models["fp8"])
    resident = gib(torch.cuda.memory_allocated(device) if device.type == "cuda" else None)
    print(f"{name}; torch {torch.__version__}; {models['bf16'].parameter_count() / 1e9:.3f}B parameters, "
          f"bf16 {bf16_bytes[1] / 2**30:.2f} GiB; fp8 block weights {fp8_bytes[0] / bf16_bytes[0]:.2f} of bf16's "
          f"(all parameters {fp8_bytes[1] / 2**30:.2f} GiB); both models resident: {resident} GiB of the peaks")
    for preset in args.preset:
        bench_preset(preset, models, CPU_CHECK_LATENT if args.cpu_check else SIZES[preset], device, args.repeats,
                     args.steps)


if __name__ == "__main__":
    main()
