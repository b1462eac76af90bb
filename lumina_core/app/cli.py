"""Command line: ``python -m lumina_core generate --prompt TEXT --motion M --seed S --out FILE.mp4`` (with
``--lora FILE[:STRENGTH]``, repeatable), and ``python -m lumina_core finetune --data DIR --out FILE.safetensors``
(a LoRA trained on captioned clips and stills, :mod:`lumina_core.app.finetune`).

Defaults to the demo models (:mod:`lumina_core.demo`); ``--model``, ``--text-encoder``/``--tokenizer``
and ``--vae`` switch to real files (e.g. the official 2B folder, Gemma-2-2B, CogVideoX-2b's VAE).
Every argument is checked before any model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from .. import demo
from ..checkpoint import load_model
from ..flow_matching import MOTION_DROPOUT
from ..limits import is_finite_number
from ..lora import merge_lora, parse_lora_arg
from ..parallel import TORCHRUN_ENV, ParallelPlan, check_plan, init_process_group, parallel_sample, rank_share
from ..precision import AUTO, DTYPES, resolve_dtype
from ..sampling import OFFICIAL_PRESETS, SampleConfig
from ..step_cache import MAX_THRESHOLD, StepCache

if TYPE_CHECKING:
    from .finetune import FinetuneSettings
    from .pipeline import VideoRequest


class UsageError(ValueError):
    """A command-line value is invalid; the message names it and the fix."""


def finite_float(text: str) -> float:
    """An argument's number; NaN and infinity are refused (a schedule holding one samples nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not is_finite_number(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a finite number")
    return value


COMPILE_MODES = ("whole", "regional")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lumina_core", description="Lumina-Video on the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="text to video (mp4 + contact-sheet PNG)")
    gen.add_argument("--prompt", required=True, help="what the video shows")
    gen.add_argument("--negative-prompt", default="", help="what to steer away from (default: empty)")
    gen.add_argument("--motion", type=finite_float, default=None,
                     help="motion score of the positive branch (optical-flow magnitude; < 0 = no motion "
                          "condition; official default 6)")
    gen.add_argument("--neg-motion", type=finite_float, default=None,
                     help="motion score of the negative branch (default: the schedule's, officially 2 then 6)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed")
    gen.add_argument("--out", type=Path, required=True, help="output .mp4 (a .png contact sheet is written beside it)")
    gen.add_argument("--model", type=Path, help="Lumina-Video checkpoint (folder or file); default: demo model")
    gen.add_argument("--text-encoder", type=Path, help="Gemma-2 folder or .safetensors; default: demo encoder")
    gen.add_argument("--tokenizer", type=Path, help="tokenizer folder (needed with a single-file text encoder)")
    gen.add_argument("--vae", type=Path, help="CogVideoX VAE folder or .safetensors; default: demo VAE")
    gen.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                     help="a LoRA .safetensors (e.g. from finetune) merged into the transformer at STRENGTH "
                          "(default 1; 0 = off); repeat the flag to stack several")
    gen.add_argument("--schedule", help="preset name (" + ", ".join(OFFICIAL_PRESETS) + ") or an official "
                     "sample-config JSON object; default: the demo schedule, or f16F64R512-MultiScale with --model")
    gen.add_argument("--steps", type=int, help="override the schedule's step count")
    gen.add_argument("--width", type=int, help="pixels, a multiple of 8 x the schedule's largest patch size (32 for "
                     "the -MultiScale schedules, 16 for the others and the demo)")
    gen.add_argument("--height", type=int, help="pixels, a multiple of 8 x the schedule's largest patch size")
    gen.add_argument("--frames", type=int, help="8m or 8m+1 frames (e.g. 16, 49, 96; 8m for schedules with f-patch 2 "
                     "stages), or 1 for an image")
    gen.add_argument("--fps", type=finite_float, help="frame rate of the mp4")
    gen.add_argument("--cache", type=finite_float, default=0.0, metavar="THRESHOLD",
                     help=f"step cache: skip model calls predicted to change little, 0 (off, default) to "
                          f"{MAX_THRESHOLD}; 0.1-0.5 is the useful range (higher skips more and drifts further "
                          "from the uncached video); it starts over at every patch switch")
    gen.add_argument("--dtype", choices=[AUTO, *DTYPES], default=AUTO,
                     help="weight and compute dtype of the transformer, text encoder and VAE; auto (default): bf16 "
                          "where the device computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with "
                          "bf16), else fp32")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument("--compile", nargs="?", const="whole", choices=COMPILE_MODES, metavar="{whole,regional}",
                     help="torch.compile the transformer's blocks (default inductor backend; pays off on GPUs): "
                          "whole (the default with a bare --compile) makes one graph per patch pair and batch "
                          "shape, regional one per block, faster to compile. The first run at a size pays the compile "
                          "time (docs/compile.md); another seed or size compiles nothing, with --parallel too")
    gen.add_argument("--time-budget", type=finite_float, metavar="SECONDS",
                     help="fit the schedule into this many seconds of sampling (the model calls only; loading, text "
                          "encoding and decoding come on top): the same stages and switch points on a coarser grid, "
                          "predicted from a calibration of this machine (a few model calls per patch pair, cached in "
                          "~/.cache/lumina_video or $LUMINA_VIDEO_CACHE_DIR); refused, with the minimum, when even the "
                          "cheapest version does not fit")
    gen.add_argument("--draft", type=Path, metavar="FILE.mp4",
                     help="also write a draft video as soon as the first (coarse) stage ends: the predicted clean "
                          "video at a quarter of the width and height, written before the final one (which it never "
                          "changes)")
    gen.add_argument("--parallel", metavar="PLAN",
                     help="split the generation across the processes torchrun starts (torchrun --nproc-per-node N -m "
                          "lumina_core generate ... --parallel PLAN): cfg=2,ulysses=2 style degrees whose product is N "
                          "(cfg: positive and negative rows on their own processes; ulysses, ring: the tokens split), "
                          "or auto; rank 0 writes the files. Not with --cache or --time-budget")
    add_finetune_parser(commands)
    return parser


