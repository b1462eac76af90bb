"""The sampler on N Ray actors, one ``torch.distributed`` rank each (gloo on CPU, nccl on CUDA), driven from one
process (ComfyUI's server): :class:`RankPool` starts the actors and their process group, ships the transformer once
per model, runs :func:`lumina_core.parallel.parallel_sample` on every rank, relays rank 0's steps to the driver and
its stop request back, and turns a dead or silent rank into a clear error within ``timeout_s``.

:func:`rank_pool` keeps one pool between runs (same world size and device), shuts it down when another is asked
for and at exit, and releases its actors (their GPU memory) after ``idle_s`` seconds without a run; the next run
starts them again. Ray is optional: importing this module does not import it; :func:`import_ray` says how to
install it. Without ``RAY_ADDRESS`` Ray starts on this machine with every server on loopback and at most as many
ranks as the machine has CPU cores or GPUs; with it, it joins that cluster, whose own security then applies.
Ranks on the driver's machine meet through a file store in a private folder and talk over loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import ipaddress
import json
import logging
import os
import shutil
import tempfile
import threading
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
DEFAULT_IDLE_S = 300.0
"""How long a pool stays without a run before its actors are released (0 = kept until exit)."""
POLL_S = 0.05  # how often the driver relays steps and checks for a stop request while the ranks sample
STOP_GRACE_S = 10.0  # how long ranks may take to finish after one of them failed, before the pool is torn down
MIN_OBJECT_STORE = 128 << 20  # a local Ray's shared memory at least (the node asks for this plus the weights)
WORKER_ENV = {"py_modules": [str(Path(__file__).resolve().parents[1])], "excludes": ["demo/models", "__pycache__"]}
"""The job's runtime environment: the ``lumina_core`` package on the workers' path as a top-level package (ray_worker
imports it so), without the demo weights. Ray takes a local folder only at ``ray.init``."""
log = logging.getLogger(__name__)


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
def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity), or the machine's count where that is unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_ranks(world_size: int, device: str) -> None:
    """Refuse more ranks than this machine has devices for: CPU cores with "cpu" (each rank is a process with its own
    copy of the model), GPUs with "cuda" (one each). A cluster joined through ``RAY_ADDRESS`` is limited by its own
    resources instead (:func:`ensure_ray`)."""
    if os.environ.get("RAY_ADDRESS"):
        return
    limit = cpu_cores() if device == "cpu" else torch.cuda.device_count()
    if world_size > limit:
        devices = "CPU cores" if device == "cpu" else "CUDA GPUs"
        raise ValueError(f"ranks {world_size} on {device} is more than the {limit} {devices} of this machine (each "
                         f"rank is a process with its own copy of the model); set ranks to {limit} or fewer, or join "
                         "a Ray cluster with more through RAY_ADDRESS")


def ensure_ray(cpus: int, gpus: int, object_store_bytes: int):
    """A connected Ray with at least ``cpus`` CPUs and ``gpus`` GPUs: the cluster at ``RAY_ADDRESS`` (its own security
    applies, which this logs), or a local one (:func:`start_local_ray`), both with WORKER_ENV; a Ray that another
    part of this process started is used as it is (its workers must be able to import ``lumina_core``). Raises with
    both numbers when the cluster is too small."""
    ray = import_ray()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            log.warning("joining the Ray cluster at RAY_ADDRESS=%s: its ports and the Ray sampler's rendezvous on "
                        "its nodes are guarded by that cluster's own security (its network, Ray's token "
                        "authentication), not by this pack", address)
            ray.init(runtime_env=WORKER_ENV, logging_level="WARNING")
        else:
            start_local_ray(ray, object_store_bytes)
    if not has_resources(ray, cpus, gpus):
        total = ray.cluster_resources()
        raise RuntimeError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs, but "
                           f"{cpus} CPU ranks and {gpus} GPU ranks were asked for; lower `ranks` or add nodes")
    return ray


def start_local_ray(ray, object_store_bytes: int) -> None:
    """Start Ray on this machine with its node address on loopback, so that its servers (GCS, raylet and object
    manager, runtime-env agent, every worker) listen there only: logical CPUs = this machine's cores, no dashboard,
    ``object_store_bytes`` of shared memory. Raises (and stops that Ray) when Ray chose another address."""
    # On Linux Ray resolves even an explicit 127.0.0.1 to the network address unless its cluster mode is off (the
    # mode macOS and Windows run in); the flag is read when Ray picks the node address, here, in ray.init.
    constants = importlib.import_module("ray._private.ray_constants")
    cluster_mode = getattr(constants, "ENABLE_RAY_CLUSTER", True)
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=cpu_cores(), include_dashboard=False, logging_level="WARNING",
                 object_store_memory=max(MIN_OBJECT_STORE, object_store_bytes), runtime_env=WORKER_ENV)
    finally:
        constants.ENABLE_RAY_CLUSTER = cluster_mode
    address = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(address).is_loopback:
        ray.shutdown()
        raise RuntimeError(f"Ray {ray.__version__} started on node address {address}, not on loopback, so other "
                           "machines could reach its servers; it was stopped. This Ray version picks its node address "
                           "in a way the pack does not know: use Ray 2.60, or start and secure a Ray cluster yourself "
                           "and point RAY_ADDRESS at it")


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
    """``world_size`` Ray actors on ``device`` ("cpu" or "cuda", one GPU each), joined in one process group. After
    ``idle_s`` seconds without a run (0: never) the actors are released, and the next run starts new ones.
    ``should_stop()`` is asked while the actors start; once true, they are released and this raises
    InterruptedError."""

    def __init__(self, world_size: int, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
                 object_store_bytes: int = MIN_OBJECT_STORE, idle_s: float = DEFAULT_IDLE_S,
                 should_stop: Optional[Callable[[], bool]] = None):
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world size {world_size!r} is not a whole number >= 1; give the number of ranks")
        if device not in DEVICES:
            raise ValueError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s {timeout_s!r} is not > 0; give the seconds a step may take")
        check_idle(idle_s)
        check_ranks(world_size, device)
        self.world_size, self.device, self.timeout_s = world_size, device, float(timeout_s)
        self.object_store_bytes, self.idle_s = object_store_bytes, float(idle_s)
        self.ray = None
        self.relay, self.workers = None, []
        self.model_key: Optional[str] = None
        self.runs = 0
        self.closed = False
        self._store_dir: Optional[str] = None  # the file store's private folder while ranks on this machine run
        self._lock = threading.RLock()  # held by a run and by the idle release, which must not overlap
        self._idle_timer: Optional[threading.Timer] = None
        self._start(should_stop)
        self._arm_idle_release()

    @property
    def actor_ids(self) -> list[str]:
        return [worker._actor_id.hex() for worker in self.workers]

    @property
    def alive(self) -> bool:
        """Whether the pool can run (it was not shut down); its actors may be released and start on the next run."""
        return not self.closed

    @property
    def started(self) -> bool:
        """Whether the actors run now (not released)."""
        return bool(self.workers)

    def _start(self, should_stop: Optional[Callable[[], bool]]) -> None:
        """Start the actors and join them in one process group. Ranks all on the driver's machine meet through a
        FileStore in a private (0700) temporary folder and talk over the loopback interface; ranks spread over a
        cluster meet at rank 0's node address."""
        if should_stop is not None and should_stop():
            raise InterruptedError("the Ray ranks were not started: should_stop() answered true")
        cpus, gpus = (self.world_size, 0) if self.device == "cpu" else (0, self.world_size)
        self.ray = ray = ensure_ray(cpus, gpus, self.object_store_bytes)
        ray.cloudpickle.register_pickle_by_value(ray_worker)
        resources = {"num_cpus": 1} if self.device == "cpu" else {"num_cpus": 0, "num_gpus": 1}
        self.relay = ray.remote(ray_worker.Relay).options(num_cpus=0).remote()
        worker = ray.remote(ray_worker.RankWorker).options(**resources)
        self.workers = [worker.remote(rank, self.world_size, self.device) for rank in range(self.world_size)]
        try:
            places = self._get([w.place.remote() for w in self.workers], "start", should_stop)
            if on_driver_node(ray, {node for node, _, _ in places}):
                self._store_dir = tempfile.mkdtemp(prefix="lumina-ranks-")
                rendezvous, loopback = Path(self._store_dir, "store").as_uri(), True
            else:
                _, host, port = places[0]
                rendezvous, loopback = f"tcp://{f'[{host}]' if ':' in host else host}:{port}", False
            self._get([w.join.remote(rendezvous, loopback, self.timeout_s) for w in self.workers],
                      "join the process group", should_stop)
        except BaseException:
            self.release()
            raise

    def _get(self, refs, what: str, should_stop: Optional[Callable[[], bool]] = None):
        """ray.get within timeout_s, asking ``should_stop()`` (when given) every POLL_S: true raises
        InterruptedError and leaves the ranks as they are. A rank that fails or does not answer in time tears the
        pool down."""
        ray = self.ray
        deadline = time.monotonic() + self.timeout_s
        if should_stop is not None:
            listed = refs if isinstance(refs, list) else [refs]
            while ray.wait(listed, num_returns=len(listed), timeout=POLL_S)[1] and time.monotonic() < deadline:
                if should_stop():
                    raise InterruptedError(f"{self.world_size} Ray ranks on {self.device} were stopped before they "
                                           f"could {what}: should_stop() answered true")
        try:
            return ray.get(refs, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise TimeoutError(f"{self.world_size} Ray ranks on {self.device} did not {what} within "
                               f"{self.timeout_s:g} s; they were shut down (check `ray status` for free "
                               "resources)") from None
        except ray.exceptions.RayError as error:
            self.shutdown()
            raise RuntimeError(f"{self.world_size} Ray ranks on {self.device} could not {what}: {error}; they were "
                               "shut down and start afresh on the next run") from error

    def load(self, model: ModelSpec, should_stop: Optional[Callable[[], bool]] = None) -> None:
        """Send ``model`` to every rank unless they hold its key already. ``should_stop()`` is asked while they load;
        once true this raises InterruptedError (the ranks finish loading on their own; the next run sends the model
        again)."""
        if model.key == self.model_key:
            return
        self.model_key = None
        weights = self.ray.put(model.weights())
        dtype = str(model.dtype).removeprefix("torch.")
        self._get([w.load.remote(model.key, model.config.to_dict(), dtype, weights) for w in self.workers],
                  "load the model", should_stop)
        self.model_key = model.key

    def run(self, model: ModelSpec, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption],
            config: SampleConfig, plan, on_progress: Optional[Callable[[dict], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """``parallel_sample(model, noise, cond, uncond, config, plan)`` on the ranks; returns rank 0's float32
        latent on the CPU. ``on_progress(event)`` gets rank 0's steps in the driver: the sampler callback's dict
        with x and velocity cut to what a preview reads (the first video).
        ``should_stop()`` is polled while the actors start (after an idle release), the model loads and the ranks
        work; once true, the ranks stop between steps and this raises InterruptedError. A rank that dies, fails or is
        silent for ``timeout_s`` tears the pool down and raises. The idle countdown starts again when this returns."""
        if not self.alive:
            raise RuntimeError("this Ray rank pool was shut down; get a new one from rank_pool()")
        if plan.world_size != self.world_size:
            raise ValueError(f"parallel plan {plan} needs {plan.world_size} ranks but this pool has "
                             f"{self.world_size}; give a plan for {self.world_size} ranks")
        with self._lock:
            self._cancel_idle_release()
            try:
                if not self.started:
                    self._start(should_stop)
                self.load(model, should_stop)
                return self._sample(model, noise, cond, uncond, config, plan, on_progress, should_stop)
            finally:
                self._arm_idle_release()

    def _sample(self, model: ModelSpec, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption],
                config: SampleConfig, plan, on_progress: Optional[Callable[[dict], None]],
                should_stop: Optional[Callable[[], bool]]) -> torch.Tensor:
        """The sampling part of :meth:`run`, on started ranks that hold ``model``."""
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

    def _arm_idle_release(self) -> None:
        """Start the idle countdown afresh: after ``idle_s`` seconds the actors are released, unless a run began."""
        self._cancel_idle_release()
        if self.idle_s > 0 and self.started:
            self._idle_timer = threading.Timer(self.idle_s, self._release_when_idle)
            self._idle_timer.daemon = True  # a pending countdown does not keep the process from exiting
            self._idle_timer.start()

    def _cancel_idle_release(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _release_when_idle(self) -> None:
        with self._lock:  # waits for a run that began meanwhile, which cancelled or replaced this countdown
            if self._idle_timer is threading.current_thread():
                self._idle_timer = None
                self.release()

    def release(self) -> None:
        """Kill the actors (their process group and the memory they hold end with them) and remove the file store's
        folder; the next run starts new actors."""
        self._cancel_idle_release()
        ray = self.ray
        if ray is not None and ray.is_initialized():  # else Ray shut down first (its own atexit) and took them along
            for actor in [*self.workers, *([] if self.relay is None else [self.relay])]:
                with contextlib.suppress(ray.exceptions.RayError, ValueError):  # already dead
                    ray.kill(actor)
        self.relay, self.workers, self.model_key = None, [], None
        if self._store_dir is not None:
            shutil.rmtree(self._store_dir, ignore_errors=True)
            self._store_dir = None

    def shutdown(self) -> None:
        """Release the actors for good: the pool cannot run again."""
        self.closed = True
        self.release()


def on_driver_node(ray, nodes: set[str]) -> bool:
    """Whether ``nodes`` (Ray node ids) is just the node this driver runs on (never so for a Ray Client driver, which
    runs on another machine than the node Ray names for it)."""
    return not ray.util.client.ray.is_connected() and nodes == {ray.get_runtime_context().get_node_id()}


def _contiguous(caption: Optional[Caption]) -> Optional[Caption]:
    return None if caption is None else tuple(tensor.contiguous() for tensor in caption)


# -- the pool kept between runs ---------------------------------------------------------------------------------
_pool: Optional[RankPool] = None


def rank_pool(world_size: int, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
              object_store_bytes: int = MIN_OBJECT_STORE, idle_s: float = DEFAULT_IDLE_S,
              should_stop: Optional[Callable[[], bool]] = None) -> RankPool:
    """The pool of ``world_size`` ranks on ``device``: the one kept from the last run when it matches and is alive
    (its actors may be released; its next run starts them), else a new one (the old one is shut down first).
    ``idle_s`` applies from the end of the next run; ``should_stop`` as in :class:`RankPool`."""
    global _pool
    check_idle(idle_s)
    if _pool is not None and _pool.alive and (_pool.world_size, _pool.device) == (world_size, device):
        _pool.timeout_s, _pool.idle_s = float(timeout_s), float(idle_s)
        return _pool
    shutdown_pool()
    _pool = RankPool(world_size, device, timeout_s, object_store_bytes, idle_s, should_stop)
    return _pool


def check_idle(idle_s: float) -> None:
    """Refuse an idle release time that is not a number of seconds >= 0."""
    if isinstance(idle_s, bool) or not isinstance(idle_s, (int, float)) or not idle_s >= 0:
        raise ValueError(f"idle release {idle_s!r} s is not a number >= 0; give the seconds without a run after "
                         "which the actors stop, or 0 to keep them")


def shutdown_pool() -> None:
    """Shut the kept pool down (at exit, and before a pool of another size or device starts)."""
    global _pool
    if _pool is not None:
        _pool.shutdown()
        _pool = None


atexit.register(shutdown_pool)
