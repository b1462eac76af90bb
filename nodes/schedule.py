"""Schedule nodes: a LUMINA_VIDEO_SCHEDULE is a lumina_core SampleConfig (patch stages over t ranges of
one time grid, plus time-aware cfg / motion / negative motion / renorm). t = 0 is noise, t = 1 data."""

from __future__ import annotations

import json
from dataclasses import replace

from comfy_api.latest import io

from ..lumina_core.app.node_table import SCHEDULE_JSON
from ..lumina_core.demo import DEMO_SCHEDULE
from ..lumina_core.limits import MAX_SHIFT, MAX_STEPS
from ..lumina_core.sampling import OFFICIAL_PRESETS, SampleConfig
from ..lumina_core.schedule import Stage, parse_patch
from . import io_types
from .motion import MOTION_TOOLTIP

DEMO_PRESET = "demo"
PATCHES = ("2x4", "2x2", "1x4", "1x2", "1x1")  # "FxP": f-patch F x patch P, coarse to fine


# -- inputs shared with the stage sampler --------------------------------------------------------
def patch_input():
    return io.Combo.Input("patch", options=list(PATCHES), default="1x2",
                          tooltip="Patch pair 'FxP' of this stage: F frames x P x P latent pixels per token. Coarse "
                                  "patches (2x4) are fast and set the layout early; fine ones (1x2) add detail late. "
                                  "Official 2B model: 2x4, 2x2, 1x2; demo model: 2x2, 1x2, 1x1.")


def t_end_input():
    return io.Float.Input("t_end", default=1.0, min=0.001, max=1.0, step=0.001,
                          tooltip="Time where this stage stops (0 = noise, 1 = finished video). Official switch "
                                  "points: 0.03 and 0.125 (f24F96R960-MultiScale), 0.075 and 0.3 "
                                  "(f16F64R512-MultiScale).")


def grid_inputs(note: str = ""):
    return [
        io.Int.Input("steps", default=70, min=2, max=MAX_STEPS,
                     tooltip="Points of the time grid shared by all stages (N points = N - 1 model calls over the "
                             "whole schedule; official 70)." + note),
        io.Float.Input("shift", default=8.0, min=0.0, max=MAX_SHIFT, step=0.1,
                       tooltip="Time shift ts of the grid, t' = t / (t + ts - ts*t): larger spends more steps near the "
                               "noise. 0 = no shift. Official: 8 (the f16F64R512 configs), 24 (the f24F96R960 "
                               "configs)." + note),
    ]


def guidance_inputs():
    return [
        io.Float.Input("cfg", default=12.0, min=0.0, max=100.0, step=0.1,
                       tooltip="Classifier-free guidance scale: pos + cfg * (pos - neg). 0 skips the negative branch "
                               "(half the cost). Official: 12 or 20 early, 0 late."),
        io.Float.Input("motion", default=6.0, min=-1.0, max=100.0, step=0.1, tooltip=MOTION_TOOLTIP),
        io.Float.Input("neg_motion", default=2.0, min=-1.0, max=100.0, step=0.1,
                       tooltip="Motion score of the negative branch; a gap to 'motion' pushes the motion up (official "
                               "2, then 6 from t = 0.05)."),
        io.Float.Input("renorm", default=-1.0, min=-1.0, max=100.0, step=0.1,
                       tooltip="Caps the guided velocity's norm at renorm x the positive one's. <= 0 = off. "
                               "Official: 2 (the f24F96R960 configs), off (the f16F64R512 configs)."),
    ]


def stage_config(patch: str, t_start: float, t_end: float, steps: int, shift: float, cfg: float, motion: float,
                 neg_motion: float, renorm: float) -> SampleConfig:
    """A one-stage schedule with constant guidance values."""
    patch_size, f_patch_size = parse_patch(patch)
    return SampleConfig(stages=(Stage(patch_size, f_patch_size, t_start, t_end),), steps=steps, shift=shift,
                        cfg=cfg, motion=motion, neg_motion=neg_motion, renorm=renorm)


def preset_config(preset: str, steps: int = 0) -> SampleConfig:
    """An official preset or "demo" (the demo model's schedule); steps > 0 replaces its step count."""
    if preset == DEMO_PRESET:
        config = SampleConfig.from_official(DEMO_SCHEDULE, name=DEMO_PRESET)
    else:
        config = SampleConfig.preset(preset)
    return replace(config, steps=steps) if steps else config


