"""Multi-scale Next-DiT behaviour beyond the fixture: input forms, padding, motion, dtypes, errors."""


import pytest
import torch
from conftest import PARITY, caption, relative_error

from lumina_core.model import PRESETS, NextDiT, NextDiTConfig


def run(model, x, t, feats, mask, motion, patch=2, f_patch=1):
    with torch.no_grad():
        return model(x, t, feats, mask, motion, patch, f_patch)


@pytest.fixture
def video():
    return torch.randn(2, 4, 4, 8, 12, generator=torch.Generator().manual_seed(1))


def test_official_2b_state_dict_names_and_shapes():
    """Our 2B_GQA preset has exactly the official checkpoint's keys and shapes (1.77B parameters)."""
    expected = {}
    for line in (PARITY / "full_2B_state_dict_keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            expected[name] = [int(v) for v in shape.strip("[]").split(",") if v.strip()]
    with torch.device("meta"):
        model = NextDiT(PRESETS["2B_GQA"])
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == expected
    assert model.parameter_count() == 1_771_364_672


def test_list_input_equals_tensor_input(tiny_model, video):
    feats, mask = caption(2, 8, 48, [8, 3])
    t, motion = torch.tensor([0.2, 0.7]), torch.tensor([1.0, -1.0])
    batched = run(tiny_model, video, t, feats, mask, motion, 2, 2)
    listed = run(tiny_model, list(video), t, feats, mask, motion, 2, 2)
    assert isinstance(listed, list) and len(listed) == 2
    assert relative_error(torch.stack(listed), batched) < 1e-5


def test_list_items_are_independent_of_their_neighbours(tiny_model):
    """An item's output is the same alone or next to a larger item (token padding is inert)."""
    gen = torch.Generator().manual_seed(2)
    small, large = torch.randn(4, 2, 4, 8, generator=gen), torch.randn(4, 4, 8, 12, generator=gen)
    feats, mask = caption(2, 8, 48, [5, 8])
    both = run(tiny_model, [small, large], torch.tensor([0.3, 0.6]), feats, mask, torch.tensor([0.5, 0.5]), 2, 2)
    alone = run(tiny_model, [small], torch.tensor([0.3]), feats[:1], mask[:1], torch.tensor([0.5]), 2, 2)
    assert both[0].shape == small.shape and both[1].shape == large.shape
    assert relative_error(both[0], alone[0]) < 1e-5


def test_padded_caption_positions_have_no_effect(tiny_model, video):
    feats, mask = caption(2, 6, 48, [6, 4])
    t, motion = torch.tensor([0.4, 0.4]), torch.tensor([2.0, 2.0])
    base = run(tiny_model, video, t, feats, mask, motion)
    longer = torch.cat([feats, torch.full((2, 10, 48), float("inf"))], dim=1)
    longer[1, 4:6] = float("nan")
    longer_mask = torch.cat([mask, torch.zeros(2, 10, dtype=mask.dtype)], dim=1)
    assert torch.allclose(run(tiny_model, video, t, longer, longer_mask, motion), base, rtol=0, atol=1e-5)


def test_batched_attention_equals_per_sample_reference(tiny_model):
    """SDPA on a padded batch equals an explicit float32 softmax run one item at a time."""
    gen = torch.Generator().manual_seed(3)
    items = [torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 2, 8, 12, generator=gen)]
    feats, mask = caption(2, 8, 48, [8, 2], seed=4)
    t, motion = torch.tensor([0.1, 0.9]), torch.tensor([0.0, 3.0])
    batched = run(tiny_model, items, t, feats, mask, motion, 2, 2)
    tiny_model.set_attention_backend("reference")
    try:
        singles = [run(tiny_model, [item], t[i:i + 1], feats[i:i + 1, : int(mask[i].sum())],
                       mask[i:i + 1, : int(mask[i].sum())], motion[i:i + 1], 2, 2)[0]
                   for i, item in enumerate(items)]
    finally:
        tiny_model.set_attention_backend("sdpa")
    for got, ref in zip(batched, singles):
        assert relative_error(got, ref) < 1e-5


def test_negative_motion_means_no_motion_condition(tiny_model, video):
    feats, mask = caption(2, 8, 48, [8, 8])
    t = torch.tensor([0.5, 0.5])
    out = {m: run(tiny_model, video, t, feats, mask, torch.tensor([m, m])) for m in (-1.0, -7.5, 0.0, 4.0)}
    assert torch.equal(out[-1.0], out[-7.5])
    assert not torch.allclose(out[-1.0], out[0.0])  # 0 is a real condition
    assert not torch.allclose(out[0.0], out[4.0])


def test_image_with_temporal_patch_keeps_one_frame(tiny_model):
    image = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    feats, mask = caption(2, 4, 48, [4, 2])
    out = run(tiny_model, image, torch.tensor([0.2, 0.8]), feats, mask, torch.tensor([1.0, -1.0]), 2, 2)
    assert out.shape == image.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inference_is_close_to_fp32(tiny_model, video, dtype):
    feats, mask = caption(2, 8, 48, [8, 5])
    t, motion = torch.tensor([0.3, 0.6]), torch.tensor([1.0, 2.0])
    reference = run(tiny_model, video, t, feats, mask, motion)
    half = NextDiT(tiny_model.config).to(dtype).eval()
    half.load_state_dict(tiny_model.state_dict())
    out = run(half, video.to(dtype), t, feats.to(dtype), mask, motion)
    assert out.dtype == dtype
    assert relative_error(out, reference) < 0.05


