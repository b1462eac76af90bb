"""The Train LoRA example (example_workflows/lumina_video_demo_train_lora.json, at a few steps) in a real ComfyUI
server (COMFYUI_PATH): it trains on the shipped demo set, the loss graph arrives, Save LoRA Weights writes a file
with every key of the pack's LoRA format, which core Load LoRA (model only) then loads whole ("lora key not loaded"
never logged) to the video Load LoRA Model gives, and the LoRA changes the demo's video. (The example's 50 steps
turn its 'pink square' from yellow to magenta: docs/finetune.md.)"""

import json
import shutil

import numpy as np
import pytest
from comfy_host import ROOT, assert_success, require_host, running_server, to_api
from PIL import Image
from safetensors.torch import load_file

from lumina_core import demo
from lumina_core.lora import TARGETS

require_host()

WORKFLOW = "lumina_video_demo_train_lora.json"
TRAIN, APPLY, LATENT, SCHEDULE, LOSS, FRAMES = "5", "7", "9", "10", "13", "15"  # node ids in the example
STEPS = 8
SAME_LORA_LEVELS = 2
"""Frames of Load LoRA (model only) vs Load LoRA Model: the same patches on the same weights (8-bit levels)."""


@pytest.fixture(scope="module")
def server():
    with running_server(prepare=lambda base: (base / "models" / "loras").mkdir(parents=True)) as host:
        yield host


@pytest.fixture(scope="module")
def example(server):
    """The example's API prompt at STEPS training steps (on '(demo) pink shapes'), sampling a smaller video in
    fewer steps."""
    workflow = json.loads((ROOT / "example_workflows" / WORKFLOW).read_text())
    prompt = to_api(workflow, server.get("/object_info"))
    prompt[TRAIN]["inputs"]["steps"] = STEPS
    prompt[LATENT]["inputs"].update(width=32, height=32, frames=8)
    prompt[SCHEDULE]["inputs"]["steps"] = 8
    return prompt


def frames_of(server, entry: dict, node: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(server.base / image["type"] / image["subfolder"] / image["filename"]))
                     for image in entry["outputs"][node]["images"]])


@pytest.fixture(scope="module")
def runs(server, example):
    """/history entries: the example; the same at strength 0 (the training node is cached); and the demo with the
    saved file in core Load LoRA (model only) instead of Load LoRA Model."""
    trained = server.wait(server.queue(example), timeout=900)
    assert_success(trained)
    without = json.loads(json.dumps(example))
    without[APPLY]["inputs"]["strength_model"] = 0.0
    plain = server.wait(server.queue(without))
    assert_success(plain)
    (saved,) = (server.base / "output" / "loras").glob(f"lumina_video_demo_pink_{STEPS}_steps_*.safetensors")
    shutil.copy(saved, server.base / "models" / "loras" / saved.name)
    from_file = json.loads(json.dumps(example))
    from_file[APPLY] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": example[APPLY]["inputs"]["model"], "lora_name": saved.name,
                                   "strength_model": 1.0}}
    loaded = server.wait(server.queue(from_file))
    assert_success(loaded)
    return {"trained": trained, "plain": plain, "from_file": loaded, "saved": saved}


def test_the_loss_graph_arrives(server, runs):
    (graph,) = frames_of(server, runs["trained"], LOSS)
    assert graph.shape == (360, 640, 3) and graph.std() > 10


def test_save_lora_writes_every_key_of_the_pack_format(runs):
    tensors = load_file(runs["saved"])
    layers = demo.TRANSFORMER_CONFIG.n_layers
    assert set(tensors) == {f"diffusion_model.layers.{index}.{target}.{suffix}" for index in range(layers)
                            for target in TARGETS for suffix in ("lora_down.weight", "lora_up.weight", "alpha")}


def test_core_lora_loader_loads_the_saved_file_whole(server, runs):
    log = server.log.read_text(errors="replace")
    assert "lora key not loaded" not in log
    with_dict, with_file = frames_of(server, runs["trained"], FRAMES), frames_of(server, runs["from_file"], FRAMES)
    assert np.abs(with_dict.astype(int) - with_file.astype(int)).max() <= SAME_LORA_LEVELS


def test_the_lora_changes_the_demo_video(server, runs):
    plain, trained = frames_of(server, runs["plain"], FRAMES), frames_of(server, runs["trained"], FRAMES)
    assert np.abs(plain.astype(int) - trained.astype(int)).max() > 20
