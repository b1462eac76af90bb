"""The example workflows (example_workflows/*.json, the UI format users drag into the browser).

Without a host: every file is a complete UI-format graph (the per-node fields the frontend's schema
wants, consistent links, a topological 'order', no overlapping nodes, titled groups holding the nodes, a
Note naming the model folders), its video size fits the schedules it uses, every node the pack registers
is in one, the clip a workflow loads ships beside it, and so does its template-browser thumbnail.

With a host (COMFYUI_PATH): one ComfyUI server, its models folders holding tiny random stand-ins under
the exact names the workflows reference (a NextDiT with the official patch pairs, a Gemma-2 folder with a
tokenizer, a CogVideoX VAE folder) and the pack's reference clip in its input folder. Each workflow is
converted to the API format with the server's /object_info; the unmodified prompt must pass /prompt
validation, and a size-reduced copy must run on CPU to saved frames and a video (NOT_RUN names the
exception). The hand-built stage chain must give exactly the frames of the one-node f24F96R960-MultiScale
preset run. The template browser lists every workflow and serves its thumbnail.
"""

import json
import re
import shutil
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from comfy_host import (
    DEMO,
    FILE_FOLDERS,
    LINK_NAME,
    LOADER_FOLDERS,
    ROOT,
    UI_ONLY,
    assert_success,
    messages,
    referenced_files,
    require_host,
    running_server,
    to_api,
    widget_inputs,
)
from PIL import Image

from lumina_core.app import node_table
from lumina_core.demo import DEMO_SCHEDULE
from lumina_core.model import PRESETS, NextDiT
from lumina_core.motion import motion_score
from lumina_core.sampling import SampleConfig
from lumina_core.schedule import Stage, parse_patch
from lumina_core.sizes import CUSTOM_RESOLUTION, check_video_size, resolution_size

WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
EXPECTED = {
    "lumina_video_t2v_960p_multiscale.json", "lumina_video_t2v_512p_fast.json",
    "lumina_video_t2v_single_scale_reference.json", "lumina_video_t2i_image.json",
    "lumina_video_motion_from_reference_video.json", "lumina_video_three_stage_chain.json",
    "lumina_video_demo_cpu.json", "lumina_video_demo_core_sampler.json", "lumina_video_demo_lora.json",
    "lumina_video_demo_step_cache.json", "lumina_video_demo_time_budget.json",
    "lumina_video_demo_ksampler_model_schedule.json", "lumina_video_demo_video_to_video.json",
    "lumina_video_demo_schedule_stages.json", "lumina_video_demo_ray_sampler.json",
    "lumina_video_t2v_comfy_clip_text_encoder.json", "lumina_video_demo_train_lora.json",
}
NODE_FIELDS = ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
               "widgets_values")
TITLE_HEIGHT = 30  # the title bar is drawn above a node's pos
GROUP_TITLE_HEIGHT = 40  # a group's title bar (font size 24 and its padding) at the top of its box
TEXT_ENCODER_SOURCES = (*LOADER_FOLDERS, "CLIPLoader")  # what gives a workflow its model, text encoder and VAE
NOT_RUN = {"lumina_video_t2v_comfy_clip_text_encoder.json":
           "ComfyUI's lumina2 CLIP builds the full Gemma-2-2B whatever the file holds: no tiny stand-in loads"}
"""Workflows whose reduced prompt is validated but not run on the host (the reason)."""
GEMMA_HIDDEN = 32

needs_host = pytest.mark.usefixtures("host_required")
by_name = pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def nodes_of(workflow: dict, node_type: str) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] == node_type]


def video_size(workflow: dict) -> tuple[int, int, int]:
    """(width, height, frames) a workflow generates: its Empty Latent Video's, or for video-to-video the size its
    clip is scaled to (Image Scale) and the frames it takes (Image From Batch)."""
    latents = nodes_of(workflow, "LuminaVideoMSEmptyLatentVideo")
    if latents:
        (latent,) = latents
        resolution, width, height, frames, _ = latent["widgets_values"]
        assert resolution_size(resolution, width, height) == (width, height)
        return width, height, frames
    (scale,), (pick,) = nodes_of(workflow, "ImageScale"), nodes_of(workflow, "ImageFromBatch")
    return scale["widgets_values"][1], scale["widgets_values"][2], pick["widgets_values"][1]


