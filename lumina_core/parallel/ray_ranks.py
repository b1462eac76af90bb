"""The sampler on N Ray actors, one ``torch.distributed`` rank each (gloo on CPU, nccl on CUDA), driven from one
process (ComfyUI's server): :class:`RankPool` starts the actors and their process group, ships the transformer once
per model, runs :func:`lumina_core.parallel.parallel_sample` on every rank, relays rank 0's steps to the driver and
its stop request back, and turns a dead or silent rank into a clear error within ``timeout_s``.

:func:`rank_pool` keeps one pool alive between runs (same world size and device) and shuts it down when another is
asked for and at exit. Ray is optional: importing this module does not import it; :func:`import_ray` says how to
install it. Without ``RAY_ADDRESS`` Ray starts locally with small resources; with it, it joins that cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..model import NextDiTConfig
from ..sampling import Caption, SampleConfig
from . import ray_worker
from .sampler import DEFAULT_TIMEOUT_S

DEVICES = ("cpu", "cuda")
POLL_S = 0.05  # how often the driver relays steps and checks for a stop request while the ranks sample
STOP_GRACE_S = 10.0  # how long ranks may take to finish after one of them failed, before the pool is torn down
MIN_OBJECT_STORE = 128 << 20  # a local Ray's shared memory at least (the node asks for this plus the weights)
WORKER_ENV = {"py_modules": [str(Path(__file__).resolve().parents[1])], "excludes": ["demo/models", "__pycache__"]}
"""The job's runtime environment: the ``lumina_core`` package on the workers' path as a top-level package (ray_worker
imports it so), without the demo weights. Ray takes a local folder only at ``ray.init``."""


def import_ray():
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray sampler needs Ray, which is not installed in this Python environment; install it "
                          "with `pip install ray` (in ComfyUI's environment) and restart ComfyUI") from None
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """A transformer as the pool ships it: ``key`` names its content (equal keys, equal weights), ``weights()``
    gives the state dict in ``dtype`` when the ranks do not hold that key yet."""

    key: str
    config: NextDiTConfig
    dtype: torch.dtype
    weights: Callable[[], dict[str, torch.Tensor]]

    @classmethod
    def of_weights(cls, config: NextDiTConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> "ModelSpec":
        """The spec of these weights (cast to ``dtype``), keyed by their content."""
        weights = {name: tensor.detach().to("cpu", dtype) for name, tensor in weights.items()}
        return cls(content_key(config, weights), config, dtype, lambda: weights)

    @classmethod
    def of_module(cls, model) -> "ModelSpec":
        """The spec of a lumina_core NextDiT, in its compute dtype."""
        return cls.of_weights(model.config, model.state_dict(), model.compute_dtype)


def content_key(config: NextDiTConfig, weights: dict[str, torch.Tensor]) -> str:
    """A hash of the architecture and every weight's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(json.dumps(config.to_dict(), sort_keys=True).encode(), digest_size=16)
    for name in sorted(weights):
        tensor = weights[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


# -- Ray itself -------------------------------------------------------------------------------------------------
_started_ray = False  # whether this module started the running Ray instance (then it may restart it bigger)


def ensure_ray(cpus: int, gpus: int, object_store_bytes: int):
    """A connected Ray with at least ``cpus`` CPUs and ``gpus`` GPUs: the cluster at ``RAY_ADDRESS``, or a local one
    started with ``cpus`` logical CPUs (at least this machine's count), no dashboard and ``object_store_bytes`` of
    shared memory, both with WORKER_ENV; a Ray that another part of this process started is used as it is (its
    workers must be able to import ``lumina_core``). Raises with both numbers when the cluster is too small."""
    global _started_ray
    ray = import_ray()
    if ray.is_initialized() and _started_ray and not has_resources(ray, cpus, gpus):
        ray.shutdown()  # ours and too small for this pool: start it again with more logical CPUs
        _started_ray = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(runtime_env=WORKER_ENV, logging_level="WARNING")
        else:
            ray.init(num_cpus=max(cpus, os.cpu_count() or 1), include_dashboard=False, logging_level="WARNING",
                     object_store_memory=max(MIN_OBJECT_STORE, object_store_bytes), runtime_env=WORKER_ENV)
            _started_ray = True
    if not has_resources(ray, cpus, gpus):
        total = ray.cluster_resources()
        raise RuntimeError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs, but "
                           f"{cpus} CPU ranks and {gpus} GPU ranks were asked for; lower `ranks` or add nodes")
    return ray


