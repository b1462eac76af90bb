"""One generation across processes (lumina_core.parallel): plans and their errors, the token split and
attention pieces in-process, and real 2-process gloo runs through torchrun (tests/parallel_worker.py) that
must equal the single-process sampler.

Tolerance 1e-5 relative (max |diff| / max |ref|): the split changes only float32 summation order (attention
over padded or split keys, captions not padded to a common length); measured ~6e-7. A wrong split (padding
attended, wrong RoPE slice, wrong KV group, swapped cfg rows) moves the result by 1e-2 or more.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import relative_error
from parallel_worker import case_inputs, load_model
from safetensors.torch import load_file

from lumina_core.app import cli
from lumina_core.model import NextDiTConfig, attention
from lumina_core.parallel.sampler import (
    ParallelPlan,
    attention_with_lse,
    check_plan,
    expand_kv_heads,
    merge_attention,
    pad_tokens,
    parallel_sample,
    token_slice,
)
from lumina_core.rope import rope_frequencies
from lumina_core.sampling import sample

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("parallel_worker.py")
TOL = 1e-5
PLANS = ("cfg=2", "ulysses=2", "ring=2")
TINY_HEADS = NextDiTConfig(in_channels=4, dim=96, n_layers=2, n_heads=6, n_kv_heads=3, cap_feat_dim=48)


def torchrun(tmp_path: Path, cases: list, timeout_s: float) -> subprocess.CompletedProcess:
    """Two gloo processes running ``cases``; a hang fails the test after 120 s."""
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(WORKER), str(tmp_path / "cases.json"), str(tmp_path), str(timeout_s)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


# -- plans -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, world, heads, guided, expected", [
    ("cfg=2,ulysses=2", 4, None, True, (2, 2, 1)),
    ("ulysses=2", 2, None, True, (1, 2, 1)),
    (" ring=2 , cfg=2 ", 4, None, True, (2, 1, 2)),
    ("auto", 8, 16, True, (2, 4, 1)),
    ("auto", 4, 6, False, (1, 2, 2)),
    ("auto", 3, 6, True, (1, 3, 1)),
    ("auto", 8, 6, True, (2, 2, 2)),
    ("auto", 1, 6, True, (1, 1, 1)),
])
def test_plan_parse(text, world, heads, guided, expected):
    plan = ParallelPlan.parse(text, world, heads, guided=guided)
    assert (plan.cfg, plan.ulysses, plan.ring) == expected
    if text == "auto":
        assert plan.world_size == world


@pytest.mark.parametrize("text, message", [
    ("cfg=3", "cfg=3 is not 1 or 2.*use cfg=2 and put the other processes into ulysses= or ring="),
    ("ulysses=0", "ulysses=0 is not a positive whole number"),
    ("ulysses=two", "ulysses='two' is not a whole number; use e.g. cfg=2,ulysses=2"),
    ("sp=2", "'sp=2' is not one of cfg=N, ulysses=N, ring=N"),
    ("ring=2,ring=2", "gives ring twice"),
])
def test_plan_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ParallelPlan.parse(text, 2)


def test_check_plan_names_the_value_the_allowed_values_and_the_fix():
    with pytest.raises(ValueError, match=r"cfg=2,ulysses=2,ring=1 needs 4 processes .* but 2 were launched; give "
                                         r"degrees whose product is 2 .* --nproc-per-node 4"):
        check_plan(ParallelPlan(cfg=2, ulysses=2), TINY_HEADS, 2)
    with pytest.raises(ValueError, match=r"ulysses=4 does not divide the model's 6 query heads; use a divisor of 6 "
                                         r"\(1, 2, 3, 6\) .* ulysses=2,ring=2"):
        check_plan(ParallelPlan(ulysses=4), TINY_HEADS, 4)
    check_plan(ParallelPlan(ulysses=2), TINY_HEADS, 2)  # 3 KV heads: expanded, allowed


# -- the split, in-process ---------------------------------------------------------------------------
@pytest.mark.parametrize("length, degree", [(15, 2), (15, 4), (16, 4), (3, 4)])
def test_token_split_pads_masks_and_slices_rope(length, degree):
    grid = (1, 3, 5) if length == 15 else (1, 4, 4) if length == 16 else (1, 1, 3)
    freqs = rope_frequencies(16, 256.0, *grid)[None].repeat(2, 1, 1)
    h = torch.randn(2, length, 8)
    key_mask = torch.ones(2, length, dtype=torch.bool)
    key_mask[1, -2:] = False  # a shorter second item
    padded_h, padded_freqs, keys = pad_tokens(h, freqs, key_mask, degree)
    total = math.ceil(length / degree) * degree
    assert padded_h.shape[1] == padded_freqs.shape[1] == keys.shape[1] == total
    assert keys[:, length:].sum() == 0 and torch.equal(keys[:, :length], key_mask)
    slices = [token_slice(length, degree, index) for index in range(degree)]
    assert slices[0].start == 0 and slices[-1].stop == total
    assert all(a.stop == b.start and a.stop - a.start == total // degree for a, b in zip(slices, slices[1:]))
    pieces = torch.cat([padded_freqs[:, part] for part in slices], dim=1)
    assert torch.equal(pieces[:, :length], freqs)  # each slice keeps its own tokens' RoPE positions
    assert torch.equal(torch.cat([padded_h[:, part] for part in slices], dim=1)[:, :length], h)


def test_expanded_kv_heads_keep_each_query_head_on_its_kv_head():
    q, k, v = torch.randn(1, 6, 5, 16), torch.randn(1, 3, 5, 16), torch.randn(1, 3, 5, 16)
    full = attention(q, k, v, None, "reference")
    ek, ev = expand_kv_heads(k, v, n_heads=6, ulysses=2)
    assert ek.shape[1] == 6
    for rank in range(2):  # what each of 2 Ulysses processes holds after the head exchange
        heads, kv = slice(3 * rank, 3 * rank + 3), slice(ek.shape[1] // 2 * rank, ek.shape[1] // 2 * (rank + 1))
        part = attention(q[:, heads], ek[:, kv], ev[:, kv], None, "reference")
        assert relative_error(part, full[:, heads]) < 1e-6
    assert expand_kv_heads(k, v, n_heads=6, ulysses=3)[0] is k  # 3 divides 3 KV heads: nothing repeated


def test_blockwise_attention_with_log_sum_exp_equals_masked_attention():
    q, k, v = torch.randn(2, 6, 4, 16), torch.randn(2, 3, 9, 16), torch.randn(2, 3, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False  # item 0: its whole last block is padding
    mask[1, 2] = False
    expected = attention(q, k, v, mask, "reference")
    out = lse = None
    for block in (slice(6, 9), slice(0, 3), slice(3, 6)):  # ring order, a fully masked block first
        out, lse = merge_attention(out, lse, *attention_with_lse(q, k[:, :, block], v[:, :, block], mask[:, block]))
    assert relative_error(out, expected) < 1e-6


# -- degree 1 and the import boundary ------------------------------------------------------------------
def test_degree_one_runs_without_a_process_group_and_stops_when_asked(tiny_model):
    noise, cond, uncond, config = case_inputs(tiny_model, "tiny")
    expected = sample(tiny_model, noise, cond, uncond, config)
    steps = []
    got = parallel_sample(tiny_model, noise, cond, uncond, config, ParallelPlan(), callback=steps.append)
    assert relative_error(got, expected) < 1e-6  # the same calls in the same order
    assert [s["index"] for s in steps] == list(range(len(config.model_calls())))
    with pytest.raises(InterruptedError, match="stopped before model call 3 of"):
        parallel_sample(tiny_model, noise, cond, uncond, config, ParallelPlan(),
                        should_stop=lambda: len(steps) >= len(config.model_calls()) + 2, callback=steps.append)


def test_single_process_paths_never_import_yunchang(tmp_path):
    code = ("import sys, lumina_core, lumina_core.parallel, lumina_core.app.pipeline\n"
            "from lumina_core.app import cli\n"
            f"args = cli.build_parser().parse_args(['generate', '--prompt', 'x', '--out', r'{tmp_path / 'v.mp4'}'])\n"
            "cli.resolve_settings(args)\n"
            "print('yunchang' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr


def test_comfyui_nodes_never_import_yunchang():
    from comfy_host import require_host

    require_host()
    code = "import sys, comfy_pack\nfrom lumina_video_pack import nodes\nprint('yunchang' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_cli_parallel_at_world_size_one_writes_the_video(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    args = ["generate", "--prompt", "a red circle", "--out", str(out), "--steps", "3", "--parallel", "auto"]
    assert cli.main(args) == 0
    assert out.stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0
    assert "rank 0/1 (cfg=1,ulysses=1,ring=1): both rows" in capsys.readouterr().err


# -- two processes ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One torchrun launch: every plan on both models, then a plan that does not fit 2 processes."""
    out = tmp_path_factory.mktemp("parallel")
    cases = [{"name": f"{kind}_{plan}", "model": kind, "plan": plan} for kind in ("tiny", "demo") for plan in PLANS]
    cases += [{"name": f"compiled_{plan}", "model": "tiny", "plan": plan, "compile": True} for plan in PLANS]
    cases.append({"name": "bad", "model": "tiny", "plan": "ulysses=4"})
    result = torchrun(out, cases, timeout_s=30)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("kind", ["tiny", "demo"])
