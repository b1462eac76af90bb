"""ComfyUI's own Gemma-2-2B (Load CLIP, type lumina2) as the Lumina-Video text encoder: how far its features are
from the official Hugging Face path with the same weights, and the Lumina-Video Text Encode (ComfyUI CLIP) node.

Everything is small and built here. A SentencePiece model trained on a few sentences plays Gemma's (ComfyUI's
gemma_2_2b files embed Gemma's SentencePiece model; the Hugging Face side reads the same model with
GemmaTokenizer). A random Gemma-2 of width 64 (3 layers, 2 query heads, 1 KV head, head_dim 256 as in the 2B:
ComfyUI's Gemma2_2B_Config cannot change head_dim) is a transformers Gemma2Model, and the same weights go into a
real ComfyUI CLIP through comfy.sd.load_text_encoder_state_dicts (the CLIPLoader path) with a small
gemma2_2b_model_config. The real 2B (2.6B parameters, ~5 GB per copy in bf16, a gated download) is not compared.
"""

import io as bytes_io
import warnings

import pytest
import sentencepiece
import torch
import transformers.models.gemma2.modeling_gemma2 as hf_gemma2
from comfy_pack import pack  # noqa: F401 (boots ComfyUI in-process and imports the pack)

# isort: split
import comfy.ops
import comfy.sd
import comfy.text_encoders.llama
from lumina_video_pack.lumina_core.text import (
    MAX_TOKENS,
    SYSTEM_PROMPT,
    PromptTruncatedWarning,
    apply_template,
    encode_prompts,
)
from lumina_video_pack.nodes.loaders import LuminaVideoMSModelLoader
from lumina_video_pack.nodes.model_files import DEMO
from lumina_video_pack.nodes.sampler import LuminaVideoMSSampler
from lumina_video_pack.nodes.schedule import LuminaVideoMSSchedulePreset
from lumina_video_pack.nodes.text import LuminaVideoMSTextEncodeCLIP, conditioning
from lumina_video_pack.nodes.video import LuminaVideoMSEmptyLatentVideo
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

BOS, EOS = 2, 1
SIZE = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1)
"""The small Gemma-2, in the field names that ComfyUI's Gemma2_2B_Config and transformers' Gemma2Config share."""
PROMPT = "a red circle (moving:1.5) left over a blue square"
NEGATIVE = "static grey background"
EXACT = 1e-6
"""Same weights, same float32 operations in the same order: equal up to float32 rounding (measured: 0)."""


def run(node, *args, **kwargs):
    return node.execute(*args, **kwargs).result


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to max |expected|."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def spiece_model() -> bytes:
    """A byte-fallback BPE SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3)."""
    corpus = [SYSTEM_PROMPT + PROMPT, NEGATIVE, "a blue square moving right over a green field",
              "the quick brown fox jumps over the lazy dog"] * 20
    model = bytes_io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=SIZE["vocab_size"], model_type="bpe",
        pad_id=0, eos_id=EOS, bos_id=BOS, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", add_dummy_prefix=False, byte_fallback=True, num_threads=1, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def tokenizer(spiece_model, tmp_path_factory):
    """The official side's tokenizer: transformers' Gemma tokenizer over the same SentencePiece model."""
    path = tmp_path_factory.mktemp("gemma_tokenizer") / "tokenizer.model"
    path.write_bytes(spiece_model)
    tokenizer = GemmaTokenizer(vocab_file=str(path))
    tokenizer.padding_side = "right"
    return tokenizer


def gemma2(logit_gain: float, soft_cap: float | None = 50.0) -> Gemma2Model:
    """The small Gemma-2 as transformers builds it (eager attention, as the pack's loader), seeded random weights.

    Linear layers have unit gain (std 1/sqrt(fan_in)); norm weights are N(0, 0.3^2) so that Gemma's (1 + w)
    scale matters; q and k are scaled by ``logit_gain`` so that the attention logits reach a chosen size (the
    soft-cap 50*tanh(x/50) only bends large ones). ``soft_cap=None`` removes it, as ComfyUI's Gemma-2 does.
    """
    config = Gemma2Config(**SIZE, head_dim=256, query_pre_attn_scalar=256, attn_logit_softcapping=soft_cap,
                          pad_token_id=0, eos_token_id=EOS, bos_token_id=BOS, attn_implementation="eager")
    model = Gemma2Model(config).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    for name, weight in model.named_parameters():
        values = torch.randn(weight.shape, generator=generator)
        if name.endswith("norm.weight"):
            weight.copy_(values * 0.3)
        else:
            gain = logit_gain if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
            weight.copy_(values * gain / weight.shape[-1] ** 0.5)
    return model


