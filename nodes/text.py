"""Prompt -> Lumina-Video caption features (Gemma-2 hidden layer -2 with the official template)."""

from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..lumina_core.text import encode_prompts
from . import io_types
from .devices import loaded


class LuminaVideoTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoTextEncode",
            display_name="Lumina-Video Text Encode",
            category="Lumina-Video/conditioning",
            description="Encodes the prompt and the negative prompt as the official pipeline does: system template in "
                        "front, <bos>, no <eos>, at most 256 tokens, features of Gemma-2's second-to-last layer. "
                        "The outputs are ComfyUI CONDITIONING (features plus their attention mask) for the pack's "
                        "samplers and guider or any core sampler.",
            inputs=[
                io_types.TextEncoder.Input("text_encoder", tooltip="From Lumina-Video Text Encoder Loader."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True, default="a red circle moving left",
                                tooltip="What the video shows. The official system template is added in front."),
                io.String.Input("negative_prompt", multiline=True, dynamic_prompts=True, default="",
                                tooltip="What to steer away from (used where cfg > 0). Empty encodes the template "
                                        "alone, as the official pipeline does."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
            ],
        )

    @classmethod
    def execute(cls, text_encoder, prompt, negative_prompt) -> io.NodeOutput:
        model = loaded(text_encoder.patcher).inner
        feats, mask = encode_prompts(model, text_encoder.tokenizer, [prompt, negative_prompt])
        device = comfy.model_management.intermediate_device()
        feats, mask = feats.to(device), mask.to(device)
        return io.NodeOutput(conditioning(feats[:1], mask[:1]), conditioning(feats[1:], mask[1:]))


def conditioning(feats, mask) -> list:
    """ComfyUI CONDITIONING of one caption row: features [1, L, D] with their token mask as an extra. The prompt
    and the negative prompt are padded to one length together, as officially, so their rows batch."""
    return [[feats, {"attention_mask": mask}]]