def test_unknown_patch_pair_is_refused_with_the_offered_pairs(tiny_model, video):
    feats, mask = caption(2, 8, 48, [8, 8])
    with pytest.raises(ValueError, match=r"4x1 .*has embedders for 1x2, 2x2, 2x4"):
        run(tiny_model, video, torch.zeros(2), feats, mask, torch.zeros(2), 1, 4)


@pytest.mark.parametrize("shape, patch, f_patch, message", [
    ((2, 4, 3, 8, 12), 2, 2, r"frame count 3 is not divisible by f-patch size 2"),
    ((2, 4, 4, 10, 12), 4, 2, r"height 10 is not divisible by patch size 4; use 8 or 12"),
    ((2, 4, 4, 8, 14), 4, 2, r"width 14 is not divisible by patch size 4; use 12 or 16"),
])
def test_indivisible_latent_sizes_are_refused(tiny_model, shape, patch, f_patch, message):
    feats, mask = caption(2, 8, 48, [8, 8])
    with pytest.raises(ValueError, match=message):
        run(tiny_model, torch.zeros(shape), torch.zeros(2), feats, mask, torch.zeros(2), patch, f_patch)


def test_caption_width_mismatch_is_refused(tiny_model, video):
    feats, mask = caption(2, 8, 64, [8, 8])
    with pytest.raises(ValueError, match=r"\[B, L, 48\].*hidden size must be 48"):
        run(tiny_model, video, torch.zeros(2), feats, mask, torch.zeros(2))


def test_config_round_trips_through_official_names():
    config = PRESETS["tiny"]
    official = {**config.to_dict(), "all_patch_size": [2, 2, 4], "all_f_patch_size": [1, 2, 2]}
    del official["patch_sizes"], official["f_patch_sizes"]
    assert NextDiTConfig.from_dict(official) == config
    assert config.swiglu_hidden_dim == 256 and PRESETS["2B_GQA"].swiglu_hidden_dim == 6144


def test_config_refuses_inconsistent_heads():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        NextDiTConfig(dim=100, n_heads=6)
    with pytest.raises(ValueError, match="head_dim 8 is not a multiple of 16"):
        NextDiTConfig(dim=96, n_heads=12, n_kv_heads=4)


# --- host seams: layers, attention, RoPE tables ----------------------------------------------------


class CountingOps:
    """An ``operations`` namespace like ComfyUI's comfy.ops: subclasses of the torch layers that record
    every instance built from them."""

    built: list = []

    class Linear(torch.nn.Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            CountingOps.built.append(self)

    class LayerNorm(torch.nn.LayerNorm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            CountingOps.built.append(self)

    class RMSNorm(torch.nn.RMSNorm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            CountingOps.built.append(self)


def test_every_layer_comes_from_the_injected_operations(tiny_model, video):
    """With operations injected, no Linear/LayerNorm/RMSNorm is a plain torch layer, the state dict keeps the
    official names (so official checkpoints load strictly) and the output equals the default build's
    exactly (same layer classes underneath, same weights, same kernels)."""
    CountingOps.built.clear()
    model = NextDiT(tiny_model.config, operations=CountingOps, init_weights=False).eval()
    model.load_state_dict(tiny_model.state_dict(), strict=True)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.RMSNorm))]
    assert layers and all(any(m is b for b in CountingOps.built) for m in layers)
    feats, mask = caption(2, 8, 48, [8, 3])
    args = (video, torch.tensor([0.2, 0.7]), feats, mask, torch.tensor([1.0, 3.0]))
    assert torch.equal(run(model, *args), run(tiny_model, *args))


def test_device_and_dtype_place_parameters_at_construction():
    model = NextDiT(PRESETS["tiny"], device="meta", dtype=torch.bfloat16, init_weights=False)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}


def test_injected_attention_function_sees_every_call_and_decides_the_output(tiny_model, video):
    """Self- and caption attention both go through the injected function (2 calls per layer), and what it
    returns is what the model uses."""
    feats, mask = caption(2, 8, 48, [8, 3])
    args = (video, torch.tensor([0.2, 0.7]), feats, mask, torch.tensor([1.0, 3.0]))
    calls = []

    def recording(q, k, v, key_mask):
        calls.append((q.shape, k.shape, None if key_mask is None else key_mask.shape))
        from lumina_core.model import attention
        return attention(q, k, v, key_mask, "reference")

    model = NextDiT(tiny_model.config).eval()
    model.load_state_dict(tiny_model.state_dict())
    model.set_attention_function(recording)
    recorded = run(model, *args)
    assert len(calls) == 2 * tiny_model.config.n_layers
    model.set_attention_backend("reference")
    assert torch.equal(recorded, run(model, *args))  # the same function through the backend switch
    model.set_attention_function(lambda q, k, v, key_mask: torch.zeros_like(q))
    assert not torch.allclose(run(model, *args), recorded)


def test_kept_rope_tables_are_bounded_and_never_outlive_a_move(tiny_model):
    from lumina_core.model import ROPE_TABLES_KEPT
    model = NextDiT(tiny_model.config)
    for frames in range(1, 3 * ROPE_TABLES_KEPT):
        model._rope((frames, 2, 2), "cpu")
    assert len(model._rope_tables) == ROPE_TABLES_KEPT
    model._rope((1, 2, 2), torch.device("meta"))  # a table built for another device
    assert any(t.device.type == "meta" for t in model._rope_tables.values())
    model.to(torch.float64)  # any move or cast (ComfyUI offloads with .to)
    assert not model._rope_tables
    table = model._rope((1, 2, 2), "cpu")
    assert table.device.type == "cpu" and len(model._rope_tables) == 1
