"""The pack inside a real ComfyUI server (COMFYUI_PATH): it imports cleanly, /object_info lists every
node, a prompt built from the built-in demo entries runs to saved files, a second run reuses the
loaded models, and an interrupt stops a long sampling run while the server keeps serving."""

import importlib.util
import re
import time

import av
import numpy as np
import pytest
from comfy_host import (
    DEMO,
    IN_CI,
    LINK_NAME,
    RUN_TIMEOUT_S,
    assert_success,
    demo_inputs,
    messages,
    require_host,
    running_server,
)

from lumina_core import demo
from lumina_core.app.node_table import NODE_ID_PREFIX

require_host()

NODE_IDS = {
    "LuminaVideoMSModelLoader", "LuminaVideoMSTextEncoderLoader", "LuminaVideoMSVAELoader", "LuminaVideoMSTextEncode",
    "LuminaVideoMSMotionScore", "LuminaVideoMSMotionScoreFromVideo", "LuminaVideoMSSchedulePreset",
    "LuminaVideoMSScheduleJSON", "LuminaVideoMSScheduleStage", "LuminaVideoMSEmptyLatentVideo", "LuminaVideoMSSampler",
    "LuminaVideoMSStageSampler", "LuminaVideoMSVAEDecode", "LuminaVideoMSMotionConditioning",
    "LuminaVideoMSModelSchedule", "LuminaVideoMSSigmas", "LuminaVideoMSGuider", "LuminaVideoMSVAEEncode",
    "LuminaVideoMSTextEncodeCLIP", "LuminaVideoMSStepCache", "LuminaVideoMSScheduleForTimeBudget",
    "LuminaVideoMSRaySampler", "LuminaVideoMSTrainLoRA",
}


@pytest.fixture(scope="module")
def server():
    with running_server() as host:
        yield host


def demo_prompt(seed: int, steps: int = 4, size: int = 32, frames: int = 8) -> dict:
    """Loaders (demo entries) -> text encode -> empty latent -> whole sampler -> decode -> Save Video + Save Image."""
    return {
        **demo_inputs(size, frames),
        "6": {"class_type": "LuminaVideoMSSchedulePreset", "inputs": {"preset": "demo", "steps": steps}},
        "7": {"class_type": "LuminaVideoMSSampler",
              "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["4", 1], "latent": ["5", 0],
                         "schedule": ["6", 0], "seed": seed}},
        "8": {"class_type": "LuminaVideoMSVAEDecode",
              "inputs": {"vae": ["3", 0], "latent": ["7", 0], "tiled": "auto", "fps": 8.0}},
        "9": {"class_type": "SaveVideo",
              "inputs": {"video": ["8", 1], "filename_prefix": "lumina/video", "format": "auto", "codec": "auto"}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "lumina/frame"}},
    }


def stage_prompt(seed: int) -> dict:
    """The same loaders and caption, then two chained stage samplers (motion from a Motion Score node)."""
    prompt = {key: node for key, node in demo_prompt(seed).items() if key in {"1", "2", "3", "4", "5", "8", "10"}}
    grid = {"steps": 4, "shift": 3.0, "cfg": 4.0, "neg_motion": 2.0, "renorm": -1.0}
    prompt["11"] = {"class_type": "LuminaVideoMSMotionScore", "inputs": {"value": 4.0}}
    prompt["12"] = {"class_type": "LuminaVideoMSStageSampler",
                    "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["4", 1], "latent": ["5", 0],
                               "seed": seed, "patch": "2x2", "t_start": 0.0, "t_end": 0.3, "motion": ["11", 0], **grid}}
    prompt["13"] = {"class_type": "LuminaVideoMSStageSampler",
                    "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["4", 1], "latent": ["12", 0],
                               "seed": seed, "patch": "1x2", "t_start": 0.3, "t_end": 1.0, "motion": ["11", 0], **grid}}
    prompt["8"]["inputs"]["latent"] = ["13", 0]
    return prompt


def test_pack_imports_without_errors(server):
    lines = server.log.read_text(errors="replace").splitlines()
    ours = [line for line in lines if LINK_NAME in line]
    assert not [line for line in ours if "IMPORT FAILED" in line or "Cannot import" in line], "\n".join(ours)
    assert any("seconds:" in line for line in ours), "the pack is missing from the custom-node import times"


