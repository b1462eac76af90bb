"""ComfyUI nodes of the Lumina-Video pack (V3 schema). Thin adapters: validate, convert ComfyUI types,
call lumina_core."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .budget import LuminaVideoScheduleForTimeBudget
from .guidance import LuminaVideoGuider, LuminaVideoModelSchedule, LuminaVideoSigmas
from .loaders import (
    LuminaVideoModelLoader,
    LuminaVideoTextEncoderLoader,
    LuminaVideoVAELoader,
)
from .motion import LuminaVideoMotionConditioning, LuminaVideoMotionScore, LuminaVideoMotionScoreFromVideo
from .ray_sampler import LuminaVideoRaySampler
from .sampler import LuminaVideoSampler, LuminaVideoStageSampler
from .schedule import (
    LuminaVideoScheduleJSON,
    LuminaVideoSchedulePreset,
    LuminaVideoScheduleStage,
)
from .step_cache import LuminaVideoStepCache
from .text import LuminaVideoTextEncode, LuminaVideoTextEncodeCLIP
from .video import LuminaVideoEmptyLatentVideo, LuminaVideoVAEDecode, LuminaVideoVAEEncode

NODES: list[type[io.ComfyNode]] = [
    LuminaVideoModelLoader,
    LuminaVideoTextEncoderLoader,
    LuminaVideoVAELoader,
    LuminaVideoTextEncode,
    LuminaVideoTextEncodeCLIP,
    LuminaVideoMotionScore,
    LuminaVideoMotionScoreFromVideo,
    LuminaVideoMotionConditioning,
    LuminaVideoSchedulePreset,
    LuminaVideoScheduleJSON,
    LuminaVideoScheduleStage,
    LuminaVideoScheduleForTimeBudget,
    LuminaVideoEmptyLatentVideo,
    LuminaVideoSampler,
    LuminaVideoStageSampler,
    LuminaVideoRaySampler,
    LuminaVideoModelSchedule,
    LuminaVideoSigmas,
    LuminaVideoGuider,
    LuminaVideoStepCache,
    LuminaVideoVAEDecode,
    LuminaVideoVAEEncode,
]


class LuminaVideoExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
