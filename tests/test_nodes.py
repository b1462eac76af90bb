"""The ComfyUI nodes without a server: schemas, schedules, samplers (whole vs stage chain), latents,
decode, motion, loaders, progress and cancel. The nodes import ComfyUI, so this needs COMFYUI_PATH;
the pack is imported as a package, the way ComfyUI loads it (relative imports)."""

import asyncio
import json

from comfy_pack import demo_model, pack, run  # boots ComfyUI in-process: before any comfy import

# isort: split
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import pytest
import torch
from comfy.cli_args import LatentPreviewMethod
from comfy_api.latest import io
from comfy_extras.nodes_video import SaveVideo
from comfy_host import widget_inputs
from lumina_video_pack.lumina_core.app import node_table
from lumina_video_pack.lumina_core.app.pipeline import VideoRequest, generate_latents
from lumina_video_pack.lumina_core.checkpoint import save_model
from lumina_video_pack.lumina_core.motion import motion_score
from lumina_video_pack.lumina_core.sampling import OFFICIAL_PRESETS, SampleConfig
from lumina_video_pack.lumina_core.schedule import Stage, value_at
from lumina_video_pack.lumina_core.sizes import CUSTOM_RESOLUTION
from lumina_video_pack.lumina_core.vae import SCALING_FACTOR
from lumina_video_pack.nodes import NODES
from lumina_video_pack.nodes import native as native_module
from lumina_video_pack.nodes.loaders import (
    SAME_FOLDER,
    LuminaVideoMSModelLoader,
    LuminaVideoMSTextEncoderLoader,
    LuminaVideoMSVAELoader,
)
from lumina_video_pack.nodes.model_files import DEMO
from lumina_video_pack.nodes.motion import (
    LuminaVideoMSMotionScore,
    LuminaVideoMSMotionScoreFromVideo,
)
from lumina_video_pack.nodes.native import OfficialCall
from lumina_video_pack.nodes.routes import plan
from lumina_video_pack.nodes.sampler import (
    STAGE_END,
    LuminaVideoMSSampler,
    LuminaVideoMSStageSampler,
)
from lumina_video_pack.nodes.schedule import (
    LuminaVideoMSScheduleJSON,
    LuminaVideoMSSchedulePreset,
    LuminaVideoMSScheduleStage,
)
from lumina_video_pack.nodes.text import LuminaVideoMSTextEncode
from lumina_video_pack.nodes.video import (
    LuminaVideoMSEmptyLatentVideo,
    LuminaVideoMSVAEDecode,
)
from size_rule import SIZE_TABLE, cli_verdict

PROMPT, NEGATIVE = "a red circle moving left", "static grey background"
# Demo patches over three stages, guidance values constant per stage (so stage samplers can match it).
STAGES = [{"patch": "2x2", "t_end": 0.3, "cfg": 4.0, "motion": 6.0, "neg_motion": 2.0, "renorm": -1.0},
          {"patch": "1x2", "t_end": 0.7, "cfg": 4.0, "motion": 6.0, "neg_motion": 6.0, "renorm": 2.0},
          {"patch": "1x1", "t_end": 1.0, "cfg": 0.0, "motion": 6.0, "neg_motion": 6.0, "renorm": -1.0}]
STEPS, SHIFT = 7, 3.0


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def text_encoder():
    return run(LuminaVideoMSTextEncoderLoader, DEMO, SAME_FOLDER, "default")[0]


@pytest.fixture(scope="module")
def captions(text_encoder):
    return run(LuminaVideoMSTextEncode, text_encoder, PROMPT, NEGATIVE)


@pytest.fixture(scope="module")
def latent():
    return run(LuminaVideoMSEmptyLatentVideo, CUSTOM_RESOLUTION, 32, 32, 8, 1)[0]


