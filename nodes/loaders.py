"""Loader nodes: the Multi-scale Next-DiT, the Gemma-2 text encoder and the CogVideoX VAE, from
ComfyUI's model folders or as the built-in demo components."""

from __future__ import annotations

import logging
from dataclasses import replace

import comfy.model_management
import torch
from comfy_api.latest import io

from ..lumina_core import demo
from ..lumina_core.app.node_table import MODEL_LOADER, SAME_FOLDER, TEXT_ENCODER_LOADER, VAE_LOADER
from ..lumina_core.checkpoint import OFFICIAL_WEIGHT_FILES, load_model
from ..lumina_core.sampling import SampleConfig
from ..lumina_core.schedule import Stage
from ..lumina_core.text import load_text_encoder
from ..lumina_core.vae import load_vae
from . import io_types
from .devices import DEFAULT, dtype_for, patcher
from .model_files import DEMO, choices, missing_file_message, model_folders, resolve
from .native import WEIGHT_DTYPES, native_model
from .schedule import DEMO_PRESET, preset_config

log = logging.getLogger(__name__)

TEXT_ENCODER_FOLDER_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
VAE_FOLDER_FILES = ("config.json",)

DEFAULT_SCHEDULE = SampleConfig.preset("f24F96R960-MultiScale")
DTYPE_TOOLTIP = ("Weight dtype. default: bf16 on GPUs that compute it natively (the official inference dtype), "
                 "fp32 on CPU.")


def _demo_components(vae_dtype: torch.dtype = torch.float32) -> demo.DemoComponents:
    """The built-in demo components, without disturbing the global torch RNG (untrained stand-ins are
    built from a fixed seed). All three are small, so each loader builds the set and keeps its part."""
    if not demo.DEMO_IS_TRAINED:
        log.warning(f"Lumina-Video: the built-in demo models have untrained random weights ({demo.MODELS_DIR} is "
                    "missing or incomplete); the video will be noise")
    with torch.random.fork_rng(devices=[]):
        return demo.load_demo(vae_dtype)


def default_schedule(model) -> SampleConfig:
    """The schedule a freshly loaded model runs under core samplers until one is attached: the demo's for
    the demo model, the official f24F96R960-MultiScale where the model has its patch pairs, else its finest
    patch pair on the official grid."""
    if all(model.has_patch(stage.patch_size, stage.f_patch_size) for stage in DEFAULT_SCHEDULE.stages):
        return DEFAULT_SCHEDULE
    patch_size, f_patch_size = min(model.config.patch_pairs, key=lambda pair: pair[0] ** 2 * pair[1])
    return replace(DEFAULT_SCHEDULE, stages=(Stage(patch_size, f_patch_size),), name="")


class LuminaVideoMSModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=MODEL_LOADER.id,
            display_name="Lumina-Video Model Loader",
            category="Lumina-Video/loaders",
            description="Loads a Lumina-Video Multi-scale Next-DiT from models/diffusion_models (an official folder "
                        "as published, consolidated.00-of-01.pth + model_args.pth, or with a .safetensors in place "
                        "of the .pth; or one .safetensors/.pth file) as "
                        "a ComfyUI MODEL: core samplers, LoRA loaders, caches, --lowvram/--novram partial loading "
                        "and fp8 storage apply to it. Under core samplers it runs the demo schedule (demo model) or "
                        "f24F96R960-MultiScale until Lumina-Video Model Schedule attaches another.",
            inputs=[
                io.Combo.Input("model_name", options=choices("diffusion_models", OFFICIAL_WEIGHT_FILES,
                                                             (".safetensors", ".pth", ".pt")),
                               tooltip="Checkpoint file or official checkpoint folder in models/diffusion_models. "
                                       f"'{DEMO}' is a small built-in model that needs no file."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="How the weights are stored. default: ComfyUI's choice for the device (bf16 "
                                       "on GPUs that compute it, fp32 on CPU). bf16 on a CPU with AVX512-BF16 or AMX "
                                       "also computes in bf16, faster than fp32 there. fp8_*: half of bf16's memory, "
                                       "computed in the device's dtype (fp8_e4m3fn_fast also computes in fp8 where "
                                       "supported)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return missing_file_message("diffusion_models", model_name, OFFICIAL_WEIGHT_FILES,
                                    "the Lumina-Video checkpoint (file, or official folder with consolidated.00-of-01)")

    @classmethod
    def execute(cls, model_name, weight_dtype) -> io.NodeOutput:
        if model_name == DEMO:
            model, schedule = _demo_components().transformer, preset_config(DEMO_PRESET)
        else:
            model = load_model(resolve("diffusion_models", model_name, OFFICIAL_WEIGHT_FILES))
            schedule = default_schedule(model)
        latent_space = "demo" if model_name == DEMO else "cogvideox"  # the demo DiT samples demo VAE latents
        return io.NodeOutput(native_model(model, schedule, weight_dtype, latent_space))


class LuminaVideoMSTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=TEXT_ENCODER_LOADER.id,
            display_name="Lumina-Video Text Encoder Loader",
            category="Lumina-Video/loaders",
            description="Loads the Gemma-2 text encoder (Hugging Face folder, or one .safetensors file plus a "
                        "tokenizer folder) from models/text_encoders.",
            inputs=[
                io.Combo.Input("text_encoder_name",
                               options=choices("text_encoders", TEXT_ENCODER_FOLDER_FILES, (".safetensors",)),
                               tooltip="A Gemma-2-2B folder (config.json + weights + tokenizer) or a single "
                                       f".safetensors file in models/text_encoders. '{DEMO}' is a small built-in "
                                       "encoder."),
                io.Combo.Input("tokenizer", options=[SAME_FOLDER, *model_folders("text_encoders", TOKENIZER_FILES)],
                               default=SAME_FOLDER,
                               tooltip="Folder with the Gemma tokenizer (tokenizer.json or tokenizer.model). Needed "
                                       "for a single .safetensors file; a model folder brings its own."),
                io.Combo.Input("weight_dtype", options=[DEFAULT, "fp32", "bf16"], default=DEFAULT,
                               tooltip=DTYPE_TOOLTIP + " fp16 is not offered: Gemma-2's activations can overflow it."),
            ],
            outputs=[io_types.TextEncoder.Output(display_name="text_encoder")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder_name, tokenizer):
        found = missing_file_message("text_encoders", text_encoder_name, TEXT_ENCODER_FOLDER_FILES,
                                     "the Gemma-2 text encoder (Hugging Face folder or .safetensors)")
        if found is not True or tokenizer == SAME_FOLDER:
            return found
        return missing_file_message("text_encoders", tokenizer, TOKENIZER_FILES, "the tokenizer folder")

    @classmethod
    def execute(cls, text_encoder_name, tokenizer, weight_dtype) -> io.NodeOutput:
        load_device = comfy.model_management.text_encoder_device()
        offload_device = comfy.model_management.text_encoder_offload_device()
        dtype = dtype_for(weight_dtype, load_device)
        if text_encoder_name == DEMO:
            components = _demo_components()
            model = components.text_model.to(device=offload_device, dtype=dtype)
            tokenizer_object = components.tokenizer
        else:
            path = resolve("text_encoders", text_encoder_name, TEXT_ENCODER_FOLDER_FILES)
            if tokenizer == SAME_FOLDER and text_encoder_name.lower().endswith(".safetensors"):
                raise ValueError(f"text encoder {text_encoder_name!r} is a single file without a tokenizer; pick "
                                 "the folder holding the Gemma tokenizer (tokenizer.json or tokenizer.model) in "
                                 "'tokenizer'")
            tokenizer_path = None if tokenizer == SAME_FOLDER else resolve("text_encoders", tokenizer, TOKENIZER_FILES)
            model, tokenizer_object = load_text_encoder(path, tokenizer_path, dtype=dtype, device=offload_device)
        return io.NodeOutput(io_types.TextEncoderBundle(patcher(io_types.Component(model), load_device, offload_device),
                                                        tokenizer_object))


class LuminaVideoMSVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=VAE_LOADER.id,
            display_name="Lumina-Video VAE Loader",
            category="Lumina-Video/loaders",
            description="Loads the CogVideoX VAE (THUDM/CogVideoX-2b vae/ folder or one .safetensors file) from "
                        "models/vae.",
            inputs=[
                io.Combo.Input("vae_name", options=choices("vae", VAE_FOLDER_FILES, (".safetensors",)),
                               tooltip="The CogVideoX-2b vae/ folder (config.json + weights) or a .safetensors file in "
                                       f"models/vae. '{DEMO}' is a small built-in VAE."),
                io.Combo.Input("weight_dtype", options=[DEFAULT, "fp32", "bf16", "fp16"], default=DEFAULT,
                               tooltip="Weight dtype. default: ComfyUI's VAE dtype for the device (bf16 on GPUs that "
                                       "compute it natively, fp32 on CPU; --fp32-vae / --bf16-vae override it). On a "
                                       "CPU with AVX512-BF16 or AMX, bf16 decodes several times faster than fp32."),
            ],
            outputs=[io_types.Vae.Output(display_name="vae")],
        )

    @classmethod
    def validate_inputs(cls, vae_name):
        return missing_file_message("vae", vae_name, VAE_FOLDER_FILES,
                                    "the CogVideoX VAE (vae/ folder or .safetensors)")

    @classmethod
    def execute(cls, vae_name, weight_dtype) -> io.NodeOutput:
        load_device = comfy.model_management.vae_device()
        offload_device = comfy.model_management.vae_offload_device()
        if weight_dtype == DEFAULT:
            dtype = comfy.model_management.vae_dtype(load_device, [torch.bfloat16, torch.float32])
        else:
            dtype = dtype_for(weight_dtype, load_device)
        if vae_name == DEMO:
            vae = _demo_components(dtype).vae.to(device=offload_device)
        else:
            vae = load_vae(resolve("vae", vae_name, VAE_FOLDER_FILES), dtype=dtype, device=offload_device)
        return io.NodeOutput(patcher(io_types.Component(vae), load_device, offload_device))

