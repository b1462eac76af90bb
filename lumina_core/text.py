"""Gemma-2 prompt features, exactly as the official Lumina-Video pipeline computes them.

Official recipe (Alpha-VLLM/Lumina-Video ``generate.py``): every prompt, negative ones included,
is prefixed with :data:`SYSTEM_PROMPT`; the Gemma tokenizer adds ``<bos>`` and no ``<eos>``; the
batch is right-padded to the longest prompt rounded up to a multiple of 8 and truncated at 256
tokens; the features are ``hidden_states[-2]`` of ``Gemma2Model`` (the output of the
second-to-last decoder layer, before the final norm) and the mask is the tokenizer's
attention mask (1 = token, 0 = padding).

Weights are only ever read from local files: a Hugging Face folder (``config.json`` + weights +
tokenizer files, e.g. a copy of ``google/gemma-2-2b``), or one ``.safetensors`` file (such as
ComfyUI's ``gemma_2_2b_fp16.safetensors``) plus a tokenizer folder.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, Gemma2Config, Gemma2Model

from .checkpoint import check_safetensors_folder

SYSTEM_PROMPT = (
    "You are an assistant designed to generate high-quality videos with the highest degree of "
    "image-text alignment based on user prompts. <Prompt Start> "
)
"""Prefix the official pipeline puts before every prompt (positive and negative)."""

MAX_TOKENS = 256
"""Official token limit per prompt, template and ``<bos>`` included."""

PAD_MULTIPLE = 8
"""The official batch is right-padded to a multiple of this many tokens."""

GEMMA2_HEAD_DIMS = {2304: (256, 256), 3584: (256, 256), 4608: (128, 144)}
"""hidden size -> (head_dim, query_pre_attn_scalar) of the released Gemma-2 2B, 9B and 27B (integers, as their
config.json files and transformers 5's strictly typed Gemma2Config have them)."""

# Keys a Gemma-2 checkpoint may carry besides the Gemma2Model weights: the (tied) LM head and
# the SentencePiece model that ComfyUI stores inside its text-encoder files.
_IGNORED_KEYS = ("lm_head.weight", "spiece_model")
_INFERENCE_KEYS = ("embed_tokens.weight", "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight",
                   "layers.0.mlp.gate_proj.weight")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_TRUNCATION_CONTEXT_TOKENS = 8

# transformers 4.56 renamed from_pretrained's ``torch_dtype`` to ``dtype``.
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than ``max_length`` tokens and its end was dropped."""


def apply_template(prompt: str) -> str:
    """Return ``prompt`` with the official system template in front of it.

    An empty prompt gives the template alone, which is what the official pipeline encodes for
    an empty negative prompt. Nodes that encode with ComfyUI's own ``lumina2`` (gemma_2_2b)
    CLIP call this so their features follow the same recipe.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__} {prompt!r}; pass '' for no prompt")
    return SYSTEM_PROMPT + prompt


def encode_prompts(text_model, tokenizer, prompts, max_length: int = MAX_TOKENS):
    """Encode prompts into Lumina-Video caption features.

    Args:
        text_model: a transformers Gemma-2 model (``Gemma2Model``, as :func:`load_text_encoder`
            returns); it runs on its own device and dtype.
        tokenizer: the matching Gemma tokenizer (adds ``<bos>``, no ``<eos>``).
        prompts: one prompt or a sequence of prompts, without the template (it is added here);
            ``''`` encodes the template alone (the official empty negative prompt).
        max_length: token limit including the template and ``<bos>`` (official: 256). Longer
            prompts are cut and a :class:`PromptTruncatedWarning` names the cut.

    Returns:
        ``(feats, mask)``: feats ``[B, L, D]`` in the model's dtype, mask ``[B, L]`` int64
        (1 = token, 0 = right padding), both on the model's device; ``L`` is the longest prompt
        rounded up to a multiple of 8.
    """
    texts = [apply_template(prompt) for prompt in _prompt_list(prompts)]
    _check_max_length(max_length)
    _warn_truncated(tokenizer, texts, max_length)
    tokens = _tokenize(tokenizer, texts, max_length)
    _check_vocabulary(tokenizer, text_model, tokens["input_ids"])
    _check_special_tokens(tokenizer, tokens["input_ids"], tokens["attention_mask"])
    device = next(text_model.parameters()).device
    input_ids = tokens["input_ids"].to(device)
    mask = tokens["attention_mask"].to(device)
    with torch.no_grad():
        # use_cache=False only skips building a KV cache; the features are the same.
        output = text_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    return output.hidden_states[-2], mask


