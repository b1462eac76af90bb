"""Overfit test and path ablations for the demo's direction word (issue 23, steps 1 and 2).

The shipped demo follows the colour word but not the direction word: for one seed the four
directions give the same track. This script asks whether the demo DiT *can* learn the direction
word at all, on a handful of clips it may memorise:

- clips: one shape in one colour moving left, right, up and down at the normal speed
  (``--starts`` start positions per direction; 1 = the four centred paths only), encoded once with
  the shipped demo VAE, with the motion labels the data set uses (optical flow);
- training: a copy of the demo NextDiT (``--init shipped`` or ``scratch``) with the demo recipe's
  flow-matching loss and per-pair time shifts (training.train), on these clips only;
- evaluation every ``--eval-every`` steps: for ``--eval-noises`` fixed noises, the four direction
  captions are sampled from the *same* noise (demo schedule, or the one trained patch pair),
  decoded, and the centroid track is measured as eval_demo measures it (demo_data.shape_direction).

Variants (flags): caption dropout on/off (``--caption-dropout``; with dropout the sampler guides with
the empty prompt as the demo does, without it cfg is 0), the caption path (``--path joint``: both;
``pooled``: the cross-attention to the caption tokens is zeroed; ``cross``: the pooled caption is
zeroed in the adaLN conditioning; ``none``: neither, a control that must stay at chance), the caption
(``--caption full``: "a red circle moving left" after the system prompt; ``word``: "left" after the
system prompt; ``bare``: "left" alone), the control ``--vary colour`` (the same setup with four
colours of one direction instead of four directions of one colour), and a log of the attention mass
from image tokens to the word's token (per layer, at a probe t per patch pair) and of how much the
word changes the predicted velocity (``word_effect``: |v(caption) - v(opposite caption)| / |v(caption)|
on the same x_t; opposite: left/right, up/down, red/green, blue/yellow).

    OMP_NUM_THREADS=1 .venv/bin/python training/overfit_direction.py --init shipped --steps 800 \\
        --out out/overfit/shipped_joint

The runs of docs/demo_training.md ("Why direction stays at chance") took 3-14 minutes each on one
shared CPU core. Training state is not saved (nothing here is shipped).

Each run writes ``log.jsonl`` (one line per evaluation) and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumina_core import demo  # noqa: E402
from lumina_core.flow_matching import flow_matching_loss, time_shift  # noqa: E402
from lumina_core.sampling import SampleConfig, sample, seeded_noise  # noqa: E402
from lumina_core.text import apply_template, encode_prompts  # noqa: E402
from lumina_core.vae import decode, encode  # noqa: E402
from training import demo_data  # noqa: E402
from training.train import build_training_transformer  # noqa: E402

DIRECTIONS = tuple(demo_data.DIRECTIONS)
WORDS = {"direction": DIRECTIONS, "colour": ("red", "green", "blue", "yellow")}  # the four words a run varies
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up",
            "red": "green", "green": "red", "blue": "yellow", "yellow": "blue"}
SPEED = float(np.mean(demo_data.SPEEDS[""]))  # px per frame of the normal speed band
RADIUS = float(np.mean(demo_data.SIZE_RANGE))
PATHS = ("joint", "pooled", "cross", "none")
CAPTIONS = ("full", "word", "bare")
PROBE_T = {(2, 2): 0.1, (2, 1): 0.2, (1, 1): 0.4}  # where the demo schedule runs each pair (its first t)


# -- data -----------------------------------------------------------------------------------------

def clip_spec(colour: str, shape: str, direction: str, along: float = 0.0, across: float = 0.0) -> demo_data.ClipSpec:
    """A clip at the normal speed whose path is centred in the frame, then moved ``along`` its axis
    and ``across`` it (pixels)."""
    dx, dy = demo_data.DIRECTIONS[direction]
    travel = SPEED * (demo_data.FRAMES - 1)
    centre = (32 + along * abs(dx) + across * abs(dy), 32 + along * abs(dy) + across * abs(dx))
    start = (centre[0] - dx * travel / 2, centre[1] - dy * travel / 2)
    return demo_data.ClipSpec(colour, shape, direction, "", SPEED, RADIUS, start, 0.45)


def make_clips(vary: str, colour: str, shape: str, direction: str, starts: int, seed: int
               ) -> tuple[np.ndarray, list[str]]:
    """uint8 clips [4 * starts, F, H, W, 3]: each of the four words of ``vary`` (directions, or colours
    of a clip moving ``direction``) at each start, and the word of every clip. Start 0 is the centred
    path; the others move it along its axis within the frame and anywhere across it (drawn from seed)."""
    rng = np.random.default_rng(seed)
    slack = (demo_data.WIDTH - 2 * RADIUS - SPEED * (demo_data.FRAMES - 1)) / 2
    clips, words = [], []
    for index in range(starts):
        along = 0.0 if index == 0 else float(rng.uniform(-slack, slack))
        across = 0.0 if index == 0 else float(rng.uniform(-(32 - RADIUS - 4), 32 - RADIUS - 4))
        for word in WORDS[vary]:
            spec = (clip_spec(colour, shape, word, along, across) if vary == "direction"
                    else clip_spec(word, shape, direction, along, across))
            clips.append(demo_data.render(spec))
            words.append(word)
    return np.stack(clips), words


def caption_text(kind: str, vary: str, word: str, colour: str, shape: str, direction: str) -> str:
    """The caption of a clip showing ``word``: the demo's caption ("full") or the word alone."""
    if kind != "full":
        return word
    colour, direction = (colour, word) if vary == "direction" else (word, direction)
    return f"a {colour} {shape} moving {direction}"


