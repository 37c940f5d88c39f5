"""``ParallelStrategy``: what DDP and FSDP share — one process per device in a
``torch.distributed`` group (:class:`~lightkit.strategies.process_group.ProcessGroup`), the
launch options, the topology, the data split and the collectives."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import torch

from lightkit.runtime.environment import ClusterEnvironment
from lightkit.strategies.base import Strategy
from lightkit.strategies.process_group import ProcessGroup, make_launcher, to_timedelta
from lightkit.utils.validators import one_of


@attrs.define
class ParallelStrategy(Strategy):
    """Base of the strategies that run one process per device.

    Args:
        backend: ``"nccl"``, ``"gloo"``; ``None`` picks by device.
        timeout: how long a collective waits for the other ranks (seconds or ``timedelta``).
        start_method: how ``devices=N`` starts the ranks: ``"spawn"`` or ``"fork"``
            (see :mod:`lightkit.runtime.launch`).
        failure_timeout: seconds the other ranks get to finish after one failed, before they
            are stopped (lightkit's launcher only; torchrun has its own).
        seed: the ``DistributedSampler`` seed; default the Trainer's ``seed``, else 0.
    """

    backend: str | None = attrs.field(default=None, kw_only=True)
    timeout: timedelta = attrs.field(
        default=timedelta(minutes=30), converter=to_timedelta, kw_only=True
    )
    start_method: str = attrs.field(
        default="spawn", validator=one_of("spawn", "fork"), kw_only=True
    )
    failure_timeout: float = attrs.field(default=10.0, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    group: ProcessGroup = attrs.field(init=False, factory=ProcessGroup, repr=False)
    launcher: Any = attrs.field(init=False, default=None, repr=False)

    def configure(
        self,
        env: ClusterEnvironment,
        indices: list[int],
        num_nodes: int = 1,
        accelerator: str = "cpu",
    ) -> None:
        """Called by the connector: where this process sits, and whether to launch ranks."""
        self.group = ProcessGroup(backend=self.backend, timeout=self.timeout)
        self.launcher = make_launcher(self, self.group, env, len(indices), num_nodes)

    # -- topology --------------------------------------------------------------------------
    @property
    def is_distributed(self) -> bool:
        return True

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def local_rank(self) -> int:
        return self.group.local_rank

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def setup_environment(self) -> None:
        self.group.setup(self.device, self.seed)

    def teardown(self) -> None:
        self.group.destroy()

    def setup_dataloader(
        self, loader: Any, *, shuffle_default: bool = True, name: str | None = None
    ) -> Any:
        from lightkit.strategies.data_split import distribute

        return distribute(self.group, loader, evaluation=not shuffle_default, name=name)

    # -- collectives -----------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return self.group.all_reduce(tensor, op)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.group.all_gather(tensor)

    def barrier(self, name: str | None = None) -> None:
        self.group.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self.group.broadcast(obj, src)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        return self.group.gather_object(obj, dst)

    def reduce_any(self, flag: bool) -> bool:
        return self.group.reduce_any(flag)

    # -- the result ------------------------------------------------------------------------
    def finish_result(self, result: Any, engine: Any) -> Any:
        """Before teardown: every rank's ``Result.metrics`` become rank 0's (what was logged)."""
        if self.group.active and self.world_size > 1:
            result.metrics = self.group.broadcast(result.metrics)
        return result