def has_resources(ray, cpus: int, gpus: int) -> bool:
    total = ray.cluster_resources()
    return total.get("CPU", 0) >= cpus and total.get("GPU", 0) >= gpus


# -- the pool ---------------------------------------------------------------------------------------------------
def config_fields(config: SampleConfig) -> dict:
    """A SampleConfig as plain data (ray_worker rebuilds it; the pack's own classes do not cross the wire)."""
    fields = asdict(config)
    fields.pop("name")
    return fields


class RankPool:
    """``world_size`` Ray actors on ``device`` ("cpu" or "cuda", one GPU each), joined in one process group."""

    def __init__(self, world_size: int, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
                 object_store_bytes: int = MIN_OBJECT_STORE):
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world size {world_size!r} is not a whole number >= 1; give the number of ranks")
        if device not in DEVICES:
            raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s {timeout_s!r} is not > 0; give the seconds a step may take")
        self.world_size, self.device, self.timeout_s = world_size, device, float(timeout_s)
        self.ray = ray = ensure_ray(world_size if device == "cpu" else 0, world_size if device == "cuda" else 0,
                                    object_store_bytes)
        ray.cloudpickle.register_pickle_by_value(ray_worker)
        resources = {"num_cpus": 1} if device == "cpu" else {"num_cpus": 0, "num_gpus": 1}
        self.relay = ray.remote(ray_worker.Relay).options(num_cpus=0).remote()
        worker = ray.remote(ray_worker.RankWorker).options(**resources)
        self.workers = [worker.remote(rank, world_size, device) for rank in range(world_size)]
        self.model_key: Optional[str] = None
        self.runs = 0
        try:
            address, port = self._get(self.workers[0].address.remote(), "start")
            self._get([w.join.remote(address, port, self.timeout_s) for w in self.workers], "join the process group")
        except BaseException:
            self.shutdown()
            raise

    @property
    def actor_ids(self) -> list[str]:
        return [worker._actor_id.hex() for worker in self.workers]

    @property
    def alive(self) -> bool:
        return bool(self.workers)

    def _get(self, refs, what: str):
        """ray.get within timeout_s; a rank that fails or does not answer in time tears the pool down."""
        try:
            return self.ray.get(refs, timeout=self.timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise TimeoutError(f"{self.world_size} Ray ranks on {self.device} did not {what} within "
                               f"{self.timeout_s:g} s; they were shut down (check `ray status` for free "
                               "resources)") from None
        except self.ray.exceptions.RayError as error:
            self.shutdown()
            raise RuntimeError(f"{self.world_size} Ray ranks on {self.device} could not {what}: {error}; they were "
                               "shut down and start afresh on the next run") from error

    def load(self, model: ModelSpec) -> None:
        """Send ``model`` to every rank unless they hold its key already."""
        if model.key == self.model_key:
            return
        weights = self.ray.put(model.weights())
        dtype = str(model.dtype).removeprefix("torch.")
        self._get([w.load.remote(model.key, model.config.to_dict(), dtype, weights) for w in self.workers],
                  "load the model")
        self.model_key = model.key

    def run(self, model: ModelSpec, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption],
            config: SampleConfig, plan, on_progress: Optional[Callable[[dict], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """``parallel_sample(model, noise, cond, uncond, config, plan)`` on the ranks; returns rank 0's float32
        latent on the CPU. ``on_progress(event)`` gets rank 0's steps in the driver: the sampler callback's dict
        with x and velocity cut to what a preview reads (the first video).
        ``should_stop()`` is polled while the ranks work; once true, the ranks stop between steps and this raises
        InterruptedError. A rank that dies, fails or is silent for ``timeout_s`` tears the pool down and raises."""
        if not self.alive:
            raise RuntimeError("this Ray rank pool was shut down; get a new one from rank_pool()")
        if plan.world_size != self.world_size:
            raise ValueError(f"parallel plan {plan} needs {plan.world_size} ranks but this pool has "
                             f"{self.world_size}; give a plan for {self.world_size} ranks")
        self.load(model)
        self.runs += 1
        run, ray = self.runs, self.ray
        inputs = [ray.put(tensor) for tensor in (noise.contiguous(), _contiguous(cond), _contiguous(uncond))]
        stop_sent = should_stop is not None and should_stop()
        if stop_sent:  # asked before the start: the ranks stop before their first step
            self._get(self.relay.request_stop.remote(run), "report")
        pending = [w.sample.remote(run, model.key, *inputs, config_fields(config), asdict(plan), self.relay)
                   for w in self.workers]
        ranks = {ref: rank for rank, ref in enumerate(pending)}
        results, heard = {}, time.monotonic()
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            errors = self._collect(done, ranks, results)
            if errors:
                self._fail(errors, pending, ranks)
            events = [event for event in self._get(self.relay.drain.remote(), "report") if event["run"] == run]
            if events or done:
                heard = time.monotonic()
            if on_progress is not None:
                for event in events:
                    on_progress(event)
            if not stop_sent and should_stop is not None and should_stop():
                self.relay.request_stop.remote(run)
                stop_sent = True
            if pending and time.monotonic() - heard > self.timeout_s:
                self.shutdown()
                raise TimeoutError(f"no step finished on {self.world_size} Ray ranks within {self.timeout_s:g} s "
                                   "(a rank hangs, or a step takes longer: raise the timeout); the ranks were shut "
                                   "down and start afresh on the next run")
        return results[0]

    def _collect(self, refs: list, ranks: dict, results: dict) -> dict:
        """Put finished ranks' return values into ``results``; returns the errors of those that failed, by rank."""
        errors = {}
        for ref in refs:
            try:
                results[ranks[ref]] = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:
                errors[ranks[ref]] = error
        return errors

    def _fail(self, errors: dict, pending: list, ranks: dict) -> None:
        """Raise for failed ranks: at once for a dead one, else once the others end (or STOP_GRACE_S passed).
        InterruptedError and ValueError raised alike by every rank come out as they are and keep the pool; anything
        else tears it down (a dead rank is named first: the others then fail on its lost connection)."""
        ray = self.ray
        if pending and all(isinstance(error, ray.exceptions.RayTaskError) for error in errors.values()):
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=min(STOP_GRACE_S, self.timeout_s))
            errors.update(self._collect(done, ranks, {}))
        causes = {rank: getattr(error, "cause", None) for rank, error in errors.items()}
        alike = (InterruptedError, ValueError)
        if len(errors) == self.world_size and all(isinstance(cause, alike) for cause in causes.values()):
            raise causes[0] from None
        self.shutdown()
        dead = sorted(rank for rank, error in errors.items() if not isinstance(error, ray.exceptions.RayTaskError))
        if dead:
            error = errors[dead[0]]
            raise RuntimeError(f"rank {dead[0]} of {self.world_size} died ({type(error).__name__}: {error}); the "
                               "Ray ranks were shut down and start afresh on the next run") from error
        rank = min(errors)
        raise RuntimeError(f"rank {rank} of {self.world_size} failed: {causes[rank]!r}; the Ray ranks were shut "
                           "down and start afresh on the next run") from errors[rank]

    def shutdown(self) -> None:
        """Kill the actors (their process group ends with them); the pool cannot run again."""
        if self.ray.is_initialized():  # else Ray shut down first (its own atexit) and took the actors with it
            for actor in [*self.workers, self.relay]:
                with contextlib.suppress(self.ray.exceptions.RayError, ValueError):  # already dead
                    self.ray.kill(actor)
        self.workers, self.model_key = [], None


def _contiguous(caption: Optional[Caption]) -> Optional[Caption]:
    return None if caption is None else tuple(tensor.contiguous() for tensor in caption)


# -- the pool kept between runs ---------------------------------------------------------------------------------
_pool: Optional[RankPool] = None


def rank_pool(world_size: int, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
              object_store_bytes: int = MIN_OBJECT_STORE) -> RankPool:
    """The pool of ``world_size`` ranks on ``device``: the one kept from the last run when it matches and is alive,
    else a new one (the old one is shut down first)."""
    global _pool
    if _pool is not None and _pool.alive and (_pool.world_size, _pool.device) == (world_size, device):
        _pool.timeout_s = float(timeout_s)
        return _pool
    shutdown_pool()
    _pool = RankPool(world_size, device, timeout_s, object_store_bytes)
    return _pool


def shutdown_pool() -> None:
    """Shut the kept pool down (at exit, and before a pool of another size or device starts)."""
    global _pool
    if _pool is not None:
        _pool.shutdown()
        _pool = None


atexit.register(shutdown_pool)
