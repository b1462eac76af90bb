"""The names a ComfyUI graph of the pack's nodes is written in: node ids, widget names in the order ComfyUI stores
their values, socket names and types, and the loaders' fixed entries. The command line writes its graph from this
table (:mod:`lumina_core.app.workflow`); the nodes in ``nodes/`` take their ids, socket types and the loaders'
entries from it, and tests/test_nodes.py checks that every node's widgets and sockets are the table's, in order.
Only strings: nothing here imports ComfyUI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MODEL, CONDITIONING, LATENT, IMAGE, VIDEO = "MODEL", "CONDITIONING", "LATENT", "IMAGE", "VIDEO"  # ComfyUI's types
INT, LORA_MODEL = "INT", "LORA_MODEL"  # LORA_MODEL: core Train LoRA's output, what SaveLoRA and LoraModelLoader take
TEXT_ENCODER = "LUMINA_VIDEO_TEXT_ENCODER"  # the pack's own: what core has no type for
SCHEDULE = "LUMINA_VIDEO_SCHEDULE"
VAE = "LUMINA_VIDEO_VAE"

NODE_ID_PREFIX = "LuminaVideoMS"
"""What every node id of the pack starts with: no other node pack registers ids with it (the other Lumina-Video pack,
greengerong/ComfyUI-Lumina-Video, registers LuminaVideoModelLoader, LuminaVideoSampler and LuminaVideoVAEDecode)."""

DEMO_ENTRY = "lumina-video-demo (built-in)"
"""The loaders' entry for the built-in demo components (first in each loader's list; needs no file)."""
SAME_FOLDER = "(from the text encoder folder)"
"""The text encoder loader's tokenizer entry for a model folder that holds its own tokenizer."""


@dataclass(frozen=True)
class NodeNames:
    """One node type as a graph names it: ``widgets`` in the order of the UI format's widgets_values (a widget
    named by ``control_after`` is followed there by its "control after generate" value), ``inputs`` and
    ``outputs`` as (socket name, type) in slot order."""

    id: str
    widgets: tuple[str, ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()
    control_after: Optional[str] = None

    def input_type(self, name: str) -> str:
        types = dict(self.inputs)
        if name not in types:
            raise ValueError(f"{self.id} has no input {name!r}; its inputs are {', '.join(types) or 'none'}")
        return types[name]


MODEL_LOADER = NodeNames("LuminaVideoMSModelLoader", ("model_name", "weight_dtype"), outputs=(("model", MODEL),))
TEXT_ENCODER_LOADER = NodeNames("LuminaVideoMSTextEncoderLoader", ("text_encoder_name", "tokenizer", "weight_dtype"),
                                outputs=(("text_encoder", TEXT_ENCODER),))
VAE_LOADER = NodeNames("LuminaVideoMSVAELoader", ("vae_name", "weight_dtype"), outputs=(("vae", VAE),))
TEXT_ENCODE = NodeNames("LuminaVideoMSTextEncode", ("prompt", "negative_prompt"),
                        inputs=(("text_encoder", TEXT_ENCODER),),
                        outputs=(("positive", CONDITIONING), ("negative", CONDITIONING)))
SCHEDULE_JSON = NodeNames("LuminaVideoMSScheduleJSON", ("config",), outputs=(("schedule", SCHEDULE),))
EMPTY_LATENT_VIDEO = NodeNames("LuminaVideoMSEmptyLatentVideo",
                               ("resolution", "width", "height", "frames", "batch_size"), outputs=(("latent", LATENT),))
STEP_CACHE = NodeNames("LuminaVideoMSStepCache", ("threshold", "start", "end"), inputs=(("model", MODEL),),
                       outputs=(("model", MODEL),))
SAMPLER = NodeNames("LuminaVideoMSSampler", ("seed",),
                    inputs=(("model", MODEL), ("positive", CONDITIONING), ("negative", CONDITIONING),
                            ("latent", LATENT), ("schedule", SCHEDULE), ("draft_vae", VAE)),
                    outputs=(("latent", LATENT),), control_after="seed")
VAE_DECODE = NodeNames("LuminaVideoMSVAEDecode", ("tiled", "fps"), inputs=(("vae", VAE), ("latent", LATENT)),
                       outputs=(("images", IMAGE), ("video", VIDEO)))
TRAIN_LORA = NodeNames("LuminaVideoMSTrainLoRA", ("data", "steps", "rank", "alpha", "lr", "width", "height", "frames",
                                                 "seed"),
                       inputs=(("model", MODEL), ("text_encoder", TEXT_ENCODER), ("vae", VAE)),
                       outputs=(("lora", LORA_MODEL), ("loss_graph", IMAGE), ("steps", INT)))
PACK_NODES = (MODEL_LOADER, TEXT_ENCODER_LOADER, VAE_LOADER, TEXT_ENCODE, SCHEDULE_JSON, EMPTY_LATENT_VIDEO, STEP_CACHE,
              SAMPLER, VAE_DECODE, TRAIN_LORA)

SAVE_VIDEO = NodeNames("SaveVideo", ("filename_prefix", "format", "codec"), inputs=(("video", VIDEO),))
"""ComfyUI's own Save Video node."""
LORA_LOADER = NodeNames("LoraLoaderModelOnly", ("lora_name", "strength_model"), inputs=(("model", MODEL),),
                        outputs=(("MODEL", MODEL),))
"""ComfyUI's own LoRA loader for a MODEL (loads the files ``python -m lumina_core finetune`` writes)."""