def chain(stages=STAGES, steps=STEPS, shift=SHIFT):
    schedule = None
    for stage in stages:
        schedule = run(LuminaVideoMSScheduleStage, **stage, steps=steps, shift=shift, previous=schedule)[0]
    return schedule


# -- schemas and entry point ------------------------------------------------------------------
def test_entrypoint_lists_every_node_once():
    extension = asyncio.run(pack.comfy_entrypoint())
    listed = asyncio.run(extension.get_node_list())
    ids = [node.GET_SCHEMA().node_id for node in listed]
    assert listed == NODES and len(set(ids)) == len(ids) == 23
    assert pack.WEB_DIRECTORY == "./js" and not hasattr(pack, "NODE_CLASS_MAPPINGS")


@pytest.mark.parametrize("node", NODES, ids=lambda node: node.__name__)
def test_schema_names_category_tooltips_and_ranges(node):
    schema = node.GET_SCHEMA()
    assert schema.node_id == node.__name__ and schema.node_id.startswith(node_table.NODE_ID_PREFIX)
    assert schema.category.startswith("Lumina-Video/") and schema.description
    for spec in schema.inputs:
        assert spec.tooltip, f"{schema.node_id}.{spec.id} has no tooltip"
        if isinstance(spec, (io.Int.Input, io.Float.Input)) and not spec.force_input:
            assert spec.min is not None and spec.max is not None and spec.min <= spec.default <= spec.max
        if isinstance(spec, io.Combo.Input):
            assert spec.options and (spec.default is None or spec.default in spec.options)


@pytest.mark.parametrize("names", [*node_table.PACK_NODES, node_table.SAVE_VIDEO], ids=lambda names: names.id)
def test_the_node_table_names_each_node_as_it_is(names):
    """The command line writes its graphs in the node table's names: each node's widgets (in order, and which one
    has a control after generate value), its sockets and its outputs are the table's."""
    node = {node.GET_SCHEMA().node_id: node for node in [*NODES, SaveVideo]}[names.id]
    info = json.loads(json.dumps(node.GET_NODE_INFO_V1()))  # as /object_info serves it
    widgets = widget_inputs(info)
    assert [name for name, _ in widgets] == list(names.widgets)
    assert [name for name, control in widgets if control] == ([names.control_after] if names.control_after else [])
    sockets = [(name, info["input"][section][name][0]) for section in ("required", "optional")
               for name in info["input_order"].get(section, []) if name not in dict(widgets)]
    assert sockets == list(names.inputs)
    assert list(zip(info["output_name"], info["output"])) == list(names.outputs)


def test_demo_loaders_leave_the_global_rng_alone(monkeypatch):
    """Without the trained files the demo components are seeded random ones; building them must not reseed the
    global RNG (a workflow's other nodes draw from it)."""
    monkeypatch.setattr(pack.lumina_core.demo, "DEMO_IS_TRAINED", False)  # the seeded path
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    run(LuminaVideoMSVAELoader, DEMO, "default")
    assert torch.equal(torch.rand(4), expected)


def test_loaders_offer_the_built_in_demo_first():
    for node, name in ((LuminaVideoMSModelLoader, "model_name"), (LuminaVideoMSTextEncoderLoader, "text_encoder_name"),
                       (LuminaVideoMSVAELoader, "vae_name")):
        combo = next(spec for spec in node.define_schema().inputs if spec.id == name)
        assert combo.options[0] == DEMO


# -- schedules ---------------------------------------------------------------------------------
def test_preset_node_gives_the_official_config_and_overrides():
    assert run(LuminaVideoMSSchedulePreset, "f24F96R960", 0)[0] == SampleConfig.preset("f24F96R960")
    multiscale = "f24F96R960-MultiScale"
    assert run(LuminaVideoMSSchedulePreset, multiscale, 0)[0] == SampleConfig.preset(multiscale)
    demo = run(LuminaVideoMSSchedulePreset, "demo", 0)[0]
    assert [s.patch for s in demo.stages] == ["2x2", "1x2", "1x1"] and demo.steps == 20
    overridden = run(LuminaVideoMSSchedulePreset, "f16F64R512-MultiScale", 12, motion=2.5)[0]
    assert overridden.steps == 12 and overridden.motion == 2.5
    assert overridden.stages == SampleConfig.preset("f16F64R512-MultiScale").stages


