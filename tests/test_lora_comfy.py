"""A LoRA file lumina_core writes, in ComfyUI's own LoraLoaderModelOnly (in-process, COMFYUI_PATH): every key
loads on the pack's native model (no "lora key not loaded"), and the patched model samples what the command
line's merged weights sample."""

import copy
import logging

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process, imports the pack

# isort: split
import comfy.model_management
import torch
from conftest import relative_error
from lumina_video_pack.lumina_core.lora import TARGETS, add_lora, merge_lora, save_lora
from lumina_video_pack.nodes.native import native_model
from lumina_video_pack.nodes.sampler import LuminaVideoMSSampler
from lumina_video_pack.nodes.schedule import LuminaVideoMSSchedulePreset
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo

from nodes import LoraLoaderModelOnly

SAME_WEIGHTS_TOL = 1e-4
"""ComfyUI patches W + (alpha / rank) up @ down in its own order of operations; merge_lora sums the same in
fp32 (measured ~1e-6 relative on the sampled latent)."""


def test_core_lora_loader_loads_every_key_of_a_pack_lora_file(tmp_path, monkeypatch, caplog):
    import folder_paths
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    model = demo_model()
    network = model.model.diffusion_model
    plain = copy.deepcopy(network)
    adapted = copy.deepcopy(network)
    generator = torch.Generator().manual_seed(0)
    for layer in add_lora(adapted, rank=4, alpha=8.0).values():
        layer.up.weight.data = torch.randn(layer.up.weight.shape, generator=generator) * 0.02
    save_lora(adapted, tmp_path / "style.safetensors")

    with caplog.at_level(logging.WARNING):
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, "style.safetensors", 1.0)
    assert "lora key not loaded" not in caplog.text
    assert len(patched.patches) == len(network.layers) * len(TARGETS)

    positive, negative = demo_captions("a red circle moving left", "static grey background")
    latent = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 16, 1)[0]
    schedule = run(LuminaVideoMSSchedulePreset, "demo", 4)[0]
    base_out = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 4)[0]["samples"]
    lora_out = run(LuminaVideoMSSampler, patched, positive, negative, latent, schedule, 4)[0]["samples"]
    assert relative_error(lora_out, base_out) > 1e-3
    merge_lora(plain, tmp_path / "style.safetensors", 1.0)
    merged_out = run(LuminaVideoMSSampler, native_model(plain, schedule, "fp32"), positive, negative, latent,
                     schedule, 4)[0]["samples"]
    assert relative_error(lora_out, merged_out) < SAME_WEIGHTS_TOL
    comfy.model_management.unload_all_models()
