"""Gemma-2 prompt features: the official recipe, batching, truncation, loading and clear errors.

Everything is built here: a tiny random Gemma-2 (hidden 32, 3 layers) and a word-level tokenizer
that behaves like Gemma's (adds <bos>, never <eos>). Nothing is downloaded.
"""

import warnings

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma2Model, LlamaConfig, PreTrainedTokenizerFast

from lumina_core.text import (
    SYSTEM_PROMPT,
    PromptTruncatedWarning,
    apply_template,
    encode_prompts,
    infer_gemma2_config,
    load_text_encoder,
)

PAD, EOS, BOS, UNK = 0, 1, 2, 3
SPLIT_WORDS = pre_tokenizers.Whitespace()


def words_of(text):
    """The word-level tokens of ``text`` (the tokenizer's own pre-tokenization)."""
    return [word for word, _ in SPLIT_WORDS.pre_tokenize_str(text)]


PROMPT_WORDS = words_of("a red ball rolls slowly across the wooden floor while camera pans left")
NUMBERED_WORDS = [f"word{i}" for i in range(80)]
VOCAB = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<unk>": UNK}
for _word in sorted(set(words_of(SYSTEM_PROMPT)) | set(PROMPT_WORDS) | set(NUMBERED_WORDS)):
    VOCAB[_word] = len(VOCAB)
VOCAB_SIZE = len(VOCAB)
TEMPLATE_TOKENS = 1 + len(words_of(SYSTEM_PROMPT))  # <bos> + template words


