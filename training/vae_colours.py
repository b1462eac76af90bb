"""Teach the demo VAE's encoder new shape colours without changing anything the demo transformer relies on
(``python -m training.vae_colours`` from the repository root; docs/finetune.md, "Shown on the demo").

The demo VAE saw only the six demo colours. Its decoder can still draw a purple shape (gradient descent on
a latent reproduces a purple clip at hue 272, MSE 3e-4, as well as the trained colours), but its encoder maps
purple to latents that decode grey and moving orange to latents that decode magenta to red. So only the
encoder is trained here:

- the decoder stays frozen, so every latent decodes exactly as before: the demo transformer's videos are
  unchanged bit for bit;
- new-colour clips (``--colours``, rendered by training/demo_data.py) train the encoder through the frozen
  decoder (reconstruction MSE + L1 of the posterior mean, pixels in [-1, 1]): 8-frame windows of
  ``--crop-size`` px around the shape, and every fourth step whole-frame stills;
- clips of the six trained colours keep the encoder's posterior mean (what lumina_core.vae.encode returns) on
  them: MSE to the original encoder's, so a LoRA trains the old words on the latents the transformer knows.

Resumable like training/train.py: ``state.pt`` in ``--out`` (saved every ``--save-minutes``), ``--resume``,
``--minutes`` bounds one run, ``--steps`` the total (cosine schedule). At the end it reports the round-trip
hue of new-colour clips and the round-trip PSNR of trained-colour clips before and after, and writes
``vae.safetensors`` (same metadata as the source plus the colours and steps) to ``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python -m training.vae_colours --out out/demo/vae_colours --minutes 25
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from lumina_core import demo
from lumina_core.vae import decode, encode, load_vae

from . import demo_data
from .train import file_metadata, log, psnr, save_state, save_vae

NEW_COLOURS = {"purple": (0.55, 0.15, 0.90),  # hue 272: between blue (230) and magenta (304)
               "orange": (0.95, 0.50, 0.10)}  # hue 28: between red (3) and yellow (53)
SOURCE = demo.MODELS_DIR / demo.VAE_FILE


def new_colour_frames(colour: str, rng: np.random.Generator, still_probability: float,
                      frames: int = demo_data.FRAMES) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of one demo clip (``frames`` 1: a still) in a new colour."""
    spec = replace(demo_data.draw_spec(rng, still_probability=still_probability), colour=colour)
    with mock.patch.dict(demo_data.COLOURS, {colour: NEW_COLOURS[colour]}):
        return demo_data.render(spec, frames=frames)


