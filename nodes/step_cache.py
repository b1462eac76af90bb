"""Step cache node: a MODEL whose model calls may be skipped and predicted (lumina_core.step_cache.StepCache), safe
across patch switches and cfg truncation, under the pack's samplers and ComfyUI's own.

The MODEL carries the cache's settings under ``transformer_options[STEP_CACHE_KEY]``. The pack's samplers give
``lumina_core.sampling.sample`` a fresh copy (it caches the guided velocity). Core samplers go through two
wrappers: OUTER_SAMPLE starts a fresh copy for the run and logs what it skipped; DIFFUSION_MODEL decides per
call, for each set of prompt rows (and context window) separately, at the patch pair the schedule gives the
call's sigma, starting over when the pair or a row's motion score changes.
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.patcher_extension
from comfy_api.latest import io

from ..lumina_core.app.node_table import STEP_CACHE
from ..lumina_core.step_cache import MAX_THRESHOLD, StepCache
from .native import lumina_video_model, row_motion

STEP_CACHE_KEY = "lumina_video_step_cache"
"""transformer_options key of the settings (a StepCache never called itself)."""
RUN_KEY = "lumina_video_step_cache_run"
"""transformer_options key of the StepCache of the sampling run in progress (core samplers)."""
WRAPPER_KEY = "lumina_video_step_cache"


def attached_cache(model_patcher) -> StepCache | None:
    """A fresh StepCache with the settings a Step Cache node attached to the MODEL, or None."""
    settings = model_patcher.model_options.get("transformer_options", {}).get(STEP_CACHE_KEY)
    return None if settings is None else settings.fresh()


def log_summary(cache: StepCache) -> None:
    logging.info(f"Lumina-Video Step Cache (threshold {cache.threshold}): {cache.summary()}")


def outer_sample_wrapper(executor, *args, **kwargs):
    """A fresh cache for this run in the guider's model options (a per-run copy), and the log line after it."""
    guider = executor.class_obj
    cache = guider.model_options["transformer_options"][STEP_CACHE_KEY].fresh()
    guider.model_options["transformer_options"][RUN_KEY] = cache
    try:
        return executor(*args, **kwargs)
    finally:
        log_summary(cache)


def diffusion_model_wrapper(executor, x, timesteps, context, attention_mask, motion, motion_role, transformer_options,
                            **kwargs):
    cache: StepCache | None = transformer_options.get(RUN_KEY)

    def compute():
        return executor(x, timesteps, context, attention_mask, motion, motion_role, transformer_options, **kwargs)

    if cache is None:
        return compute()
    # a skipped call runs no layer, and ComfyUI's layers are where a cancel is noticed: check here too
    comfy.model_management.throw_exception_if_processing_interrupted()
    schedule, t, stage = executor.class_obj.call_point(timesteps, transformer_options)
    window = transformer_options.get("context_window")
    rows = (tuple(transformer_options.get("uuids", ())), None if window is None else tuple(window.index_list),
            tuple(x.shape))
    motions = tuple(row_motion(schedule, t, motion, motion_role, x.shape[0]).tolist())
    return cache(rows, stage.patch, t, x, compute, phase=motions)


def with_step_cache(model_patcher, threshold: float, start: float, end: float):
    """A clone of a Lumina-Video MODEL that skips model calls by a StepCache with these settings."""
    lumina_video_model(model_patcher)
    settings = StepCache(threshold, start, end)
    present = model_patcher.model_options.get("transformer_options", {}).get(STEP_CACHE_KEY)
    if present is not None:
        raise ValueError(f"this MODEL already has a Lumina-Video Step Cache (threshold {present.threshold}); "
                         "chain one Step Cache node only, and set its threshold there")
    patched = model_patcher.clone()
    patched.model_options.setdefault("transformer_options", {})[STEP_CACHE_KEY] = settings
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 diffusion_model_wrapper)
    return patched


class LuminaVideoMSStepCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=STEP_CACHE.id,
            display_name="Lumina-Video Step Cache",
            category="Lumina-Video/sampling",
            description="Skips model calls whose output is predicted to change little (EasyCache's transformation "
                        "rate; a skipped call gets a first-order extrapolation of the last two real outputs). Unlike "
                        "core EasyCache it starts over at every patch switch and motion change (the first two calls "
                        "of each stage run the model) and keeps skipping after cfg truncation drops the negative "
                        "prompt. Works with the Lumina-Video Sampler, Stage Sampler and ComfyUI's own samplers; the "
                        "log says how many calls it skipped per stage.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumina-Video MODEL."),
                io.Float.Input("threshold", default=0.2, min=0.0, max=MAX_THRESHOLD, step=0.01,
                               tooltip="Accumulated predicted relative change allowed before the model runs again. "
                                       "0 = never skip; 0.1-0.5 is the useful range (higher skips more and drifts "
                                       "further from the uncached video)."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="No call before this time is skipped (t = 0 noise, 1 finished video)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="No call after this time is skipped (t = 0 noise, 1 finished video)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, threshold, start, end) -> io.NodeOutput:
        return io.NodeOutput(with_step_cache(model, threshold, start, end))