def test_object_info_lists_every_node_with_inputs(server):
    info = server.get("/object_info")
    ours = {name for name in info if name.startswith(NODE_ID_PREFIX)}
    assert ours == NODE_IDS
    for name in NODE_IDS:
        node = info[name]
        assert node["category"].startswith("Lumina-Video/") and node["python_module"] == f"custom_nodes.{LINK_NAME}"
        inputs = {**node["input"]["required"], **node["input"].get("optional", {})}
        assert inputs and all(spec[1].get("tooltip") for spec in inputs.values()), name
    assert info["LuminaVideoMSModelLoader"]["input"]["required"]["model_name"][1]["options"][0] == DEMO
    assert info["LuminaVideoMSVAEDecode"]["output"] == ["IMAGE", "VIDEO"]


def test_plan_route_for_the_frontend_timeline(server):
    answer = server.post("/lumina_video/plan", {"preset": "f24F96R960-MultiScale", "steps": None})
    assert [stage["calls"] for stage in answer["stages"]] == [30, 24, 15] and answer["total_calls"] == 69
    refused = server.post("/lumina_video/plan", {"stages": [{"patch": "1x2", "t_start": 0.5, "t_end": 0.2}],
                                                 "steps": 7, "shift": 3.0})
    assert "t range [0.5, 0.2)" in refused["error"]  # a verdict the page shows, not a failed request
    malformed = server.post_answer("/lumina_video/plan", {"stages": [{"patch": "1x2"}], "steps": 7, "shift": 3.0})
    assert malformed["status"] == 400 and "lacks" in malformed["body"]["error"]


def test_model_patch_and_latent_size_routes_for_checks_in_the_page(server):
    demo_pairs = [f"{f}x{p}" for p, f in demo.TRANSFORMER_CONFIG.patch_pairs]
    assert server.post("/lumina_video/model_patches", {"model_name": DEMO}) == {"patches": demo_pairs}
    missing = server.post("/lumina_video/model_patches", {"model_name": "absent.safetensors"})
    assert "'absent.safetensors' is not a file or model folder" in missing["error"]
    assert server.post("/lumina_video/latent_size", {"resolution": "custom", "width": 1248, "height": 704,
                                                     "frames": 96}) == {"latent": [24, 88, 156]}
    assert server.post("/lumina_video/latent_size", {"resolution": "704x1248 (960p, ~9:16)", "width": 64,
                                                     "height": 64, "frames": 96}) == {"latent": [24, 156, 88]}
    refused = server.post("/lumina_video/latent_size", {"resolution": "custom", "width": 64, "height": 64,
                                                        "frames": 50})
    assert "frame count 50 is not valid" in refused["error"] and "use 49 or 56" in refused["error"]


def test_demo_prompt_runs_to_saved_video_and_frames(server):
    entry = server.wait(server.queue(demo_prompt(seed=1)))
    assert_success(entry)
    video = entry["outputs"]["9"]["images"][0]
    path = server.base / "output" / video["subfolder"] / video["filename"]
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    images = entry["outputs"]["10"]["images"]
    assert len(images) == 8 and all((server.base / "output" / i["subfolder"] / i["filename"]).is_file() for i in images)


def test_second_run_reuses_the_loaded_models(server):
    server.wait(server.queue(demo_prompt(seed=1)))  # loaders cached from here on (no-op if already run)
    entry = server.wait(server.queue(stage_prompt(seed=2)))
    assert_success(entry)
    cached = set(messages(entry)["execution_cached"]["nodes"])
    assert {"1", "2", "3", "4", "5"} <= cached, cached
    assert {"12", "13", "8"}.isdisjoint(cached)
    assert len(entry["outputs"]["10"]["images"]) == 8


