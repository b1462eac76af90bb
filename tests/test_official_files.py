"""The published checkpoint's own file format, as the README's Model files section describes it: Hugging Face
Alpha-VLLM/Lumina-Video-f24R960 holds ``consolidated.00-of-01.pth`` (fp32 tensors pickled with
``torch._tensor._rebuild_from_type_v2``, per the hub's pickle scan) and ``model_args.pth`` (a pickled
``types.SimpleNamespace``, not an argparse.Namespace). The folder must load as downloaded."""

import os
import types

import pytest
import torch
from safetensors.torch import load_file

from lumina_core.checkpoint import CheckpointError, load_model, read_config


def published_folder(folder, state):
    """A folder laid out and pickled as the published checkpoint is: fp32 tensors that carry a Python attribute
    (so torch pickles them through _rebuild_from_type_v2) and the training arguments as a SimpleNamespace."""
    folder.mkdir()
    weights = {}
    for name, tensor in state.items():
        weights[name] = tensor.float().clone()
        weights[name].tensor_attribute = True
    torch.save(weights, folder / "consolidated.00-of-01.pth")
    args = types.SimpleNamespace(model="MultiScaleNextDiT_tiny", patch_sizes=[2, 2, 4], f_patch_sizes=[1, 2, 2],
                                 qk_norm=True, rope_theta=256.0, t_scale=1000.0, motion_scale=20.0, lr=1e-4)
    torch.save(args, folder / "model_args.pth")
    return folder


def test_the_published_folder_loads_with_its_simplenamespace_arguments(tmp_path, tiny_weights_path):
    state = load_file(tiny_weights_path)
    folder = published_folder(tmp_path / "Lumina-Video-f24R960", state)
    config = read_config(folder)
    assert config.patch_pairs == ((2, 1), (2, 2), (4, 2))  # the embedder order of model_args, not sorted
    assert (config.t_scale, config.motion_scale, config.rope_theta) == (1000.0, 20.0, 256.0)
    model = load_model(folder, dtype=torch.bfloat16)
    for name, tensor in state.items():
        assert torch.equal(model.state_dict()[name], tensor.bfloat16()), name


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (os.environ["EXPLOIT_MARKER"],))


def test_a_simplenamespace_holding_code_is_still_refused(tmp_path, monkeypatch, tiny_weights_path):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    folder = published_folder(tmp_path / "folder", load_file(tiny_weights_path))
    torch.save(types.SimpleNamespace(t_scale=_Exploit()), folder / "model_args.pth")
    with pytest.raises(CheckpointError, match="not a plain argparse.Namespace or types.SimpleNamespace"):
        load_model(folder)
    assert not marker.exists()