def comfy_clip(model: Gemma2Model, spiece_model: bytes, file_dtype: torch.dtype = torch.float32):
    """A real ComfyUI CLIP holding ``model``'s weights, stored in ``file_dtype`` as a gemma_2_2b file would be,
    with the tokenizer embedded; built by the loader CLIPLoader uses, type lumina2."""
    state_dict = {f"model.{key}": value.to(file_dtype) for key, value in model.state_dict().items()}
    state_dict["spiece_model"] = torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8)
    return comfy.sd.load_text_encoder_state_dicts([state_dict], clip_type=comfy.sd.CLIPType.LUMINA2,
                                                  model_options={"gemma2_2b_model_config": SIZE})


def clip_features(clip, prompt: str) -> torch.Tensor:
    """ComfyUI's features [L, D] of one templated prompt, as CLIPTextEncode would compute them."""
    return clip.encode_from_tokens(clip.tokenize(apply_template(prompt), disable_weights=True))[0]


def official_features(model, tokenizer, prompt: str) -> torch.Tensor:
    """The official path's features [L, D] of one prompt, padding dropped."""
    feats, mask = encode_prompts(model, tokenizer, [prompt])
    return feats[0, : int(mask.sum())]


def max_attention_logit(model, tokenizer, monkeypatch) -> float:
    """The largest |attention logit| (before the soft-cap) the official path meets on the prompt and negative."""
    seen = []
    eager = hf_gemma2.eager_attention_forward

    def spy(module, query, key, value, attention_mask, scaling=None, **kwargs):
        keys = hf_gemma2.repeat_kv(key, module.num_key_value_groups)
        seen.append((query @ keys.transpose(2, 3) * scaling).abs().max().item())
        return eager(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(hf_gemma2, "eager_attention_forward", spy)
        encode_prompts(model, tokenizer, [PROMPT, NEGATIVE])
    return max(seen)


# -- the features: ComfyUI's Gemma-2 against the official Hugging Face path, same weights -------------------
def test_tokens_are_the_official_ones(spiece_model, tokenizer):
    """Template in front, <bos>, no <eos>, and "(moving:1.5)" kept as text: token for token the official ids."""
    clip = comfy_clip(gemma2(1.0), spiece_model)
    for prompt in (PROMPT, NEGATIVE, ""):
        ids = [token for token, _ in clip.tokenize(apply_template(prompt), disable_weights=True)["gemma2_2b"][0]]
        assert ids == tokenizer(apply_template(prompt)).input_ids
        assert ids[0] == BOS and EOS not in ids
    weighted = [token for token, _ in clip.tokenize(apply_template(PROMPT))["gemma2_2b"][0]]
    assert weighted != tokenizer(apply_template(PROMPT)).input_ids  # why the node turns prompt weights off


@pytest.mark.parametrize("logit_gain", [1.0, 3.0])
def test_comfyui_gemma2_equals_transformers_gemma2_without_the_soft_cap(spiece_model, tokenizer, logit_gain):
    """Embedding scale sqrt(D), RMSNorm (1 + w), GQA, RoPE, GELU-tanh, sandwich norms, layer -2 without the final
    norm: all the same; ComfyUI's only architectural gap is the missing attention soft-cap."""
    reference = gemma2(logit_gain, soft_cap=None)
    clip = comfy_clip(reference, spiece_model)
    for prompt in (PROMPT, NEGATIVE, ""):
        assert relative_error(clip_features(clip, prompt), official_features(reference, tokenizer, prompt)) <= EXACT


# logit gain -> (range of the largest attention logit, bound on the relative feature gap). Measured: logits 4.6,
# 17.6 and 39.2; gaps 1.5e-3, 2.1e-2 and 0.19; the official bf16 run's own rounding 1.2e-2 to 6.5e-2 (the numbers
# in the node's description).
SOFT_CAP_CASES = {1.0: ((3.0, 6.0), 3e-3), 2.0: ((12.0, 24.0), 5e-2), 3.0: ((30.0, 50.0), 0.3)}


@pytest.mark.parametrize("logit_gain", sorted(SOFT_CAP_CASES))
def test_the_missing_soft_cap_is_the_whole_gap_and_grows_with_the_logits(spiece_model, tokenizer, logit_gain,
                                                                        monkeypatch):
    """Against the official Gemma-2 (soft-cap 50), ComfyUI's gap is exactly the soft-cap's effect. It stays below
    the official bf16 run's own rounding while the largest attention logit is <= ~18, and exceeds it at ~39."""
    (low, high), largest_gap = SOFT_CAP_CASES[logit_gain]
    official = gemma2(logit_gain)
    without_cap = gemma2(logit_gain, soft_cap=None)
    official_bf16 = gemma2(logit_gain).to(torch.bfloat16)
    assert low <= max_attention_logit(official, tokenizer, monkeypatch) <= high
    clip = comfy_clip(official, spiece_model)
    gaps, bf16_rounding = [], []
    for prompt in (PROMPT, NEGATIVE):
        expected = official_features(official, tokenizer, prompt)
        actual = clip_features(clip, prompt)
        gap = relative_error(actual, expected)
        assert gap == pytest.approx(relative_error(official_features(without_cap, tokenizer, prompt), expected),
                                    rel=1e-4)
        gaps.append(gap)
        bf16_rounding.append(relative_error(official_features(official_bf16, tokenizer, prompt), expected))
    assert 0.0 < max(gaps) <= largest_gap
    assert (max(gaps) < min(bf16_rounding)) == (logit_gain < 3.0)


def test_an_fp16_file_adds_only_the_fp16_rounding_of_the_norm_scales(spiece_model, tokenizer):
    """ComfyUI computes in float32 from the fp16 weights, except Gemma's norm scale 1 + w, which it adds up in
    fp16: a reference given exactly those rounded scales matches; against the fp16 weights alone that rounding
    adds ~1e-3 (measured 9e-4)."""
    original = gemma2(1.0, soft_cap=None)
    clip = comfy_clip(original, spiece_model, file_dtype=torch.float16)
    fp16_weights = gemma2(1.0, soft_cap=None)
    fp16_scales = gemma2(1.0, soft_cap=None)
    for name, weight in original.state_dict().items():
        stored = weight.half()
        fp16_weights.get_parameter(name).copy_(stored.float())
        rounded = (stored + 1.0).float() - 1.0 if name.endswith("norm.weight") else stored.float()
        fp16_scales.get_parameter(name).copy_(rounded)
    for prompt in (PROMPT, NEGATIVE):
        actual = clip_features(clip, prompt)
        assert relative_error(actual, official_features(fp16_scales, tokenizer, prompt)) <= EXACT
        assert 1e-5 < relative_error(actual, official_features(fp16_weights, tokenizer, prompt)) < 3e-3


# -- the node ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uncapped():
    """The small Gemma-2 without the soft-cap: the official path's features are then ComfyUI's exactly."""
    return gemma2(1.0, soft_cap=None)


@pytest.fixture(scope="module")
def clip(uncapped, spiece_model):
    return comfy_clip(uncapped, spiece_model)


def test_node_gives_the_official_rows_masks_and_padding(clip, uncapped, tokenizer):
    positive, negative = run(LuminaVideoMSTextEncodeCLIP, clip, PROMPT, NEGATIVE)
    feats, mask = encode_prompts(uncapped, tokenizer, [PROMPT, NEGATIVE])
    for row, ((actual, extras),) in enumerate((positive, negative)):
        actual_mask = extras["attention_mask"]
        assert set(extras) == {"attention_mask"} and actual.shape == (1, feats.shape[1], 64)
        assert actual_mask.dtype == torch.long and torch.equal(actual_mask[0], mask[row])  # same L, right padding
        tokens = mask[row].bool()
        assert relative_error(actual[0, tokens], feats[row, tokens]) <= EXACT
        assert not actual[0, ~tokens].any()
    assert feats.shape[1] % 8 == 0 and mask[1].sum() < mask[0].sum() < feats.shape[1]


def test_node_prepends_the_video_template(clip):
    ((feats, extras),), _ = run(LuminaVideoMSTextEncodeCLIP, clip, PROMPT, "")
    tokens = int(extras["attention_mask"].sum())
    bare = clip.encode_from_tokens(clip.tokenize(PROMPT, disable_weights=True))[0]
    templated = clip.encode_from_tokens(clip.tokenize(SYSTEM_PROMPT + PROMPT, disable_weights=True))[0]
    assert tokens == templated.shape[0] > bare.shape[0]
    assert torch.equal(feats[0, :tokens], templated)


def test_node_cuts_long_prompts_at_the_official_limit(clip, uncapped, tokenizer):
    long_prompt = " ".join([PROMPT] * 40)
    with pytest.warns(PromptTruncatedWarning, match=r"prompt is \d+ tokens .* over the official limit of 256"):
        ((actual, extras),), _ = run(LuminaVideoMSTextEncodeCLIP, clip, long_prompt, NEGATIVE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        feats, mask = encode_prompts(uncapped, tokenizer, [long_prompt, NEGATIVE])
    assert extras["attention_mask"].sum() == mask[0].sum() == MAX_TOKENS
    assert relative_error(actual[0], feats[0]) <= EXACT


def test_node_output_samples_as_the_official_features_do(clip, uncapped, tokenizer):
    """Through the pack's sampler on the demo model (64-wide captions): the same latent as the official path's
    features, so padding (zeros here, pad-token features there) changes nothing."""
    model = run(LuminaVideoMSModelLoader, DEMO, "default")[0]
    latent = run(LuminaVideoMSEmptyLatentVideo, "custom", 32, 32, 8, 1)[0]
    schedule = run(LuminaVideoMSSchedulePreset, "demo", 3)[0]
    positive, negative = run(LuminaVideoMSTextEncodeCLIP, clip, PROMPT, NEGATIVE)
    feats, mask = encode_prompts(uncapped, tokenizer, [PROMPT, NEGATIVE])
    official = conditioning(feats[:1], mask[:1]), conditioning(feats[1:], mask[1:])
    out = run(LuminaVideoMSSampler, model, positive, negative, latent, schedule, 3)[0]["samples"]
    expected = run(LuminaVideoMSSampler, model, *official, latent, schedule, 3)[0]["samples"]
    assert out.isfinite().all() and relative_error(out, expected) <= 1e-5


def tiny_gemma3_clip(spiece_model):
    """ComfyUI's lumina2 CLIP around a small Gemma-3 (what Load CLIP makes of a gemma_3_4b file)."""
    network = comfy.text_encoders.llama.Gemma3_4B(SIZE, torch.float32, "cpu", comfy.ops.manual_cast)
    state_dict = {key: torch.zeros_like(value) for key, value in network.state_dict().items()}
    state_dict["spiece_model"] = torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8)
    return comfy.sd.load_text_encoder_state_dicts([state_dict], clip_type=comfy.sd.CLIPType.LUMINA2,
                                                  model_options={"gemma3_4b_model_config": SIZE})


def test_node_refuses_other_text_encoders_and_layers_with_the_fix(clip, spiece_model):
    with pytest.raises(ValueError, match=r"clip is a \w+ holding gemma3_4b, not ComfyUI's Gemma-2-2B .* type lumina2"):
        run(LuminaVideoMSTextEncodeCLIP, tiny_gemma3_clip(spiece_model), PROMPT, NEGATIVE)
    with pytest.raises(ValueError, match="clip is missing .* gemma_2_2b"):
        run(LuminaVideoMSTextEncodeCLIP, None, PROMPT, NEGATIVE)
    last_layer = clip.clone()
    last_layer.clip_layer(-1)
    with pytest.raises(ValueError, match="stop at layer -1 .* reads Gemma-2 layer -2; remove CLIP Set Last Layer"):
        run(LuminaVideoMSTextEncodeCLIP, last_layer, PROMPT, NEGATIVE)
    second_to_last = clip.clone()
    second_to_last.clip_layer(-2)
    assert torch.equal(run(LuminaVideoMSTextEncodeCLIP, second_to_last, PROMPT, NEGATIVE)[0][0][0],
                       run(LuminaVideoMSTextEncodeCLIP, clip, PROMPT, NEGATIVE)[0][0][0])
