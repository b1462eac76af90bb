"""Sampler nodes: a whole schedule in one node, or one stage per node. A chain of stage samplers
gives the same latent as one whole-schedule run, bit for bit (same seed, grid and values)."""

from __future__ import annotations

import base64
import io as bytes_io
import time
from dataclasses import replace

import comfy.model_management
import comfy.utils
import latent_preview
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from PIL import Image

from ..lumina_core.app.node_table import SAMPLER
from ..lumina_core.draft import DRAFT_SCALE, FirstStageDraft, decode_draft, predicted_clean
from ..lumina_core.sampling import SampleConfig, check_runnable, sample, seeded_noise
from ..lumina_core.sizes import check_latent_video_size
from ..lumina_core.vae import SCALING_FACTOR
from . import io_types
from .devices import loaded
from .native import MOTION_KEY, OfficialCall, lumina_video_model
from .schedule import (
    grid_inputs,
    guidance_inputs,
    patch_input,
    stage_config,
    t_end_input,
)
from .step_cache import attached_cache, log_summary

STAGE_END = "lumina_video_stage_end"
"""Key of a sampler's LATENT output: {"t", "steps", "shift", "latent"}: where on which grid the latent stands, and
the latent in the model's scaled space (LATENT["samples"] holds it unscaled, as ComfyUI's latents are), so a
following stage continues from exactly the same numbers."""
TOOLTIPS = {
    "model": "From Lumina-Video Model Loader (LoRA, cache and other MODEL patches may sit in between).",
    "positive": "Conditioning of the prompt (Lumina-Video Text Encode).",
    "negative": "Conditioning of the negative prompt (used where cfg > 0).",
    "seed": "Seed of the starting noise (a CPU generator, so the same seed gives the same video on any device).",
}


def caption_rows(conditioning: list, batch: int, width: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(feats [batch, L, D], mask [batch, L]) of a CONDITIONING, one prompt row repeated over the batch."""
    if len(conditioning) != 1:
        raise ValueError(f"{name} conditioning has {len(conditioning)} entries (combined or area conditioning); "
                         "the Lumina-Video samplers take one prompt: connect a Lumina-Video Text Encode output, or use "
                         "a core sampler with the Lumina-Video Guider")
    feats, extras = conditioning[0]
    mask = extras.get("attention_mask")
    if mask is None:
        mask = torch.ones(feats.shape[:2], dtype=torch.long, device=feats.device)
    if feats.shape[-1] != width:
        raise ValueError(f"{name} caption features are {feats.shape[-1]} wide but this model reads {width}-wide "
                         "features; encode with the text encoder the model was trained with (Gemma-2-2B for the "
                         "official models, the built-in demo encoder for the demo model)")
    if feats.shape[0] == batch:
        return feats, mask
    if feats.shape[0] == 1:
        return feats.expand(batch, -1, -1), mask.expand(batch, -1)
    raise ValueError(f"{name} conditioning has {feats.shape[0]} rows for a latent batch of {batch}; give one row "
                     "(repeated over the batch) or one per latent")


def with_conditioning_motion(config: SampleConfig, positive: list, negative: list) -> SampleConfig:
    """The schedule with the motion scores the conditionings carry (Lumina-Video Motion Conditioning), which win
    over the schedule's own."""
    values = {}
    for name, conditioning in (("motion", positive), ("neg_motion", negative)):
        motion = conditioning[0][1].get(MOTION_KEY)
        if motion is not None:
            values[name] = motion
    return replace(config, **values) if values else config


def previewer(model_patcher):
    """ComfyUI's live previewer for the model's latent format (its latent-to-RGB map over a grid of every latent
    frame, as core samplers show it), or None when previews are off (--preview-method none)."""
    return latent_preview.get_previewer(model_patcher.load_device, model_patcher.model.latent_format)


def preview(live, info: dict):
    """The preview image of a sampler callback's step: its predicted clean latent (the model's scaled latent,
    a core sampler's x0) through ``live``, a ``previewer``; None without one."""
    if live is None:
        return None
    return live.decode_latent_to_preview_image("JPEG", predicted_clean(info))


DRAFT_EVENT = "lumina_video.draft"
"""Server event of a draft: {"node", "prompt_id", "image" (animated WEBP data URL), "frames", "width", "height",
"t", "seconds" (decode + encode time)}; js/lumina_video.js shows it on the sampler."""
DRAFT_FPS = 8
DRAFT_QUALITY = 70


def draft_image(frames: torch.Tensor, max_size: int) -> tuple[str, tuple[int, int]]:
    """Frames [F, H, W, 3] in [0, 1] as an animated WEBP data URL (longest side at most ``max_size``)."""
    pixels = (frames * 255).round().to(torch.uint8).cpu().numpy()
    images = [Image.fromarray(frame) for frame in pixels]
    for image in images:
        image.thumbnail((max_size, max_size))
    buffer = bytes_io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=1000 // DRAFT_FPS,
                   loop=0, quality=DRAFT_QUALITY, method=0)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode(), images[0].size


