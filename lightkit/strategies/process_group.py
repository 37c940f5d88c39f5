"""What DDP and FSDP share: the process group and its collectives.

``ProcessGroup`` is a component both strategies hold (composition, not a base class): where
this process sits, how it joins or creates the ``torch.distributed`` group, the collectives
the Runtime offers.

How a loader becomes this rank's share: :mod:`lightkit.strategies.data_split`.
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from datetime import timedelta
from typing import Any

import attrs
import torch
import torch.distributed as dist

from lightkit.errors import ConfigError, DistributedError, LightkitWarning, user_stacklevel
from lightkit.runtime.environment import ClusterEnvironment

_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}
#: Groups this process has joined; every rank joins the same sequence, so all agree.
_GENERATION = [0]


def to_timedelta(value: float | timedelta) -> timedelta:
    """Seconds or a ``timedelta``."""
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def make_launcher(
    strategy: Any, group: ProcessGroup, env: ClusterEnvironment, nprocs: int, num_nodes: int
) -> Any:
    """Configure ``group``; the launcher that starts the ranks when this process is not one."""
    if not group.configure(env, nprocs, num_nodes, strategy.name):
        return None
    from lightkit.runtime.launch import Launcher

    return Launcher(
        nprocs=nprocs,
        start_method=strategy.start_method,
        failure_timeout=strategy.failure_timeout,
    )


@attrs.define
class ProcessGroup:
    """This process's place in the job and the collectives over its group."""

    backend: str | None = None
    timeout: timedelta = timedelta(minutes=30)
    env: ClusterEnvironment = attrs.field(factory=ClusterEnvironment)
    #: Processes to start on this machine when this process is not a rank yet (``devices=N``).
    nprocs: int = 1
    #: ``DistributedSampler`` seed: the strategy's ``seed``, else the Trainer's, else 0.
    seed: int = 0
    #: The Trainer's ``seed`` for this run (set before setup).
    run_seed: int | None = None
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    _owns: bool = False

    # -- topology --------------------------------------------------------------------------
    def configure(self, env: ClusterEnvironment, nprocs: int, num_nodes: int, name: str) -> bool:
        """Record the environment; return True when this process must launch the ranks."""
        if not env.joined and num_nodes > 1:
            raise ConfigError(
                f"num_nodes={num_nodes} needs an outside launcher: lightkit starts processes "
                f"on one machine only. Run on every node `torchrun --nnodes {num_nodes} "
                f"--nproc-per-node {nprocs} --rdzv-endpoint HOST:PORT your_script.py` (or use "
                f"srun under SLURM).",
                code="impossible-config",
            )
        self.env, self.nprocs = env, nprocs
        return not env.joined and nprocs > 1

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def local_rank(self) -> int:
        return self.env.local_rank

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.env.joined else self.nprocs

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    # -- lifetime ---------------------------------------------------------------------------
    def setup(self, device: torch.device, seed: int | None = None) -> None:
        """Join the job's group (torchrun, SLURM, lightkit's launcher) or create a group of one.
        ``seed``: the strategy's sampler seed, if it has one."""
        self.device = device
        self.seed = seed if seed is not None else (self.run_seed or 0)
        if self.active:  # the user (or an earlier run) made the group: use it, leave it
            if dist.get_world_size() != self.world_size:
                raise DistributedError(
                    f"a process group of {dist.get_world_size()} ranks already exists, but this "
                    f"run expects {self.world_size}. Destroy it first "
                    f"(torch.distributed.destroy_process_group()).",
                    code="group-mismatch",
                )
            self._owns = False
            return
        if self.world_size > 1 and not self.env.joined:
            raise DistributedError(
                f"a group of {self.world_size} processes was asked for, but this process "
                f"is not a rank of a job, and nothing here starts the ranks. "
                f"lk.Trainer(devices={self.world_size}).fit(...) (validate, test, predict) "
                f"starts them itself; a Runtime of your own loop runs under "
                f"torchrun --nproc-per-node {self.world_size} your_script.py.",
                code="not-launched",
            )
        # Modules whose default arguments capture `group.WORLD` when imported: import them
        # before the group exists, or they keep it (and its gloo threads) alive after
        # destroy_process_group(), until interpreter exit. DDP imports them lazily.
        import torch.distributed.nn.functional

        backend = self.backend or ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        where = self.env.init_method if self.env.joined else "a store in this process"
        _GENERATION[0] += 1
        generation = _GENERATION[0]
        for attempt in itertools.count():
            try:
                dist.init_process_group(
                    backend,
                    store=self._store(generation),
                    rank=self.rank,
                    world_size=self.world_size,
                    timeout=self.timeout,
                    **kwargs,
                )
                break
            except (RuntimeError, ValueError) as exc:
                # Joining again in the same process (fit, then test): a rank can reach the
                # previous group's store on rank 0 just before it closes. Try once more.
                if attempt < 3 and generation > 1 and isinstance(exc, dist.DistError):
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise DistributedError(
                    f"rank {self.rank} of {self.world_size} could not join the process group "
                    f"at {where} (backend {backend!r}): {exc}",
                    code="group-failed",
                ) from exc
        self._owns = True

    def _store(self, generation: int) -> Any:
        """The rendezvous store, under a prefix new for each group this process joins: a
        store that outlives a group (torchrun's) keeps its keys, which the next group of the
        same process must not read. torchrun's store also outlives its workers, so the prefix
        names the restart too (the ranks of a restarted job must not meet the dead ranks)."""
        if not self.env.joined:  # a group of one: nothing to meet
            return dist.HashStore()
        store, _, _ = next(
            dist.rendezvous(self.env.init_method, self.rank, self.world_size, timeout=self.timeout)
        )
        store.set_timeout(self.timeout)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return dist.PrefixStore(f"lightkit/{restart}/{generation}", store)

    def destroy(self) -> None:
        """Destroy the group if this object created it; safe to call twice."""
        if self._owns and self.active:
            try:
                dist.destroy_process_group()
            except Exception as exc:  # a broken group must not mask the run's own error
                warnings.warn(
                    LightkitWarning(
                        f"destroy_process_group() failed: {exc}", code="distributed-failure"
                    ),
                    stacklevel=user_stacklevel(),
                )
        self._owns = False

    # -- collectives ------------------------------------------------------------------------
    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        """A private copy on a device the backend takes (nccl: the GPU)."""
        t = tensor.detach()
        if self.device.type == "cuda" and t.device != self.device:
            return t.to(self.device)
        return t.clone()

    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        if op not in _OPS:
            raise ValueError(f"op={op!r}; expected one of {', '.join(_OPS)}")
        if not self.active:
            return tensor
        t = self._comm(tensor)
        if op == "mean" and not t.is_floating_point():
            t = t.double()
        dist.all_reduce(t, op=getattr(dist.ReduceOp, _OPS[op]))
        if op == "mean":
            t /= dist.get_world_size()
        return t

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(world_size, *tensor.shape)``: every rank's ``tensor`` (same shape on each)."""
        if not self.active:
            return tensor.unsqueeze(0)
        t = self._comm(tensor)
        out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t)
        return torch.stack(out)

    def barrier(self, name: str | None = None) -> None:
        if not self.active:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self.device)
        return box[0]

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if not self.active:
            return [obj]
        mine = dist.get_rank() == dst
        out: list[Any] | None = [None] * dist.get_world_size() if mine else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def reduce_any(self, flag: bool) -> bool:
        if not self.active:
            return bool(flag)
        t = torch.tensor(1 if flag else 0, dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
