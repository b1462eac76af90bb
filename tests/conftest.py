"""Shared fixtures: the official code's outputs at a tiny config (tests/data/parity, a copy of
../shared/parity-fixture) and the tiny NextDiT loaded with the official random weights."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumina_core import cost
from lumina_core.model import NextDiT, NextDiTConfig

PARITY = Path(__file__).parent / "data" / "parity"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test keeps its machine calibrations (lumina_core.cost) in its own folder, never the user's cache."""
    monkeypatch.setenv(cost.CALIBRATION_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def parity_meta() -> dict:
    return json.loads((PARITY / "tiny_ref.json").read_text())


@pytest.fixture(scope="session")
def parity_ref() -> dict:
    return load_file(PARITY / "tiny_ref.safetensors")


@pytest.fixture(scope="session")
def tiny_weights_path() -> Path:
    return PARITY / "tiny_weights.safetensors"


@pytest.fixture(scope="session")
def tiny_model(parity_meta, tiny_weights_path) -> NextDiT:
    model = NextDiT(NextDiTConfig.from_dict(parity_meta["tiny_config"])).eval()
    model.load_state_dict(load_file(tiny_weights_path), strict=True)
    return model


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to max |expected| (the fixture's tolerance measure)."""
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def caption(batch: int, length: int, width: int, lengths, seed: int = 0):
    """Random caption features with right padding holding large garbage, and the mask."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, length, width, generator=gen)
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    feats = torch.where(mask.bool()[..., None], feats, torch.full_like(feats, 1e4))
    return feats, mask