def test_json_node_reads_official_dicts_and_names_bad_json():
    text = ('{"P": ["2x4", [0.075, "2x2"], [0.3, "1x2"]], "step": 70, "ts": 8, "cfg": [12, [0.4, 0]], '
            '"renorm": -1, "motion": 6, "negMotion": [2, [0.05, 6]]}')
    assert run(LuminaVideoMSScheduleJSON, text)[0] == SampleConfig.preset("f16F64R512-MultiScale")
    with pytest.raises(ValueError, match="not valid JSON"):
        run(LuminaVideoMSScheduleJSON, '{"P": "1x2", ')
    with pytest.raises(ValueError, match="unknown keys"):
        run(LuminaVideoMSScheduleJSON, '{"P": "1x2", "steps": 30}')


STAGE_WIDGETS = {"patch": "1x2", "t_end": 1.0, "cfg": 4.0, "motion": 6.0, "neg_motion": 2.0, "renorm": -1.0,
                 "steps": 10, "shift": 3.0}


@pytest.mark.parametrize("field, value, message", [
    ("cfg", float("nan"), "cfg value nan is not a finite number"),
    ("motion", float("inf"), "motion value inf is not a finite number"),
    ("neg_motion", float("nan"), "neg_motion value nan is not a finite number"),
    ("renorm", float("-inf"), "renorm value -inf is not a finite number"),
    ("shift", float("nan"), "time shift ts nan is not a finite number"),
])
def test_schedule_nodes_refuse_non_finite_values_by_name(field, value, message):
    """ComfyUI's min/max check lets NaN through (every comparison with it is false); the schedule refuses it."""
    with pytest.raises(ValueError, match=message):
        run(LuminaVideoMSScheduleStage, **{**STAGE_WIDGETS, field: value})
    if field != "shift":  # a later stage keeps the first stage's grid
        first = run(LuminaVideoMSScheduleStage, **{**STAGE_WIDGETS, "t_end": 0.5})[0]
        with pytest.raises(ValueError, match=message):
            run(LuminaVideoMSScheduleStage, **{**STAGE_WIDGETS, field: value}, previous=first)


def test_preset_and_json_nodes_refuse_non_finite_values_by_name():
    with pytest.raises(ValueError, match="motion value nan is not a finite number"):
        run(LuminaVideoMSSchedulePreset, "demo", 0, motion=float("nan"))
    with pytest.raises(ValueError, match="sample config holds NaN, which is not a finite number"):
        run(LuminaVideoMSScheduleJSON, '{"P": "1x2", "step": 10, "cfg": NaN}')
    with pytest.raises(ValueError, match="sample config holds Infinity"):
        run(LuminaVideoMSScheduleJSON, '{"P": "1x2", "step": 10, "ts": Infinity}')