@pytest.mark.parametrize("plan", PLANS)
def test_two_processes_equal_the_single_process_sampler(two_process_run, kind, plan):
    model = load_model(kind)
    noise, cond, uncond, config = case_inputs(model, kind)
    assert any(s.patch_size != config.stages[0].patch_size or s.f_patch_size != config.stages[0].f_patch_size
               for s in config.stages)  # a patch switch
    assert {float(c) > 0 for c in (config.cfg[0], config.cfg[-1][1])} == {True, False}  # cfg truncated to 0
    expected = sample(model, noise, cond, uncond, config)
    for rank in range(2):
        got = load_file(two_process_run / f"{kind}_{plan}.rank{rank}.safetensors")["latent"]
        assert relative_error(got, expected) <= TOL, (rank, relative_error(got, expected))


@pytest.mark.parametrize("plan", PLANS)
def test_compiled_processes_equal_the_sampler_and_compile_nothing_the_second_time(two_process_run, plan):
    """NextDiT.compile_blocks under every plan (a graph-counting backend that runs the graphs eagerly): the
    result is the single-process eager sampler's (the same operations traced: rounding only, TOL), and a
    second run compiles no graph. cfg and Ulysses trace their all-to-alls into the graph: at most one graph
    per patch pair and batch shape; the ring's point-to-point exchange breaks the graph at each exchange,
    so it compiles more pieces, once."""
    model = load_model("tiny")
    noise, cond, uncond, config = case_inputs(model, "tiny")
    expected = sample(model, noise, cond, uncond, config)
    pairs = {(stage.patch_size, stage.f_patch_size) for stage in config.stages}
    for rank in range(2):
        got = load_file(two_process_run / f"compiled_{plan}.rank{rank}.safetensors")["latent"]
        assert relative_error(got, expected) <= TOL, (rank, relative_error(got, expected))
        first, second = json.loads((two_process_run / f"compiled_{plan}.rank{rank}.graphs.json").read_text())
        assert first >= 1 and second == 0, (rank, first, second)
        if plan != "ring=2":
            assert first <= 2 * len(pairs), (rank, first)


def test_a_plan_that_does_not_fit_is_refused_before_any_work(two_process_run):
    for rank in range(2):
        message = (two_process_run / f"bad.rank{rank}.txt").read_text()
        assert "ulysses=4,ring=1 needs 4 processes (cfg x ulysses x ring) but 2 were launched" in message
        assert not (two_process_run / f"bad.rank{rank}.safetensors").exists()


def test_a_stalled_process_gives_a_clear_error_not_a_hang(tmp_path):
    result = torchrun(tmp_path, [{"name": "stall", "model": "tiny", "plan": "ulysses=2", "fail": "stall"}], 5)
    assert result.returncode != 0
    message = (tmp_path / "stall.rank0.txt").read_text()
    assert "parallel sampling failed on rank 0 in model call 2 of 5" in message
    assert "another process died or did not answer within 5 s" in message


def test_a_failing_process_ends_the_run_with_its_error(tmp_path):
    result = torchrun(tmp_path, [{"name": "raise", "model": "tiny", "plan": "cfg=2", "fail": "raise"}], 30)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in (tmp_path / "raise.rank1.txt").read_text()
    assert "rank      : 1" in result.stderr or "rank 1 fails on purpose" in result.stderr