def pack_node_ids() -> set[str]:
    """The node ids the pack registers, read from nodes/*.py without importing ComfyUI: a literal node_id="..."
    or a lumina_core.app.node_table name's id (node_id=SAMPLER.id)."""
    ids, classes = set(), 0
    for source in sorted((ROOT / "nodes").glob("*.py")):
        text = source.read_text()
        classes += len(re.findall(r"^class \w+\(io\.ComfyNode\):", text, flags=re.MULTILINE))
        for literal, name in re.findall(r'node_id=(?:"(\w+)"|([A-Z_]+)\.id)', text):
            ids.add(literal or getattr(node_table, name).id)
    assert len(ids) == classes, f"found {len(ids)} node ids for {classes} node classes in nodes/"
    return ids


# --------------------------------------------------------------------------- static checks (no host)
def test_the_example_set_is_complete():
    assert {path.name for path in WORKFLOWS} == EXPECTED


def test_every_pack_node_is_in_an_example_workflow():
    registered = pack_node_ids()
    assert registered and all(node_id.startswith(node_table.NODE_ID_PREFIX) for node_id in registered)
    used = {node["type"] for path in WORKFLOWS for node in load(path)["nodes"]}
    assert not registered - used, f"no example workflow uses {sorted(registered - used)}"


THUMBNAIL_SIZE, THUMBNAIL_MAX_BYTES = (512, 384), 60_000


@by_name
def test_a_small_thumbnail_sits_beside_the_workflow(path):
    """ComfyUI's template browser shows a pack's example_workflows/<name>.json with the picture
    /api/workflow_templates/<pack>/<name>.jpg (scripts/screenshots.py writes them)."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"no {thumbnail.name}: run scripts/screenshots.py"
    assert thumbnail.stat().st_size <= THUMBNAIL_MAX_BYTES
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size == THUMBNAIL_SIZE


def test_every_clip_a_workflow_loads_ships_with_the_pack():
    """Load Video lists ComfyUI/input only; the notes tell the user to copy the pack's clip there."""
    for path in WORKFLOWS:
        for node in nodes_of(load(path), "LoadVideo"):
            name = node["widgets_values"][0]
            assert (WORKFLOW_DIR / name).is_file(), f"{path.name} loads {name}, which example_workflows/ lacks"
            assert name in " ".join(note["widgets_values"][0] for note in nodes_of(load(path), "Note"))