def test_stage_node_chain_equals_the_official_f24_preset():
    preset = SampleConfig.preset("f24F96R960-MultiScale")
    # The official values switch inside patch stages (negMotion at 0.05, cfg at 0.2): one stage node each.
    stages = [{"patch": "2x4", "t_end": 0.03, "cfg": 20.0, "motion": 6.0, "neg_motion": 2.0, "renorm": 2.0},
              {"patch": "2x2", "t_end": 0.05, "cfg": 20.0, "motion": 6.0, "neg_motion": 2.0, "renorm": 2.0},
              {"patch": "2x2", "t_end": 0.125, "cfg": 20.0, "motion": 6.0, "neg_motion": 6.0, "renorm": 2.0},
              {"patch": "1x2", "t_end": 0.2, "cfg": 20.0, "motion": 6.0, "neg_motion": 6.0, "renorm": 2.0},
              {"patch": "1x2", "t_end": 1.0, "cfg": 0.0, "motion": 6.0, "neg_motion": 6.0, "renorm": 2.0}]
    built = chain(stages, steps=70, shift=24.0)
    assert (built.steps, built.shift) == (preset.steps, preset.shift)
    assert (built.cfg, built.motion, built.neg_motion, built.renorm) == \
           (preset.cfg, preset.motion, preset.neg_motion, preset.renorm)
    merged = [built.stages[0]]
    for stage in built.stages[1:]:
        if stage.patch == merged[-1].patch:
            stage = Stage(stage.patch_size, stage.f_patch_size, merged.pop().t_start, stage.t_end)
        merged.append(stage)
    assert tuple(merged) == preset.stages
    assert calls(built) == calls(preset) and len(calls(built)) == 69


def calls(config):
    """(grid index, patch, cfg, motion, negative motion, renorm) of every model call."""
    values = (config.cfg, config.motion, config.neg_motion, config.renorm)
    return [(index, stage.patch, *(value_at(value, t) for value in values))
            for index, t, _, stage in config.model_calls()]


def test_stage_node_refuses_a_stage_that_does_not_move_forward():
    first = chain(STAGES[:1])
    with pytest.raises(ValueError, match=r"t_end 0.2 is not after the previous stage's end t = 0.3"):
        run(LuminaVideoMSScheduleStage, **{**STAGES[1], "t_end": 0.2}, steps=STEPS, shift=SHIFT, previous=first)
    with pytest.raises(ValueError, match=r"already reaches t = 1"):
        run(LuminaVideoMSScheduleStage, **STAGES[2], steps=STEPS, shift=SHIFT, previous=chain())


def test_plan_for_the_timeline_counts_calls_per_stage():
    f24 = plan({"preset": "f24F96R960-MultiScale", "steps": None})
    assert [(s["patch"], s["calls"]) for s in f24["stages"]] == [("2x4", 30), ("2x2", 24), ("1x2", 15)]
    assert f24["total_calls"] == len(f24["call_times"]) == 69 and f24["call_times"][0] == 0.0
    assert plan({"official": json.dumps(OFFICIAL_PRESETS["f24F96R960-MultiScale"])}) == f24
    assert plan({"preset": "demo", "steps": 10})["total_calls"] == 9
    stages = [{"patch": s["patch"], "t_start": start, "t_end": s["t_end"]}
              for s, start in zip(STAGES, (0.0, 0.3, 0.7))]
    chained = plan({"stages": stages, "steps": STEPS, "shift": SHIFT})
    assert chained["call_times"] == [t for _, t, _, _ in chain().model_calls()]
    with pytest.raises(ValueError, match="'FxP'"):
        plan({"stages": [{"patch": "3y2", "t_start": 0.0, "t_end": 1.0}], "steps": 7, "shift": 3.0})


# -- sampling ----------------------------------------------------------------------------------
def test_whole_sampler_equals_the_core_pipeline_bit_for_bit(model, text_encoder, captions, latent):
    positive, negative = captions
    schedule = chain()
    out = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 11)[0]
    request = VideoRequest(prompt=PROMPT, negative_prompt=NEGATIVE, width=32, height=32, frames=8, seed=11)
    expected = generate_latents(OfficialCall(network(model)), text_encoder.patcher.model.inner,
                                text_encoder.tokenizer, request, schedule)
    # exact: the node runs lumina_core's sampler on the same weights, noise and captions
    end = out[STAGE_END]
    assert torch.equal(end.pop("latent"), expected) and end == {"t": 1.0, "steps": STEPS, "shift": SHIFT}
    assert out["samples"].shape == (1, 16, 2, 4, 4) and torch.equal(out["samples"], expected / SCALING_FACTOR)