def add_finetune_parser(commands) -> None:
    tune = commands.add_parser("finetune", help="train a LoRA on a folder of captioned clips and stills")
    tune.add_argument("--data", type=Path, required=True,
                      help="folder of .mp4 clips and .png/.jpg stills, each with a same-named .txt caption")
    tune.add_argument("--out", type=Path, required=True, help="the LoRA file to write (.safetensors); its cache, "
                      "state and log go beside it (FILE.cache.pt, FILE.state.pt, FILE.log.txt)")
    tune.add_argument("--model", type=Path, help="Lumina-Video checkpoint (folder or file); default: demo model")
    tune.add_argument("--text-encoder", type=Path, help="Gemma-2 folder or .safetensors (with --model)")
    tune.add_argument("--tokenizer", type=Path, help="tokenizer folder (with a single-file text encoder)")
    tune.add_argument("--vae", type=Path, help="CogVideoX VAE folder or .safetensors (with --model)")
    tune.add_argument("--steps", type=int, default=300, help="optimiser steps in all (default 300)")
    tune.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    tune.add_argument("--alpha", type=finite_float, help="LoRA alpha (default: the rank, scale 1)")
    tune.add_argument("--lr", type=finite_float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    tune.add_argument("--width", type=int, help="training width in pixels (default: 64 demo, 672 real)")
    tune.add_argument("--height", type=int, help="training height in pixels (default: 64 demo, 384 real)")
    tune.add_argument("--frames", type=int, help="frames per clip, 8m or 8m+1 (default 16)")
    tune.add_argument("--videos", type=int, default=2, help="clips per step (default 2)")
    tune.add_argument("--images", type=int, default=1, help="stills per step (default 1)")
    tune.add_argument("--motion-dropout", type=finite_float, default=MOTION_DROPOUT,
                      help=f"share of clips trained without their motion score (default {MOTION_DROPOUT})")
    tune.add_argument("--minutes", type=finite_float, help="stop before this many minutes (resume later)")
    tune.add_argument("--resume", action="store_true", help="continue from FILE.state.pt")
    tune.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    tune.add_argument("--seed", type=int, default=0, help="seed of the batches, noise and t")


def finetune_settings(args) -> "FinetuneSettings":
    from .finetune import FinetuneSettings

    use_demo = args.model is None
    defaults = demo.DEMO_SIZE if use_demo else {"width": 672, "height": 384, "frames": 16}
    size = {key: defaults[key] if getattr(args, key) is None else getattr(args, key)
            for key in ("width", "height", "frames")}
    return FinetuneSettings(data=args.data, out=args.out, model=args.model, text_encoder=args.text_encoder,
                            tokenizer=args.tokenizer, vae=args.vae, steps=args.steps, rank=args.rank,
                            alpha=args.alpha, lr=args.lr, videos=args.videos, images=args.images,
                            motion_dropout=args.motion_dropout, minutes=args.minutes, resume=args.resume,
                            device=args.device, seed=args.seed, **size)


def resolve_schedule(text: str | None, use_demo: bool) -> SampleConfig:
    if text is None:
        if use_demo:
            return SampleConfig.from_official(demo.DEMO_SCHEDULE, name="demo")
        return SampleConfig.preset("f16F64R512-MultiScale")
    if text in OFFICIAL_PRESETS:
        return SampleConfig.preset(text)
    if text.lstrip().startswith("{"):
        return SampleConfig.from_official(text, name="custom")
    raise UsageError(f"--schedule {text!r} is neither a preset ({', '.join(OFFICIAL_PRESETS)}) nor a JSON object "
                     "like '{\"P\": \"1x2\", \"step\": 30, \"ts\": 8}'")


def component_dtypes(args) -> dict[str, str]:
    """dtype names of the transformer, text encoder and VAE: ``--dtype`` resolved for ``--device``, except that
    the text encoder runs fp32 under fp16 (Gemma-2's activations can overflow fp16; its loader node offers none)."""
    name = resolve_dtype(args.dtype, args.device)
    return {"transformer": name, "text_encoder": "fp32" if name == "fp16" else name, "vae": name}


def lora_files(args) -> list[tuple[Path, float]]:
    """--lora values as (file, strength), each file checked to exist and be a .safetensors."""
    loras = []
    for text in args.lora:
        try:
            path, strength = parse_lora_arg(text)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            raise UsageError(f"--lora {text}: {path} is not an existing .safetensors file; give FILE[:STRENGTH], "
                             "e.g. style.safetensors:0.8")
        loras.append((path, strength))
    return loras


def check_paths(args) -> None:
    for flag in ("model", "text_encoder", "tokenizer", "vae"):
        path = getattr(args, flag)
        if path is not None and not path.exists():
            raise UsageError(f"--{flag.replace('_', '-')} {path} does not exist; give an existing file or folder")
    if args.text_encoder is not None and args.text_encoder.is_file() and args.tokenizer is None:
        raise UsageError(f"--text-encoder {args.text_encoder} is a single file; add --tokenizer FOLDER with the "
                         "Gemma tokenizer files")
    if (args.model is None) != (args.text_encoder is None) or (args.model is None) != (args.vae is None):
        raise UsageError("give --model, --text-encoder and --vae together (real models), or none of them (demo)")
    out = args.out
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out {out} must end in .mp4")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'video.mp4'}")
    draft = args.draft
    if draft is not None:
        if draft.suffix.lower() != ".mp4":
            raise UsageError(f"--draft {draft} must end in .mp4")
        if draft.resolve() == out.resolve():
            raise UsageError(f"--draft {draft} is the --out file; give the draft its own name, e.g. "
                             f"{out.with_name(out.stem + '_draft.mp4')}")
        if draft.is_dir():
            raise UsageError(f"--draft {draft} is a folder; give a file name such as {draft / 'draft.mp4'}")


