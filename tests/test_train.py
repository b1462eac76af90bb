"""Demo training: procedural data and its motion labels, the VAE latent normalisation, one DiT
training step with every patch pair and the dropouts, and resuming."""

import itertools
import time

import numpy as np
import pytest
import torch

from lumina_core import demo, flow_matching
from lumina_core.schedule import shift_time
from lumina_core.vae import decode, encode
from training import demo_data, train


def test_clips_are_deterministic_and_captioned_with_known_words():
    first, spec = demo_data.make_clip(7)
    second, _ = demo_data.make_clip(7)
    other, _ = demo_data.make_clip(8)
    assert first.shape == (demo.DEMO_SIZE["frames"], demo.DEMO_SIZE["height"], demo.DEMO_SIZE["width"], 3)
    assert np.array_equal(first, second) and not np.array_equal(first, other)
    tokenizer = demo.build_tokenizer()
    for seed in range(30):
        _, spec = demo_data.make_clip(seed)
        for caption in (spec.caption, spec.image_caption):
            assert tokenizer.unk_token_id not in tokenizer(caption)["input_ids"], caption
    # The build stays deterministic: the same vocabulary on every call.
    assert demo.build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_rendered_clips_show_the_caption():
    for seed in range(20):
        frames, spec = demo_data.make_clip(seed)
        assert demo_data.shape_colour(frames) == spec.colour
        assert demo_data.shape_direction(frames) == spec.direction


def test_motion_label_grows_with_speed_and_still_is_zero():
    spec = demo_data.ClipSpec("red", "circle", "left", "", 0.0, 10.0, (32.0, 32.0), 0.5)
    scores = []
    for speed in (0.0, 0.8, 1.6, 2.6):
        start = (32.0 + speed * 7.5, 32.0)
        scores.append(demo_data.measured_motion(demo_data.render(
            demo_data.ClipSpec("red", "circle", "left", "", speed, 10.0, start, 0.5))))
    assert scores[0] == pytest.approx(0.0, abs=1e-3)
    assert all(a < b for a, b in itertools.pairwise(scores)), scores
    assert spec.caption == "a red circle moving left"