def send_draft(data: dict) -> None:
    """Send a draft to the page that queued the prompt (nothing to send to outside a server)."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    instance = getattr(PromptServer, "instance", None)
    context = get_executing_context()
    if instance is None or context is None:
        return
    instance.send_sync(DRAFT_EVENT, {**data, "node": context.node_id, "prompt_id": context.prompt_id},
                       instance.client_id)


def drafter(model_patcher, vae, config: SampleConfig):
    """A sampler callback that decodes the first stage's predicted clean video at 1/DRAFT_SCALE size with ``vae``
    and sends it to the page, or None without a VAE."""
    if vae is None:
        return None

    def show(latent: torch.Tensor, info: dict) -> None:
        start = time.perf_counter()
        frames = decode_draft(loaded(vae).inner, latent[:1])[0]  # the model's scaled latent; the first video
        comfy.model_management.load_models_gpu([model_patcher])  # the transformer back, if the VAE displaced it
        image, (width, height) = draft_image(frames, args.preview_size)
        send_draft({"image": image, "frames": int(frames.shape[0]), "width": width, "height": height,
                    "t": info["t"], "seconds": time.perf_counter() - start})

    return FirstStageDraft(config, show)


def prepare(model_patcher, positive: list, negative: list, x: torch.Tensor, config: SampleConfig):
    """What every sampler node checks and gathers before sampling ``x``: (network, cond, uncond, config with the
    conditioning's motion values). Size and patch errors come before anything touches the model."""
    check_latent_video_size(x.shape, config)  # the command line's size rule
    network = lumina_video_model(model_patcher)
    check_runnable(network, x.shape, config)
    width = network.config.cap_feat_dim
    cond = caption_rows(positive, x.shape[0], width, "positive")
    uncond = caption_rows(negative, x.shape[0], width, "negative")
    return network, cond, uncond, with_conditioning_motion(config, positive, negative)


def run(model_patcher, positive: list, negative: list, x: torch.Tensor, config: SampleConfig,
        draft_vae=None) -> dict:
    """Sample ``x`` (the latent at the schedule's start, in the model's scaled space) through ``config`` with
    lumina_core's sampler (the exact path); returns the LATENT dict. With ``draft_vae``, the first stage's
    predicted clean video is decoded small and sent to the page while the later stages run."""
    network, cond, uncond, config = prepare(model_patcher, positive, negative, x, config)
    comfy.model_management.load_models_gpu([model_patcher])  # patches (LoRA) applied, partly loaded if memory asks
    device = model_patcher.load_device
    progress = comfy.utils.ProgressBar(len(config.model_calls()))
    live = previewer(model_patcher)
    draft = drafter(model_patcher, draft_vae, config)

    def callback(info: dict) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if draft is not None:
            draft(info)
        progress.update_absolute(info["index"] + 1, info["total"], preview(live, info))

    cache = attached_cache(model_patcher)  # from a Step Cache node
    out = sample(OfficialCall(network), x.to(device), tuple(t.to(device) for t in cond),
                 tuple(t.to(device) for t in uncond), config, callback=callback, cache=cache)
    if cache is not None:
        log_summary(cache)
    return stage_output(out, config)


def stage_output(out: torch.Tensor, config: SampleConfig) -> dict:
    """The LATENT a sampler returns: the raw VAE latent, plus the model-space latent and where on the
    schedule it ends (STAGE_END), from which a Stage Sampler continues bit for bit."""
    out = out.to(comfy.model_management.intermediate_device())
    end = {"t": config.stages[-1].t_end, "steps": config.steps, "shift": config.shift, "latent": out}
    return {"samples": out / SCALING_FACTOR, STAGE_END: end}


class LuminaVideoMSSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=SAMPLER.id,
            display_name="Lumina-Video Sampler",
            category="Lumina-Video/sampling",
            description="Runs a whole schedule from seeded noise: Euler steps on the shifted time grid, each stage "
                        "at its patch size, guidance on caption and motion.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TOOLTIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TOOLTIPS["negative"]),
                io.Latent.Input("latent", tooltip="Gives the size only (Lumina-Video Empty Latent Video)."),
                io_types.Schedule.Input("schedule", tooltip="From a Lumina-Video Schedule node."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=TOOLTIPS["seed"]),
                io_types.Vae.Input("draft_vae", optional=True,
                                   tooltip="Connect the VAE to see a draft of the whole clip on this node as soon "
                                           "as the first (coarse) stage ends: its predicted clean video at "
                                           f"1/{DRAFT_SCALE} width and height, while the fine stages run. It never "
                                           "changes the result; it costs one small decode."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, schedule, seed, draft_vae=None) -> io.NodeOutput:
        noise = seeded_noise(latent["samples"].shape, seed)
        return io.NodeOutput(run(model, positive, negative, noise, schedule, draft_vae))


class LuminaVideoMSStageSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSStageSampler",
            display_name="Lumina-Video Stage Sampler",
            category="Lumina-Video/sampling",
            description="Runs one stage (one patch size over [t_start, t_end)). t_start = 0 starts from seeded noise; "
                        "later stages continue the incoming latent and must use the same steps and shift.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"]),
                io.Conditioning.Input("positive", tooltip=TOOLTIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TOOLTIPS["negative"]),
                io.Latent.Input("latent", tooltip="With t_start = 0: gives the size only. Otherwise: the previous "
                                                  "stage sampler's output, continued from t_start."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=TOOLTIPS["seed"] + " Used only when t_start = 0."),
                patch_input(),
                io.Float.Input("t_start", default=0.0, min=0.0, max=0.999, step=0.001,
                               tooltip="Time where this stage starts: 0 = from noise, else the previous stage's "
                                       "t_end."),
                t_end_input(),
                *grid_inputs(" Must be equal in every stage of a chain."),
                *guidance_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, patch, t_start, t_end, steps, shift, cfg, motion,
                neg_motion, renorm) -> io.NodeOutput:
        config = stage_config(patch, t_start, t_end, steps, shift, cfg, motion, neg_motion, renorm)
        start = seeded_noise(latent["samples"].shape, seed) if t_start == 0.0 else continued(latent, config)
        return io.NodeOutput(run(model, positive, negative, start, config))


def continued(latent: dict, config: SampleConfig) -> torch.Tensor:
    """The model-space latent a stage continues from. Raises unless a latent from a previous sampler stopped
    where this stage starts, on the same grid. A sampler's own latent continues bit for bit; one changed on
    the way, or from elsewhere (a file, a core sampler), is scaled in and trusted to stand at t_start."""
    samples = latent["samples"]
    end = latent.get(STAGE_END)
    if end is None:
        return samples * SCALING_FACTOR
    here = {"t": config.stages[0].t_start, "steps": config.steps, "shift": config.shift}
    where = {key: end[key] for key in here}
    if where != here:
        raise ValueError(f"the incoming latent stopped at t = {end['t']} on a grid of {end['steps']} steps with shift "
                         f"{end['shift']}, but this stage starts at t = {here['t']} with {here['steps']} steps and "
                         f"shift {here['shift']}; set t_start = {end['t']}, steps = {end['steps']}, "
                         f"shift = {end['shift']} to continue it")
    exact = end["latent"]
    untouched = exact.shape == samples.shape and torch.equal(exact.to(samples.device) / SCALING_FACTOR, samples)
    return exact if untouched else samples * SCALING_FACTOR
