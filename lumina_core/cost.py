"""A cost model of this machine: seconds per model call of each patch pair, and what a schedule will cost.

Sampling time is the sum of its model calls (the Euler update and guidance arithmetic are negligible next
to a transformer forward), and a call's time depends on the patch pair (the token count), whether guidance
batches a negative row (cfg > 0: two rows, else one), the latent size, the caption length, the weights'
dtype, the device and, on a CPU, the thread count. So a calibration runs, per patch pair, one untimed
warm-up call (it fills the RoPE tables and the allocator, as the first steps of a real run do) and then one
timed guided and one timed unguided call at the run's exact size; the seconds are kept in a small JSON
file, the calibration file, keyed by all of the above (the model by a hash of its architecture, not its
weights), so a machine pays for it once per model and size.

The calibration file lives in ``$LUMINA_VIDEO_CACHE_DIR``, else ``$XDG_CACHE_HOME/lumina_video``, else
``~/.cache/lumina_video``; deleting the file forgets every calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .model import NextDiTConfig, check_latent_size
from .sampling import SampleConfig, guided_velocity
from .schedule import Stage, format_patch, value_at
from .video_io import atomic_target

CALIBRATION_DIR_ENV = "LUMINA_VIDEO_CACHE_DIR"
CALIBRATION_FILE = "call_costs.json"
CALIBRATION_FORMAT = 1
WARMUP_CALLS = 1  # untimed, per patch pair, before the timed calls


# -- where and under which key -------------------------------------------------------------------
def calibration_file() -> Path:
    folder = os.environ.get(CALIBRATION_DIR_ENV)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = Path(base) / "lumina_video"
    return Path(folder) / CALIBRATION_FILE


def architecture_hash(config: NextDiTConfig) -> str:
    """12 hex digits naming a model architecture (its NextDiTConfig), not its weights."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def device_name(device: torch.device) -> str:
    """The device as timing depends on it: the GPU's model, or the CPU's and the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    if device.type == "cpu":
        return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    return str(device)


@dataclass(frozen=True)
class CostKey:
    """Everything a call's time depends on besides the patch pair and guidance."""

    model: str  # architecture_hash
    dtype: str
    device: str  # device_name
    latent: tuple[int, ...]  # [B, C, F, H, W]
    caption_tokens: int

    @classmethod
    def of(cls, model, latent_shape: Sequence[int], caption_tokens: int, device: torch.device) -> "CostKey":
        dtype = str(model.compute_dtype).removeprefix("torch.")
        return cls(architecture_hash(model.config), dtype, device_name(device),
                   tuple(int(size) for size in latent_shape), int(caption_tokens))

    @property
    def text(self) -> str:
        latent = "x".join(str(size) for size in self.latent)
        return f"{self.model} {self.dtype} {self.device} latent {latent} caption {self.caption_tokens}"


# -- the measured seconds -------------------------------------------------------------------------
@dataclass(frozen=True)
class CallCosts:
    """Seconds of one model call per patch pair ("FxP"), guided (cfg > 0, two rows) and unguided (one row)."""

    key: CostKey
    guided: dict[str, float]
    unguided: dict[str, float]
    measured_at: float = 0.0  # time.time() of the calibration

    def call_seconds(self, stage: Stage, cfg: float) -> float:
        table = self.guided if cfg > 0 else self.unguided
        if stage.patch not in table:
            raise ValueError(f"no calibration for patch pair {stage.patch} (calibrated: {', '.join(table)}); "
                             "calibrate with that pair, or use a schedule of the calibrated pairs")
        return table[stage.patch]

    def to_json(self) -> dict:
        return {"key": {**self.key.__dict__, "latent": list(self.key.latent)}, "guided": self.guided,
                "unguided": self.unguided, "measured_at": self.measured_at}

    @classmethod
    def from_json(cls, entry: dict) -> "CallCosts":
        key = dict(entry["key"])
        key["latent"] = tuple(key["latent"])
        return cls(CostKey(**key), dict(entry["guided"]), dict(entry["unguided"]), float(entry["measured_at"]))


@dataclass(frozen=True)
class StageCost:
    stage: Stage
    calls: int
    seconds: float


def predict(config: SampleConfig, costs: CallCosts) -> list[StageCost]:
    """Predicted seconds and number of model calls of each stage of ``config`` (in order): each of its model calls
    at its stage's patch pair, guided where cfg(t) > 0."""
    seconds = {stage: 0.0 for stage in config.stages}
    calls = {stage: 0 for stage in config.stages}
    for _, t, _, stage in config.model_calls():
        seconds[stage] += costs.call_seconds(stage, float(value_at(config.cfg, t)))
        calls[stage] += 1
    return [StageCost(stage, calls[stage], seconds[stage]) for stage in config.stages]


def predicted_seconds(config: SampleConfig, costs: CallCosts) -> float:
    return sum(stage.seconds for stage in predict(config, costs))


# -- calibration ----------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def runnable_pairs(model, latent_shape: Sequence[int]) -> list[tuple[int, int]]:
    """The model's (patch size, f-patch size) pairs that divide the latent [B, C, F, H, W]."""
    pairs = []
    for patch_size, f_patch_size in model.config.patch_pairs:
        try:
            check_latent_size(latent_shape[2:], patch_size, f_patch_size)
        except ValueError:
            continue
        pairs.append((patch_size, f_patch_size))
    return pairs