def test_latent_normalisation_is_exact_and_gives_unit_std():
    vae = demo.seeded_vae()
    frames = train.vae_batch(0, 2, seed=0)[:, :8, :32, :32]
    before = decode(vae, encode(vae, frames))
    std = train.latent_channel_std(vae, frames)
    assert std.min() < 0.9  # the random VAE's latents are far from unit scale
    train.normalise_latents(vae, std)
    assert torch.allclose(decode(vae, encode(vae, frames)), before, atol=2e-4)
    assert torch.allclose(train.latent_channel_std(vae, frames), torch.ones(16), atol=1e-3)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A four-clip data set, the seeded VAE file and the data set encoded (latents, caption features)."""
    folder = tmp_path_factory.mktemp("demo_train")
    data = demo_data.make_dataset(clips=4, images=2, seed=3, progress=False)
    train.save_dataset(folder / "data.npz", data)
    train.save_vae(demo.seeded_vae(), folder / "vae.safetensors")
    text_model, tokenizer = train.load_text_components()
    encoded = train.encode_dataset(data, demo.seeded_vae(), text_model, tokenizer, progress=False)
    return folder, data, encoded


def test_dataset_labels_every_clip_with_measured_motion(small_run):
    _, data, encoded = small_run
    assert data["clips"].shape[0] == 4 and data["images"].shape[1] == 1
    still = np.array([d == demo_data.STILL for d in data["clip_direction"]])
    assert np.all(data["clip_motion"][still] < 0.05) and np.all(data["clip_motion"][~still] > 0.2)
    assert encoded["clip_latents"].shape == (4, 16, 4, 8, 8) and encoded["image_latents"].shape == (2, 16, 1, 8, 8)
    assert encoded["captions"][flow_matching.EMPTY_CAPTION] == ""


def test_dropouts_replace_captions_and_motion(small_run):
    _, _, encoded = small_run
    generator = torch.Generator().manual_seed(0)
    clips, images = flow_matching.draw_batch(encoded, 64, 16, generator, caption_dropout=1.0, motion_dropout=1.0)
    assert torch.all(clips["rows"] == flow_matching.EMPTY_CAPTION) and torch.all(clips["motion"] == -1)
    clips, images = flow_matching.draw_batch(encoded, 400, 16, generator)
    dropped_captions = (clips["rows"] == flow_matching.EMPTY_CAPTION).float().mean().item()
    dropped_motion = (clips["motion"] == -1).float().mean().item()
    assert 0.05 < dropped_captions < 0.16 and 0.23 < dropped_motion < 0.37
    assert torch.all(images["motion"] == -1) and images["latents"].shape[2] == 1


def test_training_steps_with_every_patch_pair_reduce_the_loss(small_run):
    _, _, encoded = small_run
    model = train.build_training_transformer(seed=0).train()
    train.check_patch_widths(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for pair in model.config.patch_pairs:
        generator = torch.Generator().manual_seed(1)
        loss = flow_matching.training_step(model, optimizer, encoded, pair, 4, 2, generator)
        assert np.isfinite(loss) and 0.5 < loss < 4.0
    # Repeating one batch (same noise and t) must fit it: the loss goes down.
    losses = [flow_matching.training_step(model, optimizer, encoded, (2, 2), 4, 2, torch.Generator().manual_seed(5))
              for _ in range(8)]
    assert losses[-1] < losses[0]


def test_dit_training_resumes(small_run):
    folder, _, _ = small_run
    out = folder / "dit"
    common = ["dit", "--data", str(folder / "data.npz"), "--vae", str(folder / "vae.safetensors"), "--out", str(out),
              "--videos", "2", "--images", "1", "--warmup", "1"]
    threads = torch.get_num_threads()
    train.main(common + ["--steps", "2", "--threads", "1"])
    assert torch.get_num_threads() == threads  # the run's thread count does not leak into the caller
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 2
    train.main(common + ["--steps", "3", "--resume"])
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3
    assert "resumed at step 2" in (out / "log.txt").read_text()
    from lumina_core.checkpoint import load_model

    assert load_model(out / "transformer.safetensors").config == demo.TRANSFORMER_CONFIG


def test_demo_text_features_keep_the_words_apart():
    from lumina_core.text import encode_prompts

    text_model, tokenizer = train.load_text_components()
    feats, mask = encode_prompts(text_model, tokenizer, ["a red circle moving left", "a blue circle moving left"])
    colour = int(mask[0].sum()) - 4  # "red" / "blue": 4th token from the end
    similarity = torch.nn.functional.cosine_similarity(feats[0, colour], feats[1, colour], dim=0)
    assert similarity < 0.5  # the DiT can only follow a prompt whose words give distinct features


def test_each_video_patch_pair_trains_at_its_own_noise_levels():
    pairs = demo.TRANSFORMER_CONFIG.patch_pairs  # (patch, f_patch): (1, 1) finest ... (2, 2) coarsest
    shifts = {pair: train.time_shift(pair, pairs, video=True) for pair in pairs}
    assert shifts == {(1, 1): 2.0, (2, 1): 4.0, (2, 2): 8.0}  # the official 2 / 4 / 8, finest to coarsest
    assert all(train.time_shift(pair, pairs, video=False) == 1.0 for pair in pairs)  # stills unshifted
    u = torch.linspace(0, 1, 101)
    assert torch.allclose(shift_time(u, 1.0), u, atol=1e-7)  # u / (u + 1 - u): rounding only
    # s > 1 pushes t towards noise (t = 0) and keeps the ends; the median of t is 1 / (1 + s).
    for shift in (2.0, 4.0, 8.0):
        t = shift_time(u, shift)
        assert t[0] == 0 and t[-1] == 1 and torch.all(t[1:-1] < u[1:-1])
        assert abs(t[50].item() - 1 / (1 + shift)) < 1e-6


def test_deadline_leaves_room_for_the_slowest_step_and_the_save(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 10.0, 86.0, 95.0])  # start, begin, end, fits, fits, fits
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    deadline = train.Deadline(100.0, reserve=5.0)
    deadline.begin()
    deadline.end()  # one step of 10 s
    assert deadline.fits()  # 10 + 10 + 5 <= 100
    assert not deadline.fits()  # 86 + 10 + 5 > 100: the next step could end after the save must start
    assert not deadline.fits()


def test_a_time_budget_stops_before_the_limit_and_saves_a_resumable_state(small_run):
    folder, _, _ = small_run
    out = folder / "dit_budget"
    common = ["dit", "--data", str(folder / "data.npz"), "--vae", str(folder / "vae.safetensors"), "--out", str(out),
              "--videos", "2", "--images", "1", "--warmup", "1", "--steps", "100000", "--bf16"]
    started = time.monotonic()
    train.main(common + ["--minutes", "0.05"])  # a 3 s budget: far fewer than 100000 steps
    stopped = torch.load(out / "state.pt", weights_only=True)["step"]
    assert 0 < stopped < 100000
    assert "bf16 autocast" in (out / "log.txt").read_text()
    from lumina_core.checkpoint import load_model

    assert load_model(out / "transformer.safetensors").config == demo.TRANSFORMER_CONFIG
    train.main(common + ["--minutes", "0.02", "--resume"])
    assert torch.load(out / "state.pt", weights_only=True)["step"] >= stopped
    assert time.monotonic() - started < 120  # hang guard only (two 1-3 s budgets plus loading)


def test_decoder_fine_tuning_keeps_the_encoder_and_so_every_latent(small_run):
    from safetensors.torch import load_file

    folder, _, _ = small_run
    source, out = folder / "vae.safetensors", folder / "vae_decoder"
    train.main(["vae", "--decoder-from", str(source), "--out", str(out), "--steps", "2", "--batch", "1",
                "--crop-frames", "8", "--crop-size", "16", "--lr", "1e-2"])
    before, after = load_file(source), load_file(out / "vae.safetensors")
    assert before.keys() == after.keys()
    encoder = [name for name in before if not name.startswith("decoder.")]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("decoder."))
    assert "+ 2 decoder" in train.file_metadata(out / "vae.safetensors")["step"]
