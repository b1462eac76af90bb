"""Compute on demand in the nodes, without a server: Schedule for Time Budget (calibrates the wired model once,
fits the base schedule or refuses with the minimum), the plan route's predicted seconds, and the Sampler's draft
(sent once at the end of the first stage, the final latent unchanged)."""

import base64
import io
from dataclasses import replace

from comfy_pack import demo_captions, demo_model, run  # boots ComfyUI in-process: before any comfy import

# isort: split
import pytest
import torch
from lumina_video_pack.lumina_core import cost
from lumina_video_pack.lumina_core.budget import BudgetTooSmall
from lumina_video_pack.lumina_core.cost import CostKey, architecture_hash, predicted_seconds
from lumina_video_pack.lumina_core.draft import DRAFT_SCALE, draft_call
from lumina_video_pack.lumina_core.limits import MIN_BUDGET_SECONDS
from lumina_video_pack.lumina_core.sampling import SampleConfig
from lumina_video_pack.lumina_core.sizes import CUSTOM_RESOLUTION
from lumina_video_pack.nodes import sampler as sampler_module
from lumina_video_pack.nodes.budget import DEFAULT_CAPTION_TOKENS, LuminaVideoMSScheduleForTimeBudget
from lumina_video_pack.nodes.loaders import (
    LuminaVideoMSVAELoader,
)
from lumina_video_pack.nodes.model_files import DEMO
from lumina_video_pack.nodes.native import lumina_video_model
from lumina_video_pack.nodes.routes import plan
from lumina_video_pack.nodes.sampler import LuminaVideoMSSampler
from lumina_video_pack.nodes.schedule import preset_config
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo
from PIL import Image

SIZE = {"resolution": CUSTOM_RESOLUTION, "width": 32, "height": 32, "frames": 8, "batch_size": 1}
BASE = preset_config("demo", 12)


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def captions():
    return demo_captions("a red circle moving left", "")


@pytest.fixture(scope="module")
def latent():
    return run(LuminaVideoMSEmptyLatentVideo, *SIZE.values())[0]


def budget(model, latent, seconds, positive=None):
    return run(LuminaVideoMSScheduleForTimeBudget, model, latent, BASE, seconds, positive)


def test_the_node_calibrates_once_then_fits_the_base_into_the_budget(model, latent, captions, monkeypatch):
    generous, summary = budget(model, latent, 1e6, captions[0])
    assert generous == BASE and "nothing traded" in summary and "calibrated now" in summary
    [entry] = cost.load_calibrations()
    length = captions[0][0][0].shape[1]
    assert entry.key.latent == tuple(latent["samples"].shape) and entry.key.caption_tokens == length
    assert set(entry.guided) == {"2x2", "1x2", "1x1"}

    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: pytest.fail("calibrated again for a cached key"))
    half = predicted_seconds(BASE, entry) / 2
    fitted, summary = budget(model, latent, half, captions[0])
    assert "cached calibration" in summary and "decoding" in summary
    assert fitted.steps < BASE.steps and fitted.stages == BASE.stages and predicted_seconds(fitted, entry) <= half
    with pytest.raises(BudgetTooSmall, match=r"raise the budget to at least"):
        budget(model, latent, 1e-9, captions[0])


def test_without_a_prompt_the_node_calibrates_at_the_default_caption_length(model, latent):
    budget(model, latent, 1e6)
    [entry] = cost.load_calibrations()
    assert entry.key.caption_tokens == DEFAULT_CAPTION_TOKENS


def test_the_plan_route_predicts_seconds_once_a_calibration_exists(model, latent):
    request = {"preset": "demo", "steps": 12, "cost": {"model_name": DEMO, "latent": SIZE}}
    before = plan(request)
    assert "seconds" not in before and all("seconds" not in stage for stage in before["stages"])
    budget(model, latent, 1e6)
    [entry] = cost.load_calibrations()
    assert entry.key.model == architecture_hash(lumina_video_model(model).config)  # the loader entry's architecture
    after = plan(request)
    without_seconds = {key: value for key, value in after.items() if key not in ("seconds", "calibration")}
    without_seconds["stages"] = [{key: value for key, value in stage.items() if key != "seconds"}
                                 for stage in after["stages"]]
    assert without_seconds == before and entry.key.text == after["calibration"]
    expected = cost.predict(BASE, entry)
    assert [stage["seconds"] for stage in after["stages"]] == pytest.approx([s.seconds for s in expected])
    assert after["seconds"] == pytest.approx(predicted_seconds(BASE, entry))
    other_size = {**request, "cost": {"model_name": DEMO, "latent": {**SIZE, "width": 64}}}
    assert "seconds" not in plan(other_size)


