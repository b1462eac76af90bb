"""LoRA on the Next-DiT: a fresh LoRA changes nothing, a trained one's file merged at strength 1 gives the
LoRA model's output, strength 0 gives the base model, and files of another model or damaged files are refused."""

import copy

import pytest
import torch
from conftest import caption, relative_error
from safetensors.torch import load_file, save_file

from lumina_core.lora import TARGETS, add_lora, merge_lora, parse_lora_arg, read_lora, save_lora
from lumina_core.model import NextDiT, NextDiTConfig

MERGE_TOL = 1e-5
"""LoRA layers (x W^T + s (x D^T) U^T) vs merged weights (x (W + s U D)^T), fp32: the same product summed in
another order (measured ~1e-7 relative)."""


def forward(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 4, 8, 12, generator=generator)
    feats, mask = caption(2, 6, model.config.cap_feat_dim, [6, 3])
    with torch.no_grad():
        return model(x, torch.tensor([0.3, 0.7]), feats, mask, torch.tensor([4.0, -1.0]), 2, 1)


def trained_lora(model: NextDiT, rank=4, alpha=2.0) -> NextDiT:
    """A copy of ``model`` with LoRA layers holding random (as if trained) up and down weights."""
    adapted = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(3)
    for layer in add_lora(adapted, rank, alpha).values():
        layer.up.weight.data = torch.randn(layer.up.weight.shape, generator=generator) * 0.05
    return adapted


def test_a_fresh_lora_leaves_the_output_and_trains_only_its_own_weights(tiny_model):
    adapted = copy.deepcopy(tiny_model)
    layers = add_lora(adapted, rank=4)
    assert len(layers) == len(tiny_model.layers) * len(TARGETS)
    assert torch.equal(forward(adapted), forward(tiny_model))  # up = 0: base(x) + 0
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith((".down.weight", ".up.weight")) for name in trainable)


def test_file_merged_at_strength_1_gives_the_lora_output_and_at_0_the_base(tiny_model, tmp_path):
    adapted = trained_lora(tiny_model, rank=4, alpha=2.0)
    path = save_lora(adapted, tmp_path / "style.safetensors", {"rank": 4})
    tensors = load_file(path)
    assert "diffusion_model.layers.0.attention.wq.lora_down.weight" in tensors
    assert tensors["diffusion_model.layers.1.feed_forward.w2.alpha"].item() == 2.0
    assert len(tensors) == 3 * len(tiny_model.layers) * len(TARGETS)
    lora_out, base_out = forward(adapted), forward(tiny_model)
    assert relative_error(lora_out, base_out) > 1e-3  # the LoRA does something
    merged = copy.deepcopy(tiny_model)
    assert merge_lora(merged, path, 1.0) == len(tiny_model.layers) * len(TARGETS)
    assert relative_error(forward(merged), lora_out) < MERGE_TOL
    off = copy.deepcopy(tiny_model)
    merge_lora(off, path, 0.0)
    assert torch.equal(forward(off), base_out)  # W + 0 * delta = W exactly
    half = copy.deepcopy(tiny_model)
    merge_lora(half, path, 0.5)
    name = "layers.0.attention.wq.weight"
    expected = (tiny_model.state_dict()[name] + merged.state_dict()[name]) / 2
    assert relative_error(half.state_dict()[name], expected) < MERGE_TOL


def test_lora_a_b_names_and_missing_alpha_read_as_comfyui_reads_them(tmp_path):
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    save_file({"diffusion_model.layers.0.attention.wq.lora_B.weight": up,
               "diffusion_model.layers.0.attention.wq.lora_A.weight": down}, str(tmp_path / "ab.safetensors"))
    ((name, (read_up, read_down, alpha)),) = read_lora(tmp_path / "ab.safetensors").items()
    assert name == "layers.0.attention.wq.weight" and alpha == 2.0  # no alpha: the rank (scale 1)
    assert torch.equal(read_up, up) and torch.equal(read_down, down)


def test_a_lora_of_another_model_or_a_damaged_file_is_refused(tiny_model, tmp_path):
    wider = NextDiT(NextDiTConfig.from_dict({**tiny_model.config.to_dict(), "dim": 2 * tiny_model.config.dim}))
    other = save_lora(trained_lora(wider), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.\w+\.weight LoRA of shape .* does not fit"):
        merge_lora(copy.deepcopy(tiny_model), other)
    tensors = load_file(other)
    del tensors["diffusion_model.layers.0.attention.wq.lora_up.weight"]
    save_file(tensors, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"attention\.wq\.lora_down\.weight has no .*lora_up\.weight"):
        read_lora(tmp_path / "broken.safetensors")
    save_file({"diffusion_model.layers.9.attention.wq.lora_up.weight": torch.zeros(4, 1),
               "diffusion_model.layers.9.attention.wq.lora_down.weight": torch.zeros(1, 4)},
              str(tmp_path / "deep.safetensors"))
    with pytest.raises(ValueError, match=r"layers\.9\.attention\.wq\.weight is not a weight of this model"):
        merge_lora(copy.deepcopy(tiny_model), tmp_path / "deep.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist"):
        read_lora(tmp_path / "missing.safetensors")


def test_lora_argument_takes_an_optional_strength():
    assert parse_lora_arg("style.safetensors") == (parse_lora_arg("style.safetensors:1")[0], 1.0)
    assert parse_lora_arg("a/b.safetensors:0.5")[1] == 0.5
    assert parse_lora_arg("C:/loras/x.safetensors")[1] == 1.0  # a drive letter is not a strength
    with pytest.raises(ValueError, match="strength inf must be a finite number"):
        parse_lora_arg("x.safetensors:inf")