@by_name
def test_ui_format_is_complete_and_consistent(path):
    workflow = load(path)
    assert workflow["version"] == 0.4 and workflow["extra"] == {}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for node in workflow["nodes"]:
        assert all(field in node for field in NODE_FIELDS), (node["id"], set(NODE_FIELDS) - set(node))
        assert node["properties"]["Node name for S&R"] == node["type"] and node["mode"] == 0
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
    # every link is recorded at both ends, with the socket type
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert kind == nodes[origin]["outputs"][origin_slot]["type"]
        assert nodes[target]["inputs"][target_slot]["type"] in (kind, "*")
        assert nodes[origin]["order"] < nodes[target]["order"], "order is not a topological order"
    link_ids = {link[0] for link in workflow["links"]}
    assert {slot["link"] for node in nodes.values() for slot in node["inputs"]} - {None} == link_ids
    assert sorted(node["order"] for node in nodes.values()) == list(range(len(nodes)))
    # laid out without overlaps (title bars included)
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1], n["id"])
             for n in nodes.values()]
    overlaps = [(a[4], b[4]) for a in boxes for b in boxes
                if a[4] < b[4] and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert not overlaps


def box(node: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a node as drawn, its title bar included."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + width, y + height


def inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def apart(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


@by_name
def test_nodes_are_grouped_and_told_apart_by_title(path):
    """Titled groups (the frontend moves a group with the nodes in its box) whose boxes hold every node but the
    notes whole, under the group's title bar, and no part of another group's node; groups apart from each other.
    Nodes of one type that appear more than once carry titles that tell them apart."""
    workflow = load(path)
    groups = workflow["groups"]
    assert groups, "no groups"
    titles = [group["title"] for group in groups]
    assert all(titles) and len(set(titles)) == len(titles), titles
    boxes = [(x, y, x + width, y + height) for x, y, width, height in (group["bounding"] for group in groups)]
    assert all(apart(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), "groups overlap"
    for node in workflow["nodes"]:
        holders = [title for title, (x0, y0, x1, y1) in zip(titles, boxes)
                   if inside(box(node), (x0, y0 + GROUP_TITLE_HEIGHT, x1, y1))]
        touched = [title for title, group in zip(titles, boxes) if not apart(box(node), group)]
        expected = 0 if node["type"] in UI_ONLY else 1
        assert len(holders) == expected and touched == holders, (node["id"], node["type"], holders, touched)
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node.get("title"))
    for node_type, names in by_type.items():
        assert len(names) == 1 or (None not in names and len(set(names)) == len(names)), (node_type, names)


@by_name
def test_note_says_which_files_go_where(path):
    workflow = load(path)
    notes = " ".join(node["widgets_values"][0] for node in nodes_of(workflow, "Note"))
    assert "WHAT TO CHANGE" in notes
    loader_values = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] in TEXT_ENCODER_SOURCES]
    assert len(loader_values) == 3
    if set(loader_values) == {DEMO}:
        assert "no model files" in notes
    else:
        for folder in ("models/diffusion_models/", "models/text_encoders/", "models/vae/"):
            assert folder in notes, folder
        for name in loader_values:
            assert name in notes, name


LOCAL_FILES = {"lumina_video_demo_purple.safetensors"}
"""Files a workflow names that have no download: the demo LoRA ships with the pack (lumina_core/demo/loras)."""


@by_name
def test_model_files_carry_download_metadata(path):
    """Every loader that names a model file (not the demo entry, not a folder) carries ComfyUI's model metadata, so
    the frontend's missing-models dialog offers the download: properties.models holds the file's name as the widget
    has it, an https Hugging Face url ending in that name, and the loader's models folder. A workflow on real
    weights names at least one such file (the CogVideoX-2b VAE): the folders the other loaders name have no single
    download."""
    workflow, offered = load(path), 0
    for node in workflow["nodes"]:
        name = node["widgets_values"][0] if node["type"] in FILE_FOLDERS else None
        if name in (None, DEMO, *LOCAL_FILES) or not name.endswith(".safetensors"):
            continue
        models = node["properties"].get("models")
        assert models, f"node {node['id']} ({node['type']}) names {name!r} without properties.models"
        assert [model["name"] for model in models] == [name], (node["id"], models)
        assert models[0]["url"].startswith("https://huggingface.co/") and models[0]["url"].endswith("/" + name)
        assert models[0]["directory"] == FILE_FOLDERS[node["type"]], (node["id"], models[0])
        offered += 1
    loader_values = {node["widgets_values"][0] for node in workflow["nodes"] if node["type"] in LOADER_FOLDERS}
    assert offered or loader_values == {DEMO}, "a workflow on real weights offers no download"


@by_name
def test_video_size_fits_every_schedule_it_uses(path):
    """What the nodes check at queue and run time (lumina_core.sizes), checked here for the full-size (never
    executed) settings. An official resolution keeps width and height equal to it, for the reduced runs."""
    workflow = load(path)
    width, height, frames = video_size(workflow)
    schedules = [SampleConfig(stages=(Stage(*parse_patch(node["widgets_values"][2]), 0.0, 1.0),))
                 for node in nodes_of(workflow, "LuminaVideoMSStageSampler")]
    schedules += [SampleConfig(stages=(Stage(*parse_patch(node["widgets_values"][0]), 0.0, 1.0),))
                  for node in nodes_of(workflow, "LuminaVideoMSScheduleStage")]
    schedules += [SampleConfig.from_official(node["widgets_values"][0])
                  for node in nodes_of(workflow, "LuminaVideoMSScheduleJSON")]
    for node in nodes_of(workflow, "LuminaVideoMSSchedulePreset"):
        preset = node["widgets_values"][0]
        schedules.append(SampleConfig.from_official(DEMO_SCHEDULE) if preset == "demo" else SampleConfig.preset(preset))
    assert schedules
    for config in schedules:
        check_video_size(width, height, frames, config)


# --------------------------------------------------------------------------- host: tiny stand-in files
def files_by_folder() -> dict[str, set[str]]:
    """{models subfolder, "input" or "clip" (Load CLIP's text_encoders files): names} that the loaders and Load Video
    nodes of all workflows pick."""
    files = {folder: set() for folder in (*FILE_FOLDERS.values(), "input", "clip")}
    for path in WORKFLOWS:
        for node_type, name in referenced_files(load(path)):
            files["clip" if node_type == "CLIPLoader" else FILE_FOLDERS.get(node_type, "input")].add(name)
    return files


def write_tiny_files(base: Path) -> None:
    """Tiny random models under the referenced names, an empty placeholder for Load CLIP's file (validated, never
    loaded: NOT_RUN) and the pack's reference clip in the input folder."""
    from diffusers import AutoencoderKLCogVideoX
    from safetensors.torch import save_file
    from transformers import Gemma2Config, Gemma2Model

    from lumina_core import demo
    from lumina_core.checkpoint import OFFICIAL_WEIGHT_FILES, save_model
    from lumina_core.demo import build_tokenizer
    from lumina_core.vae import CONFIG_METADATA_KEY

    files, models = files_by_folder(), base / "models"
    torch.manual_seed(0)
    # the tiny parity config keeps the official patch pairs (2,1), (2,2), (4,2); 16 latent channels, Gemma width
    dit = NextDiT(replace(PRESETS["tiny"], in_channels=16, cap_feat_dim=GEMMA_HIDDEN)).eval()
    for param in dit.parameters():  # the output layers start at zero: give the velocity some signal
        if not param.abs().sum():
            torch.nn.init.normal_(param, std=0.05)
    for name in files["diffusion_models"]:
        target = models / "diffusion_models" / name
        save_model(dit, target if name.endswith(".safetensors") else target / OFFICIAL_WEIGHT_FILES[0])
    tokenizer = build_tokenizer()
    gemma = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=GEMMA_HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, pad_token_id=0,
        eos_token_id=1, bos_token_id=2, attn_implementation="eager")).eval()
    for name in files["text_encoders"]:
        gemma.save_pretrained(models / "text_encoders" / name)
        tokenizer.save_pretrained(models / "text_encoders" / name)
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                                 latent_channels=16, sample_height=96, sample_width=80).eval()
    for name in files["vae"]:
        if name.endswith(".safetensors"):  # a single file carries its config as metadata
            (models / "vae").mkdir(parents=True, exist_ok=True)
            save_file(vae.state_dict(), models / "vae" / name, metadata={CONFIG_METADATA_KEY: vae.to_json_string()})
        else:
            vae.save_pretrained(models / "vae" / name)
    demo_weights = demo.load_demo().transformer.state_dict()  # LoRA examples patch the built-in demo model
    for name in files["loras"]:
        lora = {}
        for key, weight in demo_weights.items():
            if key.endswith(".weight") and weight.dim() == 2 and ".attention.w" in key:
                path = "diffusion_model." + key[: -len(".weight")]
                lora[path + ".lora_up.weight"] = torch.randn(weight.shape[0], 2) * 0.05
                lora[path + ".lora_down.weight"] = torch.randn(2, weight.shape[1]) * 0.05
        (models / "loras").mkdir(parents=True, exist_ok=True)
        save_file(lora, models / "loras" / name)
    for name in files["clip"]:
        (models / "text_encoders").mkdir(parents=True, exist_ok=True)
        (models / "text_encoders" / name).touch()
    (base / "input").mkdir(exist_ok=True)
    for name in files["input"]:  # the clips the pack ships (test_every_clip_a_workflow_loads_ships_with_the_pack)
        shutil.copy(WORKFLOW_DIR / name, base / "input" / name)


