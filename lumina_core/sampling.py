"""The Lumina-Video sampler: Euler on a shifted flow-matching time grid with multi-scale patches,
classifier-free guidance that also guides the motion score, and norm-capped guidance (renorm).

Equal to the official ``generate.py`` path (``sample_ode(sampling_method="euler")`` over
``forward_with_multi_cfg``). One step at grid point t_i, with stage patch pair (P, F):

    v_pos = model(x, t_i, positive caption, motion)
    v_neg = model(x, t_i, negative caption, negMotion)            # skipped when cfg <= 0
    v     = v_pos + cfg * (v_pos - v_neg)
    v    *= min(1, r * |v_pos| / |v|)   per item, when renorm r > 0
    x    += (t_{i+1} - t_i) * v
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .limits import load_json
from .model import check_latent_size
from .schedule import (
    Stage,
    check_contiguous,
    normalize_time_aware,
    patch_schedule_from_stages,
    stages_from_patch_schedule,
    time_grid,
    value_at,
)
from .step_cache import StepCache

Caption = tuple[torch.Tensor, torch.Tensor]  # (features [B, L, D], mask [B, L])

OFFICIAL_PRESETS: dict[str, dict] = {
    # The official configs/sample presets under their official names: "-MultiScale" runs coarse-to-fine
    # patches (our default), the plain name the single-scale 1x2 patch throughout.
    "f24F96R960-MultiScale": {"P": ("2x4", (0.03, "2x2"), (0.125, "1x2")), "step": 70, "ts": 24.0, "renorm": 2,
                              "cfg": (20, (0.2, 0)), "motion": 6.0, "negMotion": (2.0, (0.05, 6.0))},
    "f16F64R512-MultiScale": {"P": ("2x4", (0.075, "2x2"), (0.3, "1x2")), "step": 70, "ts": 8.0, "renorm": -1,
                              "cfg": (12, (0.4, 0)), "motion": 6.0, "negMotion": (2.0, (0.05, 6.0))},
    "f24F96R960": {"P": "1x2", "step": 70, "ts": 24.0, "renorm": 2,
                   "cfg": (20, (0.2, 0)), "motion": 6.0, "negMotion": (2.0, (0.05, 6.0))},
    "f16F64R512": {"P": "1x2", "step": 70, "ts": 8.0, "renorm": -1,
                   "cfg": (12, (0.4, 0)), "motion": 6.0, "negMotion": (2.0, (0.05, 6.0))},
}
OFFICIAL_KEYS = ("P", "step", "ts", "renorm", "cfg", "motion", "negMotion")


@dataclass(frozen=True)
class SampleConfig:
    """Everything the sampler needs besides the model, latent and captions.

    ``stages`` must be contiguous (each starts where the previous ends); grid points outside
    them are not evaluated, so a config holding one stage runs just that part of the schedule.
    ``cfg``, ``motion``, ``neg_motion`` and ``renorm`` are time-aware values of finite numbers (the official configs
    use a constant renorm; per-stage values need it time-aware); motion < 0 = no motion condition.
    """

    stages: tuple[Stage, ...]
    steps: int = 70
    shift: Optional[float] = None
    cfg: Any = 4.0
    motion: Any = 6.0
    neg_motion: Any = 2.0
    renorm: Any = -1.0
    name: str = field(default="", compare=False)

    def __post_init__(self):
        stages = tuple(self.stages)
        check_contiguous(stages, whole=False)
        time_grid(self.steps, self.shift)  # validates steps and shift
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "steps", int(self.steps))
        for name in ("cfg", "motion", "neg_motion", "renorm"):
            object.__setattr__(self, name, normalize_time_aware(getattr(self, name), name, numeric=True))

    # -- official dicts ----------------------------------------------------------------------
    @classmethod
    def from_official(cls, config: dict | str, name: str = "") -> "SampleConfig":
        """Build from an official sample-config dict (or its JSON text, read within lumina_core.limits): P, step,
        ts, renorm, cfg, motion, negMotion; time-aware values as tuples or JSON lists, finite numbers only."""
        if isinstance(config, str):
            try:
                config = load_json(config, "sample config")
            except json.JSONDecodeError as error:
                raise ValueError(f"sample config is not valid JSON ({error}); expected an object with keys "
                                 f"{', '.join(OFFICIAL_KEYS)}") from None
        if not isinstance(config, dict):
            raise ValueError(f"sample config {config!r} is not a dict with keys {', '.join(OFFICIAL_KEYS)}")
        unknown = sorted(set(config) - set(OFFICIAL_KEYS))
        if unknown:
            raise ValueError(f"sample config has unknown keys {unknown}; allowed: {', '.join(OFFICIAL_KEYS)}")
        if "P" not in config:
            raise ValueError("sample config has no 'P' (patch schedule), e.g. \"P\": [\"2x4\", [0.03, \"2x2\"]]")
        defaults = OFFICIAL_PRESETS["f16F64R512"]
        get = lambda key: config.get(key, defaults[key])  # noqa: E731
        return cls(stages=stages_from_patch_schedule(config["P"]), steps=get("step"), shift=get("ts"),
                   cfg=get("cfg"), motion=get("motion"), neg_motion=get("negMotion"),
                   renorm=get("renorm"), name=name)

    @classmethod
    def preset(cls, name: str) -> "SampleConfig":
        if name not in OFFICIAL_PRESETS:
            raise ValueError(f"schedule preset {name!r} is unknown; choose one of {', '.join(OFFICIAL_PRESETS)}")
        return cls.from_official(OFFICIAL_PRESETS[name], name=name)

    def to_official(self) -> dict:
        """The official dict form (JSON-serialisable with lists)."""
        return {"P": patch_schedule_from_stages(self.stages), "step": self.steps, "ts": self.shift or 0.0,
                "renorm": self.renorm, "cfg": self.cfg, "motion": self.motion, "negMotion": self.neg_motion}

    # -- stages ------------------------------------------------------------------------------
    def with_stage(self, stage: Stage, cfg: float, motion: float, neg_motion: float, renorm: float) -> "SampleConfig":
        """This config with ``stage`` appended (it must start where the last stage ends) and the given
        guidance values in force from its start: how a chain of stage nodes builds a schedule."""
        values = {name: _switch_at(getattr(self, name), stage.t_start, new)
                  for name, new in (("cfg", cfg), ("motion", motion), ("neg_motion", neg_motion), ("renorm", renorm))}
        return replace(self, stages=(*self.stages, stage), **values)

    def grid(self) -> torch.Tensor:
        return time_grid(self.steps, self.shift)

    def split(self) -> list["SampleConfig"]:
        """One config per stage; running them in order equals running this one."""
        return [replace(self, stages=(stage,)) for stage in self.stages]

    @property
    def guided(self) -> bool:
        """True when some model call of this config runs with cfg > 0 (it then needs a negative caption)."""
        return any(value_at(self.cfg, t) > 0 for _, t, _, _ in self.model_calls())

    def model_calls(self) -> list[tuple[int, float, float, Stage]]:
        """(grid index, t, t_next, stage) of every model call this config makes, in order."""
        grid = self.grid().tolist()
        calls = []
        for index, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
            stage = next((s for s in self.stages if s.covers(t)), None)
            if stage is not None:
                calls.append((index, t, t_next, stage))
        return calls


def _switch_at(value, t: float, new):
    """A time-aware value equal to ``value`` before t and ``new`` from t on."""
    if t <= 0.0:
        return new
    entries = [value] if not isinstance(value, tuple) else [value[0], *(p for p in value[1:] if p[0] < t)]
    if value_at(tuple(entries) if len(entries) > 1 else entries[0], t) == new:
        return tuple(entries) if len(entries) > 1 else entries[0]
    return (*entries, (t, new))


def seeded_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """float32 Gaussian noise from a CPU generator, so a seed gives the same start on every device
    (the command line and the sampler nodes both start here, which makes their results equal)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


