"""Train the demo models with the Lumina-Video recipe at demo scale (``python -m training.train`` from the
repository root).

Four commands, run in this order (docs/demo_training.md has the exact lines that made the shipped
files):

    data    render the procedural clips/stills (training.demo_data) and label every clip's
            motion with optical flow, once, into an .npz
    vae     train the tiny CogVideoX VAE (reconstruction + small KL) on freshly drawn clips
    dit     encode the data set once (VAE latents, text features), then train the Multi-scale
            Next-DiT: flow matching with t in [0, 1] (0 = noise), a random patch pair every
            iteration, joint image/video batches, caption dropout, motion dropout (-1), loss
            MSE + (1 - cosine similarity), EMA, AdamW
    export  write the shipped files (transformer, VAE, text encoder + tokenizer) to a folder

The training commands are resumable: ``vae``/``dit`` keep ``state.pt`` (weights, optimiser, step,
sample generator) in their output folder, save it every few minutes and pick it up with
``--resume``; ``--minutes`` bounds the wall time of one run and ``--steps`` the total step count
(it sets the cosine learning-rate schedule). On a CPU shared with other jobs use ``--threads 1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXSpatialNorm3D
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from lumina_core import demo
from lumina_core.checkpoint import save_model
from lumina_core.flow_matching import CAPTION_DROPOUT, MOTION_DROPOUT, time_shift, training_step
from lumina_core.model import NextDiT
from lumina_core.text import encode_prompts
from lumina_core.vae import CONFIG_METADATA_KEY, decode, encode, load_vae
from lumina_core.video_io import atomic_target

from . import demo_data

DEFAULT_OUT = Path("out/demo")


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the commands
# ---------------------------------------------------------------------------------------------


def log(path: Path, message: str) -> None:
    """Append a line to ``path`` and echo it to stderr."""
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, file=sys.stderr, flush=True)
    with open(path, "a") as handle:
        handle.write(line + "\n")


def save_state(path: Path, state: dict) -> None:
    """torch.save atomically (lumina_core's temp file + rename) so an interrupted run keeps the last state."""
    with atomic_target(path) as temp:
        torch.save(state, temp)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def save_dataset(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.asarray(value) for key, value in data.items()}
    np.savez(path, **arrays)
    return path


def load_dataset(path: Path) -> dict:
    with np.load(path) as handle:
        return {key: handle[key] for key in handle.files}


def command_data(args) -> None:
    data = demo_data.make_dataset(args.clips, args.images, seed=args.seed)
    path = save_dataset(args.out, data)
    motion = data["clip_motion"]
    print(f"wrote {path}: {len(data['clips'])} clips, {len(data['images'])} stills; motion labels "
          f"min {motion.min():.2f} median {np.median(motion):.2f} max {motion.max():.2f}")


# ---------------------------------------------------------------------------------------------
# vae
# ---------------------------------------------------------------------------------------------


def vae_batch(step: int, batch: int, seed: int) -> torch.Tensor:
    """Frames [B, F, H, W, 3] in [0, 1] of freshly drawn clips (a pure function of step and seed)."""
    clips = [demo_data.make_clip(seed * 1_000_003 + 500_000 + step * batch + i)[0] for i in range(batch)]
    return torch.from_numpy(np.stack(clips)).float() / 255


def random_crop(frames: torch.Tensor, frames_out: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random window of ``frames_out`` frames and ``size`` x ``size`` pixels (one per batch).

    The VAE is convolutional, so training on 8-frame 32 x 32 windows teaches the same filters at
    an eighth of the cost of whole clips (3-D convolutions with few channels are slow on CPU);
    stills and the final evaluation use whole frames.
    """
    _, count, height, width, _ = frames.shape
    f0 = int(torch.randint(0, count - frames_out + 1, (1,), generator=generator)) // 4 * 4
    y0, x0 = (int(torch.randint(0, extent - size + 1, (1,), generator=generator)) // 8 * 8
              for extent in (height, width))
    return frames[:, f0:f0 + frames_out, y0:y0 + size, x0:x0 + size]


def vae_image_batch(step: int, batch: int, seed: int) -> torch.Tensor:
    images = [demo_data.make_image(seed * 1_000_003 + 700_000 + step * batch + i)[0] for i in range(batch)]
    return torch.from_numpy(np.stack(images)).float() / 255


def vae_loss(vae, frames: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """Reconstruction (MSE + L1 in [-1, 1]) of a posterior sample, plus kl_weight x KL per element."""
    x = frames.permute(0, 4, 1, 2, 3) * 2 - 1  # b f h w c -> b c f h w
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    mse = F.mse_loss(recon, x)
    l1 = (recon - x).abs().mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return mse + l1 + kl_weight * kl, {"mse": mse.item(), "l1": l1.item(), "kl": kl.item()}


def vae_config() -> dict:
    return {"_class_name": "AutoencoderKLCogVideoX", **demo.VAE_CONFIG}


def save_vae(vae, path: Path, metadata: dict | None = None) -> Path:
    """One .safetensors with the diffusers config as JSON in its metadata (what vae.load_vae reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {CONFIG_METADATA_KEY: json.dumps(vae_config()), **{k: str(v) for k, v in (metadata or {}).items()}}
    tensors = {name: t.detach().contiguous().cpu() for name, t in vae.state_dict().items()}
    temp = path.with_suffix(".tmp")
    save_file(tensors, str(temp), metadata=meta)
    temp.replace(path)
    return path


@torch.no_grad()
def latent_channel_std(vae, frames: torch.Tensor) -> torch.Tensor:
    """Per-channel std of ``vae.encode`` latents (scaled by s) of frames [B, F, H, W, 3]."""
    latents = encode(vae.eval(), frames)
    return latents.transpose(0, 1).reshape(latents.shape[1], -1).std(dim=1)


@torch.no_grad()
def normalise_latents(vae, channel_std: torch.Tensor) -> None:
    """Rescale latent channel c by 1/std_c inside the VAE, exactly: the encoder's mean rows (and
    log-variance, by -2 log std_c) and every decoder convolution that reads the latent (conv_in
    and the 1x1 conv_y/conv_b of each spatial norm; all linear in it, zero-padded) absorb the
    factor, so decode(encode(x)) is unchanged and the scaled latents have unit std per channel.
    (The pipeline's fixed scaling factor s = 1.15258426 leaves no other place for it.)"""
    channels = channel_std.numel()
    conv_out = vae.encoder.conv_out.conv
    conv_out.weight[:channels] /= channel_std.view(-1, 1, 1, 1, 1)
    conv_out.bias[:channels] /= channel_std
    conv_out.bias[channels:] -= 2 * channel_std.log()
    readers = [vae.decoder.conv_in.conv]
    for module in vae.decoder.modules():
        if isinstance(module, CogVideoXSpatialNorm3D):
            readers += [module.conv_y.conv, module.conv_b.conv]
    for conv in readers:
        conv.weight *= channel_std.view(1, -1, 1, 1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a.float(), b.float()).clamp_min(1e-10)))


def file_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def command_vae(args) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "log.txt"
    if args.decoder_from:
        # Decoder fine-tuning: the encoder (and so every latent a DiT was trained on) stays as it is.
        vae = load_vae(args.decoder_from).train().requires_grad_(False)
        vae.decoder.requires_grad_(True)
    else:
        vae = demo.seeded_vae(args.seed).train()
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    step = 0
    generator = torch.Generator().manual_seed(args.seed)
    if args.resume and state_path.exists():
        state = torch.load(state_path, weights_only=True)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = state["step"]
        log(log_path, f"resumed at step {step}")
    log(log_path, f"vae: {sum(p.numel() for p in trained)} of {sum(p.numel() for p in vae.parameters())} parameters "
                  f"trained{' (decoder of ' + str(args.decoder_from) + ')' if args.decoder_from else ''}, batch "
                  f"{args.batch}, {args.crop_frames} frames x {args.crop_size} px windows, lr {args.lr}, kl {args.kl}")
    if args.decoder_from and step == 0:
        report_vae(vae.eval(), args.seed, log_path)
        vae.train()
    start = last_save = time.time()
    bar = tqdm(total=args.steps, initial=step, desc="vae")
    while step < args.steps and time.time() - start < args.minutes * 60:
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        # One image batch every fourth step: the DiT also trains on stills (1 frame -> 1 latent).
        if step % 4 == 3:
            frames = vae_image_batch(step, args.batch, args.seed)
        else:
            frames = random_crop(vae_batch(step, args.batch, args.seed), args.crop_frames, args.crop_size, generator)
        loss, parts = vae_loss(vae, frames, args.kl)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", mse=f"{parts['mse']:.4f}")
        if step % 10 == 0:
            log(log_path, f"step {step} loss {loss.item():.5f} mse {parts['mse']:.5f} l1 {parts['l1']:.4f} "
                          f"kl {parts['kl']:.3f} lr {lr:.2e}")
        if time.time() - last_save > args.save_minutes * 60:
            save_state(state_path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                    "generator": generator.get_state()})
            last_save = time.time()
    bar.close()
    save_state(state_path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "generator": generator.get_state()})
    vae.eval()
    report_vae(vae, args.seed, log_path)
    if args.decoder_from:  # latents unchanged: already normalised, keep the source's record of it
        source = file_metadata(args.decoder_from)
        metadata = {"step": f"{source.get('step', '?')} + {step} decoder",
                    "raw_latent_std": source.get("raw_latent_std")}
    else:
        frames = vae_batch(10_000_000, 32, args.seed)
        std = latent_channel_std(vae, frames)
        log(log_path, f"raw latent std per channel (scaled by s): {[round(v, 3) for v in std.tolist()]}")
        normalise_latents(vae, std)
        std_after = latent_channel_std(vae, frames)
        log(log_path, f"after normalisation: mean std {std_after.mean():.3f}")
        metadata = {"step": step, "raw_latent_std": json.dumps(std.tolist())}
    save_vae(vae, out / "vae.safetensors", {k: v for k, v in metadata.items() if v is not None})
    log(log_path, f"wrote {out / 'vae.safetensors'} at step {step}")


