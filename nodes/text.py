"""Prompt -> Lumina-Video caption features (Gemma-2 hidden layer -2 with the official template), from the pack's
text encoder or from ComfyUI's own lumina2 (gemma_2_2b) CLIP."""

from __future__ import annotations

import warnings

import comfy.model_management
import comfy.text_encoders.lumina2
from comfy_api.latest import io

from ..lumina_core.app.node_table import TEXT_ENCODE
from ..lumina_core.text import MAX_TOKENS, PromptTruncatedWarning, apply_template, encode_prompts, pad_captions
from . import io_types
from .devices import loaded

GEMMA2 = "gemma2_2b"
"""Name ComfyUI's lumina2 CLIP gives its Gemma-2-2B encoder and that encoder's tokens."""
FEATURE_LAYER = -2
"""Gemma-2 layer the official features come from (hidden_states[-2]); also ComfyUI's lumina2 default."""


def prompt_inputs() -> list:
    """The prompt and negative prompt widgets, the same on both text encode nodes."""
    return [
        io.String.Input("prompt", multiline=True, dynamic_prompts=True, default="a red circle moving left",
                        tooltip="What the video shows. The official system template is added in front."),
        io.String.Input("negative_prompt", multiline=True, dynamic_prompts=True, default="",
                        tooltip="What to steer away from (used where cfg > 0). Empty encodes the template "
                                "alone, as the official pipeline does."),
    ]


class LuminaVideoMSTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=TEXT_ENCODE.id,
            display_name="Lumina-Video Text Encode",
            category="Lumina-Video/conditioning",
            description="Encodes the prompt and the negative prompt as the official pipeline does: system template in "
                        "front, <bos>, no <eos>, at most 256 tokens, features of Gemma-2's second-to-last layer. "
                        "The outputs are ComfyUI CONDITIONING (features plus their attention mask) for the pack's "
                        "samplers and guider or any core sampler.",
            inputs=[
                io_types.TextEncoder.Input("text_encoder", tooltip="From Lumina-Video Text Encoder Loader."),
                *prompt_inputs(),
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


class LuminaVideoMSTextEncodeCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSTextEncodeCLIP",
            display_name="Lumina-Video Text Encode (ComfyUI CLIP)",
            category="Lumina-Video/conditioning",
            description="Encodes the prompt and the negative prompt with ComfyUI's own Gemma-2-2B (Load CLIP, type "
                        "lumina2, a gemma_2_2b*.safetensors file) by the official recipe: video system template in "
                        "front, <bos>, no <eos>, at most 256 tokens, layer -2, prompt text taken literally "
                        "((word:1.2) is not a weight). The features are close to the official Hugging Face ones, "
                        "not equal: ComfyUI's Gemma-2 leaves out the attention logit soft-cap 50*tanh(x/50) and, "
                        "from an fp16 file, rounds the norm scales 1 + w to fp16. Measured on a small random "
                        "Gemma-2 with the same weights (max error over max feature): equal without the soft-cap; "
                        "with it 1.5e-3 when attention logits reach ~5 and 2e-2 at ~18, below the official bf16 "
                        "run's own rounding there (1e-2 to 6e-2), but 0.2 at ~39; fp16 norm scales add ~1e-3. Not "
                        "measured on the real 2B weights. For the exact official features use Lumina-Video Text "
                        "Encode.",
            inputs=[
                io.Clip.Input("clip", tooltip="ComfyUI's Gemma-2-2B text encoder: Load CLIP with type lumina2 and "
                                              "a gemma_2_2b*.safetensors file (its tokenizer is inside)."),
                *prompt_inputs(),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
            ],
        )

    @classmethod
    def execute(cls, clip, prompt, negative_prompt) -> io.NodeOutput:
        check_gemma2_clip(clip)
        rows = [encode_with_clip(clip, text, name) for name, text in (("prompt", prompt),
                                                                      ("negative_prompt", negative_prompt))]
        feats, mask = pad_captions(rows)
        return io.NodeOutput(conditioning(feats[:1], mask[:1]), conditioning(feats[1:], mask[1:]))


def check_gemma2_clip(clip) -> None:
    """Raise unless ``clip`` is ComfyUI's lumina2 Gemma-2-2B set to read the official layer."""
    model = getattr(clip, "cond_stage_model", None)
    if not isinstance(getattr(model, GEMMA2, None), comfy.text_encoders.lumina2.Gemma2_2BModel):
        raise ValueError(f"clip is {describe_clip(clip)}, not ComfyUI's Gemma-2-2B text encoder; load a "
                         "gemma_2_2b*.safetensors file (e.g. gemma_2_2b_fp16.safetensors) with Load CLIP, type "
                         "lumina2, or use Lumina-Video Text Encoder Loader with Lumina-Video Text Encode")
    if clip.layer_idx not in (None, FEATURE_LAYER):
        raise ValueError(f"clip is set to stop at layer {clip.layer_idx} (CLIP Set Last Layer), but Lumina-Video "
                         f"reads Gemma-2 layer {FEATURE_LAYER}; remove CLIP Set Last Layer or set it to "
                         f"{FEATURE_LAYER}")


def describe_clip(clip) -> str:
    """Name what was connected as a CLIP, for error messages."""
    if clip is None:
        return "missing (the checkpoint loader found no text encoder in its file)"
    model = getattr(clip, "cond_stage_model", None)
    encoder = getattr(model, "clip_name", None)
    return f"a {type(model).__name__}" + (f" holding {encoder}" if encoder else "")


def encode_with_clip(clip, prompt: str, name: str):
    """Features [L, D] of one prompt from ComfyUI's lumina2 CLIP: template in front, <bos> (the tokenizer's start
    token), no <eos>, cut at the official token limit."""
    tokens = clip.tokenize(apply_template(prompt), disable_weights=True)
    row = tokens[GEMMA2][0]  # lumina2's tokenizer never splits a prompt (its max_length is 99999999)
    if len(row) > MAX_TOKENS:
        warnings.warn(f"{name} is {len(row)} tokens (template and <bos> included), over the official limit of "
                      f"{MAX_TOKENS}: the last {len(row) - MAX_TOKENS} tokens are dropped; shorten the {name}",
                      PromptTruncatedWarning, stacklevel=2)
        row = row[:MAX_TOKENS]
    return clip.encode_from_tokens({GEMMA2: [row]})[0]
