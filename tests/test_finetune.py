"""LoRA fine-tuning from the command line (``python -m lumina_core finetune``) on the demo: a few steps on two tiny
clips lower the flow-matching loss on them, a resumed run ends where an uninterrupted one does, the --minutes
budget stops a run, and bad settings fail before any model loads."""

import copy
import re

import pytest
import torch
from safetensors.torch import load_file
from test_finetune_data import add_clip

from lumina_core import demo
from lumina_core.app import cli
from lumina_core.flow_matching import flow_matching_loss, time_shift
from lumina_core.lora import merge_lora

SMALL = ["--width", "32", "--height", "32", "--frames", "16", "--images", "0", "--rank", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    add_clip(folder, "right", "a purple square moving right", step=2, size=32)
    add_clip(folder, "left", "a purple square moving left", step=-2, size=32)
    return folder


def finetune(data, out, *extra):
    cli.main(["finetune", "--data", str(data), "--out", str(out), *SMALL, *extra])


def data_loss(model, cached) -> float:
    """The flow-matching loss over the cached clips at every patch pair, on fixed noise and t."""
    generator = torch.Generator().manual_seed(11)
    losses = []
    with torch.no_grad():
        for pair in model.config.patch_pairs:
            for _ in range(4):
                rows = cached["clip_caption"]
                losses.append(flow_matching_loss(model, cached["clip_latents"], cached["caption_feats"][rows],
                                                 cached["caption_mask"][rows], cached["clip_motion"], *pair,
                                                 generator, time_shift(pair, model.config.patch_pairs, True)))
    return torch.cat(losses).mean().item()


def test_a_few_steps_lower_the_loss_on_the_clips(data, tmp_path):
    out = tmp_path / "purple.safetensors"
    finetune(data, out, "--steps", "30", "--lr", "3e-3")
    cached = torch.load(out.with_suffix(".cache.pt"), weights_only=True)
    base = demo.build_transformer()
    tuned = copy.deepcopy(base)
    merge_lora(tuned, out)
    before, after = data_loss(base, cached), data_loss(tuned, cached)
    assert after < 0.8 * before, (before, after)  # measured 1.16 -> 0.49
    log = out.with_suffix(".log.txt").read_text().splitlines()
    steps = [line for line in log if re.fullmatch(r"step \d+ patch \dx\d loss [\d.]+", line)]
    assert len(steps) == 30 and all(" patch " in line and " loss " in line for line in steps)
    assert {line.split()[3] for line in steps} == {"1x1", "1x2", "2x2"}  # every patch pair drawn
    assert log[-2].startswith("step 30 mean loss per patch pair (last 50 each): 1x1=")


def test_a_resumed_run_ends_where_an_uninterrupted_run_does(data, tmp_path):
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    finetune(data, straight, "--steps", "4")
    finetune(data, split, "--steps", "2")
    first = {key: tensor.clone() for key, tensor in load_file(split).items()}  # load_file maps the file
    finetune(data, split, "--steps", "4", "--resume")
    assert "resumed at step 2" in split.with_suffix(".log.txt").read_text()
    resumed, uninterrupted = load_file(split), load_file(straight)
    key = "diffusion_model.layers.0.attention.wq.lora_up.weight"
    assert not torch.equal(resumed[key], first[key])  # it trained on
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in uninterrupted)
    with pytest.raises(SystemExit):
        finetune(data, split, "--steps", "6", "--resume", "--rank", "8")  # the state holds rank 4


def test_the_minutes_budget_stops_the_run(data, tmp_path):
    out = tmp_path / "brief.safetensors"
    finetune(data, out, "--steps", "1000", "--minutes", "1e-6")  # spent before the first step
    assert "stopped at step 0: the --minutes 1e-06 budget is spent" in out.with_suffix(".log.txt").read_text()
    assert all(not tensor.any() for key, tensor in load_file(out).items() if "lora_up" in key)


@pytest.mark.parametrize("extra, message", [
    (["--rank", "0"], "LoRA rank 0 must be a whole number >= 1"),
    (["--frames", "12"], "--frames 12 is not on the model's grid"),
    (["--width", "40"], "--width 40 is not on the model's grid"),
    (["--lr", "0"], "--lr 0.0 must be positive"),
    (["--model", "missing.safetensors"], "give --model, --text-encoder and --vae together"),
])
def test_bad_settings_fail_before_training(data, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(demo, "build_transformer", lambda: pytest.fail("a model loaded before the check"))
    with pytest.raises(SystemExit):
        finetune(data, tmp_path / "x.safetensors", *extra)
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--data", str(data), "--out", str(tmp_path / "x.pt")])
    assert "--out" in capsys.readouterr().err