@torch.no_grad()
def report_vae(vae, seed: int, log_path: Path) -> float:
    """PSNR of decode(encode(x)) on fresh clips and stills, through lumina_core.vae."""
    clips = vae_batch(20_000_000, 8, seed)
    images = vae_image_batch(20_000_000, 8, seed)
    clip_psnr = psnr(decode(vae, encode(vae, clips)), clips)
    image_psnr = psnr(decode(vae, encode(vae, images)), images)
    log(log_path, f"reconstruction PSNR: clips {clip_psnr:.2f} dB, stills {image_psnr:.2f} dB")
    return clip_psnr


# ---------------------------------------------------------------------------------------------
# dit
# ---------------------------------------------------------------------------------------------

def load_text_components():
    """The frozen demo text encoder (seeded random tiny Gemma-2) and its word-level tokenizer."""
    tokenizer = demo.build_tokenizer()
    return demo.seeded_text_model(len(tokenizer)), tokenizer


@torch.no_grad()
def encode_dataset(data: dict, vae, text_model, tokenizer, batch: int = 16, progress: bool = True) -> dict:
    """Encode a data set once: VAE latents of clips and stills, one caption table (row 0 = "")
    with per-sample row indices, and the measured motion labels."""
    def latents_of(frames: np.ndarray) -> torch.Tensor:
        chunks = [encode(vae, torch.from_numpy(frames[i:i + batch]).float() / 255)
                  for i in tqdm(range(0, len(frames), batch), desc="VAE latents", disable=not progress)]
        return torch.cat(chunks) if chunks else torch.zeros(0)

    captions = [""] + sorted(set(map(str, data["clip_captions"])) | set(map(str, data["image_captions"])))
    row = {caption: index for index, caption in enumerate(captions)}
    feats, mask = encode_prompts(text_model, tokenizer, captions)
    return {
        "clip_latents": latents_of(data["clips"]),
        "clip_caption": torch.tensor([row[str(c)] for c in data["clip_captions"]]),
        "clip_motion": torch.as_tensor(data["clip_motion"]).float(),
        "image_latents": latents_of(data["images"]),
        "image_caption": torch.tensor([row[str(c)] for c in data["image_captions"]]),
        "captions": captions,
        "caption_feats": feats.float(),
        "caption_mask": mask,
    }