def pad_captions(rows: Sequence[torch.Tensor]):
    """Batch caption features of different lengths the way the official pipeline batches its prompts.

    Args:
        rows: features ``[L_i, D]`` of each prompt, ``<bos>`` first, without padding (one text encoder,
            so one dtype, device and width D).

    Returns:
        ``(feats, mask)``: feats ``[B, L, D]`` with zeros after each row's tokens, mask ``[B, L]`` int64
        (1 = token, 0 = right padding); ``L`` is the longest row rounded up to a multiple of
        :data:`PAD_MULTIPLE`. Padded positions carry no meaning: the Next-DiT masks them out.
    """
    if not rows:
        raise ValueError("rows is empty; pass the features of at least one prompt")
    lengths = [row.shape[0] for row in rows]
    length = -(-max(lengths) // PAD_MULTIPLE) * PAD_MULTIPLE
    feats = torch.stack([torch.nn.functional.pad(row, (0, 0, 0, length - row.shape[0])) for row in rows])
    mask = (torch.arange(length, device=feats.device) < torch.tensor(lengths, device=feats.device)[:, None]).long()
    return feats, mask


def load_text_encoder(path, tokenizer_path=None, dtype: torch.dtype = torch.float32, device="cpu", config=None):
    """Load a Gemma-2 text encoder and its tokenizer from local files (never downloads).

    Args:
        path: a Hugging Face Gemma-2 folder (``config.json`` + weights, e.g. google/gemma-2-2b)
            or a single ``.safetensors`` file of Gemma-2 weights (HF or ComfyUI key names).
        tokenizer_path: folder with the tokenizer files; defaults to ``path`` when it is a
            folder and is required for a single file.
        dtype: dtype of the returned model (e.g. ``torch.bfloat16``).
        device: device of the returned model.
        config: for a single file only: a ``Gemma2Config`` or the path of a ``config.json`` (or
            its folder); by default inferred from the tensor shapes (see :func:`infer_gemma2_config`).

    Returns:
        ``(model, tokenizer)``: a ``Gemma2Model`` in eval mode without gradients, using eager
        attention (the only one that applies Gemma-2's attention logit soft-capping, as the
        official pipeline did), and a tokenizer that pads on the right.
    """
    path = _existing_path(path, "Gemma-2 weights")
    if path.is_dir():
        if config is not None:
            raise ValueError(f"config is only used with a single .safetensors file, but {path} is a folder; "
                             "drop config= (the folder's config.json is used)")
        model = _load_model_folder(path, dtype)
    else:
        if tokenizer_path is None:
            raise ValueError(f"{path} is a single weights file, so tokenizer_path is required; pass the folder "
                             "holding the Gemma tokenizer (tokenizer.json / tokenizer.model)")
        shapes = _read_shapes(path)
        model = _load_model_file(path, _resolve_config(shapes, config), dtype)
    tokenizer = _load_tokenizer(_existing_path(tokenizer_path or path, "Gemma tokenizer"))
    _check_vocabulary(tokenizer, model, None)
    model = model.to(device).eval().requires_grad_(False)
    return model, tokenizer


def infer_gemma2_config(shapes: Mapping[str, Sequence[int]]) -> Gemma2Config:
    """Build a ``Gemma2Config`` from the tensor shapes of a ``Gemma2Model`` state dict.

    ``shapes`` maps key names without the ``model.`` prefix to shapes. Sizes come from the
    embedding, the first layer's projections and the number of layers; head_dim, which the
    shapes cannot separate from the head count, comes from :data:`GEMMA2_HEAD_DIMS`. Other
    fields keep the Gemma-2 defaults shared by all released sizes.
    """
    missing = [key for key in _INFERENCE_KEYS if key not in shapes]
    if missing:
        raise ValueError(f"cannot infer a Gemma-2 config: the weights lack {missing}; pass a complete Gemma-2 "
                         "checkpoint, or config= (a Gemma2Config or the model's config.json)")
    vocab_size, hidden_size = shapes["embed_tokens.weight"]
    if hidden_size not in GEMMA2_HEAD_DIMS:
        known = ", ".join(str(size) for size in GEMMA2_HEAD_DIMS)
        raise ValueError(f"cannot infer the Gemma-2 config for hidden size {hidden_size} (known sizes: {known}); "
                         "pass config= (a Gemma2Config or the model's config.json)")
    head_dim, query_pre_attn_scalar = GEMMA2_HEAD_DIMS[hidden_size]
    layer_numbers = {int(match.group(1)) for key in shapes if (match := re.match(r"layers\.(\d+)\.", key))}
    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0],
        num_hidden_layers=max(layer_numbers) + 1,
        num_attention_heads=shapes["layers.0.self_attn.q_proj.weight"][0] // head_dim,
        num_key_value_heads=shapes["layers.0.self_attn.k_proj.weight"][0] // head_dim,
        head_dim=head_dim,
        query_pre_attn_scalar=query_pre_attn_scalar,
    )