def measure(vary: str, frames) -> str | None:
    """What eval_demo measures for the varied word: the centroid's travel or the hue."""
    return demo_data.shape_direction(frames) if vary == "direction" else demo_data.shape_colour(frames)


@torch.no_grad()
def caption_features(text_model, tokenizer, prompts: list[str], template: bool):
    """(feats, mask, ids) of prompts: with the system prompt (lumina_core.text.encode_prompts, the
    demo's path) or without it (the bare words after <bos>, same features: hidden_states[-2])."""
    if template:
        feats, mask = encode_prompts(text_model, tokenizer, prompts)
        ids = tokenizer([apply_template(p) for p in prompts], padding="longest", return_tensors="pt")["input_ids"]
        return feats.float(), mask, ids
    tokens = tokenizer(prompts, padding="longest", return_tensors="pt")
    out = text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                     output_hidden_states=True, use_cache=False)
    return out.hidden_states[-2].float(), tokens["attention_mask"], tokens["input_ids"]


# -- the cheap suspects ------------------------------------------------------------------------------

@torch.no_grad()
def check_suspects(vae, tokenizer) -> dict:
    """Checks that need no training, on the four centred direction clips: distinct token ids for the
    four direction words, the rendered track (demo_data.shape_direction) and the latents in temporal
    order (the energy centroid of each latent frame, against a clip without the shape, moves the
    word's way by more than half a latent pixel)."""
    ids = {d: tokenizer.convert_tokens_to_ids(d) for d in DIRECTIONS}
    clips = np.stack([demo_data.render(clip_spec("red", "circle", d)) for d in DIRECTIONS])
    latents = encode(vae, torch.from_numpy(clips).float() / 255)
    empty = demo_data.render(replace(clip_spec("red", "circle", "left"), direction=demo_data.STILL, speed=0.0,
                                     start=(-99.0, -99.0)))
    background = encode(vae, torch.from_numpy(empty)[None].float() / 255)
    energy = (latents - background).pow(2).sum(1)  # [N, T, h, w]
    ys, xs = torch.meshgrid(*(torch.arange(float(n)) for n in energy.shape[2:]), indexing="ij")
    total = energy.sum((2, 3))
    cx, cy = (energy * xs).sum((2, 3)) / total, (energy * ys).sum((2, 3)) / total
    agree = []
    for index, direction in enumerate(DIRECTIONS):
        dx, dy = demo_data.DIRECTIONS[direction]
        agree.append(bool(dx * (cx[index, -1] - cx[index, 0]) + dy * (cy[index, -1] - cy[index, 0]) > 0.5))
    pixel = [demo_data.shape_direction(clip) == d for clip, d in zip(clips, DIRECTIONS)]
    distinct = len(set(ids.values())) == 4 and tokenizer.unk_token_id not in ids.values()
    return {"token_ids": ids, "ids_distinct": distinct, "latent_track_follows_direction": float(np.mean(agree)),
            "pixel_track_follows_direction": float(np.mean(pixel)),
            "latent_centroid_x_left_clip": [round(float(v), 2) for v in cx[DIRECTIONS.index("left")]]}


