"""The demo models: small Lumina-Video components trained on procedural clips (one coloured shape
moving over a grey background, ``training/demo_data.py``) that use the same classes and code
paths as the real ones, so the command line makes a real video on any CPU without downloads.

The shipped files live in ``lumina_core/demo/models/`` (transformer, VAE, text encoder folder with
its tokenizer) and were made by ``python -m training.train`` (docs/demo_training.md). If the
folder is missing, every component is built from a fixed seed with random weights: the pipeline
still runs end to end, but the video is noise. ``DEMO_IS_TRAINED`` says which case holds and the
command line prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_model
from ..model import NextDiT, NextDiTConfig

MODELS_DIR = Path(__file__).parent / "models"
TRANSFORMER_FILE = "transformer.safetensors"
VAE_FILE = "vae.safetensors"
TEXT_ENCODER_DIR = "text_encoder"  # Gemma-2 config + weights + tokenizer files
LORAS_DIR = Path(__file__).parent / "loras"  # LoRAs made on the demo (docs/finetune.md); ComfyUI lists them
LORA_PURPLE = "lumina_video_demo_purple.safetensors"  # teaches the word "purple" (benchmarks/finetune_colour.py)
DEMO_IS_TRAINED = all((MODELS_DIR / name).exists() for name in (TRANSFORMER_FILE, VAE_FILE, TEXT_ENCODER_DIR))
DEMO_SEED = 0
# Coarse patch first, fine last (as the official presets). Measured on the trained demo
# (benchmarks/eval_demo.py, docs/demo_training.md): switching to 1x2 at t = 0.1 and 1x1 at 0.4
# kept colour adherence at 96 % where 0.3 / 0.7 gave 88 %; 20 steps take about 1 s on 2 cores.
DEMO_SCHEDULE = {"P": ["2x2", [0.1, "1x2"], [0.4, "1x1"]], "step": 20, "ts": 3.0, "renorm": -1,
                 "cfg": [4.0, [0.8, 0.0]], "motion": 6.0, "negMotion": 2.0}
DEMO_SIZE = {"width": 64, "height": 64, "frames": 16, "fps": 8}

TRANSFORMER_CONFIG = NextDiTConfig(patch_sizes=(1, 2, 2), f_patch_sizes=(1, 1, 2), in_channels=16, dim=192,
                                   n_layers=4, n_heads=6, n_kv_heads=3, cap_feat_dim=64, multiple_of=64)
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=16, norm_num_groups=8,
                  block_out_channels=(16, 32, 32, 32), layers_per_block=1, temporal_compression_ratio=4,
                  sample_height=64, sample_width=64)
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
WORDS = ("a an the of and with on in at to from is moving moves slowly quickly fast slow still static "
         "left right up down diagonally across over background grey gray textured plain "
         "red green blue yellow orange purple white black cyan magenta pink "
         "circle square triangle ball box disk shape object standing "
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


TOKEN_EMBEDDING_STD = 1.0


def seeded_text_model(vocab_size: int):
    """The frozen demo text encoder: a tiny Gemma-2 with seeded random weights (the DiT learns to
    read its features; training and the shipped folder use exactly these weights).

    The token embeddings are drawn with std ``TOKEN_EMBEDDING_STD`` instead of Gemma's 0.02: with
    the default, the random layers' shared output swamps the token (the features of "red" and
    "blue" had cosine similarity 0.92) and the DiT did not learn to read the prompt in 3000 steps.
    """
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                          attn_implementation="eager", **TEXT_CONFIG)
    torch.manual_seed(DEMO_SEED)
    model = Gemma2Model(config).eval()
    with torch.no_grad():
        model.embed_tokens.weight.normal_(std=TOKEN_EMBEDDING_STD)
    return model


def seeded_vae(seed: int = DEMO_SEED):
    """An untrained demo VAE (random weights from ``seed``; the starting point of training)."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(**VAE_CONFIG).eval()


def seeded_transformer() -> NextDiT:
    """An untrained demo NextDiT with some signal in the (officially zeroed) output layers."""
    torch.manual_seed(DEMO_SEED)
    model = NextDiT(TRANSFORMER_CONFIG)
    for param in model.parameters():
        if param.dim() > 1 and not param.abs().sum():
            torch.nn.init.normal_(param, std=0.02)
    return model.eval()


def build_text_model(vocab_size: int):
    """The demo text encoder: the shipped one when present, else the seeded random one."""
    if DEMO_IS_TRAINED:
        from ..text import load_text_encoder

        model, _ = load_text_encoder(MODELS_DIR / TEXT_ENCODER_DIR)
        if model.get_input_embeddings().num_embeddings == vocab_size:
            return model
    return seeded_text_model(vocab_size)


def build_vae(dtype: torch.dtype = torch.float32):
    """The demo VAE in ``dtype``: the shipped trained one when present, else seeded random weights."""
    if DEMO_IS_TRAINED:
        from ..vae import load_vae

        return load_vae(MODELS_DIR / VAE_FILE, dtype)
    return seeded_vae().to(dtype)


def build_transformer() -> NextDiT:
    """The demo Multi-scale Next-DiT: the shipped trained one when present, else seeded random weights."""
    if DEMO_IS_TRAINED:
        return load_model(MODELS_DIR / TRANSFORMER_FILE)
    return seeded_transformer()


def load_demo(vae_dtype: torch.dtype = torch.float32) -> DemoComponents:
    """All demo components: trained when ``DEMO_IS_TRAINED`` (the files of ``MODELS_DIR``), else
    seeded random stand-ins (see the module docstring). The VAE is built in ``vae_dtype``."""
    tokenizer = build_tokenizer()
    return DemoComponents(transformer=build_transformer(), text_model=build_text_model(len(tokenizer)),
                          tokenizer=tokenizer, vae=build_vae(vae_dtype))
