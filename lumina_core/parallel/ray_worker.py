"""What runs inside the Ray workers of :mod:`lumina_core.parallel.ray_ranks`: one :class:`RankWorker` per rank and the
:class:`Relay` between rank 0 and the driver.

Ray ships these classes by value (the driver may know the pack under any module name, e.g. ComfyUI's custom node
folder), so this module names nothing of the pack at module level. The workers import the core as the top-level
package ``lumina_core``, which Ray puts on their path (``py_modules``). Everything crossing the wire is plain data:
tensors, dicts of numbers and strings.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

import torch


class Relay:
    """Step events from rank 0 to the driver, and the driver's stop request to rank 0, per run id."""

    def __init__(self):
        self.events: list[dict] = []
        self.stop_run: Optional[int] = None

    def push(self, event: dict) -> None:
        self.events.append(event)

    def drain(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    def request_stop(self, run: int) -> None:
        self.stop_run = run

    def stopped(self, run: int) -> bool:
        return self.stop_run == run


def loopback_interface() -> str:
    """The name of this machine's loopback network interface (lo on Linux, lo0 on macOS)."""
    names = {name for _, name in socket.if_nameindex()}
    return "lo0" if "lo0" in names else "lo"


def preview_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a step's x or velocity a preview reads (the first video), on the CPU."""
    return tensor[:1].float().cpu()


class RankWorker:
    """One rank: its process group member, the transformer it was sent last and the sampler run."""

    def __init__(self, rank: int, world_size: int, device: str):
        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        self.model = None
        self.model_key: Optional[str] = None

    def place(self) -> tuple[str, str, int]:
        """This worker's Ray node id, node address and a free TCP port there (rank 0's hosts a cluster's
        rendezvous)."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), port

    def join(self, rendezvous: str, loopback: bool, timeout_s: float) -> None:
        """Join the default process group at ``rendezvous`` (a ``file://`` store or rank 0's ``tcp://`` address) as
        lumina_core.parallel.init_process_group does (gloo on CPU, nccl on CUDA, collectives and subgroups bounded
        by ``timeout_s``), with gloo's and NCCL's sockets on the loopback interface when every rank runs on this
        machine (``loopback``), and check it with one all-reduce."""
        from lumina_core.parallel import init_process_group

        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size),
                          LOCAL_RANK="0")  # LOCAL_RANK 0: Ray shows the actor its one GPU as cuda:0
        if loopback:
            interface = loopback_interface()
            os.environ.update(GLOO_SOCKET_IFNAME=interface, NCCL_SOCKET_IFNAME=interface)
        init_process_group("nccl" if self.device.type == "cuda" else "gloo", timeout_s, init_method=rendezvous)
        probe = torch.ones(1, device=self.device)
        torch.distributed.all_reduce(probe)
        if int(probe.item()) != self.world_size:
            raise RuntimeError(f"rank {self.rank}: the process group's test all-reduce gave {probe.item()}, "
                               f"expected {self.world_size}")

    def load(self, key: str, config: dict, dtype: str, weights: dict) -> None:
        """Build the transformer from its config and weights; it replaces the one held before."""
        from lumina_core.model import NextDiT, NextDiTConfig

        self.model = self.model_key = None
        model = NextDiT(NextDiTConfig.from_dict(config), device=self.device, dtype=getattr(torch, dtype),
                        init_weights=False)
        model.load_state_dict(weights, strict=True)
        self.model, self.model_key = model.eval(), key

    def sample(self, run: int, key: str, noise: torch.Tensor, cond: tuple, uncond: Optional[tuple], config: dict,
               plan: dict, relay) -> Optional[torch.Tensor]:
        """This rank's part of ``parallel_sample``; rank 0 reports every step to ``relay``, reads the stop request
        from it and returns the latent (the other ranks return None)."""
        import ray

        from lumina_core.parallel import ParallelPlan, parallel_sample
        from lumina_core.sampling import SampleConfig
        from lumina_core.schedule import Stage

        if key != self.model_key:
            raise RuntimeError(f"rank {self.rank} holds model {self.model_key}, not {key}; the pool sends the model "
                               "before sampling")
        config = SampleConfig(**{**config, "stages": tuple(Stage(**stage) for stage in config["stages"])})
        move = lambda caption: None if caption is None else tuple(t.to(self.device) for t in caption)  # noqa: E731
        callback = should_stop = None
        if self.rank == 0:
            def callback(info: dict) -> None:
                event = {name: info[name] for name in ("step", "t", "t_next", "index", "total", "patch_size",
                                                       "f_patch_size")}
                event.update(run=run, x=preview_rows(info["x"]), velocity=preview_rows(info["velocity"]))
                relay.push.remote(event)  # not waited for: the next should_stop() answers after it

            def should_stop() -> bool:
                # One caller's calls to an actor run in order, so the answer also means every push has landed.
                return ray.get(relay.stopped.remote(run))

        out = parallel_sample(self.model, noise.to(self.device), move(cond), move(uncond), config,
                              ParallelPlan(**plan), callback=callback, should_stop=should_stop)
        if self.rank != 0:
            return None
        should_stop()  # the last step's push has landed before the driver sees the result
        return out.float().cpu()