# -- caption paths -------------------------------------------------------------------------------

def zero_caption_attention(q, k, v, key_mask):
    """Cross-attention to the caption switched off (its output is zero; the gate then has no effect)."""
    return torch.zeros_like(q)


def apply_path(model, path: str) -> None:
    """Close the caption paths that ``path`` excludes: the cross-attention ("pooled", "none") and the
    pooled caption in the adaLN conditioning ("cross", "none")."""
    if path in ("pooled", "none"):
        for layer in model.layers:
            layer.attention.attend_caption = zero_caption_attention
            layer.attention.gate.requires_grad_(False).zero_()
    if path in ("cross", "none"):
        with torch.no_grad():
            model.cap_embedder[1].weight.zero_()
            model.cap_embedder[1].bias.zero_()
        model.cap_embedder.requires_grad_(False)


class AttentionRecorder:
    """An ``attend_caption`` that computes the caption attention explicitly and records, per call,
    the mean softmax weight that image tokens give to the key at ``positions`` [B]."""

    def __init__(self, positions: torch.Tensor):
        self.positions = positions
        self.mass: list[float] = []

    def __call__(self, q, k, v, key_mask):
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        picked = weights[torch.arange(len(self.positions)), :, :, self.positions]  # [B, H, Lq]
        self.mass.append(float(picked.mean()))
        return torch.einsum("bhqk,bhkd->bhqd", weights, v.float()).to(q.dtype)


@torch.no_grad()
def probe(model, latents, feats, mask, opposite, positions, motion, pairs, path: str, seed: int) -> dict:
    """At each pair's probe t, on x_t of every clip with fixed noise: the attention mass from image
    tokens to the word's token per layer (joint/cross paths) and the relative change of the
    predicted velocity when each clip's caption is replaced by ``opposite`` (feats, mask): the
    caption of the opposite word."""
    model.eval()
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for pair in pairs:
        t = torch.full((len(latents),), PROBE_T[pair])
        x_t = t.view(-1, 1, 1, 1, 1) * latents + (1 - t.view(-1, 1, 1, 1, 1)) * noise
        key = f"{pair[1]}x{pair[0]}"
        if path in ("joint", "cross"):
            recorder = AttentionRecorder(positions)
            saved = [layer.attention.attend_caption for layer in model.layers]
            for layer in model.layers:
                layer.attention.attend_caption = recorder
            model(x_t, t, feats, mask, motion, *pair)
            for layer, attend in zip(model.layers, saved):
                layer.attention.attend_caption = attend
            out[f"attn_mass_{key}"] = [round(m, 4) for m in recorder.mass]
        v = model(x_t, t, feats, mask, motion, *pair)
        v_opposite = model(x_t, t, *opposite, motion, *pair)
        out[f"word_effect_{key}"] = round(float((v - v_opposite).norm() / v.norm().clamp_min(1e-12)), 4)
    model.train()
    return out


# -- evaluation ----------------------------------------------------------------------------------

def sample_config(pairs, guided: bool, motion: float) -> SampleConfig:
    """The demo schedule (20 steps, ts 3, 2x2 -> 1x2 at 0.1 -> 1x1 at 0.4) when all three pairs train,
    else the one trained pair throughout; cfg 4 truncated at 0.8 when guided, else 0; ``motion`` (the
    clips' mean label) for the caption, -1 (no motion condition) for the empty one."""
    patches = demo.DEMO_SCHEDULE["P"] if len(pairs) == 3 else f"{pairs[0][1]}x{pairs[0][0]}"
    cfg = demo.DEMO_SCHEDULE["cfg"] if guided else 0.0
    return SampleConfig.from_official({"P": patches, "step": 20, "ts": 3.0, "renorm": -1, "cfg": cfg,
                                       "motion": motion, "negMotion": -1.0})


