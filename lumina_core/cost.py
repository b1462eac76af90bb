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

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

import torch

from .model import NextDiTConfig, check_latent_size
from .sampling import SampleConfig, guided_velocity
from .schedule import Stage, format_patch
from .video_io import atomic_target

log = logging.getLogger(__name__)

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
        """The calibration of an entry of the calibration file; ValueError when the entry is not one (wrong types,
        missing fields, seconds that are not finite and non-negative)."""
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), dict):
            raise ValueError(f"calibration file entry {str(entry)[:80]} is not an object with a key object")
        key = dict(entry["key"])
        if not all(isinstance(key.get(name), str) for name in ("model", "dtype", "device")):
            raise ValueError("calibration file entry key lacks the model, dtype or device text")
        latent, tokens = key.get("latent"), key.get("caption_tokens")
        if not isinstance(latent, list) or not all(type(size) is int for size in latent) or type(tokens) is not int:
            raise ValueError("calibration file entry key has no integer latent shape or caption length")
        key = CostKey(key["model"], key["dtype"], key["device"], tuple(latent), tokens)
        measured_at = entry.get("measured_at")
        if type(measured_at) not in (int, float) or not math.isfinite(measured_at):
            raise ValueError(f"calibration file entry measured_at {measured_at!r} is not a finite number")
        return cls(key, _seconds_table(entry.get("guided")), _seconds_table(entry.get("unguided")), float(measured_at))


def _seconds_table(table) -> dict[str, float]:
    """A calibration file entry's {"FxP": seconds}, checked: finite, non-negative numbers."""
    if not isinstance(table, dict) or not all(type(seconds) in (int, float) and math.isfinite(seconds)
                                              and seconds >= 0 for seconds in table.values()):
        raise ValueError(f"calibration file entry seconds {str(table)[:80]} are not finite non-negative numbers per "
                         "patch pair")
    return {str(patch): float(seconds) for patch, seconds in table.items()}


@dataclass(frozen=True)
class StageCost:
    stage: Stage
    calls: int
    seconds: float


def predict(config: SampleConfig, costs: CallCosts) -> list[StageCost]:
    """Predicted seconds and model calls of each stage of ``config`` (in order): the calls of its plan, each at its
    stage's patch pair, guided where cfg(t) > 0. Counted on the grid as a whole (a few tensor operations, not one
    step per call), with the plan's own rules: a grid point belongs to the first stage covering it, compared in
    float64 as the plan compares its float32 points with the stages' bounds."""
    points = config.grid()[:-1].double()  # the last grid point is never a call
    starts = torch.tensor([stage.t_start for stage in config.stages], dtype=torch.float64)
    ends = torch.tensor([stage.t_end for stage in config.stages], dtype=torch.float64)
    covers = (points >= starts[:, None]) & (points < ends[:, None])  # [stages, points]
    first = covers & (covers.cumsum(dim=0) == 1)  # each point's call goes to the first stage covering it
    guided = guidance_scale(config.cfg, points) > 0
    all_calls = first.sum(dim=1).tolist()
    guided_calls = (first & guided).sum(dim=1).tolist()
    predicted = []
    for stage, calls, with_guidance in zip(config.stages, all_calls, guided_calls):
        seconds = 0.0
        if with_guidance:
            seconds += with_guidance * costs.call_seconds(stage, 1.0)
        if calls > with_guidance:
            seconds += (calls - with_guidance) * costs.call_seconds(stage, 0.0)
        predicted.append(StageCost(stage, calls, seconds))
    return predicted


def guidance_scale(cfg, points: torch.Tensor) -> torch.Tensor:
    """A time-aware cfg read at every point (as :func:`~lumina_core.schedule.value_at` reads it at one)."""
    if not isinstance(cfg, tuple):
        return torch.full_like(points, float(cfg))
    thresholds = torch.tensor([threshold for threshold, _ in cfg[1:]], dtype=torch.float64)
    values = torch.tensor([float(cfg[0]), *(float(value) for _, value in cfg[1:])], dtype=torch.float64)
    started = (points >= thresholds[:, None]).sum(dim=0)  # thresholds at or before each point
    return values[started]


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
    """Every calibration in the calibration file. It only saves time: a missing or unreadable file, one of another
    version or shape (a list, null, text...) holds none, and a damaged entry is left out; the next store rewrites the
    file whole."""
    path = path or calibration_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return []
    if not isinstance(data, dict) or data.get("version") != CALIBRATION_FORMAT:
        return []
    if not isinstance(data.get("entries"), list):
        return []
    entries = []
    for entry in data["entries"]:
        try:
            entries.append(CallCosts.from_json(entry))
        except ValueError:
            continue
    return entries


@contextlib.contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """Hold the calibration file's lock (``path`` + ".lock") while a writer reads, adds and renames, so two runs that
    calibrate at once (two ComfyUI servers, a server and the command line) both keep their entries. Where the
    platform has no file locks, writers only race as before (each write stays whole: temporary file + rename)."""
    with _THREAD_LOCK, open(path.with_name(path.name + ".lock"), "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


_THREAD_LOCK = threading.Lock()  # flock is per open file; this also orders the threads of one process


def store_calibration(costs: CallCosts, path: Optional[Path] = None) -> Optional[Path]:
    """Add (or replace) a calibration in the calibration file; written whole to a temporary file, then renamed. A file
    that cannot be written (a read-only folder, a full disk) is a warning, not an error: the calibration is still
    used for this run. Returns the file, or None when it was not written."""
    path = path or calibration_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _writer_lock(path):
            entries = [entry for entry in load_calibrations(path) if entry.key != costs.key] + [costs]
            with atomic_target(path) as temp:
                temp.write_text(json.dumps({"version": CALIBRATION_FORMAT,
                                            "entries": [entry.to_json() for entry in entries]}, indent=1))
    except OSError as error:
        log.warning("the calibration of %s is used for this run but not kept: the calibration file %s cannot be "
                    "written (%s); set %s to a writable folder to keep calibrations", costs.key.text, path, error,
                    CALIBRATION_DIR_ENV)
        return None
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