def test_the_plan_route_shows_the_budget_node_s_schedule(model, latent):
    context = {"model_name": DEMO, "latent": SIZE}
    base_request = {"preset": "demo", "steps": 12}
    waiting = plan({"budget": {"seconds": 1.0, "base": base_request}, "cost": context})
    assert waiting["total_calls"] == len(BASE.model_calls()) and "once this model and size are calibrated" in \
        waiting["budget"]
    budget(model, latent, 1e6)
    [entry] = cost.load_calibrations()
    half = predicted_seconds(BASE, entry) / 2
    fitted, summary = budget(model, latent, half)
    shown = plan({"budget": {"seconds": half, "base": base_request}, "cost": context})
    assert shown["total_calls"] == len(fitted.model_calls()) and shown["budget"] == summary.split("\nPrediction:")[0]
    assert shown["budget_seconds"] == half and shown["seconds"] <= half
    slow = replace(entry, guided=dict.fromkeys(entry.guided, 1.0), unguided=dict.fromkeys(entry.unguided, 1.0))
    cost.store_calibration(slow)  # so that the smallest budget the widget allows is below the cheapest schedule
    with pytest.raises(BudgetTooSmall, match="raise the budget to at least"):  # the page shows it as the error
        plan({"budget": {"seconds": MIN_BUDGET_SECONDS, "base": base_request}, "cost": context})


def test_the_sampler_sends_one_draft_at_the_end_of_the_first_stage_and_the_same_latent(model, latent, captions,
                                                                                       monkeypatch):
    positive, negative = captions
    vae = run(LuminaVideoMSVAELoader, DEMO, "default")[0]
    sent, steps = [], []
    monkeypatch.setattr(sampler_module, "send_draft", lambda data: sent.append((data, len(steps))))
    monkeypatch.setattr("comfy.utils.PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        steps.append(value))
    plain = run(LuminaVideoMSSampler, model, positive, negative, latent, BASE, 5)[0]["samples"]
    assert not sent
    steps.clear()
    drafted = run(LuminaVideoMSSampler, model, positive, negative, latent, BASE, 5, vae)[0]["samples"]
    assert torch.equal(plain, drafted)  # a draft only reads the sampler's tensors: an exact contract
    [(data, shown_after)] = sent
    assert shown_after == draft_call(BASE)  # before the progress of its own call, with the fine stages to come
    assert shown_after < len(BASE.model_calls()) - 1
    assert data["t"] < BASE.stages[0].t_end and data["seconds"] > 0
    header, encoded = data["image"].split(",", 1)
    assert header == "data:image/webp;base64"
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        expected = (SIZE["width"] // DRAFT_SCALE, SIZE["height"] // DRAFT_SCALE)
        assert image.size == (data["width"], data["height"]) == expected
        durations = []
        for index in range(image.n_frames):  # equal neighbouring frames are stored once, for their summed time
            image.seek(index)
            image.load()  # the frame's duration is read with its pixels
            durations.append(image.info["duration"])
    assert data["frames"] == SIZE["frames"] and sum(durations) == SIZE["frames"] * (1000 // sampler_module.DRAFT_FPS)


def test_a_one_stage_schedule_sends_no_draft(model, latent, captions, monkeypatch):
    positive, negative = captions
    vae = run(LuminaVideoMSVAELoader, DEMO, "default")[0]
    sent = []
    monkeypatch.setattr(sampler_module, "send_draft", sent.append)
    single = SampleConfig.from_official({"P": "1x2", "step": 3, "ts": 3.0, "cfg": 4.0})
    run(LuminaVideoMSSampler, model, positive, negative, latent, single, 5, vae)
    assert not sent


def test_cost_key_of_the_native_model_names_its_device(model, latent):
    key = CostKey.of(lumina_video_model(model), latent["samples"].shape, 8, model.load_device)
    assert key.device.startswith("cpu") and key.latent == tuple(latent["samples"].shape)