def step_cache(threshold: float) -> StepCache | None:
    """The --cache value as a StepCache (None for 0 = off)."""
    try:
        cache = StepCache(threshold)
    except ValueError:
        raise UsageError(f"--cache {threshold} is outside [0, {MAX_THRESHOLD}]; use 0 (off) or a threshold such as "
                         "0.2 (0.1-0.5 is the useful range)") from None
    return cache if threshold > 0 else None


def resolve_settings(args) -> tuple[SampleConfig, "VideoRequest", float, StepCache | None]:
    """Validate every value; returns (schedule, request, fps, step cache or None)."""
    from ..sizes import check_video_size
    from .pipeline import VideoRequest

    check_paths(args)
    lora_files(args)
    cache = step_cache(args.cache)
    use_demo = args.model is None
    config = resolve_schedule(args.schedule, use_demo)
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.motion is not None:
        changes["motion"] = args.motion
    if args.neg_motion is not None:
        changes["neg_motion"] = args.neg_motion
    config = replace(config, **changes)
    defaults = demo.DEMO_SIZE if use_demo else {"width": 672, "height": 384, "frames": 64, "fps": 16}
    width, height, frames, fps = (defaults[key] if getattr(args, key) is None else getattr(args, key)
                                  for key in ("width", "height", "frames", "fps"))
    if fps <= 0:
        raise UsageError(f"--fps {fps} must be positive, e.g. 8, 16 or 24")
    if args.time_budget is not None and not args.time_budget > 0:
        raise UsageError(f"--time-budget {args.time_budget} must be a positive number of seconds, e.g. 30")
    if args.parallel is not None:
        check_parallel_args(args)
    request = VideoRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height,
                           frames=frames, seed=args.seed)
    check_video_size(width, height, frames, config)
    return config, request, fps, cache


