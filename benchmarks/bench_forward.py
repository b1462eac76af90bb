"""Benchmark (not a test): forward time of our Next-DiT on CPU, per patch pair, against the official
``MultiScaleNextDiT`` in fp32 (same weights, same inputs), and our bf16 forward against our fp32 (time and
error) for the benchmark config, the shipped demo transformer and the parity fixture's tiny config.

    python -O benchmarks/bench_forward.py --official-dir OFFICIAL_DIR [--compile] [--repeats 5] [--threads 2]

``--official-dir`` is a folder holding the official ``models/`` package of Alpha-VLLM/Lumina-Video (e.g.
``git --git-dir=<clone>/.git archive HEAD models | tar -x -C OFFICIAL_DIR``); it is never part of this
repository. Its CUDA-only imports get CPU stand-ins here: ``flash_attn_varlen_func`` runs torch SDPA on each
packed item (GQA, the given scale), ``unpad_input`` packs the caption rows, and the sequence-parallel helpers
of ``utils.parallel`` are the identity of one rank. Its asserts must be off (``python -O``): one of them refuses
fp32 attention, which the stand-in computes like any other dtype. Without ``--official-dir`` only
the bf16 tables are printed. ``--compile`` adds ours under torch.compile (inductor with freezing) against
the official eager forward.

Benchmark config: dim 512, 8 layers, 8 heads (4 KV), caption 32 tokens of width 256 (the second row padded to
24), latent [2, 16, 12, 32, 32]: 3072 / 1536 / 384 tokens per item for patch pairs 2-1 / 2-2 / 4-2. Times are
medians over ``--repeats`` samples, the two models alternating, and a ratio is the median of the ratios of
adjacent samples, which cancels most of the drift of a shared machine. Errors are max |a - b| / max |b|.
"""

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.model import NextDiT, NextDiTConfig, patch_key  # noqa: E402

BENCH_CONFIG = NextDiTConfig(in_channels=16, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, cap_feat_dim=256)


# -- the official model on CPU ---------------------------------------------------------------------
def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           causal=False, softmax_scale=None):
    """CPU stand-in for flash-attn's packed attention: torch SDPA on each item. q [Nq, H, d], k/v [Nk, Hkv, d]."""
    outputs = []
    for i in range(len(cu_seqlens_q) - 1):
        qi = q[cu_seqlens_q[i]:cu_seqlens_q[i + 1]].transpose(0, 1)[None]
        ki = k[cu_seqlens_k[i]:cu_seqlens_k[i + 1]].transpose(0, 1)[None]
        vi = v[cu_seqlens_k[i]:cu_seqlens_k[i + 1]].transpose(0, 1)[None]
        out = F.scaled_dot_product_attention(qi, ki, vi, scale=softmax_scale, enable_gqa=qi.shape[1] != ki.shape[1])
        outputs.append(out[0].transpose(0, 1))
    return torch.cat(outputs)


def unpad_input(hidden, mask):
    """flash_attn.bert_padding.unpad_input: the rows' tokens packed, their indices, cu_seqlens, max length."""
    seqlens = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten()).flatten()
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    return hidden.flatten(0, 1)[indices], indices, cu_seqlens, int(seqlens.max()), seqlens


def install_official_shims() -> None:
    flash_attn = types.ModuleType("flash_attn")
    flash_attn.flash_attn_varlen_func = flash_attn_varlen_func
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.unpad_input = unpad_input
    padding.index_first_axis = padding.pad_input = None  # imported by the official module, never called
    parallel = types.ModuleType("utils.parallel")
    parallel.get_sequence_parallel_group = lambda: None
    parallel.get_sequence_parallel_world_size = lambda: 1
    parallel.get_sequence_parallel_rank = lambda: 0
    parallel.all_to_all = lambda x, **kwargs: x
    parallel.scatter_to_sequence_parallel_region = lambda x, rank0_only=False: (x, 0)
    parallel.gather_from_sequence_parallel_region = lambda x, rank0_only=False, pad_num=0: x
    utils = types.ModuleType("utils")
    utils.parallel = parallel
    sys.modules.update({"flash_attn": flash_attn, "flash_attn.bert_padding": padding, "utils": utils,
                        "utils.parallel": parallel})


def import_official(official_dir: Path):
    """The official ``models.model`` module, imported from ``official_dir/models`` (asserts off: ``python -O``)."""
    package_dir = official_dir / "models"
    if not (package_dir / "model.py").is_file():
        raise SystemExit(f"--official-dir {official_dir} has no models/model.py; extract the official repository's "
                         "models/ folder there")
    if not sys.flags.optimize:
        raise SystemExit("run with python -O for --official-dir: an assert of the official model refuses fp32 "
                         "attention, which the CPU stand-in computes")
    install_official_shims()
    package = types.ModuleType("official_models")
    package.__path__ = [str(package_dir)]
    sys.modules["official_models"] = package
    spec = importlib.util.spec_from_file_location("official_models.model", package_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module.__name__] = module
    spec.loader.exec_module(module)
    return module