def test_stage_sampler_chain_equals_whole_sampler_bit_for_bit(model, captions, latent):
    positive, negative = captions
    whole = run(LuminaVideoMSSampler, model, positive, negative, latent, chain(), 5)[0]
    current, t_start = latent, 0.0
    for stage in STAGES:
        current = run(LuminaVideoMSStageSampler, model, positive, negative, current, 5, t_start=t_start, steps=STEPS,
                      shift=SHIFT, **stage)[0]
        t_start = stage["t_end"]
    assert torch.equal(current["samples"], whole["samples"])
    other_seed = run(LuminaVideoMSSampler, model, positive, negative, latent, chain(), 6)[0]
    assert not torch.equal(whole["samples"], other_seed["samples"])


def test_stage_sampler_refuses_a_latent_that_stopped_elsewhere(model, captions, latent):
    positive, negative = captions
    first = run(LuminaVideoMSStageSampler, model, positive, negative, latent, 0, t_start=0.0, steps=STEPS, shift=SHIFT,
                **STAGES[0])[0]
    with pytest.raises(ValueError, match=r"stopped at t = 0.3 .* set t_start = 0.3, steps = 7, shift = 3.0"):
        run(LuminaVideoMSStageSampler, model, positive, negative, first, 0, t_start=0.2, steps=STEPS, shift=SHIFT,
            **STAGES[1])


def network(model):
    """The Next-DiT inside a Lumina-Video MODEL."""
    return model.model.diffusion_model


def forward_calls(model):
    """Counts model calls started (the timestep embedder runs once at the start of each)."""
    calls = []
    handle = network(model).t_embedder.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls, handle


def test_patch_pair_missing_from_the_model_fails_before_any_step(model, captions, latent):
    positive, negative = captions
    calls, handle = forward_calls(model)
    try:
        with pytest.raises(ValueError, match=r"patch pair 2x4 .* not in this model; it has embedders for 1x1, 1x2, "
                                             r"2x2"):
            run(LuminaVideoMSSampler, model, positive, negative, latent, SampleConfig.preset("f16F64R512-MultiScale"),
                0)
        with pytest.raises(ValueError, match=r"patch pair 1x4 .* not in this model"):
            run(LuminaVideoMSStageSampler, model, positive, negative, latent, 0, patch="1x4", t_start=0.0, t_end=1.0,
                steps=STEPS, shift=SHIFT, cfg=0.0, motion=6.0, neg_motion=2.0, renorm=-1.0)
    finally:
        handle.remove()
    assert calls == []


def test_latent_sizes_that_the_patches_do_not_divide_fail_before_any_step(model, captions):
    positive, negative = captions
    calls, handle = forward_calls(model)
    try:
        with pytest.raises(ValueError, match=r"height 40 is not a positive multiple of 16 pixels .* use 32 or 48"):
            run(LuminaVideoMSSampler, model, positive, negative, {"samples": torch.zeros(1, 16, 2, 5, 4)}, chain(), 0)
        with pytest.raises(ValueError, match=r"frames 9 make 3 latent frames, .* 2x2 stage .* use 8 or 16 frames"):
            run(LuminaVideoMSSampler, model, positive, negative, {"samples": torch.zeros(1, 16, 3, 4, 4)},
                SampleConfig.from_official({"P": "2x2", "step": 4}), 0)
        with pytest.raises(ValueError, match=r"frames 9 make 3 latent frames, .* 2x2 stage .* use 8 or 16 frames"):
            run(LuminaVideoMSStageSampler, model, positive, negative, {"samples": torch.zeros(1, 16, 3, 4, 4)}, 0,
                patch="2x2", t_start=0.0, t_end=1.0, steps=STEPS, shift=SHIFT, cfg=0.0, motion=6.0, neg_motion=2.0,
                renorm=-1.0)
    finally:
        handle.remove()
    assert calls == []