def test_interrupt_stops_a_long_run_and_the_server_keeps_serving(server):
    server.wait(server.queue(demo_prompt(seed=1)))  # loaders and caption cached: the long run samples at once
    prompt_id = server.queue(demo_prompt(seed=3, steps=1000, size=64, frames=16))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(item[1] == prompt_id for item in server.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the long prompt never started"
        time.sleep(0.1)
    time.sleep(2.0)  # the sampler is stepping by now
    server.post("/interrupt", {"prompt_id": prompt_id})
    entry = server.wait(prompt_id, timeout=120)  # generous: a bound on a hang, not a speed check
    assert entry["status"]["status_str"] == "error"
    assert messages(entry)["execution_interrupted"]["node_type"] == "LuminaVideoMSSampler"
    assert_success(server.wait(server.queue(demo_prompt(seed=4))))


def ray_prompt(seed: int, **sizes) -> dict:
    """demo_prompt with its sampler on 2 Ray ranks (CPU)."""
    prompt = demo_prompt(seed, **sizes)
    prompt["7"] = {"class_type": "LuminaVideoMSRaySampler",
                   "inputs": {**prompt["7"]["inputs"], "ranks": 2, "parallel": "auto", "device": "cpu"}}
    return prompt


def saved_frames(server, entry) -> np.ndarray:
    images = entry["outputs"]["10"]["images"]
    with av.open(str(server.base / "output" / images[0]["subfolder"] / images[0]["filename"])) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)


@pytest.fixture
def ray_installed():
    if importlib.util.find_spec("ray") is None:
        if IN_CI:
            pytest.fail("CI is set but ray is not installed (requirements-dev.txt)", pytrace=False)
        pytest.skip("ray is not installed (pip install -r requirements-dev.txt)")


def test_ray_sampler_runs_in_the_server_and_cancel_stops_it(server, ray_installed):
    """Ray started from ComfyUI's executor thread, its workers import the pack's core: the Sampler's frames (the
    latents agree to ~1e-6, so an 8-bit pixel may round the other way); then Cancel during a long run."""
    expected = server.wait(server.queue(demo_prompt(seed=5)))
    entry = server.wait(server.queue(ray_prompt(seed=5)))
    assert_success(entry)
    assert np.abs(saved_frames(server, entry) - saved_frames(server, expected)).max() <= 1
    prompt_id = server.queue(ray_prompt(seed=6, steps=1000))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(item[1] == prompt_id for item in server.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the long prompt never started"
        time.sleep(0.1)
    time.sleep(2.0)  # the ranks are stepping by now
    server.post("/interrupt", {"prompt_id": prompt_id})
    entry = server.wait(prompt_id, timeout=120)  # generous: a bound on a hang, not a speed check
    assert entry["status"]["status_str"] == "error"
    assert messages(entry)["execution_interrupted"]["node_type"] == "LuminaVideoMSRaySampler"
    assert_success(server.wait(server.queue(ray_prompt(seed=7))))  # the ranks still serve


def test_missing_model_files_are_named_with_their_folder_on_queue(server):
    """A graph shared without its model files is refused on Queue with the file, its folder and the fix."""
    prompt = demo_prompt(seed=3)
    prompt["1"]["inputs"]["model_name"] = "Lumina-Video-f24R960"
    prompt["3"]["inputs"]["vae_name"] = "CogVideoX-2b/vae"
    answer = server.post_answer("/prompt", {"prompt": prompt, "client_id": "lumina-video-tests"})
    assert answer["status"] == 400
    errors = {node: [e["details"] for e in info["errors"]] for node, info in answer["body"]["node_errors"].items()}
    expected = "'Lumina-Video-f24R960' is not installed: put it into ComfyUI's models/diffusion_models folder"
    assert expected in errors["1"][0]
    assert "'CogVideoX-2b/vae' is not installed: put it into ComfyUI's models/vae folder" in errors["3"][0]
    assert DEMO in errors["1"][0]
    assert "2" not in errors  # the demo text encoder is there


@pytest.mark.parametrize("field, value, message", [
    ("width", 70, "width 70 is not a positive multiple of 8 pixels.*use 64 or 72"),
    ("frames", 50, "frame count 50 is not valid.*use 49 or 56"),
])
def test_bad_video_sizes_are_refused_on_queue_with_the_nearest_valid_values(server, field, value, message):
    prompt = demo_prompt(seed=4)
    prompt["5"]["inputs"][field] = value
    answer = server.post_answer("/prompt", {"prompt": prompt, "client_id": "lumina-video-tests"})
    assert answer["status"] == 400
    details = " ".join(e["details"] for e in answer["body"]["node_errors"]["5"]["errors"])
    assert re.search(message, details), details