def _prompt_list(prompts) -> list[str]:
    """Return ``prompts`` as a non-empty list (one str becomes a batch of one)."""
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ValueError("prompts is empty; pass at least one prompt ('' encodes the template alone)")
    return prompt_list


def _check_max_length(max_length) -> None:
    """Reject a max_length that is not a positive int."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1, got {max_length!r}; the official value is 256")


def _tokenize(tokenizer, texts: list[str], max_length: int):
    """Tokenize as the official pipeline does, padding on the right whatever the tokenizer says."""
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        return tokenizer(texts, padding=True, pad_to_multiple_of=PAD_MULTIPLE, max_length=max_length,
                         truncation=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = padding_side


def _warn_truncated(tokenizer, texts: list[str], max_length: int) -> None:
    """Warn, per prompt, when truncation at ``max_length`` tokens drops its end."""
    for index, ids in enumerate(tokenizer(texts, truncation=False)["input_ids"]):
        if len(ids) <= max_length:
            continue
        kept_end = tokenizer.decode(ids[max(0, max_length - _TRUNCATION_CONTEXT_TOKENS):max_length],
                                    skip_special_tokens=True)
        dropped_start = tokenizer.decode(ids[max_length:max_length + _TRUNCATION_CONTEXT_TOKENS],
                                         skip_special_tokens=True)
        warnings.warn(
            f"prompt {index} is {len(ids)} tokens (template and <bos> included), over max_length {max_length}: "
            f"the last {len(ids) - max_length} tokens are dropped. It now ends with '...{kept_end}' "
            f"(cut before '{dropped_start}...'); shorten the prompt or raise max_length.",
            PromptTruncatedWarning,
            stacklevel=3,
        )


def _check_vocabulary(tokenizer, text_model, input_ids: torch.Tensor | None) -> None:
    """Raise when the tokenizer can produce ids that the model's embedding has no row for."""
    rows = text_model.get_input_embeddings().num_embeddings
    largest_id = len(tokenizer) - 1 if input_ids is None else max(len(tokenizer) - 1, int(input_ids.max()))
    if largest_id >= rows:
        raise ValueError(
            f"tokenizer does not match the text model: it has {len(tokenizer)} tokens (largest id {largest_id}) "
            f"but the model's embedding has {rows} rows (ids 0..{rows - 1}); load the tokenizer that ships with "
            "these Gemma-2 weights (Gemma-2 uses 256000 tokens)"
        )


