"""The command line: the main job on the demo models, and bad values refused before any model loads."""

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from PIL import Image
from size_rule import SIZE_TABLE, cli_verdict

from lumina_core import demo
from lumina_core.app import cli
from lumina_core.model import NextDiT
from lumina_core.precision import resolve_dtype

ROOT = Path(__file__).resolve().parents[1]  # the CLI runs from the repository, as the README says


def test_generate_writes_mp4_and_contact_sheet(tmp_path):
    out = tmp_path / "clip.mp4"
    result = subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a red circle moving left",
                             "--motion", "6", "--seed", "0", "--out", str(out), "--steps", "4"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert ("untrained random weights" in result.stderr) != demo.DEMO_IS_TRAINED  # says so while untrained
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [frame for frame in container.decode(stream)]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 64, 64)
        assert len(frames) == demo.DEMO_SIZE["frames"]
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(demo, "load_demo", refuse)


@pytest.mark.parametrize("extra, message", [
    (["--width", "70"], "width 70 is not a positive multiple of 16 pixels.*use 64 or 80"),
    (["--frames", "50"], "frame count 50 is not valid.*use 49 or 56"),
    (["--frames", "17"], "frames 17 make 5 latent frames.*use 16 or 24 frames"),
    (["--schedule", "f24F96R960-SingleScale"], "--schedule 'f24F96R960-SingleScale' is neither a preset"),
    (["--schedule", "fastest"], "--schedule 'fastest' is neither a preset"),
    (["--schedule", '{"P": "1x2", "step": 1}'], "step 1"),
    (["--steps", "1"], "step 1"),
    (["--fps", "0"], "--fps 0.0 must be positive"),
    (["--model", "missing.safetensors"], "--model missing.safetensors does not exist"),
    (["--cache", "-1"], r"--cache -1.0 is outside \[0, 2.0\]; use 0 \(off\) or a threshold such as 0.2"),
    (["--parallel", "cfg=4"], "--parallel: parallel degree cfg=4 is not 1 or 2"),
    (["--parallel", "ulysses=two"], "--parallel: parallel plan 'ulysses=two': ulysses='two' is not a whole number"),
    (["--parallel", "auto", "--cache", "0.2"], "--cache does not work with --parallel"),
    (["--motion", "nan"], "argument --motion: 'nan' is not a finite number"),
    (["--neg-motion=-inf"], "argument --neg-motion: '-inf' is not a finite number"),
    (["--fps", "nan"], "argument --fps: 'nan' is not a finite number"),
    (["--time-budget", "inf"], "argument --time-budget: 'inf' is not a finite number"),
    (["--schedule", '{"P": "1x2", "step": 10, "ts": NaN}'], "sample config holds NaN, which is not a finite number"),
    (["--schedule", '{"P": "1x2", "step": 10, "cfg": [4, [0.5, 1e999]]}'], "sample config holds 1e999"),
    (["--steps", "1001"], "step 1001 is above 1000 grid points"),
    (["--frames", "2048"], "frames 2048 is above 1025"),
])
def test_bad_values_fail_fast_with_a_clear_message(tmp_path, capsys, no_model_loads, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--prompt", "x", "--out", str(tmp_path / "v.mp4"), *extra])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def test_output_must_be_an_mp4_file(tmp_path, capsys, no_model_loads):
    for out, message in ((tmp_path / "v.avi", "must end in .mp4"), (tmp_path, "is a folder")):
        if out == tmp_path:
            out = tmp_path / "folder.mp4"
            out.mkdir()
        with pytest.raises(SystemExit):
            cli.main(["generate", "--prompt", "x", "--out", str(out)])
        assert message in capsys.readouterr().err


def test_real_models_must_come_together(tmp_path, capsys, no_model_loads):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(SystemExit):
        cli.main(["generate", "--prompt", "x", "--out", str(tmp_path / "v.mp4"), "--model", str(weights)])
    assert "give --model, --text-encoder and --vae together" in capsys.readouterr().err


@pytest.mark.parametrize("width, height, frames, schedule, expected", SIZE_TABLE)
def test_size_table(no_model_loads, width, height, frames, schedule, expected):
    """The shared size table (tests/size_rule.py; test_nodes.py checks the nodes against it)."""
    verdict = cli_verdict(width, height, frames, schedule)
    assert verdict is None if expected is None else expected in verdict, verdict


def test_generated_files_carry_the_equivalent_comfyui_graph(tmp_path):
    """The mp4 and the contact sheet hold "workflow" (UI) and "prompt" (API) JSON as ComfyUI's savers do,
    describing the same call: prompts, seed, size, frames and the schedule with the motion override."""
    out = tmp_path / "clip.mp4"
    cli.main(["generate", "--prompt", "a blue square moving up", "--negative-prompt", "blurry", "--motion", "9",
              "--seed", "5", "--steps", "3", "--out", str(out)])
    with av.open(str(out)) as container:
        tags = dict(container.metadata)
    with Image.open(out.with_suffix(".png")) as sheet:
        assert sheet.info["workflow"] == tags["workflow"] and sheet.info["prompt"] == tags["prompt"]
    prompt = json.loads(tags["prompt"])
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["LuminaVideoMSTextEncode"] == {"prompt": "a blue square moving up", "negative_prompt": "blurry",
                                                "text_encoder": ["2", 0]}
    assert by_type["LuminaVideoMSSampler"]["seed"] == 5
    assert by_type["LuminaVideoMSEmptyLatentVideo"] == {"resolution": "custom", "width": 64, "height": 64, "frames": 16,
                                                      "batch_size": 1}
    schedule = json.loads(by_type["LuminaVideoMSScheduleJSON"]["config"])
    assert schedule["motion"] == 9.0 and schedule["step"] == 3
    assert by_type["LuminaVideoMSModelLoader"]["model_name"] == "lumina-video-demo (built-in)"
    # the loaders pin the dtype the CLI ran (--dtype auto resolved), so the graph reproduces it on any host
    ran = resolve_dtype("auto", "cpu")
    assert [by_type[loader]["weight_dtype"] for loader in ("LuminaVideoMSModelLoader", "LuminaVideoMSTextEncoderLoader",
                                                           "LuminaVideoMSVAELoader")] == [ran] * 3
    workflow = json.loads(tags["workflow"])
    ids = {node["id"] for node in workflow["nodes"]}
    for link_id, origin, _, target, slot, _ in workflow["links"]:
        assert origin in ids and target in ids
        target_node = next(node for node in workflow["nodes"] if node["id"] == target)
        assert target_node["inputs"][slot]["link"] == link_id


def test_cache_flag_skips_calls_says_so_and_puts_the_cache_node_in_the_graph(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    cli.main(["generate", "--prompt", "a red circle moving left", "--steps", "30", "--cache", "0.3",
              "--out", str(out)])
    summary = re.search(r"step cache \(threshold 0.3\): skipped (\d+) of 29 model calls \(2x2 \d+/\d+, 1x2 \d+/\d+, "
                        r"1x1 \d+/\d+\)", capsys.readouterr().err)
    assert summary and int(summary.group(1)) > 0
    with av.open(str(out)) as container:
        prompt = json.loads(dict(container.metadata)["prompt"])
    cache_id, cache_node = next((key, node) for key, node in prompt.items()
                                if node["class_type"] == "LuminaVideoMSStepCache")
    assert cache_node["inputs"] == {"threshold": 0.3, "start": 0.0, "end": 1.0, "model": ["1", 0]}
    sampler = next(node for node in prompt.values() if node["class_type"] == "LuminaVideoMSSampler")
    assert sampler["inputs"]["model"] == [cache_id, 0]


@pytest.mark.parametrize("extra", [[], ["--parallel", "auto"]])
def test_compile_flag_compiles_the_blocks(tmp_path, monkeypatch, extra):
    """--compile regional reaches NextDiT.compile_blocks and the run goes through the compiled blocks (the
    eager backend stands in for inductor, which is too slow for a test), with --parallel too (one process
    here; two compiled processes: tests/test_parallel.py)."""
    compiled = []

    def compile_blocks(model, regional=False, **options):
        compiled.append(regional)
        original(model, regional=regional, backend="eager")

    original = NextDiT.compile_blocks
    monkeypatch.setattr(NextDiT, "compile_blocks", compile_blocks)
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    out = tmp_path / "clip.mp4"
    cli.main(["generate", "--prompt", "a red circle moving left", "--steps", "4", "--compile", "regional",
              "--out", str(out), *extra])
    assert compiled == [True] and out.exists()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before
    torch._dynamo.reset()


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (False, False, "fp32")])
def test_auto_dtype_is_bf16_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("fp32", "cpu") == "fp32"  # an explicit choice is kept


