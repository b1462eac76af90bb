"""Lumina-Video Train LoRA in-process (COMFYUI_PATH): it trains the LoRA the command line trains from the same data
and seed, on the demo MODEL without changing it, reports progress per step and stops on a cancel; core SaveLoRA
writes a file whose every key core LoraLoaderModelOnly loads, and that and core LoraModelLoader change the model's
output alike; a data folder outside ComfyUI's input folder is refused by name."""

import functools
import logging

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process, imports the pack

# isort: split
import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import pytest
import torch
from comfy_extras.nodes_train import LoraModelLoader, SaveLoRA
from conftest import relative_error
from lumina_video_pack.lumina_core.app import cli
from lumina_video_pack.lumina_core.lora import TARGETS
from lumina_video_pack.nodes.finetune import DEMO_DATA, LuminaVideoMSTrainLoRA
from lumina_video_pack.nodes.loaders import SAME_FOLDER, LuminaVideoMSTextEncoderLoader, LuminaVideoMSVAELoader
from lumina_video_pack.nodes.model_files import DEMO
from safetensors.torch import load_file

from nodes import LoraLoaderModelOnly

DEMO_SET = next(iter(DEMO_DATA))
STEPS, RANK, LR, SEED = 4, 4, 3e-3, 5
SIZE = {"width": 32, "height": 32, "frames": 16}
SAME_RECIPE_TOL = 1e-4
"""Node vs command line: the same weights, data, seed and steps through the same code, but the node's encoders are
ComfyUI-loaded copies of the same demo files (measured: equal)."""
CORE_LOADERS_TOL = 1e-5
"""LoraLoaderModelOnly (file) vs LoraModelLoader (dict): the same patches in the same order of operations."""


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def encoders():
    text_encoder = run(LuminaVideoMSTextEncoderLoader, DEMO, SAME_FOLDER, "default")[0]
    return text_encoder, run(LuminaVideoMSVAELoader, DEMO, "default")[0]


@functools.cache
def caption() -> tuple[torch.Tensor, dict]:
    return demo_captions("a pink circle moving left", "")[0][0]