@torch.no_grad()
def evaluate(model, vae, cond, uncond, config: SampleConfig, noises: int, shape, vary: str) -> dict:
    """Sample the four captions from each of ``noises`` fixed noises: the share whose measured word
    (eval_demo's measure) is the caption's, the measured words per noise, and the mean pixel
    difference (levels of 255) between the clips of the first two words (left/right, red/green) of
    one noise."""
    model.eval()
    feats, mask = cond
    words = WORDS[vary]
    rows = [(n, w) for n in range(noises) for w in range(len(words))]
    noise = torch.cat([seeded_noise((1, *shape), n) for n, _ in rows])
    pick = torch.tensor([w for _, w in rows])
    negative = None if uncond is None else (uncond[0].expand(len(rows), -1, -1), uncond[1].expand(len(rows), -1))
    latents = sample(model, noise, (feats[pick], mask[pick]), negative, config)
    frames = (decode(vae, latents).numpy() * 255).round().astype(np.uint8)
    measured = [measure(vary, clip) for clip in frames]
    correct = [m == words[w] for m, (_, w) in zip(measured, rows)]
    gap = [np.abs(frames[n * 4].astype(float) - frames[n * 4 + 1].astype(float)).mean() for n in range(noises)]
    model.train()
    return {"accuracy": float(np.mean(correct)),
            "per_noise": [[m or "-" for m in measured[n * 4:(n + 1) * 4]] for n in range(noises)],
            "pair_pixel_diff": round(float(np.mean(gap)), 2)}


# -- main ----------------------------------------------------------------------------------------