@pytest.mark.parametrize("choice, native_bf16, expected", [
    ("bf16", False, ["bf16"] * 3), ("fp32", True, ["fp32"] * 3), ("fp16", True, ["fp16", "fp32", "fp16"]),
    ("auto", True, ["bf16"] * 3), ("auto", False, ["fp32"] * 3)])
def test_component_dtypes(monkeypatch, choice, native_bf16, expected):
    """--dtype sets the transformer, text encoder and VAE, except fp16 for the text encoder (Gemma-2 overflows it);
    auto is bf16 on a CPU that computes it natively, else fp32."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    args = cli.build_parser().parse_args(["generate", "--prompt", "x", "--out", "v.mp4", "--dtype", choice])
    assert list(cli.component_dtypes(args).values()) == expected


def test_lora_flag_merges_each_file_at_its_strength(tmp_path, monkeypatch):
    """--lora FILE:0 samples what no LoRA samples, --lora FILE what the merged weights sample, two
    --lora FILE:0.5 stack to FILE:1, and the file's graph chains one LoraLoaderModelOnly per --lora."""
    import copy

    from lumina_core.app import pipeline
    from lumina_core.lora import add_lora, merge_lora, save_lora

    adapted = copy.deepcopy(demo.load_demo().transformer)
    for layer in add_lora(adapted, rank=2).values():
        layer.up.weight.data.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    lora = save_lora(adapted, tmp_path / "style.safetensors")
    sampled = []

    def record(model, *args, **kwargs):
        sampled.append({name: weight.clone() for name, weight in model.state_dict().items()})
        return torch.zeros(1, 16, 4, 8, 8)

    monkeypatch.setattr(pipeline, "sample_request", record)
    stacked = ["--lora", f"{lora}:0.5", "--lora", f"{lora}:.5"]
    for extra in ([], ["--lora", f"{lora}:0"], ["--lora", str(lora)], stacked):
        cli.main(["generate", "--prompt", "x", "--steps", "2", "--dtype", "fp32", "--out", str(tmp_path / "v.mp4"),
                  *extra])
    plain, off, full, halves = sampled
    merged = demo.load_demo().transformer
    merge_lora(merged, lora, 1.0)
    name = "layers.0.attention.wq.weight"
    assert all(torch.equal(off[key], plain[key]) for key in plain)
    assert not torch.equal(full[name], plain[name])
    assert all(torch.allclose(full[key], weight, atol=1e-6) for key, weight in merged.state_dict().items())
    assert all(torch.allclose(halves[key], full[key], atol=1e-6) for key in full)  # 0.5 + 0.5 = 1 up to rounding
    with Image.open(tmp_path / "v.png") as sheet:
        prompt = json.loads(sheet.info["prompt"])
    assert prompt["11"] == {"class_type": "LoraLoaderModelOnly",
                            "inputs": {"lora_name": "style.safetensors", "strength_model": 0.5, "model": ["1", 0]}}
    assert prompt["12"]["inputs"]["model"] == ["11", 0] and prompt["7"]["inputs"]["model"] == ["12", 0]


def test_lora_flag_refuses_a_missing_file(tmp_path, capsys, no_model_loads):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--prompt", "x", "--out", str(tmp_path / "v.mp4"), "--lora", "gone.safetensors:0.7"])
    error = capsys.readouterr().err
    assert "--lora gone.safetensors:0.7: gone.safetensors is not an existing .safetensors file" in error