# -- model checks ----------------------------------------------------------------------------
def check_latent_fits(latent_shape: Sequence[int], config: SampleConfig) -> None:
    """Raise unless every stage's patch sizes divide the latent [B, C, F, H, W] (no model needed)."""
    if len(latent_shape) != 5:
        raise ValueError(f"latent shape {tuple(latent_shape)} is not [B, C, F, H, W]")
    for stage in config.stages:
        check_latent_size(latent_shape[2:], stage.patch_size, stage.f_patch_size)


def check_patches(model, config: SampleConfig) -> None:
    """Raise unless the model has an embedder for every stage's patch pair."""
    for stage in config.stages:
        model.check_patch(stage.patch_size, stage.f_patch_size)


def check_runnable(model, latent_shape: Sequence[int], config: SampleConfig) -> None:
    """Raise before any model call if a stage's patch pair or the latent size doesn't fit."""
    check_latent_fits(latent_shape, config)
    channels = model.config.in_channels
    if latent_shape[1] != channels:
        raise ValueError(f"latent has {latent_shape[1]} channels; this model needs {channels}")
    check_patches(model, config)


def _pad_captions(a: Caption, b: Caption) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack two caption batches, right-padding the shorter one (padding is inert)."""
    length = max(a[0].shape[1], b[0].shape[1])
    feats = [F.pad(f, (0, 0, 0, length - f.shape[1])) for f, _ in (a, b)]
    masks = [F.pad(m, (0, length - m.shape[1])) for _, m in (a, b)]
    return torch.cat(feats), torch.cat(masks)


def guided_velocity(model, x: torch.Tensor, t: float, stage: Stage, cond: Caption, uncond: Optional[Caption],
                    cfg: float, motion: float, neg_motion: float, renorm: float) -> torch.Tensor:
    """One guided velocity evaluation (``forward_with_multi_cfg``); float32, shaped like x."""
    batch = x.shape[0]
    dtype = model.compute_dtype
    use_negative = cfg > 0.0
    if use_negative:
        feats, mask = _pad_captions(cond, uncond)
        model_x = torch.cat([x, x])
        motions = [float(motion)] * batch + [float(neg_motion)] * batch
    else:
        (feats, mask), model_x, motions = cond, x, [float(motion)] * batch
    rows = model_x.shape[0]
    t_rows = torch.full((rows,), t, dtype=torch.float32, device=x.device)
    out = model(model_x.to(dtype), t_rows, feats, mask, torch.tensor(motions, device=x.device),
                stage.patch_size, stage.f_patch_size).float()
    return guide(out[:batch], out[batch:] if use_negative else None, cfg, renorm)


def guide(positive: torch.Tensor, negative: Optional[torch.Tensor], cfg: float, renorm: float) -> torch.Tensor:
    """positive + cfg * (positive - negative) (positive alone when negative is None), then capped per item
    at renorm * |positive| when renorm > 0."""
    guided = positive + cfg * (positive - negative) if negative is not None else positive.clone()
    if float(renorm) > 0.0:
        dims = tuple(range(1, guided.dim()))
        cap = torch.linalg.vector_norm(positive, dim=dims, keepdim=True) * renorm
        norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
        guided = torch.where(norm >= cap, guided * (cap / norm), guided)
    return guided


def guidance_at(config: SampleConfig, t: float) -> tuple[float, float, float, float]:
    """(cfg, motion, negative motion, renorm) in force at t."""
    return (float(value_at(config.cfg, t)), value_at(config.motion, t), value_at(config.neg_motion, t),
            float(value_at(config.renorm, t)))


def check_sample_inputs(model, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption],
                        config: SampleConfig) -> None:
    """Every check :func:`sample` makes before its first model call."""
    check_runnable(model, noise.shape, config)
    if cond[0].shape[0] != noise.shape[0]:
        raise ValueError(f"{cond[0].shape[0]} positive caption rows for a batch of {noise.shape[0]} latents")
    if uncond is None and config.guided:
        raise ValueError("cfg > 0 needs a negative caption (uncond); pass one or set cfg to 0")
    if uncond is not None and uncond[0].shape[0] != noise.shape[0]:
        raise ValueError(f"{uncond[0].shape[0]} negative caption rows for a batch of {noise.shape[0]} latents")


Velocity = Callable[[torch.Tensor, float, Stage, tuple[float, float, float, float]], torch.Tensor]
"""``velocity(x, t, stage, guidance)``: the guided velocity [B, C, F, H, W] of one model call at grid time t, run at
the stage's patch pair with ``guidance`` = (cfg, motion, negative motion, renorm) in force at t."""


