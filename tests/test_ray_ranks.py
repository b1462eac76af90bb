"""The sampler on 2 Ray actors (lumina_core.parallel.ray_ranks): equal to the single-process sampler for the demo model
and the parity config, one pool kept across runs (same actors, model sent once), stop requests, a killed rank, every
socket of a local pool on loopback, the idle release, Cancel while the actors start or load, the rank cap. One local
Ray session for the module; Ray is a dev requirement, so CI runs these (a developer without it gets a skip)."""

import contextlib
import ipaddress
import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import psutil
import pytest
import torch
from comfy_host import IN_CI
from conftest import caption, relative_error

from lumina_core.demo import build_transformer
from lumina_core.parallel import ParallelPlan, ray_ranks, ray_worker
from lumina_core.sampling import SampleConfig, sample, seeded_noise

try:
    import ray
except ImportError:
    if IN_CI:
        raise
    pytest.skip("ray is not installed (pip install -r requirements-dev.txt)", allow_module_level=True)

PARALLEL_TOL = 1e-5
"""2 ranks vs one process (fp32, CPU): the same model calls on the same numbers, except that a rank runs one row of
the guided pair, or one half of the tokens with attention merged across ranks, which sums in another order
(measured below 1e-6)."""
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120.0  # hang guard for a loaded 2-core machine, not a speed check
# Three patch pairs (two switches) and cfg truncated to 0 at t = 0.7: guided calls split by cfg rows, unguided ones
# by tokens.
SCHEDULE = {"step": 6, "ts": 3.0, "renorm": 2.0, "cfg": [4.0, [0.7, 0.0]], "motion": 6.0, "negMotion": 2.0}
DEMO_CONFIG = SampleConfig.from_official({"P": ["2x2", [0.3, "1x2"], [0.6, "1x1"]], **SCHEDULE})
TINY_CONFIG = SampleConfig.from_official({"P": ["2x4", [0.3, "2x2"], [0.6, "1x2"]], **SCHEDULE})


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    ray_ranks.shutdown_pool()
    ray.shutdown()


@pytest.fixture(scope="module")
def demo():
    return build_transformer()


@pytest.fixture
def pool():
    return ray_ranks.rank_pool(2, "cpu", timeout_s=TIMEOUT_S)


def inputs(model, shape, seed=0):
    width = model.config.cap_feat_dim
    return (seeded_noise(shape, seed), caption(shape[0], 7, width, [5] * shape[0], seed=seed + 1),
            caption(shape[0], 5, width, [3] * shape[0], seed=seed + 2))


@pytest.mark.parametrize("parallel", ["auto", "ulysses=2", "ring=2"])
def test_two_ranks_equal_one_process_for_the_demo_model(demo, pool, parallel):
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    expected = sample(demo, noise, cond, uncond, DEMO_CONFIG)
    plan = ParallelPlan.parse(parallel, 2, demo.config.n_heads)
    out = pool.run(ray_ranks.ModelSpec.of_module(demo), noise, cond, uncond, DEMO_CONFIG, plan)
    assert out.dtype == torch.float32 and out.shape == noise.shape
    assert relative_error(out, expected) < PARALLEL_TOL


def test_two_ranks_equal_one_process_for_the_parity_config(tiny_model, pool):
    noise, cond, uncond = inputs(tiny_model, (2, 4, 4, 8, 8), seed=5)
    expected = sample(tiny_model, noise, cond, uncond, TINY_CONFIG)
    plan = ParallelPlan.parse("auto", 2, tiny_model.config.n_heads)
    out = pool.run(ray_ranks.ModelSpec.of_module(tiny_model), noise, cond, uncond, TINY_CONFIG, plan)
    assert relative_error(out, expected) < PARALLEL_TOL


def test_the_pool_is_kept_across_runs_and_sends_a_model_once(demo, pool):
    shipped = []
    base = ray_ranks.ModelSpec.of_module(demo)
    spec = ray_ranks.ModelSpec(base.key, base.config, base.dtype, lambda: shipped.append(1) or base.weights())
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8), seed=3)
    pool.model_key = None  # as if another model had been sent last
    ids = pool.actor_ids
    first = pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    second = pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    assert ray_ranks.rank_pool(2, "cpu") is pool and pool.actor_ids == ids and len(set(ids)) == 2
    assert len(shipped) == 1
    assert torch.equal(first, second)  # the same ranks, inputs and plan: the same arithmetic