def check_parallel_args(args) -> None:
    """--parallel's syntax and the flags it cannot go with (the degrees are checked against the launched
    processes and the model's heads once the model is loaded)."""
    for flag, value in (("--cache", args.cache or None), ("--time-budget", args.time_budget)):
        if value is not None:
            raise UsageError(f"{flag} does not work with --parallel (it predicts or times single-process calls); "
                             f"drop {flag} or --parallel")
    try:
        ParallelPlan.parse(args.parallel, world_size=1)
    except ValueError as error:
        raise UsageError(f"--parallel: {error}") from None


def start_parallel(args, model, config: SampleConfig):
    """(plan, rank, world size) of a --parallel run: joins torchrun's process group when there is one (else
    a world of 1) and checks the plan against it and the model."""
    rank, world_size = init_process_group() if all(name in os.environ for name in TORCHRUN_ENV) else (0, 1)
    try:
        plan = ParallelPlan.parse(args.parallel, world_size, model.config.n_heads, guided=config.guided)
        check_plan(plan, model.config, world_size)
    except ValueError as error:
        raise UsageError(f"--parallel: {error}") from None
    return plan, rank, world_size


def device_of(args) -> torch.device:
    """--device; with --parallel under torchrun, CUDA means this process's GPU (LOCAL_RANK)."""
    device = torch.device(args.device)
    if args.parallel is not None and device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def load_components(args):
    from ..text import load_text_encoder
    from ..vae import load_vae

    dtypes = {part: DTYPES[name] for part, name in component_dtypes(args).items()}
    device = device_of(args)
    if args.model is None:
        if not demo.DEMO_IS_TRAINED:
            print(f"note: the demo models are untrained random weights ({demo.MODELS_DIR} is missing or "
                  "incomplete): the pipeline runs end to end but the video is noise", file=sys.stderr)
        parts = demo.load_demo(vae_dtype=dtypes["vae"])
        return (parts.transformer.to(device, dtypes["transformer"]),
                parts.text_model.to(device, dtypes["text_encoder"]), parts.tokenizer, parts.vae.to(device))
    text_model, tokenizer = load_text_encoder(args.text_encoder, tokenizer_path=args.tokenizer,
                                              dtype=dtypes["text_encoder"], device=device)
    return (load_model(args.model, dtype=dtypes["transformer"], device=device), text_model, tokenizer,
            load_vae(args.vae, dtypes["vae"], device))


def fit_time_budget(args, model, captions, request: "VideoRequest", config: SampleConfig) -> SampleConfig:
    """The schedule fitted into --time-budget on this machine (calibrating first when no calibration of this
    model, size, dtype and device is cached); prints what was traded."""
    from ..budget import fit_budget
    from ..cost import calibration_for

    device = next(model.parameters()).device
    costs, measured = calibration_for(model, request.latent_shape, captions[0][0].shape[1], device, config)
    if measured:
        print(f"calibrated this machine ({costs.key.text})", file=sys.stderr)
    fitted = fit_budget(config, costs, args.time_budget)
    print(fitted.summary(), file=sys.stderr)
    return fitted.config


def sample_parallel(model, captions, request: "VideoRequest", config: SampleConfig, parallel, callback):
    """The request sampled by every process of a --parallel run; each logs its share and its seconds."""
    import torch.distributed as dist

    from .pipeline import initial_noise

    plan, rank, world_size = parallel
    began = time.perf_counter()
    noise = initial_noise(request).to(next(model.parameters()).device)
    latents = parallel_sample(model, noise, *captions, config, plan, callback=callback)
    print(f"{rank_share(plan, rank, request.latent_shape, config)}; sampled in {time.perf_counter() - began:.2f} s",
          file=sys.stderr, flush=True)
    if world_size > 1:
        dist.destroy_process_group()
    return latents


