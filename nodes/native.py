"""Lumina-Video as a native ComfyUI model: a ``BaseModel`` whose ``diffusion_model`` is lumina_core's
Multi-scale Next-DiT built from ComfyUI's layer operations, so core samplers, LoRA loaders, caches,
offloading and fp8 storage work on it.

Conventions (ComfyUI flow matching, ``ModelType.FLOW``): the model receives sigma = 1 - t (t = 0 noise,
t = 1 data, the official convention) and returns -v, so that ``x0 = x - sigma * out = x + sigma * v``.
A LATENT holds raw CogVideoX latents; ``LuminaVideoLatent.process_in`` multiplies by the official scale
1.15258426 to reach the space the transformer works in.

What a sampler does not say, the *schedule* attached to the model says: which patch pair each t runs at,
the grid's time shift and the motion scores of rows that carry none of their own. It is attached under
``transformer_options[SCHEDULE_KEY]`` (a Lumina-Video guider or the Model Schedule node puts it there) and
falls back to the one the loader gave the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.supported_models_base
import torch
from comfy.ldm.modules.attention import attention_pytorch, optimized_attention_masked

from ..lumina_core.model import NextDiT, NextDiTConfig
from ..lumina_core.precision import native_bf16
from ..lumina_core.preview import LATENT_RGB, frame_grid
from ..lumina_core.sampling import SampleConfig, check_patches
from ..lumina_core.schedule import Stage, normalize_time_aware, value_at
from ..lumina_core.vae import LATENT_CHANNELS, SCALING_FACTOR

SCHEDULE_KEY = "lumina_video_schedule"
MOTION_KEY = "lumina_video_motion"
"""Conditioning extra: a time-aware motion score for that row, e.g. 6.0 or (2.0, (0.05, 6.0))."""
MOTION_SLOTS = 8  # (threshold, value) pairs a motion conditioning can hold


class LuminaVideoLatent(comfy.latent_formats.LatentFormat):
    """CogVideoX-2b latents: 16 channels over (frames, height, width), scaled by 1.15258426 for the model.

    Previews: the latent-to-RGB map of the latent space the model samples in (``latent_space``, a key of
    ``lumina_core.preview.LATENT_RGB``: the real VAE's or the demo VAE's), over every latent frame at once:
    ``latent_rgb_factors_reshape``, which ComfyUI's latent2rgb previewer applies before it reads frame 0, lays
    the frames out in one grid (``frame_grid``). So core samplers and the pack's samplers show the whole clip."""

    latent_channels = LATENT_CHANNELS
    latent_dimensions = 3
    scale_factor = SCALING_FACTOR

    def __init__(self, latent_space: str = "cogvideox", channels: int = LATENT_CHANNELS):
        if latent_space not in LATENT_RGB:
            raise ValueError(f"latent space {latent_space!r} is unknown; use one of {', '.join(LATENT_RGB)}")
        self.latent_channels = channels
        rgb = LATENT_RGB[latent_space]
        if rgb.channels == channels:  # a model of another width has no known map: no latent2rgb preview
            self.latent_rgb_factors = [list(row) for row in rgb.factors]
            self.latent_rgb_factors_bias = list(rgb.bias)
            self.latent_rgb_factors_reshape = frame_grid


# -- per-row motion as a conditioning tensor -------------------------------------------------------------
def encode_motion(value) -> torch.Tensor:
    """A time-aware motion value as an int64 tensor [1, MOTION_SLOTS, 2] of (threshold, value) pairs.

    The pairs are float64 stored as their int64 bit patterns: ComfyUI casts every floating conditioning
    tensor to the model's dtype (bf16), which would move a switch point such as t = 0.05; integers pass
    untouched. ``None`` (no motion given) is all NaN."""
    pairs = torch.full((MOTION_SLOTS, 2), math.nan, dtype=torch.float64)
    if value is not None:
        value = normalize_time_aware(value, "motion")
        entries = [(0.0, value)] if not isinstance(value, tuple) else [(0.0, value[0]), *value[1:]]
        if len(entries) > MOTION_SLOTS:
            raise ValueError(f"motion {value!r} switches {len(entries) - 1} times; at most {MOTION_SLOTS - 1} "
                             "switches fit a conditioning")
        pairs[:] = math.inf
        pairs[: len(entries)] = torch.tensor([(float(t), float(v)) for t, v in entries], dtype=torch.float64)
    return pairs.view(torch.int64)[None]


