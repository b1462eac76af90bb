"""Checkpoint loading: official folders, single files, inference of the architecture, refusals."""

import argparse
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumina_core.checkpoint import CheckpointError, load_model, read_config, save_model
from lumina_core.model import PRESETS, NextDiT


@pytest.fixture(scope="module")
def official_state(tiny_weights_path):
    return load_file(tiny_weights_path)


def assert_same_weights(model, state):
    ours = model.state_dict()
    assert sorted(ours) == sorted(state)
    for name, tensor in state.items():
        assert torch.equal(ours[name], tensor), name


def test_fixture_file_with_official_metadata_loads(tiny_weights_path, official_state, parity_meta):
    model = load_model(tiny_weights_path)
    assert model.config.patch_pairs == ((2, 1), (2, 2), (4, 2))
    assert (model.config.dim, model.config.n_heads, model.config.n_kv_heads) == (96, 6, 3)
    assert_same_weights(model, official_state)
    assert not model.training


def test_safetensors_without_metadata_is_inferred_from_shapes(tmp_path, official_state):
    path = tmp_path / "bare.safetensors"
    save_file(official_state, path)
    config = read_config(path)
    assert config == PRESETS["tiny"]  # t/motion scale and theta: the official Lumina-Video values
    assert_same_weights(load_model(path), official_state)


def test_official_folder_with_pth_and_model_args(tmp_path, official_state):
    folder = tmp_path / "official"
    folder.mkdir()
    torch.save({f"_orig_mod.{k}": v for k, v in official_state.items()}, folder / "consolidated.00-of-01.pth")
    args = argparse.Namespace(model="MultiScaleNextDiT_tiny", patch_sizes=[2, 2, 4], f_patch_sizes=[1, 2, 2],
                              qk_norm=True, rope_theta=256.0, t_scale=1000.0, motion_scale=20.0, lr=1e-4)
    torch.save(args, folder / "model_args.pth")
    model = load_model(folder)
    assert model.config.t_scale == 1000.0 and model.config.motion_scale == 20.0
    assert_same_weights(model, official_state)


def test_official_folder_with_safetensors_and_custom_scales(tmp_path, official_state):
    folder = tmp_path / "official"
    folder.mkdir()
    save_file(official_state, folder / "consolidated.00-of-01.safetensors")
    torch.save(argparse.Namespace(t_scale=1.0, motion_scale=1.0, rope_theta=10000.0), folder / "model_args.pth")
    config = read_config(folder)
    assert (config.t_scale, config.motion_scale, config.rope_theta) == (1.0, 1.0, 10000.0)


def test_compiled_prefixes_are_stripped_in_safetensors(tmp_path, official_state):
    path = tmp_path / "compiled.safetensors"
    save_file({f"_orig_mod.{k}": v for k, v in official_state.items()}, path)
    assert_same_weights(load_model(path), official_state)


def test_save_and_load_round_trip_with_dtype_conversion(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "nested" / "model.safetensors", metadata={"note": "test"})
    assert json.loads(__import__("safetensors").safe_open(path, "pt").metadata()["config"])["dim"] == 96
    assert_same_weights(load_model(path), tiny_model.state_dict())
    half = load_model(path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert torch.equal(half.state_dict()["pad_token"], tiny_model.pad_token.detach().bfloat16())
    assert not list(tmp_path.glob("nested/*.tmp"))


def test_other_models_safetensors_is_refused(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3), "time_embedding.linear_1.weight": torch.zeros(8, 4)}, path)
    with pytest.raises(CheckpointError,
                       match=r"not a Lumina-Video Multi-scale Next-DiT checkpoint.*2 tensors.*conv_in"):
        load_model(path)


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "not start with a valid safetensors header"),
])
def test_empty_or_garbage_files_are_refused(tmp_path, content, message):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_truncated_file_is_refused(tmp_path, tiny_weights_path):
    data = tiny_weights_path.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (os.environ["EXPLOIT_MARKER"],))


@pytest.mark.parametrize("name", ["model.pth", "model_args.pth"])
def test_pickles_that_run_code_are_refused_without_running(tmp_path, monkeypatch, official_state, name):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    if name == "model.pth":
        path = tmp_path / name
        torch.save({"pad_token": torch.zeros(2), "payload": _Exploit()}, path)
        expected = "weights_only=True"
    else:
        path = tmp_path / "folder"
        path.mkdir()
        save_file(official_state, path / "consolidated.00-of-01.safetensors")
        torch.save(_Exploit(), path / name)
        expected = "not a plain argparse.Namespace"
    with pytest.raises(CheckpointError, match=expected):
        load_model(path)
    assert not marker.exists()


def test_missing_path_and_empty_folder_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="consolidated.00-of-01.safetensors nor"):
        load_model(tmp_path)


def test_metadata_that_contradicts_the_weights_is_refused(tmp_path, official_state):
    path = tmp_path / "lying.safetensors"
    save_file(official_state, path, metadata={"config": json.dumps({"dim": 128})})
    with pytest.raises(CheckpointError, match="says dim = 128 but its weights have dim = 96"):
        load_model(path)


def test_missing_tensor_is_refused(tmp_path, official_state):
    partial = {k: v for k, v in official_state.items() if k != "layers.1.ffn_norm2.weight"}
    path = tmp_path / "partial.safetensors"
    save_file(partial, path)
    with pytest.raises(CheckpointError, match=r"missing \['layers.1.ffn_norm2.weight'\]"):
        load_model(path)


def test_loaded_model_runs_like_the_original(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    x = torch.randn(1, 4, 2, 8, 8)
    args = (torch.tensor([0.5]), torch.randn(1, 3, 48), torch.ones(1, 3), torch.tensor([1.0]), 2, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x, *args), tiny_model(x, *args))
    assert isinstance(loaded, NextDiT)