def _timed_call(model, x, stage: Stage, caption, cfg: float, device: torch.device,
                clock: Callable[[], float]) -> float:
    _synchronize(device)
    start = clock()
    guided_velocity(model, x, 0.5, stage, caption, caption, cfg, 6.0, 2.0, -1.0)
    _synchronize(device)
    return clock() - start


@torch.no_grad()
def calibrate(model, latent_shape: Sequence[int], caption_tokens: int, device: torch.device,
              pairs: Optional[Sequence[tuple[int, int]]] = None, repeats: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> CallCosts:
    """Time guided and unguided calls of each patch pair (default: every pair of the model that fits the latent),
    after one untimed warm-up call each, on random inputs of the run's size on ``device``; ``repeats`` timed calls
    of each kind give their median (1 by default: the cheapest calibration). ``clock`` reads seconds (wall time by
    default; ``time.process_time`` gives the CPU time a busy shared machine does not inflate). ``model`` follows
    lumina_core's model contract (NextDiT, or a host's wrapper of it) and is already on ``device``."""
    device = torch.device(device)
    if caption_tokens < 1:
        raise ValueError(f"caption_tokens {caption_tokens} is below 1; give the caption length the run will use")
    if repeats < 1:
        raise ValueError(f"repeats {repeats} is below 1; time at least one call of each kind")
    pairs = list(pairs) if pairs is not None else runnable_pairs(model, latent_shape)
    if not pairs:
        offered = ", ".join(format_patch(p, f) for p, f in model.config.patch_pairs)
        raise ValueError(f"none of the model's patch pairs ({offered}) divides the latent {tuple(latent_shape)}; "
                         "pick a size the schedule can run")
    batch = latent_shape[0]
    generator = torch.Generator().manual_seed(0)  # the global RNG (the run's noise) is left untouched
    x = torch.randn(tuple(latent_shape), generator=generator).to(device)
    width = model.config.cap_feat_dim
    caption = (torch.randn(batch, caption_tokens, width, generator=generator).to(device, model.compute_dtype),
               torch.ones(batch, caption_tokens, dtype=torch.long, device=device))
    guided, unguided = {}, {}
    for patch_size, f_patch_size in pairs:
        stage = Stage(patch_size, f_patch_size)
        for _ in range(WARMUP_CALLS):
            _timed_call(model, x, stage, caption, 4.0, device, clock)
        guided[stage.patch] = statistics.median(_timed_call(model, x, stage, caption, 4.0, device, clock)
                                                for _ in range(repeats))
        unguided[stage.patch] = statistics.median(_timed_call(model, x, stage, caption, 0.0, device, clock)
                                                  for _ in range(repeats))
    key = CostKey.of(model, latent_shape, caption_tokens, device)
    return CallCosts(key, guided, unguided, time.time())


# -- the calibration file -------------------------------------------------------------------------
def load_calibrations(path: Optional[Path] = None) -> list[CallCosts]:
    """Every calibration in the calibration file (none when it is missing or unreadable: it only saves time)."""
    path = path or calibration_file()
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CALIBRATION_FORMAT:
            return []
        return [CallCosts.from_json(entry) for entry in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def store_calibration(costs: CallCosts, path: Optional[Path] = None) -> Path:
    """Add (or replace) a calibration in the calibration file; written whole to a temporary file, then renamed."""
    path = path or calibration_file()
    entries = [entry for entry in load_calibrations(path) if entry.key != costs.key] + [costs]
    with atomic_target(path) as temp:
        temp.write_text(json.dumps({"version": CALIBRATION_FORMAT, "entries": [entry.to_json() for entry in entries]},
                                   indent=1))
    return path


def stored_calibration(key: CostKey, path: Optional[Path] = None) -> Optional[CallCosts]:
    return next((entry for entry in load_calibrations(path) if entry.key == key), None)


def calibration_for(model, latent_shape: Sequence[int], caption_tokens: int, device: torch.device,
                    config: SampleConfig) -> tuple[CallCosts, bool]:
    """The stored calibration covering ``config``'s patch pairs at this key, else a new one of every pair that
    fits the latent (stored); and whether it was measured now."""
    found = stored_calibration(CostKey.of(model, latent_shape, caption_tokens, device))
    wanted = {stage.patch for stage in config.stages}
    if found is not None and wanted <= found.guided.keys() and wanted <= found.unguided.keys():
        return found, False
    costs = calibrate(model, latent_shape, caption_tokens, device)
    store_calibration(costs)
    return costs, True


def latest_for(model_hash: str, latent_shape: Sequence[int], path: Optional[Path] = None) -> Optional[CallCosts]:
    """The most recent calibration of an architecture at a latent size (any dtype, device or caption length):
    what the page shows before a run says more."""
    matching = [entry for entry in load_calibrations(path)
                if entry.key.model == model_hash and entry.key.latent == tuple(latent_shape)]
    return max(matching, key=lambda entry: entry.measured_at, default=None)