@torch.no_grad()
def integrate(noise: torch.Tensor, config: SampleConfig, velocity: Velocity,
              callback: Optional[Callable[[dict], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """The sampler loop, one Euler step per model call of ``config``: x += (t_next - t) * velocity(x, t, ...),
    from ``noise`` (float32); returns the float32 latent at the end of the last stage. :func:`sample` and the
    parallel sampler both run it, with their own velocity.

    ``callback(dict(step, t, t_next, x, velocity, patch_size, f_patch_size, index, total))`` runs after every
    velocity, before the update (x is the latent at t). ``should_stop()`` is asked before every model call; when
    it answers true the loop raises InterruptedError.
    """
    calls = config.model_calls()
    x = noise.float()
    grid = config.grid()
    for index, (step, t, t_next, stage) in enumerate(calls):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"sampling stopped before model call {index + 1} of {len(calls)} (should_stop() "
                                   "answered true)")
        v = velocity(x, t, stage, guidance_at(config, t))
        if callback is not None:
            callback(dict(step=step, t=t, t_next=t_next, x=x, velocity=v, patch_size=stage.patch_size,
                          f_patch_size=stage.f_patch_size, index=index, total=len(calls)))
        x = x + (grid[step + 1] - grid[step]) * v
    return x


@torch.no_grad()
def sample(model, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption], config: SampleConfig,
           callback: Optional[Callable[[dict], None]] = None, cache: Optional[StepCache] = None) -> torch.Tensor:
    """Integrate the flow ODE from ``noise`` (the latent at the first stage's start) over the config's
    stages with ``model``'s guided velocities (:func:`integrate`); returns the float32 latent at the end of the
    last stage.

    ``callback`` runs after every step, before the Euler update (see :func:`integrate`). An exception raised in
    it stops sampling; the input tensors are never modified.

    ``cache`` (a fresh :class:`~lumina_core.step_cache.StepCache`) may replace guided velocities by predictions;
    it starts over at every stage and at every change of cfg, motion, negative motion or renorm, so the
    first calls after a patch switch or cfg truncation always run the model. ``cache.summary()`` then says
    how many calls it skipped per stage.
    """
    check_sample_inputs(model, noise, cond, uncond, config)

    def velocity(x: torch.Tensor, t: float, stage: Stage, guidance: tuple) -> torch.Tensor:
        compute = partial(guided_velocity, model, x, t, stage, cond, uncond, *guidance)
        return compute() if cache is None else cache("guided", stage.patch, t, x, compute, phase=guidance)

    return integrate(noise, config, velocity, callback)
