"""Latent video size, decoding and encoding: an empty LATENT of the right shape, CogVideoX VAE decode to IMAGE
frames plus ComfyUI's VIDEO (for Save Video), and encode of frames to a LATENT (for video-to-video). LATENTs
hold raw CogVideoX latents, as ComfyUI's do."""

from __future__ import annotations

from fractions import Fraction

import comfy.model_management
import torch
from comfy_api.latest import InputImpl, Types, io

from ..lumina_core.app.node_table import EMPTY_LATENT_VIDEO, VAE_DECODE
from ..lumina_core.limits import MAX_BATCH, MAX_FRAMES, MAX_SIDE
from ..lumina_core.sizes import CUSTOM_RESOLUTION, OFFICIAL_RESOLUTIONS, check_video_size, latent_shape, resolution_size
from ..lumina_core.vae import SPATIAL_COMPRESSION, decode, encode
from . import io_types
from .devices import loaded

TILED = {"auto": None, "on": True, "off": False}


def tiling(choice: str) -> bool | None:
    """The ``tiled`` combo value as lumina_core.vae's ``tiled`` argument (None = automatic)."""
    if choice not in TILED:
        raise ValueError(f"tiled {choice!r} is unknown; use one of {', '.join(TILED)}")
    return TILED[choice]


class LuminaVideoMSEmptyLatentVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=EMPTY_LATENT_VIDEO.id,
            display_name="Lumina-Video Empty Latent Video",
            category="Lumina-Video/latent",
            description="A zero LATENT [batch, 16, latent frames, height/8, width/8] that sets the video size.",
            inputs=[
                io.Combo.Input("resolution", options=[CUSTOM_RESOLUTION, *OFFICIAL_RESOLUTIONS],
                               default=CUSTOM_RESOLUTION,
                               tooltip="An official usable size (the official code's list for the 960 and 512 "
                                       "models: at most (960/32)^2 or (512/32)^2 patches of 32 px, sides at most 4:1 "
                                       "apart), or custom: the width and height below."),
                io.Int.Input("width", default=64, min=SPATIAL_COMPRESSION, max=MAX_SIDE, step=SPATIAL_COMPRESSION,
                             tooltip="Pixels, used when resolution is custom: a multiple of 8; the sampler needs 8 x "
                                     "the schedule's largest patch (32 for -MultiScale, e.g. 1248; 16 for "
                                     "single-scale and demo)."),
                io.Int.Input("height", default=64, min=SPATIAL_COMPRESSION, max=MAX_SIDE, step=SPATIAL_COMPRESSION,
                             tooltip="Pixels, used when resolution is custom: a multiple of 8; the sampler needs 8 x "
                                     "the schedule's largest patch (32 for -MultiScale, e.g. 704; 16 for "
                                     "single-scale and demo)."),
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES,
                             tooltip="Video frames: 8m or 8m+1 (e.g. 16, 49, 96; 8m for schedules with f-patch 2 "
                                     "stages), or 1 for an image. The CogVideoX VAE packs 4 frames into one latent "
                                     "frame (96 frames -> 24 latents)."),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, tooltip="Videos generated at once."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, resolution, width, height, frames):
        """Checked when the prompt is queued (before anything runs); replaces ComfyUI's min/max check. Without
        a schedule, refuses only what no schedule can run; the sampler checks the rest before any model call."""
        try:
            check_video_size(*resolution_size(resolution, width, height), frames)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, resolution, width, height, frames, batch_size) -> io.NodeOutput:
        width, height = resolution_size(resolution, width, height)
        check_video_size(width, height, frames)
        shape = latent_shape(width, height, frames, batch_size)
        return io.NodeOutput({"samples": torch.zeros(shape, device=comfy.model_management.intermediate_device())})


class LuminaVideoMSVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=VAE_DECODE.id,
            display_name="Lumina-Video VAE Decode",
            category="Lumina-Video/latent",
            description="Decodes latents (from the Lumina-Video samplers or any core sampler) with the CogVideoX VAE "
                        "to frames (IMAGE) and a VIDEO for Save Video.",
            inputs=[
                io_types.Vae.Input("vae", tooltip="From Lumina-Video VAE Loader."),
                io.Latent.Input("latent", tooltip="Sampled latents [batch, 16, T, h, w]."),
                io.Combo.Input("tiled", options=list(TILED), default="auto",
                               tooltip="Decode in overlapping spatial tiles to save memory (slightly blended seams). "
                                       "auto: only for large videos."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frame rate of the VIDEO output (official f24 models: 24, f16: 16)."),
            ],
            outputs=[
                io.Image.Output(display_name="images",
                                tooltip="All frames; a batch of videos is concatenated in order."),
                io.Video.Output(display_name="video"),
            ],
        )

    @classmethod
    def execute(cls, vae, latent, tiled, fps) -> io.NodeOutput:
        # LATENT holds raw CogVideoX latents (the model's LatentFormat scales them in and out)
        frames = decode(loaded(vae).inner, latent["samples"], tiled=tiling(tiled), scaling_factor=1.0)
        images = frames.flatten(0, 1).float().to(comfy.model_management.intermediate_device())
        video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=Fraction(fps)))
        return io.NodeOutput(images, video)


class LuminaVideoMSVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSVAEEncode",
            display_name="Lumina-Video VAE Encode",
            category="Lumina-Video/latent",
            description="Encodes frames with the CogVideoX VAE (posterior mode, as the official code) to a LATENT: "
                        "with a core sampler at denoise < 1 this is video-to-video.",
            inputs=[
                io_types.Vae.Input("vae", tooltip="From Lumina-Video VAE Loader."),
                io.Image.Input("images", tooltip="The clip's frames in order: 8m or 8m+1 of them (or 1 for an image), "
                                                 "width and height multiples of 8."),
                io.Combo.Input("tiled", options=list(TILED), default="auto",
                               tooltip="Encode in overlapping spatial tiles to save memory. auto: only for large "
                                       "videos."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vae, images, tiled) -> io.NodeOutput:
        frames = images[None, ..., :3].float()  # one video [1, F, H, W, 3]
        latents = encode(loaded(vae).inner, frames, tiled=tiling(tiled), scaling_factor=1.0)
        return io.NodeOutput({"samples": latents.to(comfy.model_management.intermediate_device())})
