"""The demo models: small stand-ins for Gemma-2-2B, the CogVideoX VAE and the 2B Next-DiT that
use the same classes and code paths, so the command line runs on any CPU without downloads.

Until trained demo weights ship with the pack, every component here is built from a fixed seed
with random weights: the pipeline runs end to end, but the video is noise. ``DEMO_IS_TRAINED``
says which case holds and the command line prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import NextDiT, NextDiTConfig

DEMO_IS_TRAINED = False
DEMO_SEED = 0
DEMO_SCHEDULE = {"P": ["2x2", [0.3, "1x2"], [0.7, "1x1"]], "step": 20, "ts": 3.0, "renorm": -1,
                 "cfg": [4.0, [0.8, 0.0]], "motion": 6.0, "negMotion": 2.0}
DEMO_SIZE = {"width": 64, "height": 64, "frames": 16, "fps": 8}

TRANSFORMER_CONFIG = NextDiTConfig(patch_sizes=(1, 2, 2), f_patch_sizes=(1, 1, 2), in_channels=16, dim=192,
                                   n_layers=4, n_heads=6, n_kv_heads=3, cap_feat_dim=64, multiple_of=64)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=16, norm_num_groups=4,
                  block_out_channels=(8, 8, 8, 8), layers_per_block=1, temporal_compression_ratio=4,
                  sample_height=64, sample_width=64)
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
WORDS = ("a an the of and with on in at to from is moving moves slowly quickly fast slow still static "
         "left right up down diagonally across over background grey gray textured plain "
         "red green blue yellow orange purple white black cyan magenta pink "
         "circle square triangle ball box disk shape object "
         "you are assistant designed generate high quality videos highest degree image text alignment "
         "based user prompts prompt start . , < >").split()


@dataclass
class DemoComponents:
    transformer: NextDiT
    text_model: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module


def build_tokenizer():
    """A word-level tokenizer with Gemma's conventions (<bos> added, no <eos>, right padding)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(set(WORDS)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")


def build_text_model(vocab_size: int):
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                          attn_implementation="eager", **TEXT_CONFIG)
    torch.manual_seed(DEMO_SEED)
    return Gemma2Model(config).eval()


def build_vae():
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(DEMO_SEED)
    return AutoencoderKLCogVideoX(**VAE_CONFIG).eval()


def build_transformer() -> NextDiT:
    torch.manual_seed(DEMO_SEED)
    model = NextDiT(TRANSFORMER_CONFIG)
    for param in model.parameters():  # the official init zeroes the outputs: give the demo some signal
        if param.dim() > 1 and not param.abs().sum():
            torch.nn.init.normal_(param, std=0.02)
    return model.eval()


def load_demo() -> DemoComponents:
    """All demo components (random, seeded: see the module docstring)."""
    tokenizer = build_tokenizer()
    return DemoComponents(transformer=build_transformer(), text_model=build_text_model(len(tokenizer)),
                          tokenizer=tokenizer, vae=build_vae())
