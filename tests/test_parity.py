"""The core equals the official Lumina-Video code (model.py forward, generate.py sampler) in fp32
on CPU at the tiny config: forward <= 1e-4 and whole sampling runs <= 5e-4, relative to max |ref|."""

from dataclasses import replace

import pytest
import torch
from conftest import relative_error

from lumina_core.rope import rope_frequencies
from lumina_core.sampling import SampleConfig, sample

FORWARD_TOL = 1e-4
SAMPLE_TOL = 5e-4
FORWARD_CASES = ["video_p2_f1", "video_p2_f2", "video_p4_f2", "image_p2_f1", "image_p2_f2", "image_p4_f2",
                 "list_mixed_p2_f2", "list_mixed_p4_f2", "video_p2_f1_t_endpoints"]
SAMPLE_RUNS = ["f24F96R960-MultiScale", "f16F64R512-MultiScale", "custom-lowcfg-renorm"]


def test_fixture_lists_the_cases_we_check(parity_meta):
    assert sorted(parity_meta["forward_cases"]) == sorted(FORWARD_CASES)
    assert sorted(parity_meta["sample_runs"]) == sorted(SAMPLE_RUNS)


@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_matches_official(tiny_model, parity_meta, parity_ref, case):
    info = parity_meta["forward_cases"][case]
    prefix = f"fwd/{case}/"
    if info["input"] == "list":
        count = len(info["x_shape"])
        x = [parity_ref[f"{prefix}x/{i}"] for i in range(count)]
        expected = [parity_ref[f"{prefix}out/{i}"] for i in range(count)]
    else:
        x, expected = parity_ref[prefix + "x"], [parity_ref[prefix + "out"]]
    with torch.no_grad():
        out = tiny_model(x, parity_ref[prefix + "t"], parity_ref[prefix + "cap_feats"], parity_ref[prefix + "cap_mask"],
                         parity_ref[prefix + "motion"], info["patch_size"], info["f_patch_size"])
    assert isinstance(out, list) == (info["input"] == "list")
    outputs = out if isinstance(out, list) else [out]
    for got, ref in zip(outputs, expected, strict=True):
        assert got.shape == ref.shape
        assert relative_error(got, ref) <= FORWARD_TOL


def test_conditioning_intermediates_match_official(tiny_model, parity_ref):
    prefix = "fwd/video_p2_f1/"
    t, motion = parity_ref[prefix + "t"], parity_ref[prefix + "motion"]
    feats, mask = parity_ref[prefix + "cap_feats"], parity_ref[prefix + "cap_mask"]
    inter = lambda name: parity_ref[prefix + "inter/" + name]  # noqa: E731
    with torch.no_grad():
        t_emb = tiny_model.t_embedder(t * tiny_model.config.t_scale)
        motion_emb = tiny_model.motion_embedder((motion * tiny_model.config.motion_scale).clamp(min=0))
        weights = mask.float()[..., None]
        cap_emb = tiny_model.cap_embedder((feats * weights).sum(1) / weights.sum(1))
        tokens = tiny_model.all_x_embedder["2-1"](tiny_model._patchify(parity_ref[prefix + "x"][0], 2, 1))
    assert relative_error(t_emb, inter("t_embedder")) <= FORWARD_TOL
    assert relative_error(motion_emb, inter("motion_embedder_pre_zeroing")) <= FORWARD_TOL
    assert relative_error(cap_emb, inter("cap_embedder")) <= FORWARD_TOL
    assert relative_error(tokens, inter("x_embedder")[: len(tokens)]) <= FORWARD_TOL


def test_rope_table_matches_official(parity_ref, tiny_model):
    table = rope_frequencies(tiny_model.config.head_dim, tiny_model.config.rope_theta, 8, 8, 8)
    expected = parity_ref["rope/freqs_cis_real_f8_h8_w8"]
    # Both sides take cos/sin of float64 angles and round to float32. The fixture was made on another CPU,
    # whose libm may differ by an ulp in float64 and so flip a float32 rounding: allow 2 float32 ulps at 1
    # (2.4e-7), orders of magnitude below what a wrong frequency, axis split or position order gives (~1).
    got = torch.view_as_real(table).reshape(expected.shape)
    assert (got - expected).abs().max().item() <= 2.4e-7


@pytest.mark.parametrize("run", SAMPLE_RUNS)
def test_sampling_matches_official(tiny_model, parity_meta, parity_ref, run):
    info = parity_meta["sample_runs"][run]
    prefix = f"sample/{run}/"
    # The fixture ran the official config on a grid of num_steps_grid_points (not 70) points.
    config = replace(SampleConfig.from_official(info["sample_config"]), steps=info["num_steps_grid_points"])
    # float32 linspace + shift, as officially; on another CPU a fused multiply-add may move a point by an ulp,
    # so compare within 1e-7 and let the per-call patch pairs below check every threshold decision.
    assert (config.grid() - parity_ref[prefix + "tgrid"]).abs().max().item() <= 1e-7
    feats, mask = parity_ref[prefix + "cap_feats"], parity_ref[prefix + "cap_mask"]
    calls = []
    final = sample(tiny_model, parity_ref[prefix + "z"], (feats[:1], mask[:1]), (feats[1:], mask[1:]), config,
                   callback=calls.append)
    assert len(calls) == info["euler_steps"]
    for i, call in enumerate(calls):
        logged_patch = info["calls"][i]["log"].split("\n")[0].rsplit(" ", 1)[1]
        assert f"{call['f_patch_size']}x{call['patch_size']}" == logged_patch
        assert relative_error(call["velocity"], parity_ref[f"{prefix}call{i}/out_pos"]) <= SAMPLE_TOL
        assert relative_error(call["x"], parity_ref[prefix + "traj_pos"][i]) <= SAMPLE_TOL
    assert relative_error(final, parity_ref[prefix + "final_pos"]) <= SAMPLE_TOL