def test_caption_width_of_another_text_encoder_is_refused(model, captions, latent):
    _, negative = captions
    wide = [[torch.zeros(1, 8, 2304), {"attention_mask": torch.ones(1, 8, dtype=torch.long)}]]
    with pytest.raises(ValueError, match=r"positive caption features are 2304 wide but this model reads 64-wide"):
        run(LuminaVideoMSSampler, model, wide, negative, latent, chain(), 0)


def test_a_batch_repeats_the_prompt_over_its_rows(model, captions):
    positive, negative = captions
    pair = run(LuminaVideoMSEmptyLatentVideo, CUSTOM_RESOLUTION, 32, 32, 8, 2)[0]
    out = run(LuminaVideoMSSampler, model, positive, negative, pair, chain(), 3)[0]["samples"]
    assert out.shape == (2, 16, 2, 4, 4) and torch.isfinite(out).all() and not torch.equal(out[:1], out[1:])


def test_progress_counts_every_model_call_and_sends_previews(model, captions, latent, monkeypatch):
    positive, negative = captions
    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: updates.append((value, total, preview)))
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    schedule = chain()
    run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 0)
    total = len(schedule.model_calls())
    assert [(value, count) for value, count, _ in updates] == [(i, total) for i in range(1, total + 1)]
    kind, image, _ = updates[-1][2]
    assert kind == "JPEG" and image.size == (8, 4) and image.mode == "RGB"  # both latent frames (4 x 4) in a row


def test_interrupt_stops_sampling_within_the_first_step(model, captions, latent):
    """ComfyUI's layers check for an interrupt at every op, so a pending cancel stops the first model call."""
    positive, negative = captions
    calls, handle = forward_calls(model)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(LuminaVideoMSSampler, model, positive, negative, latent, chain(), 0)
    finally:
        handle.remove()
        comfy.model_management.interrupt_current_processing(False)
    assert len(calls) == 1


# -- latents, decode, text, motion --------------------------------------------------------------
def test_empty_latent_shape_and_size_errors():
    custom = CUSTOM_RESOLUTION
    assert run(LuminaVideoMSEmptyLatentVideo, custom, 64, 96, 16, 1)[0]["samples"].shape == (1, 16, 4, 12, 8)
    assert run(LuminaVideoMSEmptyLatentVideo, custom, 1248, 704, 96, 1)[0]["samples"].shape == (1, 16, 24, 88, 156)
    assert run(LuminaVideoMSEmptyLatentVideo, custom, 32, 32, 1, 1)[0]["samples"].shape == (1, 16, 1, 4, 4)
    official = run(LuminaVideoMSEmptyLatentVideo, "704x1248 (960p, ~9:16)", 64, 64, 96, 1)[0]  # width/height unused
    assert official["samples"].shape == (1, 16, 24, 156, 88)
    with pytest.raises(ValueError, match=r"frame count 10 is not valid .* use 9 or 16"):
        run(LuminaVideoMSEmptyLatentVideo, custom, 64, 64, 10, 1)
    with pytest.raises(ValueError, match=r"width 70 is not a positive multiple of 8 .* use 64 or 72"):
        run(LuminaVideoMSEmptyLatentVideo, custom, 70, 64, 16, 1)
    assert LuminaVideoMSEmptyLatentVideo.validate_inputs("1280x720", 64, 64, 16).startswith(
        "resolution '1280x720' is not one of the official sizes")
    combo = next(spec for spec in LuminaVideoMSEmptyLatentVideo.define_schema().inputs if spec.id == "resolution")
    assert combo.options[0] == combo.default == custom and "1248x704 (960p, ~16:9)" in combo.options


class SizeCheckPassed(Exception):
    """Raised by the stand-in model and captions as soon as a sampler uses them: its size check has passed."""


class Untouchable:
    def __getattr__(self, name):
        raise SizeCheckPassed(name)

    def __getitem__(self, key):
        raise SizeCheckPassed(key)