def mean_hue(frames) -> float:
    """Circular mean hue in degrees of the saturated (shape) pixels of frames [F, H, W, 3]; NaN without a shape."""
    frames = np.asarray(frames, dtype=np.float32)
    pixels = frames[demo_data.shape_pixels(frames)]
    if len(pixels) < demo_data.MIN_SHAPE_PIXELS * len(frames):
        return math.nan
    hues = np.radians([demo_data.hue_of(p) for p in pixels[:: max(1, len(pixels) // 2000)]])
    return math.degrees(math.atan2(np.sin(hues).mean(), np.cos(hues).mean())) % 360


def shape_window(frames: np.ndarray, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A window of ``count`` frames (start a multiple of 4) and ``size`` px (corner a multiple of 8) centred
    on the shape's mean position in those frames, so the window shows the colour being taught."""
    f0 = int(rng.integers(0, (len(frames) - count) // 4 + 1)) * 4
    window = frames[f0:f0 + count]
    track = demo_data.shape_track(window)
    centre = np.nanmean(track, axis=0) if not np.isnan(track).all() else np.array([32.0, 32.0])
    corner = [int(np.clip(round((c - size / 2) / 8) * 8, 0, extent - size))
              for c, extent in zip(centre, (demo_data.WIDTH, demo_data.HEIGHT))]
    return window[:, corner[1]:corner[1] + size, corner[0]:corner[0] + size]


def as_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] -> the VAE's input [B, 3, F, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).float().permute(0, 4, 1, 2, 3) / 127.5 - 1


def new_colour_batch(step: int, batch: int, colours: list[str], crop_frames: int, crop_size: int,
                     seed: int) -> torch.Tensor:
    """A batch of new-colour windows, or of whole-frame stills every fourth step (a pure function of step)."""
    rng = np.random.default_rng([seed, step, 4])
    items = []
    for index in range(batch):
        colour = colours[(step * batch + index) % len(colours)]
        sample = np.random.default_rng([seed * 1_000_003 + step * batch + index, 3])
        if step % 4 == 3:
            items.append(new_colour_frames(colour, sample, still_probability=1.0, frames=1))
        else:
            items.append(shape_window(new_colour_frames(colour, sample, still_probability=0.2), crop_frames, crop_size,
                                      rng))
    return as_input(np.stack(items))


def trained_colour_batch(step: int, batch: int, crop_frames: int, seed: int) -> torch.Tensor:
    """Whole-frame windows of freshly drawn clips of the six trained colours (a pure function of step)."""
    rng = np.random.default_rng([seed, step, 5])
    clips = [demo_data.make_clip(seed * 1_000_003 + 900_000 + step * batch + i)[0] for i in range(batch)]
    f0 = int(rng.integers(0, (demo_data.FRAMES - crop_frames) // 4 + 1)) * 4
    return as_input(np.stack(clips)[:, f0:f0 + crop_frames])


def latent_mean(encoder_vae, x: torch.Tensor) -> torch.Tensor:
    """The encoder's posterior mean of input x (what lumina_core.vae.encode returns, before the scale s)."""
    return encoder_vae.encode(x).latent_dist.mode()


@torch.no_grad()
def round_trip_report(vae, colours: list[str], seed: int, clips: int = 4) -> dict:
    """Hue of the shape after encode + decode of held-out new-colour clips (moving and still) and PSNR of
    held-out trained-colour clips."""
    report = {}
    for colour in colours:
        hues = {}
        for kind, still_probability in (("moving", 0.0), ("still", 1.0)):
            frames = [new_colour_frames(colour, np.random.default_rng([seed, 77, index]), still_probability)
                      for index in range(clips)]
            decoded = decode(vae, encode(vae, torch.from_numpy(np.stack(frames)).float() / 255)).numpy()
            hues[kind] = [round(mean_hue(clip), 1) for clip in decoded]
        report[colour] = {"rendered_hue": round(demo_data.hue_of(NEW_COLOURS[colour]), 1), **hues}
    trained = torch.from_numpy(np.stack([demo_data.make_clip(seed * 1_000_003 + 30_000_000 + i)[0]
                                         for i in range(2 * clips)])).float() / 255
    report["trained_colours_psnr_db"] = round(psnr(decode(vae, encode(vae, trained)), trained), 2)
    return report


def train(args) -> Path:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "log.txt"
    vae = load_vae(args.source).requires_grad_(False)
    original = copy.deepcopy(vae).eval()
    vae.encoder.requires_grad_(True)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    step = 0
    if args.resume and state_path.exists():
        state = torch.load(state_path, weights_only=True)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        log(log_path, f"resumed at step {step}")
    else:
        report = round_trip_report(original, args.colours, args.seed, args.report_clips)
        log(log_path, f"before: {json.dumps(report)}")
    log(log_path, f"encoder of {args.source}: {sum(p.numel() for p in trained)} parameters trained for "
                  f"{args.colours}, batch {args.batch} new + {args.keep_batch} trained-colour windows, lr {args.lr}, "
                  f"keep weight {args.keep_weight}")
    vae.decoder.eval()
    vae.encoder.train()
    start = last_save = time.time()
    while step < args.steps and time.time() - start < args.minutes * 60:
        lr = args.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = new_colour_batch(step, args.batch, args.colours, args.crop_frames, args.crop_size, args.seed)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        mse, l1 = F.mse_loss(recon, x), (recon - x).abs().mean()
        kept = trained_colour_batch(step, args.keep_batch, args.crop_frames, args.seed)
        with torch.no_grad():
            target = latent_mean(original, kept)
        keep = F.mse_loss(latent_mean(vae, kept), target)
        loss = mse + l1 + args.keep_weight * keep
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        if step % 10 == 0:
            log(log_path, f"step {step} loss {loss.item():.5f} mse {mse.item():.5f} l1 {l1.item():.4f} "
                          f"keep {keep.item():.5f} lr {lr:.2e}")
        if time.time() - last_save > args.save_minutes * 60:
            save_state(state_path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step})
            last_save = time.time()
    save_state(state_path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step})
    vae.eval()
    report = round_trip_report(vae, args.colours, args.seed, args.report_clips)
    log(log_path, f"after step {step}: {json.dumps(report)}")
    source = file_metadata(args.source)
    metadata = {"step": f"{source.get('step', '?')} + encoder {step} for {'/'.join(args.colours)}",
                "raw_latent_std": source.get("raw_latent_std")}
    path = save_vae(vae, out / "vae.safetensors", {k: v for k, v in metadata.items() if v is not None})
    log(log_path, f"wrote {path} at step {step}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="VAE .safetensors to start from")
    parser.add_argument("--out", type=Path, default=Path("out/demo/vae_colours"))
    parser.add_argument("--colours", nargs="+", choices=list(NEW_COLOURS), default=["purple", "orange"])
    parser.add_argument("--steps", type=int, default=1500, help="total optimiser steps (sets the cosine schedule)")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-time limit of this run")
    parser.add_argument("--batch", type=int, default=4, help="new-colour windows per step")
    parser.add_argument("--keep-batch", type=int, default=4, help="trained-colour windows per step")
    parser.add_argument("--keep-weight", type=float, default=10.0, help="weight of the trained-colour latent MSE")
    parser.add_argument("--crop-frames", type=int, default=8, help="frames of the training windows (4m)")
    parser.add_argument("--crop-size", type=int, default=32, help="pixels of the new-colour windows (multiple of 8)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-clips", type=int, default=4, help="held-out clips per colour in the hue report")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train(args)


if __name__ == "__main__":
    main()