def test_progress_reaches_the_driver_and_a_stop_request_stops_the_ranks(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    events = []
    pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan, on_progress=events.append)
    total = len(DEMO_CONFIG.model_calls())
    assert [event["index"] for event in events] == list(range(total)) and events[0]["total"] == total
    assert events[0]["x"].shape == events[0]["velocity"].shape == (1, 16, 2, 8, 8)  # what a preview reads

    # Asked before the start: no step runs.
    events.clear()
    with pytest.raises(InterruptedError, match="should_stop"):
        pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan, on_progress=events.append, should_stop=lambda: True)
    assert events == []

    # Asked once the first step arrived: the ranks stop between two steps, before the end of a long schedule.
    long = SampleConfig.from_official({"P": "1x1", **SCHEDULE, "step": 200})
    events.clear()
    with pytest.raises(InterruptedError):
        pool.run(spec, noise, cond, uncond, long, plan, on_progress=events.append, should_stop=lambda: bool(events))
    assert 1 <= len(events) < len(long.model_calls())
    assert pool.alive  # every rank stopped at the same step: the pool stays usable
    assert relative_error(pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan),
                          sample(demo, noise, cond, uncond, DEMO_CONFIG)) < PARALLEL_TOL


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to IPv4 loopback
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def listening_sockets(process: psutil.Process) -> list[tuple[str, str]]:
    """(process name, address) of every listening TCP socket, IPv4 and IPv6, of ``process`` and its descendants."""
    found = []
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += [(member.name(), socket.laddr.ip) for socket in member.net_connections(kind="tcp")
                      if socket.status == psutil.CONN_LISTEN]
    return found


def test_a_local_pool_listens_on_loopback_only(demo, pool):
    """Ray's servers (GCS, raylet and object manager, agents, every worker), the ranks' rendezvous and gloo: all
    children of this driver, none reachable from another machine."""
    spec = ray_ranks.ModelSpec.of_module(demo)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    pool.run(spec, noise, cond, uncond, DEMO_CONFIG, ParallelPlan.parse("auto", 2, demo.config.n_heads))
    sockets = listening_sockets(psutil.Process())
    assert {"gcs_server", "raylet", "ray::RankWorker"} <= {name for name, _ in sockets}
    assert [(name, ip) for name, ip in sockets if not is_loopback(ip)] == []
    # This machine's host name may resolve to loopback anyway; the ranks pick the interface themselves.
    interfaces = ray.get([w.__ray_call__.remote(lambda worker: os.environ.get("GLOO_SOCKET_IFNAME"))
                          for w in pool.workers])
    assert interfaces == [ray_worker.loopback_interface()] * 2


def test_idle_actors_are_released_and_the_next_run_starts_them_again(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    pool.idle_s = 0.5  # counted from the end of the next run
    pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    old = list(pool.workers)
    deadline = time.monotonic() + TIMEOUT_S  # hang guard, not a speed check
    while pool.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pool.started and pool.alive
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(old[0].place.remote(), timeout=TIMEOUT_S)  # the actor and the memory it held are gone
    pool.idle_s = ray_ranks.DEFAULT_IDLE_S
    out = pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    assert pool.started and not set(pool.actor_ids) & {worker._actor_id.hex() for worker in old}
    assert relative_error(out, sample(demo, noise, cond, uncond, DEMO_CONFIG)) < PARALLEL_TOL
    assert ray_ranks.rank_pool(2, "cpu", timeout_s=TIMEOUT_S) is pool


def test_cancel_while_the_model_loads_keeps_the_ranks(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    pool.model_key = None  # as if another model had been sent last
    ids = pool.actor_ids
    pool.workers[1].__ray_call__.remote(lambda worker: time.sleep(3))  # rank 1 busy: its load waits behind this
    with pytest.raises(InterruptedError, match="before they could load the model: should_stop"):
        pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan, should_stop=lambda: True)
    assert pool.started and pool.actor_ids == ids and pool.model_key is None
    assert relative_error(pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan),
                          sample(demo, noise, cond, uncond, DEMO_CONFIG)) < PARALLEL_TOL  # the model sent again