@pytest.fixture
def host_required():
    require_host()


@pytest.fixture(scope="module")
def server():
    require_host()
    with running_server(prepare=write_tiny_files) as host:
        yield host


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@needs_host
@by_name
def test_every_node_type_exists_and_its_values_fit(object_info, path):
    for node in load(path)["nodes"]:
        if node["type"] in UI_ONLY:
            continue
        assert node["type"] in object_info, f"node {node['id']}: unknown type {node['type']}"
        info = object_info[node["type"]]
        widgets = widget_inputs(info)
        expected = len(widgets) + sum(has_control for _, has_control in widgets)
        specs = [spec for section in ("required", "optional") for spec in info["input"].get(section, {}).values()]
        uploads = any(len(spec) > 1 and (spec[1].get("video_upload") or spec[1].get("image_upload")) for spec in specs)
        assert len(node["widgets_values"]) in ({expected, expected + 1} if uploads else {expected}), node["id"]
        sockets = {slot["name"] for slot in node["inputs"]}
        declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert sockets <= set(declared), (node["id"], sockets - set(declared))
        assert [output["type"] for output in node["outputs"]] == info["output"], node["id"]


@pytest.fixture(scope="module")
def validation_answers(server, object_info):
    """/prompt answers for the unmodified (full-size) prompts. Queuing one runs it, and a 96-frame 960p run
    takes hours on a CPU, so they are queued behind a long blocker run (the demo workflow at 1000 steps),
    removed from the queue before they start, and the blocker is interrupted."""
    blocker = to_api(load(WORKFLOW_DIR / "lumina_video_demo_cpu.json"), object_info)
    for node in blocker.values():
        if node["class_type"] == "LuminaVideoMSSchedulePreset":
            node["inputs"]["steps"] = 1000
    blocker_id = server.queue(blocker)
    deadline = time.monotonic() + 60
    while not any(item[1] == blocker_id for item in server.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the blocker prompt never started"
        time.sleep(0.1)
    answers = {}
    try:
        for path in WORKFLOWS:
            answers[path.name] = server.post_answer("/prompt", {"prompt": to_api(load(path), object_info),
                                                                "client_id": "lumina-video-tests"})
        queue = server.get("/queue")
        assert any(item[1] == blocker_id for item in queue["queue_running"]), "the blocker ended too early"
    finally:
        server.post("/queue", {"clear": True})  # drop the full-size prompts before they start
        assert not server.get("/queue")["queue_pending"]
        server.post("/interrupt", {"prompt_id": blocker_id})
        server.wait(blocker_id)
    return answers


@needs_host
@by_name
def test_unmodified_prompt_passes_validation(validation_answers, path):
    answer = validation_answers[path.name]
    assert answer["status"] == 200, json.dumps(answer["body"], indent=1)[:3000]
    assert answer["body"]["node_errors"] == {}, answer["body"]["node_errors"]


def reduced(prompt: dict) -> dict:
    """The prompt at a CPU-test size: at most 64x64 pixels and 16 frames (1 stays 1), on the tiny stand-in
    models. Steps, schedules, seeds and every other value stay as the workflow has them."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "LuminaVideoMSEmptyLatentVideo":
            inputs.update(resolution=CUSTOM_RESOLUTION, width=min(inputs["width"], 64),
                          height=min(inputs["height"], 64), frames=min(inputs["frames"], 16))
        elif node["class_type"] == "ImageScale":
            inputs.update(width=min(inputs["width"], 64), height=min(inputs["height"], 64))
        elif node["class_type"] == "ImageFromBatch":
            inputs.update(length=min(inputs["length"], 16))
    return prompt


CACHE_PAIR = ("lumina_video_t2v_960p_multiscale.json", "lumina_video_t2v_single_scale_reference.json")
"""Two workflows with the same loaders, queued first and back to back: the second takes its models from the
cache (ComfyUI keeps a node's output for the next prompt only)."""


@pytest.fixture(scope="module")
def runs(server, object_info):
    """name -> /history entry of each workflow's reduced prompt, run once, back to back, CACHE_PAIR first."""
    order = [*CACHE_PAIR, *(path.name for path in WORKFLOWS if path.name not in (*CACHE_PAIR, *NOT_RUN))]
    results = {}
    for name in order:
        prompt = reduced(to_api(load(WORKFLOW_DIR / name), object_info))
        results[name] = server.wait(server.queue(prompt), timeout=600)
    return results


def output_frames(server, images: list[dict]) -> list[np.ndarray]:
    return [np.asarray(Image.open(server.base / image["type"] / image["subfolder"] / image["filename"]))
            for image in images]


@needs_host
@by_name
def test_reduced_prompt_runs_to_frames_and_a_video(server, runs, path):
    if path.name in NOT_RUN:
        pytest.skip(NOT_RUN[path.name])
    entry = runs[path.name]
    assert_success(entry)
    workflow = load(path)
    width, _, frames = video_size(workflow)
    frames, side = min(frames, 16), min(width, 64)
    decoded_ids = {link[3] for link in workflow["links"]  # what the decoded frames feed (not an input preview)
                   if link[1] in {node["id"] for node in nodes_of(workflow, "LuminaVideoMSVAEDecode")}}
    outputs = {node["type"]: entry["outputs"].get(str(node["id"]), {}) for node in workflow["nodes"]
               if node["type"] not in ("PreviewImage", "SaveImage") or node["id"] in decoded_ids}
    if frames == 1:
        (image,) = output_frames(server, outputs["SaveImage"]["images"])
        assert image.shape == (side, side, 3)
        return
    (video,) = outputs["SaveVideo"]["images"]
    with av.open(str(server.base / "output" / video["subfolder"] / video["filename"])) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == frames and decoded[0].shape == (side, side, 3)
    previews = output_frames(server, outputs["PreviewImage"]["images"])
    assert len(previews) == frames and previews[0].shape == (side, side, 3)
    for node in nodes_of(workflow, "LoadVideo") if nodes_of(workflow, "LuminaVideoMSMotionScoreFromVideo") else ():
        expected = motion_score(server.base / "input" / node["widgets_values"][0])
        assert expected > 1.0
        assert float(outputs["PreviewAny"]["text"][0]) == pytest.approx(expected, rel=1e-3)


def preview_frames(server, runs, name: str) -> np.ndarray:
    workflow = load(WORKFLOW_DIR / name)
    (preview,) = nodes_of(workflow, "PreviewImage")
    return np.stack(output_frames(server, runs[name]["outputs"][str(preview["id"])]["images"]))


@needs_host
def test_three_stage_chain_equals_the_one_node_preset_run(server, runs):
    for name in runs:
        assert_success(runs[name])
    preset = preview_frames(server, runs, "lumina_video_t2v_960p_multiscale.json")
    chain = preview_frames(server, runs, "lumina_video_three_stage_chain.json")
    single_scale = preview_frames(server, runs, "lumina_video_t2v_single_scale_reference.json")
    np.testing.assert_array_equal(chain, preset)
    assert np.abs(single_scale.astype(int) - preset.astype(int)).max() > 0, "the schedule made no difference"


@needs_host
def test_loaders_are_cached_across_the_workflows(runs):
    """Back-to-back runs of workflows that load the same files reuse the loaded models."""
    entry = runs[CACHE_PAIR[1]]
    cached = set(messages(entry)["execution_cached"]["nodes"])
    workflow = load(WORKFLOW_DIR / CACHE_PAIR[1])
    loader_ids = {str(node["id"]) for node in workflow["nodes"] if node["type"] in LOADER_FOLDERS}
    assert loader_ids <= cached, cached


@needs_host
def test_the_template_browser_lists_every_workflow_with_its_thumbnail(server):
    templates = server.get("/workflow_templates")[LINK_NAME]
    assert sorted(templates) == sorted(path.stem for path in WORKFLOWS)
    for name in templates:
        url = f"{server.url}/api/workflow_templates/{LINK_NAME}/{name}.jpg"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.headers["Content-Type"] == "image/jpeg" and answer.read(3) == b"\xff\xd8\xff"


@needs_host
def test_every_node_the_host_registers_for_the_pack_is_in_an_example_workflow(object_info):
    registered = {name for name in object_info if name.startswith(node_table.NODE_ID_PREFIX)}
    used = {node["type"] for path in WORKFLOWS for node in load(path)["nodes"]}
    assert registered == pack_node_ids() and not registered - used, sorted(registered - used)