def model_output(model) -> torch.Tensor:
    """The MODEL's prediction at a fixed input, through its patcher (so LoRA patches apply)."""
    comfy.model_management.load_models_gpu([model], force_full_load=True)
    features, extras = caption()
    x = torch.randn((1, 16, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    return model.model.diffusion_model(x, torch.tensor([0.4]), features, attention_mask=extras["attention_mask"],
                                       transformer_options={}).clone()


def train(model, encoders, data=DEMO_SET, steps=STEPS):
    return run(LuminaVideoMSTrainLoRA, model, *encoders, data, steps, RANK, 0.0, LR, SIZE["width"], SIZE["height"],
               SIZE["frames"], SEED)


@pytest.fixture(scope="module")
def trained(model, encoders):
    """(lora, loss graph, steps, progress values, the MODEL's output before and after training)."""
    before = model_output(model)
    progress = []
    hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: progress.append(value))
    try:
        lora, graph, steps = train(model, encoders)
    finally:
        comfy.utils.set_progress_bar_global_hook(hook)
    return lora, graph, steps, progress, before, model_output(model)


def test_trains_every_target_linear_and_reports_each_step(model, trained):
    lora, graph, steps, progress, _, _ = trained
    layers = len(model.model.diffusion_model.layers)
    assert steps == STEPS and progress == list(range(1, STEPS + 1))
    expected = {f"diffusion_model.layers.{index}.{target}.{suffix}" for index in range(layers) for target in TARGETS
                for suffix in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert set(lora) == expected
    assert lora["diffusion_model.layers.0.attention.wq.lora_down.weight"].shape[0] == RANK
    assert float(lora["diffusion_model.layers.0.attention.wq.alpha"]) == RANK
    assert all(lora[key].abs().max() > 0 for key in expected if key.endswith("lora_up.weight"))  # trained from 0
    assert graph.shape == (1, 360, 640, 3) and graph.dtype == torch.float32
    assert graph.min() >= 0 and graph.max() <= 1 and graph.std() > 0.05


def test_the_model_other_nodes_hold_is_unchanged(trained):
    *_, before, after = trained
    assert torch.equal(before, after)


def test_the_node_trains_what_the_command_line_trains(trained, tmp_path):
    """The same recipe, data, seed and steps: the node's LoRA is the command line's (the demo MODEL holds the
    command line's demo transformer)."""
    lora = trained[0]
    out = tmp_path / "cli.safetensors"
    cli.main(["finetune", "--data", str(DEMO_DATA[DEMO_SET]), "--out", str(out), "--steps", str(STEPS), "--rank",
              str(RANK), "--lr", str(LR), "--seed", str(SEED), "--width", str(SIZE["width"]), "--height",
              str(SIZE["height"]), "--frames", str(SIZE["frames"])])
    written = load_file(out)
    assert set(written) == set(lora)
    for key, tensor in written.items():
        assert relative_error(lora[key], tensor) < SAME_RECIPE_TOL, key


def test_save_lora_writes_a_file_core_loaders_apply_whole(model, trained, tmp_path, monkeypatch, caplog):
    lora = trained[0]
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    SaveLoRA.execute(lora, "loras/lumina_video_pink", STEPS)
    (path,) = (tmp_path / "loras").glob("lumina_video_pink_4_steps_*.safetensors")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    with caplog.at_level(logging.WARNING):
        (from_file,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 1.0)
    assert "lora key not loaded" not in caplog.text
    assert len(from_file.patches) == len(model.model.diffusion_model.layers) * len(TARGETS)
    from_dict = run(LoraModelLoader, model, lora, 1.0)[0]
    base, patched_file, patched_dict = model_output(model), model_output(from_file), model_output(from_dict)
    assert relative_error(patched_file, base) > 1e-3
    assert relative_error(patched_dict, patched_file) < CORE_LOADERS_TOL
    comfy.model_management.unload_all_models()


def test_cancel_stops_after_the_step_in_progress(model, encoders):
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            train(model, encoders, steps=1000)
    finally:
        comfy.model_management.interrupt_current_processing(False)


@pytest.fixture
def input_folder(tmp_path, monkeypatch):
    base = tmp_path / "input"
    (base / "clips").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (base / "linked").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(folder_paths, "input_directory", str(base))
    return base


@pytest.mark.parametrize("data, message", [
    ("..", "outside ComfyUI's input folder"),
    ("clips/../../elsewhere", "outside ComfyUI's input folder"),
    ("/etc", "outside ComfyUI's input folder"),
    ("linked", "outside ComfyUI's input folder"),
    ("missing", "is not a folder inside ComfyUI's input folder"),
    ("  ", "data is empty"),
])
def test_data_outside_the_input_folder_is_refused_by_name(input_folder, data, message):
    answer = LuminaVideoMSTrainLoRA.validate_inputs(data)
    assert isinstance(answer, str) and message in answer and (data.strip() == "" or repr(data) in answer), answer
    assert LuminaVideoMSTrainLoRA.validate_inputs("clips") is True
    assert LuminaVideoMSTrainLoRA.validate_inputs(DEMO_SET) is True


def test_edited_data_trains_again(input_folder):
    """ComfyUI re-runs a node whose fingerprint changed: adding a file to the folder changes it."""
    before = LuminaVideoMSTrainLoRA.fingerprint_inputs("clips")
    (input_folder / "clips" / "a.txt").write_text("a pink circle")
    assert LuminaVideoMSTrainLoRA.fingerprint_inputs("clips") != before


def test_the_loss_graph_draws_each_patch_pair(trained):
    """Dots and lines in each patch pair's colour (the legend's three entries at least)."""
    from lumina_video_pack.lumina_core.app.loss_graph import PAIR_COLOURS
    pixels = (trained[1][0].numpy() * 255).round().astype(np.uint8).reshape(-1, 3)
    for colour in PAIR_COLOURS[:3]:
        assert (pixels == np.array(colour, dtype=np.uint8)).all(axis=1).sum() > 20, colour