def test_cancel_while_the_actors_start_releases_them(pool, monkeypatch):
    asked, released = [], []
    release = ray_ranks.RankPool.release
    monkeypatch.setattr(ray_ranks.RankPool, "release", lambda self: released.extend(self.workers) or release(self))
    with pytest.raises(InterruptedError, match="before they could start: should_stop"):
        # A second pool beside the kept one (on 2 cores its actor waits for a free CPU); stop once it is asked for.
        ray_ranks.RankPool(1, "cpu", timeout_s=TIMEOUT_S, should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert len(released) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(released[0].place.remote(), timeout=TIMEOUT_S)


def test_joining_a_cluster_logs_that_its_security_applies_and_lifts_the_rank_cap(monkeypatch, caplog):
    joined = []
    cluster = types.SimpleNamespace(is_initialized=lambda: bool(joined), init=lambda **options: joined.append(options),
                                    cluster_resources=lambda: {"CPU": 64.0, "GPU": 8.0})
    monkeypatch.setattr(ray_ranks, "import_ray", lambda: cluster)
    monkeypatch.setenv("RAY_ADDRESS", "ray-head.internal:6379")
    with caplog.at_level(logging.WARNING, logger=ray_ranks.__name__):
        for _ in range(2):
            ray_ranks.ensure_ray(8, 8, ray_ranks.MIN_OBJECT_STORE)
    assert len(joined) == 1 and "num_cpus" not in joined[0]
    [record] = [record for record in caplog.records if record.name == ray_ranks.__name__]
    assert "RAY_ADDRESS=ray-head.internal:6379" in record.getMessage()
    assert "that cluster's own security" in record.getMessage()
    ray_ranks.check_ranks(ray_ranks.cpu_cores() + 1, "cpu")  # the cluster's resources limit it instead


def test_a_killed_rank_gives_a_clear_error_and_a_new_pool(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)  # the model sent: the kill hits the sampling
    old_ids = pool.actor_ids
    ray.kill(pool.workers[1])
    with pytest.raises(RuntimeError, match="(?s)rank 1 of 2 died.*killed by `ray.kill`.*start afresh on the next run"):
        pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    assert not pool.alive
    fresh = ray_ranks.rank_pool(2, "cpu", timeout_s=TIMEOUT_S)
    assert fresh is not pool and not set(fresh.actor_ids) & set(old_ids)
    assert relative_error(fresh.run(spec, noise, cond, uncond, DEMO_CONFIG, plan),
                          sample(demo, noise, cond, uncond, DEMO_CONFIG)) < PARALLEL_TOL


def test_a_hung_rank_gives_a_clear_error_within_the_timeout(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    plan = ParallelPlan.parse("auto", 2, demo.config.n_heads)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    pool.workers[1].__ray_call__.remote(lambda worker: time.sleep(10 * TIMEOUT_S))  # rank 1 busy: rank 0 waits
    pool.timeout_s = 2.0
    with pytest.raises(TimeoutError, match="no step finished on 2 Ray ranks within 2 s .* start afresh"):
        pool.run(spec, noise, cond, uncond, DEMO_CONFIG, plan)
    assert not pool.alive


def test_bad_requests_are_refused_before_any_work(demo, pool):
    spec = ray_ranks.ModelSpec.of_module(demo)
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    with pytest.raises(ValueError, match="needs 4 ranks but this pool has 2"):
        pool.run(spec, noise, cond, uncond, DEMO_CONFIG, ParallelPlan(cfg=2, ulysses=2))
    with pytest.raises(ValueError, match="device 'tpu' is unknown; use one of cpu, cuda"):
        ray_ranks.RankPool(2, "tpu")
    with pytest.raises(ValueError, match="world size 0 is not a whole number >= 1"):
        ray_ranks.RankPool(0)
    with pytest.raises(ValueError, match="idle release -1 s is not a number >= 0"):
        ray_ranks.RankPool(1, idle_s=-1)


def test_ranks_are_capped_by_this_machines_devices(monkeypatch):
    """Each rank is a process with a copy of the model: a local pool gets at most one per CPU core or GPU."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cores = ray_ranks.cpu_cores()
    with pytest.raises(ValueError, match=rf"ranks {cores + 1} on cpu is more than the {cores} CPU cores of this "
                                         rf"machine .* set ranks to {cores} or fewer"):
        ray_ranks.RankPool(cores + 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="ranks 3 on cuda is more than the 2 CUDA GPUs of this machine"):
        ray_ranks.RankPool(3, "cuda")


def test_another_world_size_replaces_the_pool(demo, pool, monkeypatch):
    old = list(pool.workers)
    monkeypatch.setattr(ray_ranks, "on_driver_node", lambda ray, nodes: False)  # as on a cluster: a tcp rendezvous
    single = ray_ranks.rank_pool(1, "cpu", timeout_s=TIMEOUT_S)
    assert not pool.alive and single.alive and single._store_dir is None
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(old[0].place.remote(), timeout=TIMEOUT_S)  # the old actors were killed
    noise, cond, uncond = inputs(demo, (1, 16, 2, 8, 8))
    out = single.run(ray_ranks.ModelSpec.of_module(demo), noise, cond, uncond, DEMO_CONFIG, ParallelPlan())
    assert relative_error(out, sample(demo, noise, cond, uncond, DEMO_CONFIG)) < PARALLEL_TOL


def test_the_ranks_stop_when_the_driver_exits():
    """A server's run: the pool made on a worker thread (as ComfyUI's executor does), then the process exits."""
    code = ("import os, threading\n"
            "from lumina_core.parallel import ray_ranks\n"
            "def start():\n"
            "    pool = ray_ranks.rank_pool(1, 'cpu')\n"
            "    print(pool.ray.get(pool.workers[0].__ray_call__.remote(lambda worker: os.getpid())), flush=True)\n"
            "thread = threading.Thread(target=start)\n"
            "thread.start()\n"
            "thread.join()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            check=True)
    pid = int(result.stdout.split()[-1])
    deadline = time.monotonic() + TIMEOUT_S  # hang guard: Ray may take a moment to reap its workers
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), f"rank actor {pid} outlived its driver"


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(ImportError, match=r"needs Ray, which is not installed.*`pip install ray`"):
        ray_ranks.import_ray()
