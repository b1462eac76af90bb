"""One generation split across processes: CFG-parallel x sequence parallel (Ulysses and ring), the
split of the official Lumina-Video multi-GPU sampler, on ``torch.distributed`` and ``yunchang``.

A plan ``cfg=C,ulysses=U,ring=R`` uses C x R x U processes; process ``rank`` has
``rank = (cfg_rank * R + ring_rank) * U + ulysses_rank``:

- CFG-parallel (C = 2): a guided call's positive and negative rows are independent until guidance, so
  cfg rank 0 runs the positive row and cfg rank 1 the negative one; the two velocities are then
  exchanged and guidance and renorm are applied identically everywhere.
- Sequence parallel (U x R processes per cfg row): after patch embedding the tokens are padded to a
  multiple of U x R and each process keeps one slice (with its RoPE positions). Self-attention
  exchanges heads for tokens with Ulysses all-to-alls (yunchang's ``all_to_all_4D``) and passes
  key/value blocks around the ring (yunchang's ``RingComm``); the padded keys are masked out. The
  caption is not split: each process attends its query slice to the whole caption. The patch values
  are gathered after the final layer (a per-token map, so gathering its output instead of its input
  is equal and moves F*P*P*C instead of dim values per token).
- When cfg is 0 (truncated late in the schedule) there is no negative row: the cfg ranks join the
  ring, so every process still works on the positive row (U x (R*C) sequence parallel).

yunchang's ``LongContextAttention`` takes no key mask, which the padding needs; so this module uses
its communication (all-to-all, ring send/receive) and computes the attention itself: the model's own
attention function after the Ulysses exchange, a masked block softmax with log-sum-exp merging in
the ring. Nothing here imports yunchang before a sequence-parallel call, and nothing else in the
package imports this module unless asked to run in parallel.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..model import compute_frames
from ..sampling import Caption, SampleConfig, check_sample_inputs, guide, guided_velocity, integrate

DEGREES = ("cfg", "ulysses", "ring")
DEFAULT_TIMEOUT_S = 600.0
"""Longest a collective waits for a silent process before it fails; the Ray pool also waits this long for its actors
to start, for a model to load and for each step, before it calls the ranks hung, shuts them down and raises."""
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_group_timeout_s = DEFAULT_TIMEOUT_S  # the timeout init_process_group was given, for the subgroups


@dataclass(frozen=True)
class ParallelPlan:
    """Degrees of the split: ``cfg`` (1 or 2 processes for the guidance rows), ``ulysses`` (head-for-token
    all-to-all) and ``ring`` (key/value blocks passed around); their product is the world size."""

    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    def __post_init__(self):
        for name in DEGREES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel degree {name}={value!r} is not a positive whole number; use 1, 2, 4, ...")
        if self.cfg not in (1, 2):
            raise ValueError(f"parallel degree cfg={self.cfg} is not 1 or 2: a guided call has two rows "
                             "(positive, negative); use cfg=2 and put the other processes into ulysses= or ring=")

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses * self.ring

    @property
    def sequence_degree(self) -> int:
        """Processes that share one row's tokens."""
        return self.ulysses * self.ring

    def __str__(self) -> str:
        return ",".join(f"{name}={getattr(self, name)}" for name in DEGREES)

    @classmethod
    def parse(cls, text: str, world_size: int, n_heads: Optional[int] = None, guided: bool = True) -> "ParallelPlan":
        """``"cfg=2,ulysses=2"`` (missing degrees are 1) or ``"auto"``.

        auto: cfg=2 when ``world_size`` is even and the schedule is ``guided``; the remaining processes
        go to Ulysses as far as it divides the query heads (``n_heads``; None = no limit), the rest to
        ring: ulysses = gcd(rest, n_heads), ring = rest / ulysses. E.g. 8 processes and 16 heads give
        cfg=2,ulysses=4; 4 processes and 6 heads without guidance give ulysses=2,ring=2.
        """
        text = text.strip()
        if text == "auto":
            cfg = 2 if guided and world_size % 2 == 0 else 1
            rest = world_size // cfg
            ulysses = rest if n_heads is None else math.gcd(rest, n_heads)
            return cls(cfg=cfg, ulysses=ulysses, ring=rest // ulysses)
        example = "use e.g. cfg=2,ulysses=2 or ulysses=2 or auto"
        degrees = {}
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            name = name.strip()
            if not sep or name not in DEGREES:
                raise ValueError(f"parallel plan {text!r}: {part.strip()!r} is not one of "
                                 f"{', '.join(d + '=N' for d in DEGREES)}; {example}")
            if name in degrees:
                raise ValueError(f"parallel plan {text!r} gives {name} twice; {example}")
            try:
                degrees[name] = int(value)
            except ValueError:
                raise ValueError(f"parallel plan {text!r}: {name}={value.strip()!r} is not a whole number; "
                                 f"{example}") from None
        return cls(**degrees)


def check_plan(plan: ParallelPlan, model_config, world_size: int) -> None:
    """Refuse, before any work, a plan that does not fit the launched processes or the model's heads."""
    if plan.world_size != world_size:
        raise ValueError(f"parallel plan {plan} needs {plan.world_size} processes (cfg x ulysses x ring) but "
                         f"{world_size} were launched; give degrees whose product is {world_size} (e.g. --parallel "
                         f"auto) or launch torchrun --nproc-per-node {plan.world_size}")
    heads = model_config.n_heads
    if heads % plan.ulysses:
        divisors = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
        fitting = math.gcd(plan.ulysses, heads)
        raise ValueError(f"ulysses={plan.ulysses} does not divide the model's {heads} query heads; use a divisor of "
                         f"{heads} ({divisors}) and put the rest into ring= (e.g. ulysses={fitting},"
                         f"ring={plan.ulysses // fitting})")


def init_process_group(backend: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                       init_method: Optional[str] = None) -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): gloo on CPU,
    nccl with CUDA (each process on GPU LOCAL_RANK). ``init_method`` (e.g. ``file:///private/folder/store``)
    replaces MASTER_ADDR and MASTER_PORT as the rendezvous. A collective that waits longer than ``timeout_s`` for a
    process (dead or stuck) raises instead of hanging. Returns (rank, world size)."""
    import torch.distributed as dist

    global _group_timeout_s
    needed = TORCHRUN_ENV if init_method is None else TORCHRUN_ENV[:2]
    missing = [name for name in needed if name not in os.environ]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set: start the processes with torchrun, e.g. "
                           "torchrun --nproc-per-node 2 -m lumina_core generate ... --parallel auto")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s {timeout_s} must be a positive number of seconds, e.g. {DEFAULT_TIMEOUT_S:g}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    _group_timeout_s = float(timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]), timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


# -- process groups ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequenceGroup:
    """The processes that share one row's tokens: ``index`` is this process's token slice of ``degree``;
    ``ulysses`` exchanges heads for tokens, ``ring`` passes key/value blocks, ``gather`` collects the slices
    (None where the default group is meant, or where the size is 1)."""

    ulysses: object = None
    ulysses_size: int = 1
    ring: object = None
    ring_size: int = 1
    ring_rank: int = 0
    gather: object = None
    index: int = 0

    @property
    def degree(self) -> int:
        return self.ulysses_size * self.ring_size


@dataclass(frozen=True)
class ParallelGroups:
    """This process's place in a plan: its sequence group for guided calls (inside its cfg row) and for
    unguided ones (the cfg ranks joined into the ring), and the cfg group that exchanges velocities."""

    plan: ParallelPlan
    rank: int
    cfg_rank: int
    guided: SequenceGroup
    unguided: SequenceGroup
    cfg: object = None

    @classmethod
    def single(cls) -> "ParallelGroups":
        return cls(ParallelPlan(), 0, 0, SequenceGroup(), SequenceGroup())

    @classmethod
    def build(cls, plan: ParallelPlan, rank: int) -> "ParallelGroups":
        """Create the subgroups (every process must call this, in the same order)."""
        import torch.distributed as dist

        cfg, ulysses, ring = plan.cfg, plan.ulysses, plan.ring
        cfg_rank, ring_rank, ulysses_rank = rank // (ring * ulysses), rank // ulysses % ring, rank % ulysses
        timeout = timedelta(seconds=_group_timeout_s)

        def rank_of(c, r, u):
            return (c * ring + r) * ulysses + u

        def mine(groups_ranks):
            """New groups for every rank list (all processes create all); the one holding this rank."""
            found = None
            for ranks in groups_ranks:
                group = dist.new_group(ranks, timeout=timeout)
                if rank in ranks:
                    found = group
            return found

        ulysses_group = ring_group = wide_ring_group = row_group = cfg_group = None
        if ulysses > 1:
            ulysses_group = mine([[rank_of(c, r, u) for u in range(ulysses)] for c in range(cfg) for r in range(ring)])
        if ring > 1:
            ring_group = mine([[rank_of(c, r, u) for r in range(ring)] for c in range(cfg) for u in range(ulysses)])
        if cfg > 1:
            if ring * cfg > 1:
                wide_ring_group = mine([[rank_of(c, r, u) for c in range(cfg) for r in range(ring)]
                                        for u in range(ulysses)])
            if ring * ulysses > 1:
                row_group = mine([[rank_of(c, r, u) for r in range(ring) for u in range(ulysses)] for c in range(cfg)])
            cfg_group = mine([[rank_of(c, r, u) for c in range(cfg)] for r in range(ring) for u in range(ulysses)])
        else:
            wide_ring_group = ring_group
        guided = SequenceGroup(ulysses_group, ulysses, ring_group, ring, ring_rank, row_group,
                               ring_rank * ulysses + ulysses_rank)
        wide_rank = cfg_rank * ring + ring_rank
        unguided = SequenceGroup(ulysses_group, ulysses, wide_ring_group, ring * cfg, wide_rank, None,
                                 wide_rank * ulysses + ulysses_rank)
        return cls(plan, rank, cfg_rank, guided, unguided, cfg_group)


_GROUPS: dict = {}


def parallel_groups(plan: ParallelPlan) -> ParallelGroups:
    """The groups of ``plan`` in the current default process group (created once per plan and group)."""
    import torch.distributed as dist

    if plan.world_size == 1 and not dist.is_initialized():
        return ParallelGroups.single()
    key = (plan, dist.group.WORLD)
    if key not in _GROUPS:
        _GROUPS[key] = ParallelGroups.build(plan, dist.get_rank())
    return _GROUPS[key]


# -- tokens --------------------------------------------------------------------------------------
def padded_length(length: int, degree: int) -> int:
    """``length`` rounded up to a multiple of ``degree`` (every process gets an equal slice)."""
    return -(-length // degree) * degree


def token_slice(length: int, degree: int, index: int) -> slice:
    """Process ``index``'s slice of ``length`` tokens padded for ``degree`` processes."""
    share = padded_length(length, degree) // degree
    return slice(index * share, (index + 1) * share)


def pad_tokens(h: torch.Tensor, freqs: torch.Tensor, key_mask: Optional[torch.Tensor], degree: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens h [B, L, dim] and RoPE table freqs [B, L, hd/2] padded (with zeros) to a multiple of
    ``degree``, and the key mask [B, L'] that masks the padding (and whatever ``key_mask`` masked)."""
    batch, length = h.shape[:2]
    pad = padded_length(length, degree) - length
    keys = torch.ones(batch, length, dtype=torch.bool, device=h.device) if key_mask is None else key_mask.bool()
    return F.pad(h, (0, 0, 0, pad)), F.pad(freqs, (0, 0, 0, pad)), F.pad(keys, (0, pad), value=False)


def _gather_tokens(out: torch.Tensor, group: SequenceGroup) -> torch.Tensor:
    """Every process's slice [B, L/degree, ...] concatenated in slice order: [B, L, ...]."""
    import torch.distributed as dist

    parts = [torch.empty_like(out) for _ in range(group.degree)]
    dist.all_gather(parts, out.contiguous(), group=group.gather)
    return torch.cat(parts, dim=1)


def _run_split(group: SequenceGroup, run_tokens, h, freqs, key_mask, y, y_mask, c, patch_size, f_patch_size):
    """``NextDiT.run_tokens`` on this process's token slice; the whole patch-value sequence on every process."""
    length = h.shape[1]
    h, freqs, keys = pad_tokens(h, freqs, key_mask, group.degree)
    mine = token_slice(length, group.degree, group.index)
    out = run_tokens(h[:, mine], freqs[:, mine], keys, y, y_mask, c, patch_size, f_patch_size)
    return _gather_tokens(out, group)[:, :length]


# -- attention -----------------------------------------------------------------------------------
def expand_kv_heads(k: torch.Tensor, v: torch.Tensor, n_heads: int, ulysses: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat grouped KV heads [B, Hkv, L, hd] just enough that ``ulysses`` divides them. Query head h
    reads KV head h // (Hq/Hkv); after repeating each KV head g times it reads h // (Hq/(Hkv*g)), so every
    process's contiguous block of query heads finds its KV heads in its own block."""
    kv_heads = k.shape[1]
    repeat = ulysses // math.gcd(kv_heads, ulysses)
    if repeat == 1:
        return k, v
    if n_heads % (kv_heads * repeat):
        raise ValueError(f"ulysses={ulysses} with {n_heads} query and {kv_heads} KV heads: pick a ulysses degree "
                         f"that divides {n_heads}")
    return k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)


def _heads_for_tokens(x: torch.Tensor, group) -> torch.Tensor:
    """[B, H, L/U, hd] on each of U processes -> [B, H/U, L, hd] (Ulysses all-to-all)."""
    from yunchang.comm.all_to_all import all_to_all_4D

    return all_to_all_4D(x.transpose(1, 2).contiguous(), scatter_idx=2, gather_idx=1, group=group).transpose(1, 2)


def _tokens_for_heads(x: torch.Tensor, group) -> torch.Tensor:
    """The inverse exchange: [B, H/U, L, hd] -> [B, H, L/U, hd]."""
    from yunchang.comm.all_to_all import all_to_all_4D

    return all_to_all_4D(x.transpose(1, 2).contiguous(), scatter_idx=1, gather_idx=2, group=group).transpose(1, 2)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked attention of one key block in float32 with its log-sum-exp [B, H, Lq, 1] (-inf where the
    block has no key to attend; the output is 0 there)."""
    repeat = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(repeat, dim=1).float(), v.repeat_interleave(repeat, dim=1).float()
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    lse = scores.logsumexp(dim=-1, keepdim=True)
    probs = torch.exp(scores - lse).nan_to_num(0.0)
    return probs @ v, lse


def merge_attention(out, lse, block_out, block_lse):
    """Softmax attention over two key sets from the attention over each: weights exp(lse_i - lse)."""
    if out is None:
        return block_out, block_lse
    total = torch.logaddexp(lse, block_lse)
    reference = torch.where(torch.isfinite(total), total, 0.0)  # no key anywhere yet: both weights 0
    return out * torch.exp(lse - reference) + block_out * torch.exp(block_lse - reference), total


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                   group: SequenceGroup) -> torch.Tensor:
    """Attention of the local queries to the keys of every process of the ring: the key/value blocks
    travel one step around the ring per round (yunchang's RingComm) while this process attends the block
    it holds; key_mask [B, ring_size * block] covers all blocks in ring order."""
    from yunchang.ring.utils import RingComm

    comm = RingComm(group.ring)
    block = k.shape[2]
    k, v = k.contiguous(), v.contiguous()
    out = lse = None
    for step in range(group.ring_size):
        last = step + 1 == group.ring_size
        if not last:
            next_k, next_v = comm.send_recv(k), comm.send_recv(v)
            comm.commit()
        source = (group.ring_rank - step) % group.ring_size
        block_out, block_lse = attention_with_lse(q, k, v, key_mask[:, source * block:(source + 1) * block])
        out, lse = merge_attention(out, lse, block_out, block_lse)
        if not last:
            comm.wait()
            k, v = next_k, next_v
    return out.to(q.dtype)


def sequence_attention(q, k, v, key_mask, *, group: SequenceGroup, local):
    """Self-attention of this process's token slice (q [B, Hq, L/S, hd], k/v [B, Hkv, L/S, hd]) to the keys of
    all S = ulysses x ring processes; key_mask [B, L] covers the whole padded sequence. ``local`` is the
    model's own attention function, used on whole sequences after the Ulysses exchange."""
    if group.ulysses_size > 1:
        k, v = expand_kv_heads(k, v, q.shape[1], group.ulysses_size)
        q, k, v = (_heads_for_tokens(x, group.ulysses) for x in (q, k, v))
    out = ring_attention(q, k, v, key_mask, group) if group.ring_size > 1 else local(q, k, v, key_mask)
    return _tokens_for_heads(out, group.ulysses) if group.ulysses_size > 1 else out


@contextmanager
def sequence_parallel(model, group: SequenceGroup):
    """Within: ``model`` (a NextDiT) runs on this process's token slice and exchanges attention with the
    group; it returns the whole output on every process. Restores the model on exit."""
    if group.degree == 1:
        yield model
        return
    attentions = [layer.attention for layer in model.layers]
    saved = [attention.attend for attention in attentions]
    runner = model.token_runner
    for attention, local in zip(attentions, saved):
        attention.attend = partial(sequence_attention, group=group, local=local)
    model.set_token_runner(partial(_run_split, group, runner or model.run_tokens))
    try:
        yield model
    finally:
        for attention, local in zip(attentions, saved):
            attention.attend = local
        model.set_token_runner(runner)


# -- sampling ------------------------------------------------------------------------------------
def _exchange_rows(out: torch.Tensor, groups: ParallelGroups) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) velocities from the two cfg ranks' own rows."""
    import torch.distributed as dist

    rows = [torch.empty_like(out) for _ in range(2)]
    dist.all_gather(rows, out.contiguous(), group=groups.cfg)
    return rows[0], rows[1]


def parallel_velocity(model, x: torch.Tensor, t: float, stage, cond: Caption, uncond: Optional[Caption],
                      guidance: tuple, groups: ParallelGroups) -> torch.Tensor:
    """:func:`~lumina_core.sampling.guided_velocity` split by ``groups``; the same velocity on every process."""
    cfg, motion, neg_motion, renorm = guidance
    if cfg > 0.0 and groups.plan.cfg == 2:
        caption, score = (cond, motion) if groups.cfg_rank == 0 else (uncond, neg_motion)
        with sequence_parallel(model, groups.guided):
            # This rank's row alone: the unguided velocity with its caption and motion score.
            own = guided_velocity(model, x, t, stage, caption, None, 0.0, score, score, -1.0)
        return guide(*_exchange_rows(own, groups), cfg, renorm)
    with sequence_parallel(model, groups.guided if cfg > 0.0 else groups.unguided):
        return guided_velocity(model, x, t, stage, cond, uncond, *guidance)


def _stop_requested(should_stop: Optional[Callable[[], bool]], rank: int, world_size: int, device) -> bool:
    """rank 0's answer to ``should_stop()``, the same on every process."""
    flag = torch.tensor([rank == 0 and should_stop is not None and bool(should_stop())], device=device)
    if world_size > 1:
        import torch.distributed as dist

        flag = flag.to(torch.int32)
        dist.broadcast(flag, src=0)
    return bool(flag.item())


@contextmanager
def _failure_named(rank: int, call: int, total: int):
    """Name the rank and the model call in a collective's failure (gloo reports a timeout or a closed connection
    as a plain RuntimeError)."""
    try:
        yield
    except RuntimeError as error:
        raise RuntimeError(f"parallel sampling failed on rank {rank} in model call {call} of {total}: {error}. A "
                           "timeout or closed connection means another process died or did not answer within "
                           f"{_group_timeout_s:g} s: see that process's own error") from error


@torch.no_grad()
def parallel_sample(model, noise: torch.Tensor, cond: Caption, uncond: Optional[Caption], config: SampleConfig,
                    plan: ParallelPlan, callback: Optional[Callable[[dict], None]] = None,
                    should_stop: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """:func:`~lumina_core.sampling.sample` split across the processes of the default process group by
    ``plan``: call it on every process with the same inputs; every process returns the float32 latent. The
    loop is the sampler's own (:func:`~lumina_core.sampling.integrate`) with the split velocity.

    ``callback`` runs on every process after each step (as in ``sample``); ``should_stop()`` is asked on
    rank 0 between steps and, when true, every process raises InterruptedError. A plan of world size 1 runs
    without a process group.
    """
    import torch.distributed as dist

    world_size = dist.get_world_size() if dist.is_initialized() else 1
    check_plan(plan, model.config, world_size)
    check_sample_inputs(model, noise, cond, uncond, config)
    groups = parallel_groups(plan)
    total = len(config.model_calls())
    started = 0  # model calls begun: the stop question opens each one

    def stop_everywhere() -> bool:
        nonlocal started
        started += 1
        with _failure_named(groups.rank, started, total):
            return _stop_requested(should_stop, groups.rank, world_size, noise.device)

    def velocity(x: torch.Tensor, t: float, stage, guidance: tuple) -> torch.Tensor:
        with _failure_named(groups.rank, started, total):
            return parallel_velocity(model, x, t, stage, cond, uncond, guidance, groups)

    return integrate(noise, config, velocity, callback, stop_everywhere)


def rank_share(plan: ParallelPlan, rank: int, latent_shape, config: SampleConfig) -> str:
    """What process ``rank`` computes in a guided call: its cfg row and its token slice per patch pair."""
    ring_rank, ulysses_rank = rank // plan.ulysses % plan.ring, rank % plan.ulysses
    cfg_rank = rank // plan.sequence_degree
    row = "both rows" if plan.cfg == 1 else ("positive row" if cfg_rank == 0 else "negative row")
    frames, height, width = latent_shape[2:]
    slices = []
    for stage in config.stages:
        tokens = (compute_frames(frames, stage.f_patch_size) // stage.f_patch_size
                  * (height // stage.patch_size) * (width // stage.patch_size))
        mine = token_slice(tokens, plan.sequence_degree, ring_rank * plan.ulysses + ulysses_rank)
        slices.append(f"{stage.patch}: tokens [{mine.start}, {min(mine.stop, tokens)}) of {tokens}")
    return f"rank {rank}/{plan.world_size} ({plan}): {row}, " + "; ".join(slices)

