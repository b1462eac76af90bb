"""Drafts: the predicted clean latent x + (1 - t) v at the first stage's last call, decoded at 1/16 of the
pixels for the whole clip, handed over once while the fine stages still run, and never changing the final
result; the command line's --draft file is written before the final video."""

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lumina_core.app.pipeline import VideoRequest, encode_request, sample_request
from lumina_core.demo import DEMO_SCHEDULE, DEMO_SIZE, load_demo
from lumina_core.draft import DRAFT_SCALE, FirstStageDraft, decode_draft, draft_call, draft_latent, predicted_clean
from lumina_core.sampling import SampleConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = SampleConfig.from_official({**DEMO_SCHEDULE, "step": 8}, name="demo")


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def test_the_draft_comes_at_the_last_call_of_the_first_stage():
    calls = DEMO.model_calls()
    index = draft_call(DEMO)
    assert calls[index][3] == DEMO.stages[0] and calls[index + 1][3] == DEMO.stages[1]
    assert draft_call(SampleConfig.preset("f24F96R960")) is None  # one stage: it ends with the final video
    empty_first = SampleConfig.from_official({"P": ["2x2", [0.001, "1x2"]], "step": 3, "ts": 0})
    assert draft_call(empty_first) == 0  # t = 0 always belongs to the first stage


def test_the_predicted_clean_latent_is_one_euler_step_to_the_end():
    x, v = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    clean = predicted_clean({"x": x, "velocity": v, "t": 0.25})
    assert torch.allclose(clean, x + 0.75 * v)
    assert clean.data_ptr() not in (x.data_ptr(), v.data_ptr())


def test_draft_latent_averages_pixels_and_keeps_every_frame():
    latent = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(1, 2, 3, 4, 4)
    small = draft_latent(latent, 2)
    assert small.shape == (1, 2, 3, 2, 2)
    assert small[0, 1, 2, 1, 0] == latent[0, 1, 2, 2:4, 0:2].mean()
    assert draft_latent(torch.zeros(1, 2, 3, 5, 7), 2).shape == (1, 2, 3, 3, 4)
    assert draft_latent(latent, 1) is latent
    with pytest.raises(ValueError, match="draft scale 0 .* use 1"):
        draft_latent(latent, 0)


def test_drafts_never_change_the_final_result(demo):
    """Bit-identical final latents with and without a draft: the same sampler path runs and the draft only reads
    its tensors (an exact contract, hence torch.equal)."""
    request = VideoRequest(prompt="a red circle moving left", seed=3, **{k: DEMO_SIZE[k] for k in
                                                                         ("width", "height", "frames")})
    model = demo.transformer
    captions = encode_request(model, demo.text_model, demo.tokenizer, request)
    drafts = []

    def on_draft(latent, info):
        drafts.append((decode_draft(demo.vae, latent), info["t"], info["index"]))

    plain = sample_request(model, captions, request, DEMO)
    callback = FirstStageDraft(DEMO, on_draft)
    drafted = sample_request(model, captions, request, DEMO, callback=callback)
    assert torch.equal(plain, drafted)
    assert callback.fired and len(drafts) == 1
    frames, t, index = drafts[0]
    assert index == draft_call(DEMO) and t < DEMO.stages[0].t_end
    assert frames.shape == (1, request.frames, request.height // DRAFT_SCALE, request.width // DRAFT_SCALE, 3)
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0


def video_frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def sheet(video: Path) -> np.ndarray:
    return np.asarray(Image.open(video.with_suffix(".png")).convert("RGB"))


def generate(tmp_path, name, *extra):
    out = tmp_path / name
    result = subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a blue square moving up",
                             "--seed", "4", "--steps", "8", "--out", str(out), *extra],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_cli_writes_the_draft_before_the_final_video_and_the_same_final_video(tmp_path):
    draft = tmp_path / "draft.mp4"
    with_draft, stdout = generate(tmp_path, "with.mp4", "--draft", str(draft))
    without, _ = generate(tmp_path, "without.mp4")
    lines = stdout.splitlines()
    draft_line = next(i for i, line in enumerate(lines) if line.startswith(f"wrote draft {draft}"))
    final_line = next(i for i, line in enumerate(lines) if line.startswith(f"wrote {with_draft}"))
    assert draft_line < final_line
    assert "% of the run" in stdout
    # the contact sheets hold the final frames losslessly (H.264 files of equal frames differ between processes)
    assert np.array_equal(sheet(with_draft), sheet(without))
    final = video_frames(with_draft)
    frames = video_frames(draft)
    assert frames.shape == (final.shape[0], final.shape[1] // DRAFT_SCALE, final.shape[2] // DRAFT_SCALE, 3)


@pytest.mark.parametrize("draft, message", [("draft.avi", "--draft .*draft.avi must end in .mp4"),
                                            ("clip.mp4", "is the --out file")])
def test_cli_refuses_a_bad_draft_name_before_loading(tmp_path, capsys, monkeypatch, draft, message):
    from lumina_core import demo
    from lumina_core.app import cli

    monkeypatch.setattr(demo, "load_demo", lambda *a, **k: pytest.fail("a model loaded before the check"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--prompt", "x", "--out", str(tmp_path / "clip.mp4"), "--draft", str(tmp_path / draft)])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