def make_tokenizer(template="<bos> $A"):
    """A word-level tokenizer; the default template makes it Gemma-like (<bos> prefix, no <eos>)."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<bos>", BOS), ("<eos>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_config(vocab_size=VOCAB_SIZE, layers=3):
    """A Gemma-2 small enough for CPU tests (hidden 32, GQA: 2 query heads, 1 KV head)."""
    return Gemma2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS, attn_implementation="eager")


def tiny_model(model_class=Gemma2Model, vocab_size=VOCAB_SIZE):
    """A seeded random tiny Gemma-2 in eval mode."""
    torch.manual_seed(0)
    return model_class(tiny_config(vocab_size)).eval()


def official_features(model, prompts):
    """Reference: template + <bos>, no <eos>, right padding to a multiple of 8, hidden_states[-2]."""
    rows = [[BOS] + [VOCAB[word] for word in words_of(SYSTEM_PROMPT + prompt)] for prompt in prompts]
    length = -(-max(len(row) for row in rows) // 8) * 8
    input_ids = torch.tensor([row + [PAD] * (length - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows])
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    return hidden, mask


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory):
    """A Hugging Face folder like google/gemma-2-2b: CausalLM checkpoint + tokenizer files."""
    folder = tmp_path_factory.mktemp("gemma-2-tiny")
    causal_lm = tiny_model(Gemma2ForCausalLM)
    causal_lm.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder, causal_lm.model


def test_template_is_the_official_system_prompt():
    assert SYSTEM_PROMPT == ("You are an assistant designed to generate high-quality videos with the highest "
                             "degree of image-text alignment based on user prompts. <Prompt Start> ")
    assert apply_template("a cat") == SYSTEM_PROMPT + "a cat"
    assert apply_template("") == SYSTEM_PROMPT
    with pytest.raises(TypeError, match="NoneType"):
        apply_template(None)


def test_features_follow_the_official_recipe(model, tokenizer):
    prompts = [" ".join(PROMPT_WORDS), "", "a red ball"]  # positive, empty negative, short
    tokenizer.padding_side = "left"  # must be overridden: the official pipeline pads on the right
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        feats, mask = encode_prompts(model, tokenizer, prompts)
    expected_feats, expected_mask = official_features(model, prompts)
    assert tokenizer.padding_side == "left"
    assert feats.shape == (3, expected_mask.shape[1], 32) and feats.dtype == torch.float32
    assert mask.dtype == torch.int64 and mask.shape[1] % 8 == 0 and not feats.requires_grad
    torch.testing.assert_close(mask, expected_mask, rtol=0, atol=0)
    torch.testing.assert_close(feats, expected_feats, rtol=1e-5, atol=1e-6)
    assert mask.sum(dim=1).tolist() == [TEMPLATE_TOKENS + len(PROMPT_WORDS), TEMPLATE_TOKENS, TEMPLATE_TOKENS + 3]


def test_single_prompt_equals_its_row_in_a_padded_batch(model, tokenizer):
    alone, alone_mask = encode_prompts(model, tokenizer, ["a red ball"])
    batched, batched_mask = encode_prompts(model, tokenizer, ["a red ball", " ".join(NUMBERED_WORDS[:30])])
    valid = int(alone_mask.sum())
    assert batched.shape[1] > alone.shape[1]
    assert batched_mask[0].tolist() == [1] * valid + [0] * (batched.shape[1] - valid)
    torch.testing.assert_close(batched[0, :valid], alone[0, :valid], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("words", [0, 1, 8, 13])
def test_mask_pads_to_a_multiple_of_8(model, tokenizer, words):
    feats, mask = encode_prompts(model, tokenizer, [" ".join(NUMBERED_WORDS[:words]), "a"])
    tokens = TEMPLATE_TOKENS + words
    assert mask.shape == (2, -(-tokens // 8) * 8) and feats.shape == (*mask.shape, 32)
    assert mask[0].tolist() == [1] * tokens + [0] * (mask.shape[1] - tokens)


def test_truncation_warns_and_names_the_cut(model, tokenizer):
    max_length = TEMPLATE_TOKENS + 10  # room for word0..word9 of the 80 words
    with pytest.warns(PromptTruncatedWarning) as caught:
        feats, mask = encode_prompts(model, tokenizer, ["a red ball", " ".join(NUMBERED_WORDS)],
                                     max_length=max_length)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "prompt 1" in message and f"max_length {max_length}" in message
    assert "last 70 tokens are dropped" in message
    assert "word2 word3 word4 word5 word6 word7 word8 word9'" in message and "cut before 'word10 " in message
    assert mask[1].sum() == max_length and mask.shape[1] == -(-max_length // 8) * 8
    expected, _ = official_features(model, ["a red ball", " ".join(NUMBERED_WORDS[:10])])
    torch.testing.assert_close(feats[1, :max_length], expected[1, :max_length], rtol=1e-5, atol=1e-6)


def test_load_hugging_face_folder(gemma_folder):
    folder, reference = gemma_folder
    model, tokenizer = load_text_encoder(folder)
    assert isinstance(model, Gemma2Model) and not model.training and tokenizer.padding_side == "right"
    assert model.config._attn_implementation == "eager"
    assert all(not parameter.requires_grad for parameter in model.parameters())
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    feats, _ = encode_prompts(model, tokenizer, ["a red ball", ""])
    torch.testing.assert_close(feats, official_features(reference, ["a red ball", ""])[0], rtol=1e-5, atol=1e-6)


def test_folder_of_pickled_weights_is_refused_unread(tmp_path, monkeypatch):
    """A folder of .bin weights was read through torch.load (code in the file runs before torch 2.6)."""
    tiny_model(Gemma2ForCausalLM).save_pretrained(tmp_path, safe_serialization=False)
    make_tokenizer().save_pretrained(tmp_path)
    assert (tmp_path / "pytorch_model.bin").is_file() and not list(tmp_path.glob("*.safetensors"))

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on the pickled weights")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ValueError, match="holds only pickled weights \\(pytorch_model.bin\\), no .safetensors file; "
                                         "pickled weights are never loaded.*safe_serialization=True"):
        load_text_encoder(tmp_path)


def test_load_folder_in_bfloat16(gemma_folder):
    model, tokenizer = load_text_encoder(gemma_folder[0], dtype=torch.bfloat16)
    feats, mask = encode_prompts(model, tokenizer, ["a red ball"])
    assert model.dtype == torch.bfloat16 and feats.dtype == torch.bfloat16 and mask.dtype == torch.int64


def test_load_single_safetensors_file(gemma_folder, tmp_path):
    folder, reference = gemma_folder
    # ComfyUI's layout: "model."-prefixed keys, an LM head and the SentencePiece model in one file
    weights = {f"model.{name}": value.contiguous() for name, value in reference.state_dict().items()}
    weights["lm_head.weight"] = reference.embed_tokens.weight.clone()
    weights["spiece_model"] = torch.zeros(16, dtype=torch.uint8)
    file = tmp_path / "gemma_2_tiny.safetensors"
    save_file(weights, file)
    expected = official_features(reference, ["a red ball"])[0]
    for config in (tiny_config(), folder / "config.json"):
        model, tokenizer = load_text_encoder(file, tokenizer_path=folder, config=config)
        torch.testing.assert_close(encode_prompts(model, tokenizer, ["a red ball"])[0], expected,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="hidden size 32.*config="):
        load_text_encoder(file, tokenizer_path=folder)
    with pytest.raises(ValueError, match="does not match a Gemma-2 model with 4 layers.*missing_keys"):
        load_text_encoder(file, tokenizer_path=folder, config=tiny_config(layers=4))
    with pytest.raises(ValueError, match="tokenizer_path is required"):
        load_text_encoder(file)


def test_config_inferred_from_gemma_2_2b_shapes():
    shapes = {"embed_tokens.weight": (256000, 2304), "layers.0.self_attn.q_proj.weight": (2048, 2304),
              "layers.0.self_attn.k_proj.weight": (1024, 2304), "layers.0.mlp.gate_proj.weight": (9216, 2304),
              "layers.25.post_feedforward_layernorm.weight": (2304,)}
    config = infer_gemma2_config(shapes)
    assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (
        256000, 2304, 9216, 26)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (8, 4, 256)
    assert config.query_pre_attn_scalar == 256 and config.attn_logit_softcapping == 50.0
    assert type(config.query_pre_attn_scalar) is int  # transformers 5's Gemma2Config refuses 256.0


def test_missing_paths_are_named(tmp_path, gemma_folder):
    missing = tmp_path / "no-such-gemma"
    with pytest.raises(FileNotFoundError, match="no-such-gemma"):
        load_text_encoder(missing)
    with pytest.raises(FileNotFoundError, match="no-such-gemma"):
        load_text_encoder(gemma_folder[0], tokenizer_path=missing)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_text_encoder(tmp_path)
    config_only = tmp_path / "config-only"
    tiny_config().save_pretrained(config_only)
    with pytest.raises(OSError, match="cannot read the Gemma-2 weights in .*config-only"):
        load_text_encoder(config_only)
    with pytest.raises(FileNotFoundError, match=r"config-only holds no tokenizer \(tokenizer.json"):
        load_text_encoder(gemma_folder[0], tokenizer_path=config_only)


def test_non_gemma_inputs_are_rejected(tmp_path):
    llama_folder = tmp_path / "llama"
    LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                num_attention_heads=1).save_pretrained(llama_folder)
    with pytest.raises(ValueError, match="'llama' model, not Gemma-2"):
        load_text_encoder(llama_folder)
    other_file = tmp_path / "vae.safetensors"
    save_file({"decoder.conv.weight": torch.zeros(2, 2)}, other_file)
    with pytest.raises(ValueError, match="vae.safetensors is not a Gemma-2 checkpoint"):
        load_text_encoder(other_file, tokenizer_path=tmp_path)
    broken_file = tmp_path / "broken.safetensors"
    broken_file.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read .*broken.safetensors"):
        load_text_encoder(broken_file, tokenizer_path=tmp_path)


def test_mismatched_tokenizer_names_both_sizes(tokenizer, tmp_path):
    small_model = tiny_model(vocab_size=16)
    with pytest.raises(ValueError, match=rf"has {VOCAB_SIZE} tokens .* 16 rows .*tokenizer that ships"):
        encode_prompts(small_model, tokenizer, ["a red ball"])
    small_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"has {VOCAB_SIZE} tokens .* 16 rows"):
        load_text_encoder(tmp_path)


def test_tokenizer_must_add_bos_and_no_eos(model):
    with pytest.raises(ValueError, match="<bos>.*add_bos_token=True"):
        encode_prompts(model, make_tokenizer("$A"), ["a red ball"])
    with pytest.raises(ValueError, match="<eos>.*add_eos_token=False"):
        encode_prompts(model, make_tokenizer("<bos> $A <eos>"), ["a red ball", "a"])


def test_bad_arguments_name_the_value(model, tokenizer):
    with pytest.raises(ValueError, match="prompts is empty"):
        encode_prompts(model, tokenizer, [])
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 0"):
        encode_prompts(model, tokenizer, ["a"], max_length=0)
    with pytest.raises(TypeError, match="int 3"):
        encode_prompts(model, tokenizer, ["a", 3])
