"""Benchmark (not a test): one LoRA fine-tuning step as ``python -m lumina_core finetune`` runs it (LoRA on the
attention and feed-forward linears, base frozen in float32, gradient checkpointing per block, bf16 autocast where
the device computes it, AdamW), per patch pair: seconds per step and peak memory.

    python benchmarks/bench_finetune.py [--arch demo|2b] [--device cpu|cuda] [--rank 16] [--steps 3]

``--arch demo``: the demo transformer (seeded random weights) at the demo size (64x64, 16 frames: latent
[16, 4, 8, 8]) with 2 clips and 1 still per step, the command line's defaults. ``--arch 2b``: the official
2B_GQA architecture with random weights at the official 512p video size (f16F64R512: 672x384, 64 frames ->
latent [16, 16, 48, 84]) with 1 clip per step and 128 caption tokens of Gemma-2-2B width, for a GPU. The data
are random latents and caption features of those shapes: a step's cost does not depend on their values. Each
pair runs one step first (warm-up, not counted), then ``--steps`` timed steps; peak memory is the GPU's
allocated peak per pair on CUDA, the process's peak resident size on a CPU (it only grows).
"""

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumina_core.demo import seeded_transformer  # noqa: E402
from lumina_core.flow_matching import checkpointed_runner, training_step  # noqa: E402
from lumina_core.lora import add_lora, lora_layers  # noqa: E402
from lumina_core.model import PRESETS, NextDiT  # noqa: E402
from lumina_core.precision import native_bf16  # noqa: E402

ARCHS = {  # latent [C, F, H, W] of a clip, clips and stills per step, caption tokens
    "demo": ((16, 4, 8, 8), 2, 1, 24),
    "2b": ((16, 16, 48, 84), 1, 0, 128),
}


def random_data(model: NextDiT, latent, videos: int, images: int, caption_tokens: int, device) -> dict:
    """An encoded data set (``lumina_core.flow_matching``'s layout) of random tensors: as many clips and stills
    as one step draws, each with its own caption row, plus the empty caption in row 0."""
    gen = torch.Generator().manual_seed(0)
    channels, frames, height, width = latent
    rows = videos + images + 1
    mask = torch.ones(rows, caption_tokens, dtype=torch.long)
    mask[0, 1:] = 0
    return {
        "clip_latents": torch.randn(videos, channels, frames, height, width, generator=gen).to(device),
        "clip_caption": torch.arange(1, videos + 1),
        "clip_motion": torch.full((videos,), 4.0),
        "image_latents": torch.randn(images, channels, 1, height, width, generator=gen).to(device),
        "image_caption": torch.arange(videos + 1, rows),
        "caption_feats": torch.randn(rows, caption_tokens, model.config.cap_feat_dim, generator=gen).to(device),
        "caption_mask": mask.to(device),
    }


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per patch pair (after one warm-up step)")
    args = parser.parse_args()
    device = torch.device(args.device)
    latent, videos, images, caption_tokens = ARCHS[args.arch]
    model = seeded_transformer() if args.arch == "demo" else NextDiT(PRESETS["2B_GQA"])
    model = model.to(device, torch.float32)
    layers = add_lora(model, args.rank)
    model.set_token_runner(checkpointed_runner(model))
    model.train()
    parameters = [p for layer in layers.values() for p in layer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.0)
    data = random_data(model, latent, videos, images, caption_tokens, device)
    bf16 = native_bf16(device)
    print(f"{args.arch} on {device} ({torch.get_num_threads()} threads), LoRA rank {args.rank} on "
          f"{len(lora_layers(model))} linears ({sum(p.numel() for p in parameters)} parameters), "
          f"{'bf16 autocast' if bf16 else 'float32'}; latent {latent}, {videos} clip(s) + {images} still(s) per step")
    print("pair | s per step | peak memory MB")
    generator = torch.Generator().manual_seed(0)
    for patch_size, f_patch_size in model.config.patch_pairs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(args.steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            training_step(model, optimizer, data, (patch_size, f_patch_size), videos, images, generator, bf16=bf16)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:
                times.append(time.perf_counter() - start)
        print(f"{f_patch_size}x{patch_size} | {statistics.median(times):.3f} | {peak_memory_mb(device):.0f}",
              flush=True)


if __name__ == "__main__":
    main()