# -- nodes ---------------------------------------------------------------------------------------
class LuminaVideoMSSchedulePreset(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSSchedulePreset",
            display_name="Lumina-Video Schedule Preset",
            category="Lumina-Video/schedule",
            description="An official sampling schedule under its official name (-MultiScale or single-scale), or the "
                        "demo model's.",
            inputs=[
                io.Combo.Input("preset", options=[*OFFICIAL_PRESETS, DEMO_PRESET], default=DEMO_PRESET,
                               tooltip="The official configs by their official names: f24F96R960-MultiScale / "
                                       "f16F64R512-MultiScale: patches 2x4 -> 2x2 -> 1x2 (about 3x faster); "
                                       "f24F96R960 / f16F64R512: 1x2 throughout; demo: for the built-in demo model."),
                io.Int.Input("steps", default=0, min=0, max=MAX_STEPS,
                             tooltip="Time-grid points (N points = N - 1 model calls). 0 keeps the preset's (70 "
                                     "official, 20 demo)."),
                io.Float.Input("motion", optional=True, force_input=True,
                               tooltip="Connect a motion score (e.g. Lumina-Video Motion Score) to replace the "
                                       "preset's (6). " + MOTION_TOOLTIP),
            ],
            outputs=[io_types.Schedule.Output(display_name="schedule")],
        )

    @classmethod
    def execute(cls, preset, steps, motion=None) -> io.NodeOutput:
        config = preset_config(preset, steps)
        if motion is not None:
            config = replace(config, motion=float(motion))
        return io.NodeOutput(config)


class LuminaVideoMSScheduleJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=SCHEDULE_JSON.id,
            display_name="Lumina-Video Schedule (JSON)",
            category="Lumina-Video/schedule",
            description="A schedule from an official sample-config object, as in the official configs.",
            inputs=[
                io.String.Input("config", multiline=True, default=json.dumps(DEMO_SCHEDULE),
                                tooltip="JSON object with P, step, ts, renorm, cfg, motion, negMotion. Time-aware "
                                        "values are [v0, [t1, v1], ...] (v_k from t >= t_k); 'FxP' = f-patch x patch. "
                                        "Official f16F64R512-MultiScale: "
                                        + json.dumps(OFFICIAL_PRESETS["f16F64R512-MultiScale"])),
            ],
            outputs=[io_types.Schedule.Output(display_name="schedule")],
        )

    @classmethod
    def execute(cls, config) -> io.NodeOutput:
        return io.NodeOutput(SampleConfig.from_official(config, name="json"))


class LuminaVideoMSScheduleStage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSScheduleStage",
            display_name="Lumina-Video Schedule Stage",
            category="Lumina-Video/schedule",
            description="Adds one patch stage to a schedule: from where 'previous' ends (or t = 0) up to t_end, with "
                        "these guidance values from its start. Chain stages coarse to fine.",
            inputs=[
                io_types.Schedule.Input("previous", optional=True,
                                        tooltip="The schedule so far; leave empty for the first stage (starts "
                                                "at t = 0)."),
                patch_input(),
                t_end_input(),
                *guidance_inputs(),
                *grid_inputs(" Used by the first stage only; later stages keep the previous grid."),
            ],
            outputs=[io_types.Schedule.Output(display_name="schedule")],
        )

    @classmethod
    def execute(cls, patch, t_end, cfg, motion, neg_motion, renorm, steps, shift, previous=None) -> io.NodeOutput:
        if previous is None:
            return io.NodeOutput(stage_config(patch, 0.0, t_end, steps, shift, cfg, motion, neg_motion, renorm))
        start = previous.stages[-1].t_end
        if start >= 1.0:
            raise ValueError("the previous schedule already reaches t = 1 (the finished video); remove this stage "
                             "or lower the previous stage's t_end")
        if t_end <= start:
            raise ValueError(f"t_end {t_end} is not after the previous stage's end t = {start}; set t_end in "
                             f"({start}, 1] (1 = finish the video)")
        patch_size, f_patch_size = parse_patch(patch)
        stage = Stage(patch_size, f_patch_size, start, t_end)
        return io.NodeOutput(previous.with_stage(stage, cfg=cfg, motion=motion, neg_motion=neg_motion, renorm=renorm))
