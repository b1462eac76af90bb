"""Train LoRA node: LoRA fine-tuning of the Lumina-Video MODEL from a folder of captioned clips and stills, by the
pack's recipe (``lumina_core.app.finetune.LoRATraining``: every patch pair at its own time shift, clips with their
measured motion scores, joint clip + still batches, caption and motion dropout, velocity loss MSE + (1 - cosine)).

It returns ComfyUI's LORA_MODEL (the dict core Train LoRA returns: ``diffusion_model.<module>.lora_up.weight``,
``.lora_down.weight``, ``.alpha``), which core SaveLoRA writes as a file that LoraLoaderModelOnly loads whole, and
core LoraModelLoader applies directly; and the loss per step and patch pair as an IMAGE.

The MODEL is not changed: training runs on a float32 copy of its weights (as its patcher loads them, so LoRAs
applied before are trained over) with LoRA layers beside the frozen copy.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..lumina_core.app.finetune import DEVICE_TENSORS, LoRATraining
from ..lumina_core.app.loss_graph import loss_graph
from ..lumina_core.app.node_table import TRAIN_LORA
from ..lumina_core.finetune_data import cache_samples, check_training_size, scan_folder
from ..lumina_core.limits import (
    MAX_FRAMES,
    MAX_LEARNING_RATE,
    MAX_LORA_ALPHA,
    MAX_LORA_RANK,
    MAX_SIDE,
    MAX_TRAIN_STEPS,
    MIN_LEARNING_RATE,
)
from ..lumina_core.lora import check_rank, lora_tensors
from ..lumina_core.model import NextDiT
from . import io_types
from .devices import loaded
from .native import lumina_video_model

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = {"(demo) pink shapes": PACK_ROOT / "example_workflows" / "lumina_video_demo_train_lora_data"}
"""Data sets shipped with the pack, by the name the data widget takes: 8 clips and 2 stills of pink shapes (drawn in
the demo's magenta, a colour the demo VAE carries) captioned with the word "pink", which the demo tokenizer knows
and the demo model never saw in training."""


def data_folder(data: str) -> Path:
    """The folder a data widget names: a shipped demo set, or a folder inside ComfyUI's input folder (anything
    that resolves outside it, through '..', an absolute path or a link, is refused)."""
    if data in DEMO_DATA:
        return DEMO_DATA[data]
    base = Path(folder_paths.get_input_directory()).resolve()
    if not data.strip():
        raise ValueError(f"data is empty; name a folder inside ComfyUI's input folder {base} (e.g. 'my_clips' for "
                         f"{base / 'my_clips'}) or use {next(iter(DEMO_DATA))!r}")
    path = (base / data).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"data {data!r} resolves to {path}, outside ComfyUI's input folder {base}; put the clips in "
                         f"a folder inside it and give that folder's name relative to it (e.g. 'my_clips')")
    if not path.is_dir():
        raise ValueError(f"data {data!r} is not a folder inside ComfyUI's input folder ({path} does not exist or is "
                         "a file); create it there with .mp4 clips and .png/.jpg stills, each with a same-named .txt "
                         f"caption, or use {next(iter(DEMO_DATA))!r}")
    return path


def folder_signature(data: str) -> str:
    """Each file's name, size and time in the data folder, so edited data trains again (else the error)."""
    try:
        folder = data_folder(data)
        return json.dumps(sorted([entry.name, entry.stat().st_size, entry.stat().st_mtime_ns]
                                 for entry in os.scandir(folder)))
    except (OSError, ValueError) as error:
        return str(error)


def encode_data(folder: Path, text_encoder: io_types.TextEncoderBundle, vae, width: int, height: int, frames: int,
                config) -> dict:
    """The data set as training reads it (``finetune_data.cache_samples``): latents from the pack's VAE, caption
    features from its text encoder, each clip's measured motion score. Bad files and sizes fail first."""
    samples = scan_folder(folder)
    check_training_size(width, height, frames, config)
    return cache_samples(samples, loaded(vae).inner, loaded(text_encoder.patcher).inner, text_encoder.tokenizer,
                         width, height, frames, progress=False)


def trainable_copy(model_patcher) -> NextDiT:
    """A lumina_core NextDiT holding float32 copies of the MODEL's weights on its load device, as the patcher
    loads them (earlier LoRA patches applied). Copies, not the weights themselves: those may be bf16 or fp8, and
    ComfyUI made them in inference mode, which autograd cannot save for the backward pass."""
    network = lumina_video_model(model_patcher)
    comfy.model_management.load_models_gpu([model_patcher], force_full_load=True)
    device = model_patcher.load_device
    weights = {name: tensor.to(device, torch.float32, copy=True) for name, tensor in network.state_dict().items()}
    copy = NextDiT(network.config, device="meta", init_weights=False)
    copy.load_state_dict(weights, assign=True)
    return copy


class LuminaVideoMSTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=TRAIN_LORA.id,
            display_name="Lumina-Video Train LoRA",
            category="Lumina-Video/training",
            description="Trains a LoRA for the Lumina-Video MODEL from a folder of .mp4 clips and .png/.jpg stills "
                        "with same-named .txt captions, by the official recipe, which core Train LoRA does not "
                        "follow on this model: each step trains one patch pair (drawn uniformly) at its own time "
                        "shift, clips carry their measured motion score (dropped with p 0.3), captions drop with "
                        "p 0.1, 2 clips + 1 still per step, loss MSE + (1 - cosine) of the velocity. LoRA on every "
                        "block's attention and feed-forward linears; the MODEL itself is not changed. Save the "
                        "lora with Save LoRA Weights (then Load LoRA (model only) loads every key) or apply it "
                        "with Load LoRA Model.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumina-Video MODEL (Lumina-Video Model Loader); LoRAs loaded on "
                                                "it before are kept and trained over."),
                io_types.TextEncoder.Input("text_encoder", tooltip="The Lumina-Video text encoder the MODEL was "
                                                                   "trained with: it encodes the captions."),
                io_types.Vae.Input("vae", tooltip="The VAE of the MODEL's latents: it encodes the clips."),
                io.String.Input("data", default=next(iter(DEMO_DATA)),
                                tooltip="A folder inside ComfyUI's input folder (its name relative to it, e.g. "
                                        "'my_clips') holding .mp4 clips and .png/.jpg stills, each with a "
                                        f"same-named .txt caption; or {', '.join(map(repr, DEMO_DATA))}, shipped "
                                        "with the pack for the demo model."),
                io.Int.Input("steps", default=300, min=1, max=MAX_TRAIN_STEPS,
                             tooltip="Optimiser steps. Each draws one patch pair and 2 clips + 1 still."),
                io.Int.Input("rank", default=8, min=1, max=MAX_LORA_RANK, tooltip="LoRA rank (4-32 is typical)."),
                io.Float.Input("alpha", default=0.0, min=0.0, max=MAX_LORA_ALPHA, step=0.5,
                               tooltip="LoRA alpha: the update is scaled by alpha / rank. 0 = the rank (scale 1)."),
                io.Float.Input("lr", default=0.001, min=MIN_LEARNING_RATE, max=MAX_LEARNING_RATE, step=0.000001,
                               tooltip="AdamW learning rate: about 1e-3 to 5e-3 for the demo model, 1e-4 for the "
                                       "2B model."),
                io.Int.Input("width", default=64, min=16, max=MAX_SIDE, step=16,
                             tooltip="Training width in pixels; clips and stills are scaled to cover it and "
                                     "centre-cropped. A multiple of 8 x the largest patch size (16 demo, 32 2B)."),
                io.Int.Input("height", default=64, min=16, max=MAX_SIDE, step=16,
                             tooltip="Training height in pixels (same rule as width)."),
                io.Int.Input("frames", default=16, min=2, max=MAX_FRAMES,
                             tooltip="Frames of each clip trained on (its first ones): 8m or 8m+1 whose latent "
                                     "frames divide by the largest f-patch size (16 for the demo)."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=False,
                             tooltip="Seeds the LoRA's initial weights and every step's patch pair, batch, noise "
                                     "and t: the same inputs train the same LoRA (and a queue with unchanged inputs "
                                     "reuses it, so the seed stays as typed)."),
            ],
            outputs=[
                io.Custom(TRAIN_LORA.outputs[0][1]).Output(
                    display_name="lora", tooltip="The LoRA, for Save LoRA Weights or Load LoRA Model."),
                io.Image.Output(display_name="loss_graph",
                                tooltip="Loss per step (dots) and its running mean (lines) per patch pair."),
                io.Int.Output(display_name="steps", tooltip="Steps trained (Save LoRA Weights puts it in the name)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, data):
        try:
            data_folder(data)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, data, **_):
        return folder_signature(data)

    @classmethod
    def execute(cls, model, text_encoder, vae, data, steps, rank, alpha, lr, width, height, frames,
                seed) -> io.NodeOutput:
        network = lumina_video_model(model)
        alpha = float(alpha or rank)
        check_rank(rank, alpha)
        began = time.monotonic()
        with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode, where autograd records nothing
            cached = encode_data(data_folder(data), text_encoder, vae, width, height, frames, network.config)
            training = LoRATraining(trainable_copy(model), rank, alpha, lr, seed)
            device = model.load_device
            encoded = {**cached, **{key: cached[key].to(device) for key in DEVICE_TENSORS}}
            progress = comfy.utils.ProgressBar(steps)
            records = []

            def on_step(step: int, pair: str, loss: float, seconds: float) -> None:
                records.append((step, pair, loss))
                progress.update_absolute(step)
                comfy.model_management.throw_exception_if_processing_interrupted()

            training.train(encoded, steps, on_step)
            lora = lora_tensors(training.model)
        means = {pair: [loss for _, name, loss in records if name == pair] for pair in training.pair_names}
        log.info(f"Lumina-Video Train LoRA: {steps} steps (rank {rank}, alpha {alpha}, lr {lr}) on "
                 f"{len(cached['clip_latents'])} clips and {len(cached['image_latents'])} stills in "
                 f"{time.monotonic() - began:.1f} s; mean loss of the last 10 steps per patch pair: " +
                 ", ".join(f"{pair} {sum(losses[-10:]) / len(losses[-10:]):.4f}"
                           for pair, losses in means.items() if losses))
        graph = torch.from_numpy(loss_graph(records, training.pair_names)).float()[None] / 255
        return io.NodeOutput(lora, graph, steps)