def official_model(module, config: NextDiTConfig, state_dict: dict):
    model = module.MultiScaleNextDiT(
        all_patch_size=config.patch_sizes, all_f_patch_size=config.f_patch_sizes, in_channels=config.in_channels,
        dim=config.dim, n_layers=config.n_layers, n_heads=config.n_heads, n_kv_heads=config.n_kv_heads,
        multiple_of=config.multiple_of, ffn_dim_multiplier=config.ffn_dim_multiplier, norm_eps=config.norm_eps,
        qk_norm=config.qk_norm, cap_feat_dim=config.cap_feat_dim, rope_theta=config.rope_theta,
        t_scale=config.t_scale, motion_scale=config.motion_scale)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


# -- inputs, timing, error ---------------------------------------------------------------------------
def random_model(config: NextDiTConfig, seed: int = 0) -> NextDiT:
    """Every parameter random (the official init zeroes the outputs and the adaLN); norm weights near 1."""
    torch.manual_seed(seed)
    model = NextDiT(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.02)
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)) and module.weight is not None:
                module.weight.add_(1.0)
    return model


def random_inputs(config: NextDiTConfig, shape, caption: int, seed: int = 1) -> tuple:
    """(x, t, caption features, mask, motion); the second caption row is padded to 3/4 of its length."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    feats = torch.randn(shape[0], caption, config.cap_feat_dim, generator=gen)
    mask = torch.ones(shape[0], caption, dtype=torch.long)
    mask[1:, caption * 3 // 4:] = 0
    return x, torch.linspace(0.3, 0.7, shape[0]), feats, mask, torch.full((shape[0],), 6.0)


def call(model, inputs, patch_size, f_patch_size):
    x, t, feats, mask, motion = inputs
    with torch.no_grad():
        # the official forward writes into motion_score: give each call its own copy
        return model(x, t, feats, mask, motion.clone(), patch_size, f_patch_size)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def alternate(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Seconds per call of each callable over ``repeats`` samples, the callables interleaved, and each one's
    output. A first call warms up and gives the output; a sample runs enough calls to last ~50 ms."""
    outputs, number = {}, {}
    for name, fn in fns.items():
        start = clock()
        outputs[name] = fn()
        number[name] = max(1, int(0.05 / max(clock() - start, 1e-6)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            for _ in range(number[name]):
                fn()
            times[name].append((clock() - start) / number[name])
    return times, outputs


def median_ratio(numerator: list, denominator: list) -> float:
    """Median of the ratios of adjacent samples."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (the parity tests' measure)."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def tokens(shape, patch_size: int, f_patch_size: int) -> int:
    frames, height, width = shape[2:]
    return max(frames // f_patch_size, 1) * (height // patch_size) * (width // patch_size)


# -- tables ------------------------------------------------------------------------------------------
def compare_official(model, official, inputs, repeats: int) -> None:
    print("\nfp32 forward, ours vs official (seconds per call, median)")
    print(f"{'pair':>5} {'tokens':>7} {'ours':>8} {'official':>9} {'ours/official':>14} {'rel. error':>11}")
    for patch_size, f_patch_size in model.config.patch_pairs:
        times, out = alternate({"ours": lambda p=patch_size, f=f_patch_size: call(model, inputs, p, f),
                                "official": lambda p=patch_size, f=f_patch_size: call(official, inputs, p, f)},
                               repeats)
        error = relative_error(out["ours"], out["official"])
        print(f"{patch_key(patch_size, f_patch_size):>5} {tokens(inputs[0].shape, patch_size, f_patch_size):>7} "
              f"{statistics.median(times['ours']):8.3f} {statistics.median(times['official']):9.3f} "
              f"{median_ratio(times['ours'], times['official']):14.2f} {error:11.1e}")


def compare_compiled(model, official, inputs, repeats: int) -> None:
    """Ours under torch.compile (inductor with freezing: weights become constants, matmuls run as prepacked
    oneDNN kernels and elementwise chains fuse) against the official eager forward."""
    import torch._inductor.config

    torch._inductor.config.freezing = True
    compiled = torch.compile(model)
    print("\nfp32 forward, ours under torch.compile (inductor, freezing) vs official eager (seconds per call, median)")
    print(f"{'pair':>5} {'compile s':>10} {'compiled':>9} {'official':>9} {'compiled/official':>18} {'rel. error':>11}")
    for patch_size, f_patch_size in model.config.patch_pairs:
        start = time.perf_counter()
        call(compiled, inputs, patch_size, f_patch_size)
        compile_seconds = time.perf_counter() - start
        times, out = alternate({"ours": lambda p=patch_size, f=f_patch_size: call(compiled, inputs, p, f),
                                "official": lambda p=patch_size, f=f_patch_size: call(official, inputs, p, f)},
                               repeats)
        ours, official_seconds = statistics.median(times["ours"]), statistics.median(times["official"])
        print(f"{patch_key(patch_size, f_patch_size):>5} {compile_seconds:10.1f} {ours:9.3f} {official_seconds:9.3f} "
              f"{median_ratio(times['ours'], times['official']):18.2f} "
              f"{relative_error(out['ours'], out['official']):11.1e}")


def compare_bf16(name: str, model, cases: dict, repeats: int) -> None:
    """bf16 weights and activations against fp32: ``cases`` maps a patch pair to its inputs."""
    fast = NextDiT(model.config, dtype=torch.bfloat16).eval()
    fast.load_state_dict(model.state_dict())
    print(f"\n{name}: bf16 vs fp32 forward, ours (seconds per call, median)")
    print(f"{'pair':>5} {'tokens':>7} {'fp32':>9} {'bf16':>9} {'bf16/fp32':>10} {'rel. error':>11}")
    for (patch_size, f_patch_size), inputs in cases.items():
        times, out = alternate({"fp32": lambda p=patch_size, f=f_patch_size, i=inputs: call(model, i, p, f),
                                "bf16": lambda p=patch_size, f=f_patch_size, i=inputs: call(fast, i, p, f)}, repeats)
        print(f"{patch_key(patch_size, f_patch_size):>5} {tokens(inputs[0].shape, patch_size, f_patch_size):>7} "
              f"{statistics.median(times['fp32']):9.4f} {statistics.median(times['bf16']):9.4f} "
              f"{median_ratio(times['bf16'], times['fp32']):10.2f} {relative_error(out['bf16'], out['fp32']):11.1e}")


def demo_cases(repeats: int) -> None:
    """The shipped demo transformer at the demo size (64x64x16 px -> latent 16x4x8x8), a CFG batch of 2."""
    from lumina_core.demo import build_transformer

    model = build_transformer()
    inputs = random_inputs(model.config, (2, 16, 4, 8, 8), caption=12)
    compare_bf16("demo transformer", model, {pair: inputs for pair in model.config.patch_pairs}, repeats)


def parity_cases(repeats: int) -> None:
    """The parity fixture's tiny config with its official random weights, on the fixture's video inputs."""
    from safetensors.torch import load_file

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "parity"
    meta = json.loads((data / "tiny_ref.json").read_text())
    model = NextDiT(NextDiTConfig.from_dict(meta["tiny_config"])).eval()
    model.load_state_dict(load_file(data / "tiny_weights.safetensors"))
    ref = load_file(data / "tiny_ref.safetensors")
    cases = {}
    for case in ("video_p2_f1", "video_p2_f2", "video_p4_f2"):
        info = meta["forward_cases"][case]
        cases[info["patch_size"], info["f_patch_size"]] = tuple(
            ref[f"fwd/{case}/{key}"] for key in ("x", "t", "cap_feats", "cap_mask", "motion"))
    compare_bf16("parity tiny config", model, cases, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, help="folder with the official models/ package")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which with --threads 1 does not count "
                             "the time spent waiting for the cores of a shared machine")
    parser.add_argument("--compile", action="store_true",
                        help="also time ours under torch.compile against the official model (minutes of compiling)")
    parser.add_argument("--skip-bf16", action="store_true", help="only the fp32 comparison with the official model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]

    model = random_model(BENCH_CONFIG)
    inputs = random_inputs(BENCH_CONFIG, (2, 16, 12, 32, 32), caption=32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bench model dim {BENCH_CONFIG.dim}, "
          f"{BENCH_CONFIG.n_layers} layers, latent {list(inputs[0].shape)}; {args.repeats} samples per time, "
          f"{args.clock} clock")
    if args.official_dir is not None:
        official = official_model(import_official(args.official_dir), BENCH_CONFIG, model.state_dict())
        compare_official(model, official, inputs, args.repeats)
        if args.compile:
            compare_compiled(model, official, inputs, args.repeats)
    if not args.skip_bf16:
        compare_bf16("bench config", model, {pair: inputs for pair in BENCH_CONFIG.patch_pairs}, args.repeats)
        demo_cases(args.repeats)
        parity_cases(args.repeats)


if __name__ == "__main__":
    main()