def build_training_transformer(seed: int):
    """The demo NextDiT with the official initialisation (zeroed adaLN and output layers)."""
    torch.manual_seed(seed)
    return NextDiT(demo.TRANSFORMER_CONFIG)


@torch.no_grad()
def update_ema(ema, model, decay: float) -> None:
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1 - decay)


def check_patch_widths(config) -> None:
    """Every patch token must be no wider than the model (DESIGN.md: a wider coarse token never learned)."""
    for patch_size, f_patch_size in config.patch_pairs:
        width = f_patch_size * patch_size * patch_size * config.in_channels
        if width > config.dim:
            raise ValueError(f"patch {f_patch_size}x{patch_size} makes tokens of {width} values, wider than the model "
                             f"dim {config.dim}; use a smaller patch or a wider model")


DEVICE_TENSORS = ("clip_latents", "image_latents", "caption_feats", "caption_mask")  # what a step reads on the device


class Deadline:
    """A wall-time budget that a loop checks before each unit of work: ``fits()`` is False once the
    next unit (as long as the slowest one so far) plus the final save would pass the budget, so the
    run stops and saves before the limit instead of after it."""

    def __init__(self, seconds: float, reserve: float = 0.0):
        self.start = time.monotonic()
        self.seconds = seconds
        self.reserve = reserve  # seconds kept for the final save (updated from measured saves)
        self.longest = 0.0
        self._unit_start = self.start

    def fits(self) -> bool:
        now = time.monotonic()
        return now - self.start + self.longest + self.reserve <= self.seconds

    def begin(self) -> None:
        self._unit_start = time.monotonic()

    def end(self) -> None:
        self.longest = max(self.longest, time.monotonic() - self._unit_start)


