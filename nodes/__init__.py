"""ComfyUI nodes of the Lumina-Video pack (V3 schema). Thin adapters: validate, convert ComfyUI types,
call lumina_core."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .budget import LuminaVideoMSScheduleForTimeBudget
from .finetune import LuminaVideoMSTrainLoRA
from .guidance import LuminaVideoMSGuider, LuminaVideoMSModelSchedule, LuminaVideoMSSigmas
from .loaders import (
    LuminaVideoMSModelLoader,
    LuminaVideoMSTextEncoderLoader,
    LuminaVideoMSVAELoader,
)
from .model_files import register_demo_loras
from .motion import LuminaVideoMSMotionConditioning, LuminaVideoMSMotionScore, LuminaVideoMSMotionScoreFromVideo
from .ray_sampler import LuminaVideoMSRaySampler
from .sampler import LuminaVideoMSSampler, LuminaVideoMSStageSampler
from .schedule import (
    LuminaVideoMSScheduleJSON,
    LuminaVideoMSSchedulePreset,
    LuminaVideoMSScheduleStage,
)
from .step_cache import LuminaVideoMSStepCache
from .text import LuminaVideoMSTextEncode, LuminaVideoMSTextEncodeCLIP
from .video import LuminaVideoMSEmptyLatentVideo, LuminaVideoMSVAEDecode, LuminaVideoMSVAEEncode

NODES: list[type[io.ComfyNode]] = [
    LuminaVideoMSModelLoader,
    LuminaVideoMSTextEncoderLoader,
    LuminaVideoMSVAELoader,
    LuminaVideoMSTextEncode,
    LuminaVideoMSTextEncodeCLIP,
    LuminaVideoMSMotionScore,
    LuminaVideoMSMotionScoreFromVideo,
    LuminaVideoMSMotionConditioning,
    LuminaVideoMSSchedulePreset,
    LuminaVideoMSScheduleJSON,
    LuminaVideoMSScheduleStage,
    LuminaVideoMSScheduleForTimeBudget,
    LuminaVideoMSEmptyLatentVideo,
    LuminaVideoMSSampler,
    LuminaVideoMSStageSampler,
    LuminaVideoMSRaySampler,
    LuminaVideoMSModelSchedule,
    LuminaVideoMSSigmas,
    LuminaVideoMSGuider,
    LuminaVideoMSStepCache,
    LuminaVideoMSVAEDecode,
    LuminaVideoMSVAEEncode,
    LuminaVideoMSTrainLoRA,
]

register_demo_loras()


class LuminaVideoExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
