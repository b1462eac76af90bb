"""Schedule for Time Budget: a base schedule fitted into a number of seconds of sampling on this machine, from a
calibration of the wired model at the latent's size (lumina_core.cost, lumina_core.budget)."""

from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..lumina_core.budget import BUDGET_SCOPE, fit_budget
from ..lumina_core.cost import calibration_for
from ..lumina_core.limits import MAX_BUDGET_SECONDS, MIN_BUDGET_SECONDS
from ..lumina_core.sampling import check_runnable
from . import io_types
from .native import OfficialCall, lumina_video_model

DEFAULT_CAPTION_TOKENS = 128
"""Caption length calibrated without a positive conditioning: the official template (~30 Gemma tokens) and a
prompt of about 100 tokens."""


def caption_tokens(positive) -> int:
    if positive is None:
        return DEFAULT_CAPTION_TOKENS
    if len(positive) != 1:
        raise ValueError(f"positive conditioning has {len(positive)} entries; connect one Lumina-Video Text Encode "
                         "output (it gives the caption length to calibrate with)")
    return int(positive[0][0].shape[1])


class LuminaVideoMSScheduleForTimeBudget(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSScheduleForTimeBudget",
            display_name="Lumina-Video Schedule for Time Budget",
            category="Lumina-Video/schedule",
            description="Fits a schedule into a time budget on this machine: the same stages, order and switch points "
                        "on the finest grid whose predicted sampling time fits, so more seconds buy more fine-patch "
                        "steps; a budget below the cheapest version is refused with the seconds it needs. "
                        + BUDGET_SCOPE + " The prediction comes from a calibration: the first run for a model, size, "
                        "dtype and device times one guided and one unguided call per patch pair after a warm-up "
                        "(3 calls per pair, e.g. 9 for the official 2B), then caches it (~/.cache/lumina_video or "
                        "$LUMINA_VIDEO_CACHE_DIR).",
            inputs=[
                io.Model.Input("model", tooltip="The model the sampler will run (calibrated here)."),
                io.Latent.Input("latent", tooltip="Gives the size and batch the sampler will run "
                                                  "(Lumina-Video Empty Latent Video)."),
                io_types.Schedule.Input("schedule", tooltip="The base schedule: an official preset or your stages. "
                                                            "Returned unchanged when it fits the budget."),
                io.Float.Input("seconds", default=60.0, min=MIN_BUDGET_SECONDS, max=MAX_BUDGET_SECONDS, step=1.0,
                               tooltip="Seconds the sampling (the model calls) may take; loading, text encoding and "
                                       "decoding come on top."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="The prompt's conditioning: calibrates at its caption length (else "
                                              f"{DEFAULT_CAPTION_TOKENS} tokens)."),
            ],
            outputs=[io_types.Schedule.Output(display_name="schedule"),
                     io.String.Output(display_name="summary", tooltip="What was kept and what was traded.")],
        )

    @classmethod
    def execute(cls, model, latent, schedule, seconds, positive=None) -> io.NodeOutput:
        network = lumina_video_model(model)
        shape = tuple(latent["samples"].shape)
        check_runnable(network, shape, schedule)
        comfy.model_management.load_models_gpu([model])
        costs, measured = calibration_for(OfficialCall(network), shape, caption_tokens(positive), model.load_device,
                                          schedule)
        plan = fit_budget(schedule, costs, seconds)
        source = "calibrated now" if measured else "cached calibration"
        return io.NodeOutput(plan.config, f"{plan.summary()}\nPrediction: {source} ({costs.key.text}).")
