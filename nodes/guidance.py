"""Lumina-Video schedules for ComfyUI's own samplers: attach a schedule to a MODEL (KSampler and friends then
run its patch pairs, shift and motion), its exact time grid as SIGMAS, and a GUIDER with the official
time-aware guidance, so core SamplerCustomAdvanced + euler reproduces the pack's Sampler.

ComfyUI's cfg scale is 1 + the official w (``pos + w (pos - neg)`` = ``neg + (1 + w)(pos - neg)``). The
official renorm caps the guided *velocity* at renorm x the positive one's norm; core RenormCFG renormalises
denoised images instead and gates on sigma, so it computes something else: the guider does it itself.
"""

from __future__ import annotations

import comfy.samplers
import torch
from comfy_api.latest import io

from ..lumina_core.sampling import SampleConfig, guide
from ..lumina_core.schedule import value_at
from . import io_types
from .native import official_time, with_schedule

SCHEDULE_TOOLTIP = "From a Lumina-Video Schedule node."


def schedule_sigmas(schedule: SampleConfig) -> torch.Tensor:
    """sigma = 1 - t on the official float32 grid, over the schedule's stages (the whole grid for a whole
    schedule: 70 points = 69 model calls, ending at sigma 0)."""
    grid = schedule.grid()
    start, end = schedule.stages[0].t_start, schedule.stages[-1].t_end
    inside = [i for i, t in enumerate(grid.tolist()) if start <= t <= end]
    return 1.0 - grid[inside[0]: inside[-1] + 1]


class ScheduleGuider(comfy.samplers.CFGGuider):
    """The official ``forward_with_multi_cfg`` as a ComfyUI guider: at each sigma the schedule's cfg w (w <= 0
    runs the positive row only) and renorm, both read at the official t; motion per row from the schedule
    attached to the model (or the row's own, from Lumina-Video Motion Conditioning)."""

    def __init__(self, model_patcher, schedule: SampleConfig):
        super().__init__(with_schedule(model_patcher, schedule))
        self.schedule = schedule

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        t = official_time(timestep, self.schedule)
        cfg, renorm = float(value_at(self.schedule.cfg, t)), float(value_at(self.schedule.renorm, t))
        rows = [self.conds.get("positive")] + ([self.conds.get("negative")] if cfg > 0 else [])
        denoised = comfy.samplers.calc_cond_batch(self.inner_model, rows, x, timestep, model_options)
        # x0 - x = sigma * v: guidance is linear and the renorm ratio scale-free, so both act on it as on v
        return x + guide(denoised[0] - x, denoised[1] - x if cfg > 0 else None, cfg, renorm)


class LuminaVideoMSModelSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSModelSchedule",
            display_name="Lumina-Video Model Schedule",
            category="Lumina-Video/sampling",
            description="Attaches a schedule to the MODEL for ComfyUI's own samplers (KSampler, SamplerCustom...): "
                        "each step runs the patch pair the schedule gives its t (t = 1 - sigma), the shift becomes "
                        "the model's (for ComfyUI's schedulers) and rows without their own motion get the "
                        "schedule's motion / negative motion. cfg is the sampler's: ComfyUI cfg = 1 + official cfg.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumina-Video MODEL."),
                io_types.Schedule.Input("schedule", tooltip=SCHEDULE_TOOLTIP),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, schedule) -> io.NodeOutput:
        return io.NodeOutput(with_schedule(model, schedule))


class LuminaVideoMSSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSSigmas",
            display_name="Lumina-Video Sigmas",
            category="Lumina-Video/sampling",
            description="The schedule's exact official time grid as SIGMAS (sigma = 1 - t, shifted, float32), for "
                        "SamplerCustomAdvanced; no core scheduler reproduces it.",
            inputs=[io_types.Schedule.Input("schedule", tooltip=SCHEDULE_TOOLTIP)],
            outputs=[io.Sigmas.Output(display_name="sigmas")],
        )

    @classmethod
    def execute(cls, schedule) -> io.NodeOutput:
        return io.NodeOutput(schedule_sigmas(schedule))


class LuminaVideoMSGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSGuider",
            display_name="Lumina-Video Guider",
            category="Lumina-Video/sampling",
            description="A GUIDER for SamplerCustomAdvanced with the official guidance: the schedule's time-aware cfg "
                        "(0 = positive row only), motion and negative motion per row, and the official velocity "
                        "renorm (not core RenormCFG's). With Lumina-Video Sigmas, euler and the same seed it gives "
                        "the Lumina-Video Sampler's video.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumina-Video MODEL."),
                io.Conditioning.Input("positive", tooltip="Conditioning of the prompt (Lumina-Video Text Encode)."),
                io.Conditioning.Input("negative", tooltip="Conditioning of the negative prompt (used where cfg > 0)."),
                io_types.Schedule.Input("schedule", tooltip=SCHEDULE_TOOLTIP),
            ],
            outputs=[io.Guider.Output(display_name="guider")],
        )

    @classmethod
    def execute(cls, model, positive, negative, schedule) -> io.NodeOutput:
        guider = ScheduleGuider(model, schedule)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider)