def motion_at(encoded: torch.Tensor, t) -> torch.Tensor:
    """float64 motion per row at time t (one float, or one per row) from encoded rows [B, MOTION_SLOTS, 2]; NaN
    for rows that carry none."""
    pairs = encoded.view(torch.float64)
    thresholds, values = pairs[..., 0], pairs[..., 1]
    times = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
    last = (thresholds <= times).long().sum(dim=1).clamp(min=1) - 1  # the last pair that has started
    return values.gather(1, last[:, None])[:, 0]


class CONDPaddedTokens(comfy.conds.CONDRegular):
    """Per-row caption features or mask [1, L, ...] that batch with rows of another length by right
    padding (padded tokens are masked out, exactly as the official pipeline pads a prompt batch)."""

    def can_concat(self, other):
        return self.cond.shape[2:] == other.cond.shape[2:] and self.cond.device == other.cond.device

    def concat(self, others):
        conds = [self.cond, *(other.cond for other in others)]
        length = max(c.shape[1] for c in conds)
        padded = [torch.nn.functional.pad(c, (0, 0) * (c.dim() - 2) + (0, length - c.shape[1])) for c in conds]
        return torch.cat(padded)


# -- the network -------------------------------------------------------------------------------------------
def comfy_attention(q, k, v, key_mask):
    """lumina_core's attention contract through ComfyUI's chosen attention (pytorch, sage, xformers, ...):
    grouped KV heads are repeated and the key mask becomes an additive one. Under torch.compile it is PyTorch
    SDPA, which compiles into the block graph (split and sub-quadratic attention ask for free memory, a graph
    break in every block)."""
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    mask = None
    if key_mask is not None:
        mask = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~key_mask, -math.inf)
        mask = mask[:, None, None, :]
    attend = attention_pytorch if torch.compiler.is_compiling() else optimized_attention_masked
    return attend(q, k, v, q.shape[1], mask=mask, skip_reshape=True, skip_output_reshape=True)


def official_times(sigma: torch.Tensor, schedule: SampleConfig) -> list[float]:
    """The official t of each row's sigma: the schedule's own grid point when sigma is 1 - that point
    (exact, so thresholds switch where the official code switches them), else 1 - sigma."""
    grid = schedule.grid()
    times = []
    for value in sigma.reshape(-1).tolist():
        hits = ((1.0 - grid) == value).nonzero()
        times.append(float(grid[hits[0, 0]]) if len(hits) else 1.0 - value)
    return times


def official_time(sigma: torch.Tensor, schedule: SampleConfig) -> float:
    """The official t of a sampler's call, whose rows share one sigma (the first row's; see ``official_times``)."""
    return official_times(sigma.reshape(-1)[:1], schedule)[0]


def stage_at(schedule: SampleConfig, t: float) -> Stage:
    """The stage whose t range holds t; before the first or after the last, the nearest one."""
    for stage in schedule.stages:
        if stage.covers(t):
            return stage
    return schedule.stages[0] if t < schedule.stages[0].t_start else schedule.stages[-1]