def _check_special_tokens(tokenizer, input_ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise unless every row starts with <bos> and its last token is not <eos> (official recipe)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or not bool((input_ids[:, 0] == bos).all()):
        raise ValueError(f"tokenizer did not start the prompts with <bos> (bos_token_id {bos}); the official "
                         "features need it: use the Gemma tokenizer (add_bos_token=True)")
    last_tokens = input_ids.gather(1, (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0))
    if eos is not None and bool((last_tokens == eos).any()):
        raise ValueError(f"tokenizer appended <eos> (eos_token_id {eos}) to the prompts; the official features "
                         "have none: use the Gemma tokenizer (add_eos_token=False)")


def _existing_path(path, what: str) -> Path:
    """Return ``path`` as a Path, raising FileNotFoundError that names it when it does not exist."""
    resolved = Path(os.path.expanduser(os.fspath(path)))
    if not resolved.exists():
        raise FileNotFoundError(f"{what} not found at {resolved}; pass an existing local folder or file "
                                "(nothing is downloaded)")
    return resolved


def _load_model_folder(folder: Path, dtype: torch.dtype) -> Gemma2Model:
    """Load a Hugging Face Gemma-2 folder (base model or CausalLM checkpoint) without downloading."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json, so it is not a Hugging Face model folder; pass a "
                                "Gemma-2 folder (config.json + model*.safetensors) or a single .safetensors file")
    config = _read_gemma2_config(folder)
    check_safetensors_folder(folder, "Gemma-2 text encoder", "google/gemma-2-2b")
    try:
        return Gemma2Model.from_pretrained(folder, config=config, local_files_only=True, use_safetensors=True,
                                           attn_implementation="eager", **{_DTYPE_KWARG: dtype})
    except OSError as error:
        raise OSError(f"cannot read the Gemma-2 weights in {folder}: {error}") from error


def _read_gemma2_config(path: Path) -> Gemma2Config:
    """Read a config.json (or the one in a folder), raising unless it describes a Gemma-2 model."""
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read a model config from {path} ({error}); pass a Gemma-2 config.json "
                         "or the folder holding it") from error
    if config.model_type != "gemma2":
        raise ValueError(f"{path} holds a '{config.model_type}' model, not Gemma-2 (model_type 'gemma2'); "
                         "Lumina-Video needs the google/gemma-2-2b text encoder")
    return config


def _resolve_config(shapes: Mapping[str, Sequence[int]], config) -> Gemma2Config:
    """Return the config for a single weights file: given, read from a config.json, or inferred."""
    if config is None:
        return infer_gemma2_config(shapes)
    if isinstance(config, Gemma2Config):
        return config
    return _read_gemma2_config(_existing_path(config, "Gemma-2 config"))


def _read_shapes(path: Path) -> dict[str, list[int]]:
    """Return the Gemma2Model key -> shape map of a Gemma-2 safetensors file, without its tensors."""
    try:
        with safe_open(path, framework="pt") as file:
            shapes = {key: file.get_slice(key).get_shape() for key in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {path} as a .safetensors file ({error}); pass a Gemma-2 .safetensors "
                         "file or a Hugging Face folder") from error
    shapes = _gemma2_keys(shapes)
    if "layers.0.post_feedforward_layernorm.weight" not in shapes or "layers.0.self_attn.q_norm.weight" in shapes:
        raise ValueError(f"{path} is not a Gemma-2 checkpoint (expected keys like "
                         "'model.layers.0.post_feedforward_layernorm.weight' and no q_norm); pass the Gemma-2 2B "
                         "text encoder (e.g. gemma_2_2b_fp16.safetensors)")
    return shapes


def _gemma2_keys(tensors: Mapping) -> dict:
    """Map checkpoint keys to Gemma2Model keys: drop the ``model.`` prefix, the LM head and extras."""
    return {key.removeprefix("model."): value for key, value in tensors.items() if key not in _IGNORED_KEYS}


def _load_model_file(path: Path, config: Gemma2Config, dtype: torch.dtype) -> Gemma2Model:
    """Build a Gemma2Model from a single safetensors file, checking that every weight is there."""
    state_dict = _gemma2_keys(load_file(path))
    try:
        model, info = Gemma2Model.from_pretrained(None, config=config, state_dict=state_dict,
                                                  attn_implementation="eager", output_loading_info=True,
                                                  **{_DTYPE_KWARG: dtype})
    except RuntimeError as error:
        raise ValueError(f"the weights in {path} do not fit the Gemma-2 config ({error}); pass the config.json "
                         "that belongs to these weights as config=") from error
    problems = {name: sorted(info[name])[:5] for name in ("missing_keys", "unexpected_keys") if info[name]}
    if problems:
        raise ValueError(f"{path} does not match a Gemma-2 model with {config.num_hidden_layers} layers: {problems}; "
                         "pass the config.json that belongs to these weights as config=")
    return model


def _load_tokenizer(folder: Path):
    """Load the tokenizer from a local folder and make it pad on the right (official setting)."""
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(f"{folder} holds no tokenizer ({' or '.join(_TOKENIZER_FILES)}); pass the folder "
                                "holding the Gemma tokenizer files, e.g. a copy of google/gemma-2-2b")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a tokenizer from {folder} ({error}); pass the folder holding the Gemma "
                         "tokenizer files (tokenizer.json or tokenizer.model + tokenizer_config.json)") from error
    tokenizer.padding_side = "right"
    return tokenizer