def command_dit(args) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    state_path, log_path, encoded_path = out / "state.pt", out / "log.txt", out / "encoded.pt"
    if encoded_path.exists():
        encoded = torch.load(encoded_path, weights_only=True)
    else:
        text_model, tokenizer = load_text_components()
        encoded = encode_dataset(load_dataset(args.data), load_vae(args.vae), text_model, tokenizer)
        save_state(encoded_path, encoded)
        log(log_path, f"encoded {len(encoded['clip_latents'])} clip and {len(encoded['image_latents'])} still latents, "
                      f"{len(encoded['captions'])} captions; clip latent std {encoded['clip_latents'].std():.3f}")
    encoded.update({key: encoded[key].to(device) for key in DEVICE_TENSORS})
    model = build_training_transformer(args.seed).to(device).train()
    check_patch_widths(model.config)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    if args.resume and state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        step = state["step"]
        log(log_path, f"resumed at step {step}")
    pairs = model.config.patch_pairs
    shifts = {pair: time_shift(pair, pairs, video=True) for pair in pairs}
    log(log_path, f"dit: {model.parameter_count()} parameters, patch pairs {pairs}, video time shifts "
                  f"{ {f'{f}x{p}': s for (p, f), s in shifts.items()} }, batch {args.videos} clips + {args.images} "
                  f"stills, lr {args.lr}, device {device}, {'bf16 autocast' if args.bf16 else 'float32'}")

    deadline = Deadline(args.minutes * 60)

    def save():
        began = time.monotonic()
        save_state(state_path, {"model": model.state_dict(), "ema": ema.state_dict(),
                                "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "step": step})
        deadline.reserve = max(deadline.reserve, 2 * (time.monotonic() - began))

    recent = {pair: [] for pair in pairs}
    last_save = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="dit")
    while step < args.steps and deadline.fits():
        deadline.begin()
        warmup = min(1.0, (step + 1) / args.warmup)
        lr = args.lr * warmup * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        loss = training_step(model, optimizer, encoded, pair, args.videos, args.images, generator, bf16=args.bf16)
        update_ema(ema, model, args.ema if step >= args.warmup else 0.0)
        step += 1
        recent[pair] = (recent[pair] + [loss])[-50:]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", patch=f"{pair[1]}x{pair[0]}")
        if step % 50 == 0:
            per_pair = " ".join(f"{f}x{p}={np.mean(v):.4f}" for (p, f), v in recent.items() if v)
            log(log_path, f"step {step} lr {lr:.2e} loss per patch pair (last 50 each): {per_pair}")
        deadline.end()
        if time.monotonic() - last_save > args.save_minutes * 60:
            save()
            last_save = time.monotonic()
    bar.close()
    save()
    recipe = {"steps": step, "videos": args.videos, "images": args.images, "lr": args.lr, "ema": args.ema,
              "caption_dropout": CAPTION_DROPOUT, "motion_dropout": MOTION_DROPOUT, "loss": "mse + (1 - cosine)",
              "video_time_shift": {f"{f}x{p}": s for (p, f), s in shifts.items()}, "bf16": args.bf16}
    save_model(ema, out / "transformer.safetensors", metadata={"recipe": json.dumps(recipe)})
    log(log_path, f"wrote {out / 'transformer.safetensors'} (EMA) at step {step}, "
                  f"{time.monotonic() - deadline.start:.0f} s of the {args.minutes * 60:.0f} s budget")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def command_export(args) -> None:
    """Copy the trained transformer and VAE and write the text encoder + tokenizer folder."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.dit, out / demo.TRANSFORMER_FILE)
    shutil.copyfile(args.vae, out / demo.VAE_FILE)
    text_model, tokenizer = load_text_components()
    text_model.save_pretrained(out / demo.TEXT_ENCODER_DIR, safe_serialization=True)
    tokenizer.save_pretrained(out / demo.TEXT_ENCODER_DIR)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {total / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="render clips + stills and measure motion labels into an .npz")
    data.add_argument("--clips", type=int, default=3000)
    data.add_argument("--images", type=int, default=1500)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--out", type=Path, default=DEFAULT_OUT / "data.npz")

    vae = commands.add_parser("vae", help="train the demo CogVideoX VAE")
    vae.add_argument("--out", type=Path, default=DEFAULT_OUT / "vae")
    vae.add_argument("--steps", type=int, default=600, help="total optimiser steps (sets the cosine schedule)")
    vae.add_argument("--minutes", type=float, default=25.0, help="wall-time limit of this run")
    vae.add_argument("--batch", type=int, default=8)
    vae.add_argument("--crop-frames", type=int, default=8, help="frames of the training windows (8m)")
    vae.add_argument("--crop-size", type=int, default=32, help="pixels of the training windows (multiple of 8)")
    vae.add_argument("--lr", type=float, default=2e-3)
    vae.add_argument("--kl", type=float, default=1e-4, help="weight of the per-element KL term")
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--threads", type=int, help="torch CPU threads for this run (default: torch's own choice)")
    vae.add_argument("--save-minutes", type=float, default=3.0)
    vae.add_argument("--resume", action="store_true")
    vae.add_argument("--decoder-from", type=Path, metavar="VAE.safetensors",
                     help="fine-tune only the decoder of this trained VAE (its encoder, so every encoded latent, "
                          "stays as it is)")

    dit = commands.add_parser("dit", help="train the demo Multi-scale Next-DiT on VAE latents")
    dit.add_argument("--data", type=Path, default=DEFAULT_OUT / "data.npz")
    dit.add_argument("--vae", type=Path, default=DEFAULT_OUT / "vae" / "vae.safetensors")
    dit.add_argument("--out", type=Path, default=DEFAULT_OUT / "dit")
    dit.add_argument("--steps", type=int, default=6000, help="total optimiser steps (sets the cosine schedule)")
    dit.add_argument("--minutes", type=float, default=70.0,
                     help="wall-time budget of this run: it stops early enough to save before the limit")
    dit.add_argument("--videos", type=int, default=12, help="clips per batch")
    dit.add_argument("--images", type=int, default=8, help="stills per batch")
    dit.add_argument("--lr", type=float, default=5e-4)
    dit.add_argument("--warmup", type=int, default=100)
    dit.add_argument("--ema", type=float, default=0.998)
    dit.add_argument("--seed", type=int, default=0)
    dit.add_argument("--threads", type=int, help="torch CPU threads for this run (default: torch's own choice)")
    dit.add_argument("--device", default="cpu", help="torch device for the model and the encoded data set, e.g. cuda")
    dit.add_argument("--bf16", action="store_true",
                     help="bfloat16 autocast for the model (float32 master weights, optimiser and loss)")
    dit.add_argument("--save-minutes", type=float, default=3.0)
    dit.add_argument("--resume", action="store_true")

    export = commands.add_parser("export", help="write the shipped demo files")
    export.add_argument("--dit", type=Path, default=DEFAULT_OUT / "dit" / "transformer.safetensors")
    export.add_argument("--vae", type=Path, default=DEFAULT_OUT / "vae" / "vae.safetensors")
    export.add_argument("--out", type=Path, default=demo.MODELS_DIR)
    return parser


COMMANDS = {"data": command_data, "vae": command_vae, "dit": command_dit, "export": command_export}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    threads = getattr(args, "threads", None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        COMMANDS[args.command](args)
    finally:
        torch.set_num_threads(previous)  # a caller in the same process (tests, a notebook) keeps its setting
    return 0


if __name__ == "__main__":
    sys.exit(main())
