"""LoRA fine-tuning of a Lumina-Video transformer on a folder of captioned clips and stills
(``python -m lumina_core finetune --data DIR --out FILE.safetensors``).

Two passes. The first caches what training reads (``lumina_core.finetune_data``: latents at the chosen size
and frame count, caption features, motion scores) into ``FILE.cache.pt`` and frees the text encoder and the
VAE; a later run with the same files and settings reuses it. The second trains LoRA layers
(``lumina_core.lora``) on the attention and feed-forward linears with the recipe of ``lumina_core.flow_matching``:
one patch pair per iteration drawn uniformly from the model's pairs, that pair's time shift, joint clip + still
batches, caption and motion dropout, gradient checkpointing, bf16 autocast where the device has bf16 matrix
instructions. It stops after ``steps`` steps or before the ``minutes`` budget runs out, keeps resumable state
in ``FILE.state.pt`` and logs every step's patch pair and loss to ``FILE.log.txt`` (every 50 steps and at the end
also the mean loss of each patch pair's last 50 steps); the LoRA goes to FILE.
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from .. import demo
from ..checkpoint import load_model, read_config
from ..flow_matching import CAPTION_DROPOUT, MOTION_DROPOUT, checkpointed_runner, time_shift, training_step
from ..lora import add_lora, check_rank, lora_layers, save_lora
from ..model import NextDiT, NextDiTConfig
from ..precision import native_bf16
from ..video_io import atomic_target

DEVICE_TENSORS = ("clip_latents", "image_latents", "caption_feats", "caption_mask")  # what a step reads on the device
RECENT = 50  # steps per patch pair the log's running means cover


@dataclass
class FinetuneSettings:
    """Everything a fine-tuning run depends on (the command line's checked values)."""

    data: Path
    out: Path
    model: Optional[Path] = None  # None = the built-in demo (with its text encoder and VAE)
    text_encoder: Optional[Path] = None
    tokenizer: Optional[Path] = None
    vae: Optional[Path] = None
    steps: int = 300
    rank: int = 8
    alpha: Optional[float] = None  # None = rank (scale 1)
    lr: float = 1e-3
    width: int = 64
    height: int = 64
    frames: int = 16
    videos: int = 2  # clips per step
    images: int = 1  # stills per step
    caption_dropout: float = CAPTION_DROPOUT
    motion_dropout: float = MOTION_DROPOUT
    minutes: Optional[float] = None
    resume: bool = False
    device: str = "cpu"
    seed: int = 0

    @property
    def cache_path(self) -> Path:
        return self.out.with_suffix(".cache.pt")

    @property
    def state_path(self) -> Path:
        return self.out.with_suffix(".state.pt")

    @property
    def log_path(self) -> Path:
        return self.out.with_suffix(".log.txt")

    def recipe(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {"model": str(self.model or "demo"), "rank": self.rank, "alpha": float(self.alpha or self.rank),
                "width": self.width, "height": self.height, "frames": self.frames}


def log(path: Path, message: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(message + "\n")


def model_config(settings: FinetuneSettings) -> NextDiTConfig:
    """The transformer's architecture, read without loading its weights (to check sizes first)."""
    return demo.TRANSFORMER_CONFIG if settings.model is None else read_config(settings.model)


def data_signature(settings: FinetuneSettings, samples) -> str:
    """What the cache was made from: each file's name, size and time, the captions, the size and the encoders."""
    files = []
    for sample in samples:
        stat = os.stat(sample.path)
        files.append([sample.path.name, stat.st_size, stat.st_mtime_ns, sample.caption])
    return json.dumps({"files": files, "width": settings.width, "height": settings.height, "frames": settings.frames,
                       "text_encoder": str(settings.text_encoder or "demo"), "vae": str(settings.vae or "demo")})


def load_encoders(settings: FinetuneSettings):
    """(vae, text model, tokenizer) of the run: the demo's, or the given files."""
    device = torch.device(settings.device)
    if settings.model is None:
        tokenizer = demo.build_tokenizer()
        return demo.build_vae().to(device), demo.build_text_model(len(tokenizer)).to(device), tokenizer
    from ..text import load_text_encoder
    from ..vae import load_vae

    dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    text_model, tokenizer = load_text_encoder(settings.text_encoder, tokenizer_path=settings.tokenizer, dtype=dtype,
                                              device=device)
    return load_vae(settings.vae, dtype, device), text_model, tokenizer


def cached_data(settings: FinetuneSettings) -> dict:
    """The encoded data set: from the cache when it was made of the same files and settings, else encoded now
    (and cached) with the text encoder and VAE, which are freed before this returns."""
    from ..finetune_data import cache_samples, check_training_size, scan_folder

    samples = scan_folder(settings.data)
    check_training_size(settings.width, settings.height, settings.frames, model_config(settings))
    signature = data_signature(settings, samples)
    if settings.cache_path.exists():
        cached = torch.load(settings.cache_path, weights_only=True)
        if cached.get("signature") == signature:
            return cached
    began = time.monotonic()
    vae, text_model, tokenizer = load_encoders(settings)
    cached = cache_samples(samples, vae, text_model, tokenizer, settings.width, settings.height, settings.frames)
    del vae, text_model
    gc.collect()
    cached["signature"] = signature
    with atomic_target(settings.cache_path) as temp:
        torch.save(cached, temp)
    motion = ", ".join(f"{name} {score:.2f}" for name, score in zip(cached["sources"], cached["clip_motion"].tolist()))
    log(settings.log_path, f"cached {len(cached['clip_latents'])} clips and {len(cached['image_latents'])} stills at "
                           f"{settings.width}x{settings.height}x{settings.frames} in {time.monotonic() - began:.1f} s; "
                           f"motion scores: {motion or 'no clips'}")
    return cached


def load_transformer(settings: FinetuneSettings) -> NextDiT:
    model = demo.build_transformer() if settings.model is None else load_model(settings.model)
    return model.to(settings.device, torch.float32)


def check_settings(settings: FinetuneSettings) -> None:
    """Raise naming the value and the fix for settings no run can use."""
    check_rank(settings.rank, float(settings.alpha or settings.rank))
    if settings.out.suffix.lower() != ".safetensors":
        raise ValueError(f"--out {settings.out} must end in .safetensors (the LoRA file)")
    if settings.steps < 1:
        raise ValueError(f"--steps {settings.steps} must be at least 1")
    if not settings.lr > 0:
        raise ValueError(f"--lr {settings.lr} must be positive, e.g. 1e-3 (demo) or 1e-4 (the 2B model)")
    if settings.minutes is not None and not settings.minutes > 0:
        raise ValueError(f"--minutes {settings.minutes} must be positive, e.g. 10")
    if settings.videos < 0 or settings.images < 0 or settings.videos + settings.images == 0:
        raise ValueError(f"--videos {settings.videos} and --images {settings.images} must be >= 0 and not both 0")
    for name in ("caption_dropout", "motion_dropout"):
        value = getattr(settings, name)
        if not 0 <= value <= 1:
            raise ValueError(f"--{name.replace('_', '-')} {value} must lie in [0, 1]")
    real = [settings.model, settings.text_encoder, settings.vae]
    if any(path is None for path in real) and any(path is not None for path in real):
        raise ValueError("give --model, --text-encoder and --vae together (real models), or none of them (demo)")
    for flag, path in (("--data", settings.data), *zip(("--model", "--text-encoder", "--vae"), real)):
        if path is not None and not Path(path).exists():
            raise ValueError(f"{flag} {path} does not exist; give an existing file or folder")


class LoRATraining:
    """A LoRA being trained on a transformer by the pack's recipe: LoRA layers added to ``model`` (its own weights
    frozen, never written), AdamW over them, gradient checkpointing, bf16 autocast where the device has bf16 matrix
    instructions, and the CPU generator that draws every step's patch pair (uniformly from the model's pairs),
    batch, noise and t. The command line and the ComfyUI node both train through it."""

    def __init__(self, model: NextDiT, rank: int, alpha: Optional[float], lr: float, seed: int, videos: int = 2,
                 images: int = 1, caption_dropout: float = CAPTION_DROPOUT, motion_dropout: float = MOTION_DROPOUT):
        add_lora(model, rank, alpha, seed)
        model.set_token_runner(checkpointed_runner(model))
        model.train()
        self.model = model
        self.parameters = [p for layer in lora_layers(model).values() for p in layer.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(seed)
        self.bf16 = native_bf16(self.parameters[0].device)
        self.videos, self.images = videos, images
        self.caption_dropout, self.motion_dropout = caption_dropout, motion_dropout
        self.step = 0

    @property
    def pair_names(self) -> list[str]:
        """The model's patch pairs as "FxP" (f-patch x patch), in the model's order."""
        return [f"{f}x{p}" for p, f in self.model.config.patch_pairs]

    def train(self, encoded: dict, steps: int, on_step: Optional[Callable[[int, str, float, float], None]] = None,
              stop: Optional[Callable[[], bool]] = None) -> None:
        """Train on an encoded data set (``lumina_core.flow_matching``) until ``steps`` steps are done, or until
        ``stop()``, asked before each step, says so. After each step ``on_step(step, patch pair "FxP", loss,
        seconds)`` (it may raise to abort, e.g. on a cancel)."""
        pairs = self.model.config.patch_pairs
        while self.step < steps:
            if stop is not None and stop():
                break
            started = time.monotonic()
            pair = pairs[int(torch.randint(len(pairs), (1,), generator=self.generator))]
            loss = training_step(self.model, self.optimizer, encoded, pair, self.videos, self.images, self.generator,
                                 self.caption_dropout, self.motion_dropout, self.bf16)
            self.step += 1
            if on_step is not None:
                on_step(self.step, f"{pair[1]}x{pair[0]}", loss, time.monotonic() - started)

    def state(self) -> dict:
        """What resuming needs: the LoRA, the optimiser, the generator and the step."""
        lora = {name: tensor for name, tensor in self.model.state_dict().items() if ".down." in name or ".up." in name}
        return {"lora": lora, "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "step": self.step}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["lora"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = state["step"]


def finetune(settings: FinetuneSettings) -> Path:
    """Train (or resume) a LoRA as the module docstring says; returns the LoRA file."""
    check_settings(settings)
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    cached = cached_data(settings)
    device = torch.device(settings.device)
    encoded = {**cached, **{key: cached[key].to(device) for key in DEVICE_TENSORS}}
    training = LoRATraining(load_transformer(settings), settings.rank, settings.alpha, settings.lr, settings.seed,
                            settings.videos, settings.images, settings.caption_dropout, settings.motion_dropout)
    model = training.model
    if settings.resume and settings.state_path.exists():
        state = torch.load(settings.state_path, weights_only=True, map_location=device)
        if state["recipe"] != settings.recipe():
            raise ValueError(f"--resume: {settings.state_path} was trained with {state['recipe']}, not "
                             f"{settings.recipe()}; resume with those settings or start afresh without --resume")
        training.load_state(state)
        log(settings.log_path, f"resumed at step {training.step}")
    pairs = model.config.patch_pairs
    shifts = {f"{f}x{p}": time_shift((p, f), pairs, video=True) for p, f in pairs}
    log(settings.log_path, f"finetune: LoRA rank {settings.rank} alpha {float(settings.alpha or settings.rank)} on "
                           f"{len(lora_layers(model))} linears ({sum(p.numel() for p in training.parameters)} "
                           f"parameters), patch pairs with video time shifts {shifts}, {settings.videos} clips + "
                           f"{settings.images} stills per step, lr {settings.lr}, {device}, "
                           f"{'bf16 autocast' if training.bf16 else 'float32'}")

    def save_state() -> None:
        with atomic_target(settings.state_path) as temp:  # an interrupted save keeps the previous state
            torch.save({**training.state(), "recipe": settings.recipe()}, temp)

    deadline = None if settings.minutes is None else began + 60 * settings.minutes
    slowest = 0.0
    recent = {name: [] for name in training.pair_names}

    def log_per_pair() -> None:
        means = " ".join(f"{name}={sum(losses) / len(losses):.4f}" for name, losses in recent.items() if losses)
        log(settings.log_path, f"step {training.step} mean loss per patch pair (last {RECENT} each): {means}")

    def out_of_time() -> bool:
        if deadline is not None and time.monotonic() + 2 * slowest > deadline:
            log(settings.log_path, f"stopped at step {training.step}: the --minutes {settings.minutes} budget is spent")
            return True
        return False

    bar = tqdm(total=settings.steps, initial=training.step, desc="finetune")

    def logged(step: int, name: str, loss: float, seconds: float) -> None:
        nonlocal slowest
        slowest = max(slowest, seconds)
        recent[name] = (recent[name] + [loss])[-RECENT:]
        log(settings.log_path, f"step {step} patch {name} loss {loss:.5f}")
        if step % RECENT == 0:
            log_per_pair()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", patch=name)

    training.train(encoded, settings.steps, on_step=logged, stop=out_of_time)
    bar.close()
    log_per_pair()
    save_state()
    metadata = {"base_model": str(settings.model or "lumina-video-demo"), "steps": training.step,
                "recipe": json.dumps({**asdict(settings), "data": str(settings.data), "out": str(settings.out),
                                      "model": str(settings.model), "text_encoder": str(settings.text_encoder),
                                      "tokenizer": str(settings.tokenizer), "vae": str(settings.vae)})}
    path = save_lora(model, settings.out, metadata)
    log(settings.log_path, f"wrote {path} at step {training.step} in {time.monotonic() - began:.0f} s")
    return path