def generate(args) -> Path | None:
    """Make the video; returns its path (None on the other processes of a --parallel run)."""
    from ..draft import DRAFT_SCALE, FirstStageDraft, decode_draft
    from ..video_io import write_contact_sheet, write_mp4
    from .pipeline import check_request, decode_frames, encode_request, sample_request
    from .workflow import GenerationGraph
    from .workflow import metadata as workflow_metadata

    config, request, fps, cache = resolve_settings(args)
    dtypes = component_dtypes(args)
    start = time.perf_counter()
    model, text_model, tokenizer, vae = load_components(args)
    loras = lora_files(args)
    for path, strength in loras:
        merge_lora(model, path, strength)
    check_request(model, request, config)
    parallel = start_parallel(args, model, config) if args.parallel is not None else None
    rank = 0 if parallel is None else parallel[1]
    captions = encode_request(model, text_model, tokenizer, request)
    if args.time_budget is not None:
        config = fit_time_budget(args, model, captions, request, config)
    if args.compile is not None:  # after the budget's calibration, which measures eager calls
        model.compile_blocks(regional=args.compile == "regional")
    draft_seconds = []

    def write_draft(latent, info):
        began = time.perf_counter()
        frames = decode_draft(vae, latent)[0].float().cpu()
        path = write_mp4(args.draft, frames.numpy(), fps)
        draft_seconds.append(time.perf_counter() - began)
        tqdm.write(f"wrote draft {path} (t = {info['t']:.3f}, 1/{DRAFT_SCALE} size) in {draft_seconds[-1]:.2f} s")

    draft = FirstStageDraft(config, write_draft) if args.draft is not None else None
    if draft is not None and draft.index is None:
        print(f"note: no --draft: the schedule has {len(config.stages)} stage(s) and the first makes the final "
              "video (a draft needs a coarse stage before the last)", file=sys.stderr)
    sampling_start = time.perf_counter()
    with tqdm(total=len(config.model_calls()), desc="sampling", unit="step", disable=rank != 0) as bar:
        def progress(info):
            if draft is not None:
                draft(info)
            bar.set_postfix_str(f"t={info['t']:.3f} patch {info['f_patch_size']}x{info['patch_size']}")
            bar.update(1)

        if parallel is None:
            latents = sample_request(model, captions, request, config, callback=progress, cache=cache)
        else:
            latents = sample_parallel(model, captions, request, config, parallel, progress if rank == 0 else None)
    sampling = time.perf_counter() - sampling_start - sum(draft_seconds)
    if rank != 0:
        return None
    if cache is not None:
        print(f"step cache (threshold {cache.threshold}): {cache.summary()}", file=sys.stderr)
    frames = decode_frames(vae, latents)
    graph = GenerationGraph(prompt=request.prompt, negative_prompt=request.negative_prompt, seed=request.seed,
                            width=request.width, height=request.height, frames=request.frames, fps=fps,
                            schedule=config.to_official(), model=args.model, text_encoder=args.text_encoder,
                            tokenizer=args.tokenizer, vae=args.vae, weight_dtype=dtypes["transformer"],
                            text_encoder_dtype=dtypes["text_encoder"], vae_dtype=dtypes["vae"], cache=args.cache,
                            loras=tuple((str(path), strength) for path, strength in loras))
    metadata = workflow_metadata(graph)
    video = write_mp4(args.out, frames.numpy(), fps, metadata=metadata)
    sheet = write_contact_sheet(args.out.with_suffix(".png"), frames.numpy(), metadata=metadata)
    total = time.perf_counter() - start
    print(f"wrote {video} ({frames.shape[0]} frames, {request.width}x{request.height}) and {sheet} "
          f"in {total:.1f} s (sampling {sampling:.2f} s, {dtypes['transformer']})")
    if draft_seconds:
        print(f"the draft took {draft_seconds[0]:.2f} s, {100 * draft_seconds[0] / total:.1f} % of the run")
    return video


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            generate(args)
        elif args.command == "finetune":
            from .finetune import finetune

            path = finetune(finetune_settings(args))
            print(f"wrote {path}")
    except (UsageError, ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    return 0