def row_motion(schedule: SampleConfig, t: float | Sequence[float], motion: Optional[torch.Tensor],
               motion_role: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """The float64 motion score of each row at t (one float for all rows, or one per row): a row's own
    (``motion``, encoded rows), else the schedule's for its role (``motion_role`` 1 = positive prompt, 0 =
    negative; all positive when None)."""
    times = [float(t)] * batch if isinstance(t, (int, float)) else [float(time) for time in t]
    positive = [True] * batch if motion_role is None else motion_role.bool().cpu().tolist()
    scores = torch.tensor([float(value_at(schedule.motion if role else schedule.neg_motion, time))
                           for role, time in zip(positive, times)], dtype=torch.float64)
    if motion is not None:
        own = motion_at(motion.cpu(), times)
        scores = torch.where(torch.isnan(own), scores, own)
    return scores


class LuminaVideoDiT(NextDiT):
    """The Multi-scale Next-DiT as ComfyUI builds diffusion models: keyword config plus ``dtype``, ``device``
    and ``operations`` (comfy.ops), forward(x, sigma, context, ...) -> -velocity through ComfyUI's
    DIFFUSION_MODEL wrappers (EasyCache and friends hook in there)."""

    def __init__(self, image_model=None, dtype=None, device=None, operations=None, default_schedule=None,
                 compute_dtype=None, **config):
        super().__init__(NextDiTConfig.from_dict(config), operations=operations, device=device, dtype=dtype,
                         init_weights=False)
        self.dtype = dtype
        self.manual_compute_dtype = compute_dtype
        self.default_schedule: SampleConfig = default_schedule
        self.set_attention_function(comfy_attention)
        # Inference only; a LoRA's patched weights come without grad, and torch.compile guards on requires_grad
        # (without this, one recompile per patch pair at the first LoRA).
        self.requires_grad_(False)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.manual_compute_dtype or self.dtype or super().compute_dtype

    # ComfyUI's TorchCompileModel compiles this forward: like NextDiT.forward, its own Python (the wrappers, the
    # schedule's t and stage, per-row motion) runs eagerly and only the block path becomes a graph.
    @torch.compiler.disable(recursive=False)
    def forward(self, x, timesteps, context, attention_mask=None, motion=None, motion_role=None,
                transformer_options={}, **kwargs):  # noqa: B006 (ComfyUI's calling convention)
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timesteps, context, attention_mask, motion, motion_role, transformer_options, **kwargs)

    def call_point(self, timesteps, transformer_options) -> tuple[SampleConfig, float, Stage]:
        """The schedule a call runs under (the attached one, else the model's default), the call's official t
        (a sampler's rows share one sigma) and the stage (patch pair) the schedule gives that t."""
        schedule = transformer_options.get(SCHEDULE_KEY) or self.default_schedule
        t = official_time(timesteps, schedule)
        return schedule, t, stage_at(schedule, t)

    @torch.compiler.disable(recursive=False)
    def _forward(self, x, timesteps, context, attention_mask, motion, motion_role, transformer_options, **kwargs):
        t_rows, attention_mask, scores, stages = self._call_inputs(x, timesteps, context, attention_mask, motion,
                                                                   motion_role, transformer_options)
        rows_of: dict[Stage, list[int]] = {}
        for row, stage in enumerate(stages):
            rows_of.setdefault(stage, []).append(row)
        if len(rows_of) == 1:  # every sampler call: one sigma for all rows
            stage = stages[0]
            return -NextDiT.forward(self, x, t_rows, context, attention_mask, scores, stage.patch_size,
                                    stage.f_patch_size)
        # rows at different sigmas (a training batch) whose t fall in different stages: each group at its pair
        parts, order = [], []
        for stage, rows in rows_of.items():
            index = torch.tensor(rows, device=x.device)
            parts.append(NextDiT.forward(self, x[index], t_rows[index], context[index], attention_mask[index],
                                         scores[index], stage.patch_size, stage.f_patch_size))
            order += rows
        velocity = torch.cat(parts)[torch.tensor(order, device=x.device).argsort()]
        return -velocity

    @torch.compiler.disable
    def _call_inputs(self, x, timesteps, context, attention_mask, motion, motion_role, transformer_options):
        """NextDiT.forward's t per row (each row's own sigma), caption mask, motion scores, and each row's stage,
        for one ComfyUI call."""
        schedule = transformer_options.get(SCHEDULE_KEY) or self.default_schedule
        batch = x.shape[0]
        times = official_times(timesteps.expand(batch) if timesteps.numel() == 1 else timesteps, schedule)
        scores = row_motion(schedule, times, motion, motion_role, batch)
        if attention_mask is None:
            attention_mask = torch.ones(context.shape[:2], dtype=torch.long, device=x.device)
        t_rows = torch.tensor(times, dtype=torch.float32, device=x.device)
        return t_rows, attention_mask, scores.to(x.device, torch.float32), [stage_at(schedule, t) for t in times]


# -- BaseModel and its config ---------------------------------------------------------------------------------
class OfficialCall:
    """lumina_core's model contract (``model(x, t, cap_feats, cap_mask, motion, patch_size, f_patch_size)``,
    ``config``, ``compute_dtype``, ``check_patch``) over a LuminaVideoDiT, whose own ``forward`` is ComfyUI's:
    what the pack's samplers hand to ``lumina_core.sampling.sample``."""

    def __init__(self, network: LuminaVideoDiT):
        self.network = network

    def __call__(self, *args):
        return NextDiT.forward(self.network, *args)

    def __getattr__(self, name):
        return getattr(self.network, name)


