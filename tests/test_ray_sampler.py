"""The Lumina-Video Sampler (Ray) node in-process (COMFYUI_PATH) on 2 CPU ranks: the Sampler's latent for the demo
model, with and without weight patches (LoRA), progress and previews, ComfyUI's Cancel (also while the ranks start),
the idle release setting, clear refusals, and that neither the pack nor any other node imports Ray. One local Ray
session for the module."""

import os
import subprocess
import sys
from pathlib import Path

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process, imports the pack

# isort: split
import comfy.model_management
import comfy.utils
import pytest
import torch
from comfy.cli_args import LatentPreviewMethod
from comfy_host import COMFYUI_PATH, IN_CI
from conftest import relative_error
from lumina_video_pack.lumina_core.parallel import ray_ranks
from lumina_video_pack.nodes.ray_sampler import LuminaVideoMSRaySampler
from lumina_video_pack.nodes.sampler import STAGE_END, LuminaVideoMSSampler
from lumina_video_pack.nodes.schedule import LuminaVideoMSSchedulePreset
from lumina_video_pack.nodes.step_cache import LuminaVideoMSStepCache
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo

try:
    import ray
except ImportError:
    if IN_CI:
        raise
    pytest.skip("ray is not installed (pip install -r requirements-dev.txt)", allow_module_level=True)

PARALLEL_TOL = 1e-5  # 2 ranks vs one process: other summation orders where rows or tokens are split (~1e-7)
RANKS = {"ranks": 2, "parallel": "auto", "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    ray_ranks.shutdown_pool()
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def captions():
    return demo_captions("a red circle moving left", "static grey background")


@pytest.fixture(scope="module")
def latent():
    return run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 8, 1)[0]  # 2 latent frames of 4 x 4


@pytest.fixture(scope="module")
def schedule():
    return run(LuminaVideoMSSchedulePreset, "demo", 6)[0]  # 3 patch pairs, cfg truncated at t = 0.8


def test_equals_the_sampler_and_keeps_its_ranks(model, captions, latent, schedule):
    positive, negative = captions
    assert len({stage.patch for stage in schedule.stages}) == 3 and schedule.cfg[-1][1] == 0.0
    expected = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 5)[0]
    out = run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 5, **RANKS)[0]
    assert relative_error(out["samples"], expected["samples"]) < PARALLEL_TOL
    assert {k: v for k, v in out[STAGE_END].items() if k != "latent"} == \
        {k: v for k, v in expected[STAGE_END].items() if k != "latent"}
    ids = ray_ranks.rank_pool(2, "cpu").actor_ids
    again = run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 5, **RANKS)[0]
    assert ray_ranks.rank_pool(2, "cpu").actor_ids == ids
    assert torch.equal(again["samples"], out["samples"])


def test_weight_patches_reach_the_ranks(model, captions, latent, schedule):
    positive, negative = captions
    generator = torch.Generator().manual_seed(0)
    patched = model.clone()
    weights = model.model.diffusion_model.state_dict()
    keys = [key for key in weights if ".attention.w" in key and key.endswith(".weight")]
    patched.add_patches({"diffusion_model." + key: (torch.randn(weights[key].shape, generator=generator) * 0.05,)
                         for key in keys}, 1.0)
    assert patched.patches
    plain = run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 2, **RANKS)[0]["samples"]
    expected = run(LuminaVideoMSSampler, patched, positive, negative, latent, schedule, 2)[0]["samples"]
    out = run(LuminaVideoMSRaySampler, patched, positive, negative, latent, schedule, 2, **RANKS)[0]["samples"]
    comfy.model_management.unload_all_models()
    assert relative_error(out, expected) < PARALLEL_TOL
    assert relative_error(out, plain) > 1e-3  # the patch changed the result


def test_progress_and_previews(model, captions, latent, schedule, monkeypatch):
    positive, negative = captions
    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: updates.append((value, total, preview)))
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, **RANKS)
    total = len(schedule.model_calls())
    assert [(value, count) for value, count, _ in updates] == [(i, total) for i in range(1, total + 1)]
    kind, image, _ = updates[-1][2]
    assert kind == "JPEG" and image.size == (8, 4) and image.mode == "RGB"  # both latent frames (4 x 4) in a row


def test_cancel_raises_comfyuis_interrupt_and_keeps_the_ranks(model, captions, latent, schedule, monkeypatch):
    positive, negative = captions
    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: updates.append(value))
    run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, **RANKS)
    ids, updates[:] = ray_ranks.rank_pool(2, "cpu").actor_ids, []
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, **RANKS)
        assert not comfy.model_management.processing_interrupted()  # consumed, as ComfyUI's own check does
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert updates == []  # a pending cancel stops the ranks before their first step
    assert ray_ranks.rank_pool(2, "cpu").actor_ids == ids


def test_refusals_name_the_value_and_the_fix(model, captions, latent, schedule, monkeypatch):
    positive, negative = captions
    with pytest.raises(ValueError, match="ulysses=4 does not divide the model's 6 query heads"):
        run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, 4, "ulysses=4", "cpu")
    with pytest.raises(ValueError, match=r"'cfg=2,ring=2' needs 4 ranks \(cfg x ulysses x ring\) but ranks is 2"):
        run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, 2, "cfg=2,ring=2", "cpu")
    with pytest.raises(ValueError, match="device 'tpu' is unknown; use one of cpu, cuda"):
        run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, 2, "auto", "tpu")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cores = ray_ranks.cpu_cores()
    with pytest.raises(ValueError, match=f"ranks {cores + 1} on cpu is more than the {cores} CPU cores"):
        run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, cores + 1, "auto", "cpu")
    cached = run(LuminaVideoMSStepCache, model, 0.2, 0.0, 1.0)[0]
    with pytest.raises(ValueError, match="Step Cache, which the Ray sampler does not run"):
        run(LuminaVideoMSRaySampler, cached, positive, negative, latent, schedule, 0, **RANKS)
    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed
    with pytest.raises(ImportError, match="`pip install ray`"):
        run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, **RANKS)


def test_cancel_while_the_ranks_start_and_the_idle_release_setting(model, captions, latent, schedule):
    positive, negative = captions
    pool = ray_ranks.rank_pool(2, "cpu")
    pool.release()  # as after idle_release_s without a run: the next run starts the actors
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(LuminaVideoMSRaySampler, model, positive, negative, latent, schedule, 0, **RANKS, idle_release_s=42)
        assert not comfy.model_management.processing_interrupted()
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert pool.alive and not pool.started and pool.idle_s == 42


def test_the_pack_and_its_other_nodes_do_not_import_ray():
    tests = Path(__file__).parent
    code = ("import asyncio, sys\n"
            "from comfy_pack import pack\n"
            "from lumina_video_pack.nodes import NODES\n"
            "asyncio.run(pack.comfy_entrypoint())\n"
            "for node in NODES:\n    node.GET_SCHEMA()\n"
            "print(len(NODES), 'ray' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=tests, env={**os.environ, "COMFYUI_PATH": COMFYUI_PATH,
                                            "PYTHONPATH": f"{tests}:{tests.parent}"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["23", "False"]
