"""The Sampler on several Ray actors (one torch.distributed rank each): the pack's Sampler inputs plus the number
of ranks, the parallel plan and the device. Ray is optional; this module imports it only when the node runs."""

from __future__ import annotations

import weakref

import comfy.lora
import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..lumina_core.parallel import ParallelPlan, check_plan, ray_ranks
from ..lumina_core.sampling import SampleConfig, seeded_noise
from . import io_types
from .native import LuminaVideoDiT
from .sampler import TOOLTIPS, prepare, preview, previewer, stage_output
from .step_cache import attached_cache

PREFIX = "diffusion_model."
_model_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""network -> (the patcher's patches_uuid, content key): a model seen before is not hashed again."""


def patched_weights(model_patcher, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The transformer's state dict with the MODEL's weight patches (LoRA) applied, in ``dtype``, on the CPU; the
    patcher's model is left as it is."""
    weights = {}
    for key, (base, *patches) in model_patcher.get_key_patches(PREFIX).items():
        weight, convert = base
        if patches or weight.dtype != dtype:
            weight = convert(weight.to("cpu", torch.float32, copy=True), inplace=True)
            if patches:
                weight = comfy.lora.calculate_weight(patches, weight, key)
        weights[key[len(PREFIX):]] = weight.detach().to("cpu", dtype)
    return weights


def model_spec(model_patcher, network: LuminaVideoDiT) -> ray_ranks.ModelSpec:
    """What the ranks are sent of a MODEL: its patched weights in the network's compute dtype, keyed by content."""
    dtype = network.compute_dtype
    known = _model_keys.get(network)
    if known is not None and known[0] == model_patcher.patches_uuid:
        return ray_ranks.ModelSpec(known[1], network.config, dtype, lambda: patched_weights(model_patcher, dtype))
    spec = ray_ranks.ModelSpec.of_weights(network.config, patched_weights(model_patcher, dtype), dtype)
    _model_keys[network] = (model_patcher.patches_uuid, spec.key)
    return spec


def run_on_ranks(model_patcher, positive: list, negative: list, noise: torch.Tensor, config: SampleConfig,
                 ranks: int, parallel: str, device: str, idle_release_s: float = ray_ranks.DEFAULT_IDLE_S) -> dict:
    """Sample ``noise`` through ``config`` on ``ranks`` Ray actors with ``parallel_sample``; the LATENT dict, as the
    Sampler's. The actors are released after ``idle_release_s`` seconds without a run (0: kept)."""
    ray_ranks.import_ray()  # the install hint before any other work
    if device not in ray_ranks.DEVICES:
        raise ValueError(f"device {device!r} is unknown; use one of {', '.join(ray_ranks.DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but this ComfyUI sees no CUDA GPU; choose device cpu")
    network, cond, uncond, config = prepare(model_patcher, positive, negative, noise, config)
    if attached_cache(model_patcher) is not None:
        raise ValueError("the MODEL carries a Lumina-Video Step Cache, which the Ray sampler does not run; remove "
                         "the Step Cache node or use the Lumina-Video Sampler")
    plan = ParallelPlan.parse(parallel, ranks, network.config.n_heads, config.guided)
    if plan.world_size != ranks:
        raise ValueError(f"parallel {parallel!r} needs {plan.world_size} ranks (cfg x ulysses x ring) but ranks is "
                         f"{ranks}; set ranks to {plan.world_size}, or give degrees whose product is {ranks} (or auto)")
    check_plan(plan, network.config, ranks)
    ray_ranks.check_ranks(ranks, device)
    spec = model_spec(model_patcher, network)
    if device == "cuda":  # the ranks need the GPUs' memory more than this process's cached models do
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
    weight_bytes = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    progress = comfy.utils.ProgressBar(len(config.model_calls()))
    live = previewer(model_patcher)

    def on_progress(info: dict) -> None:
        progress.update_absolute(info["index"] + 1, info["total"], preview(live, info))

    interrupted = comfy.model_management.processing_interrupted  # Cancel: asked while the ranks start, load and work
    try:
        pool = ray_ranks.rank_pool(ranks, device, object_store_bytes=ray_ranks.MIN_OBJECT_STORE + weight_bytes,
                                   idle_s=idle_release_s, should_stop=interrupted)
        out = pool.run(spec, noise, cond, uncond, config, plan, on_progress, should_stop=interrupted)
    except InterruptedError:
        comfy.model_management.throw_exception_if_processing_interrupted()  # ComfyUI's own interrupt
        raise
    return stage_output(out, config)


class LuminaVideoMSRaySampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LuminaVideoMSRaySampler",
            display_name="Lumina-Video Sampler (Ray, several GPUs)",
            category="Lumina-Video/sampling",
            description="The Lumina-Video Sampler split across several processes (Ray actors, one GPU each): CFG "
                        "rows and video tokens are shared out by the parallel plan. Needs `pip install ray`. The "
                        "actors stay alive between runs, give their memory back after idle_release_s without a "
                        "run, and stop with the server. A local Ray listens on loopback only.",
            inputs=[
                io.Model.Input("model", tooltip=TOOLTIPS["model"] + " LoRA patches are applied; the ranks are sent "
                                                                    "the weights once per model."),
                io.Conditioning.Input("positive", tooltip=TOOLTIPS["positive"]),
                io.Conditioning.Input("negative", tooltip=TOOLTIPS["negative"]),
                io.Latent.Input("latent", tooltip="Gives the size only (Lumina-Video Empty Latent Video)."),
                io_types.Schedule.Input("schedule", tooltip="From a Lumina-Video Schedule node."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=TOOLTIPS["seed"]),
                io.Int.Input("ranks", default=2, min=1, max=64,
                             tooltip="Processes (Ray actors) that share the work, one GPU each with device cuda. "
                                     "At most this machine's GPUs (cuda) or CPU cores (cpu), as each holds a copy "
                                     "of the model; a Ray cluster joined through RAY_ADDRESS allows what it has. "
                                     "Actors are kept for the next run with the same ranks and device."),
                io.String.Input("parallel", default="auto",
                                tooltip="How the ranks split the work: auto, or degrees such as cfg=2,ulysses=2 "
                                        "(cfg = 1 or 2 processes for the positive and negative rows, ulysses and "
                                        "ring = processes sharing the video tokens) whose product is ranks. auto: "
                                        "cfg=2 when ranks is even and the schedule uses guidance, the rest to "
                                        "ulysses as far as it divides the heads, then ring."),
                io.Combo.Input("device", options=list(ray_ranks.DEVICES[::-1]), default="cuda",
                               tooltip="cuda: one GPU per rank (NCCL); cpu: one CPU process per rank (gloo), for "
                                       "tests and machines without GPUs."),
                io.Int.Input("idle_release_s", default=int(ray_ranks.DEFAULT_IDLE_S), min=0, max=86400,
                             optional=True,
                             tooltip="Seconds without a run after which the actors stop and give their GPU memory "
                                     "(and RAM) back; the next run starts them again and resends the model, which "
                                     "takes a few seconds more. 0 keeps them until the server stops."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, schedule, seed, ranks, parallel, device,
                idle_release_s=int(ray_ranks.DEFAULT_IDLE_S)) -> io.NodeOutput:
        noise = seeded_noise(latent["samples"].shape, seed)
        return io.NodeOutput(run_on_ranks(model, positive, negative, noise, schedule, ranks, parallel, device,
                                          idle_release_s))