def parse_pairs(text: str, offered) -> tuple[tuple[int, int], ...]:
    """(patch, f-patch) pairs of "2x2,1x2,1x1" (FxP): all of the model's pairs or one of them."""
    pairs = []
    for item in text.split(","):
        f, p = (int(v) for v in item.lower().split("x"))
        pairs.append((p, f))
    if sorted(pairs) != sorted(offered) and not (len(pairs) == 1 and pairs[0] in offered):
        names = ",".join(f"{f}x{p}" for p, f in offered)
        raise SystemExit(f"--pairs {text!r} is not all of the demo's patch pairs ({names}) nor one of them")
    return tuple(pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for log.jsonl and summary.json")
    parser.add_argument("--init", choices=("scratch", "shipped"), default="scratch",
                        help="start from the seeded official initialisation or from the shipped demo weights")
    parser.add_argument("--path", choices=PATHS, default="joint",
                        help="caption paths left open: joint (both), pooled (adaLN only), cross (cross-attention only)")
    parser.add_argument("--caption", choices=CAPTIONS, default="full",
                        help="full: 'a red circle moving left' after the system prompt; word: 'left' after it; "
                             "bare: 'left' alone")
    parser.add_argument("--caption-dropout", type=float, default=0.0,
                        help="share of samples trained on the empty caption; > 0 also guides the sampler (cfg 4)")
    parser.add_argument("--motion-dropout", type=float, default=0.3)
    parser.add_argument("--vary", choices=tuple(WORDS), default="direction",
                        help="the word the four clips differ in: direction (the test) or colour (the control: the "
                             "same clips moving --direction in four colours)")
    parser.add_argument("--starts", type=int, default=1, help="start positions per word (1 = centred only)")
    parser.add_argument("--pairs", default="2x2,1x2,1x1",
                        help="patch pairs trained (FxP); all three sample with the demo schedule, one with itself")
    parser.add_argument("--colour", default="red", choices=tuple(demo_data.COLOURS))
    parser.add_argument("--shape", default="circle", choices=demo_data.SHAPES)
    parser.add_argument("--direction", default="right", choices=DIRECTIONS, help="the direction of --vary colour")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-time budget (the loop stops before it)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-noises", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.jsonl"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()

    components = demo.load_demo()
    if not demo.DEMO_IS_TRAINED:
        raise SystemExit("the shipped demo models are missing (lumina_core/demo_models); this test needs the "
                         "trained VAE to encode the clips")
    vae, tokenizer, text_model = components.vae, components.tokenizer, components.text_model
    suspects = check_suspects(vae, tokenizer)
    print(json.dumps({"suspects": suspects}), flush=True)
    words = WORDS[args.vary]
    clips, clip_words = make_clips(args.vary, args.colour, args.shape, args.direction, args.starts, args.seed)
    latents = torch.cat([encode(vae, torch.from_numpy(clips[i:i + 8]).float() / 255) for i in range(0, len(clips), 8)])
    motion = torch.tensor([demo_data.measured_motion(clip) for clip in clips], dtype=torch.float32)

    prompts = [caption_text(args.caption, args.vary, w, args.colour, args.shape, args.direction) for w in words]
    feats, mask, ids = caption_features(text_model, tokenizer, prompts + [""], template=args.caption != "bare")
    cond, empty = (feats[:4], mask[:4]), (feats[4:], mask[4:])
    word_ids = torch.tensor([tokenizer.convert_tokens_to_ids(w) for w in words])
    positions = (ids[:4] == word_ids[:, None]).int().argmax(dim=1)  # where each caption holds its word
    if not bool((ids[torch.arange(4), positions] == word_ids).all()):
        raise SystemExit(f"a caption of {prompts} does not hold its word (token ids {word_ids.tolist()})")
    clip_rows = torch.tensor([words.index(w) for w in clip_words])
    opposite_rows = torch.tensor([words.index(OPPOSITE[w]) for w in clip_words])

    pairs = parse_pairs(args.pairs, demo.TRANSFORMER_CONFIG.patch_pairs)
    model = (demo.build_transformer() if args.init == "shipped" else build_training_transformer(args.seed))
    model.train().requires_grad_(True)  # the shipped model loads frozen
    all_pairs = model.config.patch_pairs
    apply_path(model, args.path)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    guided = args.caption_dropout > 0
    config = sample_config(pairs, guided, float(motion.mean()))
    uncond = empty if guided else None
    probe_feats, probe_mask = feats[clip_rows], mask[clip_rows]

    def record(step: int, losses: list[float]) -> dict:
        entry = {"step": step, "seconds": round(time.monotonic() - started),
                 "loss": round(float(np.mean(losses)), 4) if losses else None}
        entry.update(evaluate(model, vae, cond, uncond, config, args.eval_noises, latents.shape[1:], args.vary))
        entry.update(probe(model, latents, probe_feats, probe_mask,
                           (feats[opposite_rows], mask[opposite_rows]), positions[clip_rows], motion, pairs, args.path,
                           args.seed + 1))
        with open(log_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)
        return entry

    history = [record(0, [])]
    losses: list[float] = []
    step_seconds = 0.0
    step = 0
    while step < args.steps and time.monotonic() - started + 3 * step_seconds + 60 < args.minutes * 60:
        began = time.monotonic()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        index = torch.randint(len(latents), (args.batch,), generator=generator)
        rows = clip_rows[index]
        batch_feats, batch_mask = feats[rows].clone(), mask[rows].clone()
        dropped = torch.rand(args.batch, generator=generator) < args.caption_dropout
        batch_feats[dropped], batch_mask[dropped] = empty  # one encode call: same padded length
        batch_motion = motion[index].clone()
        batch_motion[torch.rand(args.batch, generator=generator) < args.motion_dropout] = -1.0
        shift = time_shift(pair, all_pairs, video=True)
        loss = flow_matching_loss(model, latents[index], batch_feats, batch_mask, batch_motion, *pair, generator,
                                  shift).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses = (losses + [loss.item()])[-50:]
        step += 1
        step_seconds = max(step_seconds, time.monotonic() - began) if step > 3 else 0.0
        if step % args.eval_every == 0 or step == args.steps:
            history.append(record(step, losses))
    if history[-1]["step"] != step:
        history.append(record(step, losses))
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "suspects": suspects,
               "curve": [(h["step"], h["accuracy"]) for h in history], "final": history[-1],
               "trained_parameters": sum(p.numel() for p in trained)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"final {args.vary} accuracy {history[-1]['accuracy']:.0%} after {step} steps, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