def node_verdict(width, height, frames, schedule):
    """(node, message) of the nodes' first refusal, or (None, None): Empty Latent Video at queue time (it knows
    no schedule), then the sampler, before it touches the model or the captions."""
    verdict = LuminaVideoMSEmptyLatentVideo.validate_inputs(CUSTOM_RESOLUTION, width, height, frames)
    if verdict is not True:
        return "empty latent", verdict
    latent = run(LuminaVideoMSEmptyLatentVideo, CUSTOM_RESOLUTION, width, height, frames, 1)[0]
    config = run(LuminaVideoMSSchedulePreset, schedule, 0)[0]
    stand_in = Untouchable()
    try:
        run(LuminaVideoMSSampler, stand_in, stand_in, stand_in, latent, config, 0)
    except SizeCheckPassed:
        return None, None
    except ValueError as error:
        return "sampler", str(error)
    raise AssertionError("the sampler finished on a stand-in model")


@pytest.mark.parametrize("width, height, frames, schedule, expected", SIZE_TABLE)
def test_nodes_refuse_what_the_command_line_refuses_in_the_same_words(width, height, frames, schedule, expected):
    """The shared size table (tests/size_rule.py). What the sampler refuses, it refuses with the command
    line's exact message; Empty Latent Video refuses only what no schedule can run."""
    node, message = node_verdict(width, height, frames, schedule)
    cli_message = cli_verdict(width, height, frames, schedule)
    if expected is None:
        assert message is None and cli_message is None, (message, cli_message)
        return
    assert expected in message and expected in cli_message, (message, cli_message)
    if node == "sampler":
        assert message == cli_message


def test_vae_decode_gives_frames_and_a_video():
    vae = run(LuminaVideoMSVAELoader, DEMO, "default")[0]
    latents = torch.randn(2, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    images, video = run(LuminaVideoMSVAEDecode, vae, {"samples": latents}, "off", 12.0)
    assert images.shape == (16, 32, 32, 3) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    single, _ = run(LuminaVideoMSVAEDecode, vae, {"samples": latents[1:]}, "off", 12.0)
    torch.testing.assert_close(images[8:], single, atol=1e-5, rtol=0)
    components = video.get_components()
    assert torch.equal(components.images, images) and components.frame_rate == 12
    assert video.get_dimensions() == (32, 32)


def test_vae_loader_weight_dtype_picks_the_decoder_dtype():
    """bf16 is a choice of its own (ComfyUI's default on CPU is fp32): the decoder runs in it and its frames stay
    close to fp32's (65 dB PSNR measured on these latents; bf16 keeps 8 mantissa bits, so > 35 dB is the floor of a
    correct bf16 decoder while a wrong cast or scaling gives < 15 dB)."""
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    frames = {}
    for choice, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        vae = run(LuminaVideoMSVAELoader, DEMO, choice)[0]
        assert next(vae.model.inner.parameters()).dtype == dtype
        frames[choice] = run(LuminaVideoMSVAEDecode, vae, {"samples": latents}, "off", 8.0)[0]
    assert frames["bf16"].dtype == torch.float32
    psnr = -10 * torch.log10(((frames["bf16"] - frames["fp32"]) ** 2).mean())
    assert psnr > 35


def test_text_encode_splits_prompt_and_negative_rows(captions):
    (positive, positive_extras), (negative, negative_extras) = captions[0][0], captions[1][0]
    assert len(captions[0]) == len(captions[1]) == 1  # one CONDITIONING entry each
    assert positive.shape[0] == negative.shape[0] == 1
    assert positive.shape[:2] == positive_extras["attention_mask"].shape and positive.shape[2] == 64
    assert positive.shape[1] == negative.shape[1]  # padded together, as officially: the rows batch
    assert positive.shape[1] % 8 == 0 and not torch.equal(positive, negative)
    assert not torch.equal(positive_extras["attention_mask"], negative_extras["attention_mask"])


def test_motion_nodes():
    assert run(LuminaVideoMSMotionScore, 6.0) == (6.0,)
    texture = np.random.default_rng(0).random((64, 160, 3)).astype(np.float32)
    frames = np.stack([np.roll(texture, 3 * i, axis=1) for i in range(3)])  # 3 px per frame, 2 fps = 0.5 s apart
    with pytest.warns(UserWarning, match="shorter than"):
        score = run(LuminaVideoMSMotionScoreFromVideo, torch.from_numpy(frames), 2.0)[0]
    with pytest.warns(UserWarning, match="shorter than"):
        expected = motion_score(frames, fps=2.0)
    assert score == expected
    assert score == pytest.approx(3 * 576 / 160 / 2, rel=0.2)  # d px per 0.5 s at 576 wide scores d / 2
    with pytest.raises(ValueError, match="shorter than 0.5 s"):
        run(LuminaVideoMSMotionScoreFromVideo, torch.from_numpy(frames[:1]), 2.0)


# -- loaders from ComfyUI's model folders ---------------------------------------------------------
def test_model_loader_lists_and_loads_files_and_official_folders(model, tmp_path, monkeypatch):
    save_model(network(model), tmp_path / "single.safetensors")
    save_model(network(model), tmp_path / "Lumina-Official" / "consolidated.00-of-01.safetensors")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(tmp_path)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    combo = next(spec for spec in LuminaVideoMSModelLoader.define_schema().inputs if spec.id == "model_name")
    assert combo.options == [DEMO, "Lumina-Official", "single.safetensors"]
    expected = network(model).state_dict()
    for name in combo.options[1:]:
        patcher = run(LuminaVideoMSModelLoader, name, "fp32")[0]
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
        assert patcher.load_device == comfy.model_management.get_torch_device()
        loaded = network(patcher).state_dict()
        assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    bf16 = run(LuminaVideoMSModelLoader, "single.safetensors", "bf16")[0]
    assert next(network(bf16).parameters()).dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match=r"'missing.safetensors' is not a file or model folder"):
        run(LuminaVideoMSModelLoader, "missing.safetensors", "default")