class LuminaVideoModel(comfy.model_base.BaseModel):
    """ComfyUI's view of Lumina-Video: flow matching (sigma = 1 - t), captions, masks and per-row motion as
    conditioning. Deliberately not a subclass of core ``Lumina2``, whose LoRA key maps and third-party
    patches assume the image model."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=LuminaVideoDiT)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = CONDPaddedTokens(cross_attn)
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(cross_attn.shape[:2], dtype=torch.long)
            out["attention_mask"] = CONDPaddedTokens(mask.long())
        out["motion"] = comfy.conds.CONDRegular(encode_motion(kwargs.get(MOTION_KEY)))
        role = 0 if kwargs.get("prompt_type") == "negative" else 1
        out["motion_role"] = comfy.conds.CONDRegular(torch.tensor([role], dtype=torch.long))
        return out


class LuminaVideoConfig(comfy.supported_models_base.BASE):
    unet_config = {"image_model": "lumina_video"}
    unet_extra_config = {}  # BASE's default adds num_heads/num_head_channels, which this model has not
    latent_format = LuminaVideoLatent
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    memory_usage_factor = 2.0

    def __init__(self, architecture: NextDiTConfig, schedule: SampleConfig, latent_space: str = "cogvideox"):
        self.sampling_settings = {"shift": float(schedule.shift or 1.0), "multiplier": 1.0}
        super().__init__({**self.unet_config, **architecture.to_dict(), "default_schedule": schedule})
        self.latent_format = LuminaVideoLatent(latent_space, architecture.in_channels)  # 16 for every released model

    def get_model(self, state_dict, prefix="", device=None):
        return LuminaVideoModel(self, device=device)


@dataclass(frozen=True)
class WeightDtype:
    storage: Optional[torch.dtype]  # None = ComfyUI's choice for the device
    fp8_fast: bool = False


WEIGHT_DTYPES = {
    "default": WeightDtype(None),
    "fp8_e4m3fn": WeightDtype(torch.float8_e4m3fn),
    "fp8_e4m3fn_fast": WeightDtype(torch.float8_e4m3fn, fp8_fast=True),
    "fp8_e5m2": WeightDtype(torch.float8_e5m2),
    "bf16": WeightDtype(torch.bfloat16),
    "fp16": WeightDtype(torch.float16),
    "fp32": WeightDtype(torch.float32),
}


def native_model(model: NextDiT, schedule: SampleConfig, weight_dtype: str = "default",
                 latent_space: str = "cogvideox") -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher over a LuminaVideoModel holding ``model``'s weights, built the way core builds
    diffusion models (``comfy.sd.load_diffusion_model_state_dict`` without detection): dtype from
    ``unet_dtype``/``unet_manual_cast``, layers from ``pick_operations``, weights by ``load_model_weights``.
    ``schedule`` becomes the model's default schedule (patch pairs, shift and motion when a sampler gives
    none); ``latent_space`` names the VAE latent it samples in, for previews ("cogvideox", or "demo" for the
    demo transformer, which was trained on the demo VAE's latents)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r} is unknown; use one of {', '.join(WEIGHT_DTYPES)}")
    choice = WEIGHT_DTYPES[weight_dtype]
    check_patches(model, schedule)
    state_dict = model.state_dict()
    config = LuminaVideoConfig(model.config, schedule, latent_space)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    parameters = sum(t.numel() for t in state_dict.values())
    unet_dtype = choice.storage or comfy.model_management.unet_dtype(
        model_params=parameters, supported_dtypes=config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    if unet_dtype == torch.bfloat16 and load_device.type == "cpu" and native_bf16(load_device):
        manual_cast = None  # ComfyUI computes bf16 weights in fp32 on every CPU; this one runs bf16 faster
    config.set_inference_dtype(unet_dtype, manual_cast)
    config.unet_config["compute_dtype"] = manual_cast
    if choice.fp8_fast:
        config.optimizations["fp8"] = True
    base = config.get_model(state_dict).to(offload_device)
    base.load_model_weights(dict(state_dict), "")
    return comfy.model_patcher.ModelPatcher(base, load_device=load_device, offload_device=offload_device)


def lumina_video_model(model_patcher) -> LuminaVideoDiT:
    """The Next-DiT inside a MODEL, or a clear error for any other model."""
    network = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if not isinstance(network, LuminaVideoDiT):
        kind = type(getattr(model_patcher, "model", model_patcher)).__name__
        raise ValueError(f"this MODEL is a {kind}, not Lumina-Video; load it with Lumina-Video Model Loader")
    return network


def with_schedule(model_patcher, schedule: SampleConfig):
    """A clone of the MODEL that runs ``schedule``: its patch pairs and motion for samplers that don't set
    them, and its time shift for ComfyUI's schedulers."""
    check_patches(lumina_video_model(model_patcher), schedule)
    patched = model_patcher.clone()
    patched.model_options.setdefault("transformer_options", {})[SCHEDULE_KEY] = schedule

    class ModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = ModelSampling(patched.model.model_config)
    sampling.set_parameters(shift=float(schedule.shift or 1.0), multiplier=1.0)
    patched.add_object_patch("model_sampling", sampling)
    return patched


def with_motion(conditioning: list, motion) -> list:
    """CONDITIONING whose rows carry ``motion`` (a time-aware value) as their motion score."""
    normalize_time_aware(motion, "motion")
    return [[features, {**extras, MOTION_KEY: motion}] for features, extras in conditioning]