def test_bf16_weights_compute_in_bf16_on_a_cpu_with_bf16_instructions(model, captions, latent, monkeypatch):
    """ComfyUI computes bf16 weights in fp32 on every CPU; the loader lets a CPU with bf16 matrix instructions
    compute them in bf16, where that is the faster path (lumina_core.precision)."""
    monkeypatch.setattr(native_module, "native_bf16", lambda device: False)
    assert network(run(LuminaVideoMSModelLoader, DEMO, "bf16")[0]).compute_dtype == torch.float32
    monkeypatch.setattr(native_module, "native_bf16", lambda device: True)
    fast = run(LuminaVideoMSModelLoader, DEMO, "bf16")[0]
    assert network(fast).compute_dtype == torch.bfloat16
    positive, negative = captions
    samples = run(LuminaVideoMSSampler, fast, positive, negative, latent, chain(), 3)[0]["samples"]
    exact = run(LuminaVideoMSSampler, model, positive, negative, latent, chain(), 3)[0]["samples"]
    assert samples.dtype == torch.float32
    # bf16 rounds each activation by up to 0.4%; over these 7 guided steps the latent moved 2.4% of its largest
    # value from fp32's (measured). Another seed or prompt moves it by about the latent's own size.
    assert ((samples - exact).abs().max() / exact.abs().max()).item() < 0.1


def test_text_encoder_file_without_tokenizer_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "gemma.safetensors").write_bytes(b"")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "text_encoders",
                        ([str(tmp_path)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    with pytest.raises(ValueError, match=r"single file without a tokenizer; pick the folder"):
        run(LuminaVideoMSTextEncoderLoader, "gemma.safetensors", SAME_FOLDER, "default")
