"""``DDPStrategy``: one process per device; ``DistributedDataParallel`` averages gradients.

Backend: nccl on CUDA, gloo on CPU. ``devices=N`` from a plain process starts the ranks
(:mod:`lightkit.runtime.launch`); under torchrun or SLURM each process joins the job. Global
rank 0 alone writes logs and checkpoints. Each rank reads its share of the data through a
``DistributedSampler`` (:mod:`lightkit.strategies.process_group`).

Gradient accumulation: the backward passes inside a window run under ``no_sync()``, so a
window of k batches all-reduces once, in its last backward.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import timedelta
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.runtime.environment import ClusterEnvironment
from lightkit.strategies.base import Strategy
from lightkit.strategies.process_group import ProcessGroup, make_launcher, to_timedelta


@functools.cache
def _has_forward_sync_buffers() -> bool:
    """Newer torch renamed ``broadcast_buffers`` (the old name warns)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    return "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters


@attrs.define
class DDPStrategy(Strategy):
    """Data-parallel training over ``torch.distributed``.

    Args:
        find_unused_parameters: let DDP handle parameters a forward pass did not use.
        static_graph: the set of used parameters never changes (lets DDP skip checks).
        gradient_as_bucket_view: gradients are views into the all-reduce buckets (less memory).
        broadcast_buffers: copy rank 0's buffers (batch norm statistics) at each forward.
        bucket_cap_mb: all-reduce bucket size (DDP's default when ``None``).
        backend: ``"nccl"``, ``"gloo"``; ``None`` picks by device.
        timeout: how long a collective waits for the other ranks (seconds or ``timedelta``).
        start_method: how ``devices=N`` starts the ranks: ``"spawn"`` or ``"fork"``
            (see :mod:`lightkit.runtime.launch`).
        failure_timeout: seconds the other ranks get to finish after one failed, before they
            are stopped (lightkit's launcher only; torchrun has its own).
        seed: the ``DistributedSampler`` seed; default the Trainer's ``seed``, else 0.

    Example::

        lk.Trainer(strategy=DDPStrategy(find_unused_parameters=True), devices=4)
    """

    find_unused_parameters: bool = False
    static_graph: bool = False
    gradient_as_bucket_view: bool = False
    broadcast_buffers: bool = True
    bucket_cap_mb: float | None = None
    backend: str | None = None
    timeout: timedelta = attrs.field(default=timedelta(minutes=30), converter=to_timedelta)
    start_method: str = attrs.field(
        default="spawn", validator=attrs.validators.in_(("spawn", "fork"))
    )
    failure_timeout: float = 10.0
    seed: int | None = None
    group: ProcessGroup = attrs.field(init=False, factory=ProcessGroup, repr=False)
    launcher: Any = attrs.field(init=False, default=None, repr=False)
    _wrappers: list[nn.Module] = attrs.field(init=False, factory=list, repr=False)

    @property
    def name(self) -> str:
        return "ddp"

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
        # The reducer holds the process group: drop it before destroying the group, or the
        # group dies whenever the wrapper is collected (at exit, gloo can deadlock there).
        for wrapper in self._wrappers:
            for attr in ("reducer", "logger", "process_group", "_comm_hooks"):
                wrapper.__dict__.pop(attr, None)
        self._wrappers.clear()
        self.group.destroy()

    # -- objects ---------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        module = module.to(self.device)
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to synchronise; DDP refuses such a module
        kwargs: dict[str, Any] = {}
        if self.bucket_cap_mb is not None:
            kwargs["bucket_cap_mb"] = self.bucket_cap_mb
        if self.broadcast_buffers and _has_forward_sync_buffers():
            kwargs["forward_sync_buffers"] = True  # newer torch's name for the default
        else:
            kwargs["broadcast_buffers"] = self.broadcast_buffers
        wrapped = DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
            static_graph=self.static_graph,
            gradient_as_bucket_view=self.gradient_as_bucket_view,
            **kwargs,
        )
        self._wrappers.append(wrapped)
        return wrapped

    def setup_dataloader(self, loader: Any, *, shuffle_default: bool = True) -> Any:
        return self.group.distribute(loader, shuffle_default=shuffle_default)

    def unwrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return module.module if isinstance(module, DistributedDataParallel) else module

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(module, DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()

    # -- collectives -----------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return self.group.all_reduce(tensor, op)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.group.all_gather(tensor)

    def barrier(self, name: str | None = None) -> None:
        self.group.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self.group.broadcast(obj, src)

    def reduce_any(self, flag: bool) -> bool:
        return self.group.reduce_any(flag)

    # -- the result ------------------------------------------------------------------------
    def finish_result(self, result: Any, engine: Any) -> Any:
        """Before teardown: every rank's ``Result.metrics`` become rank 0's (what was logged)."""
        if self.group.active and self.world_size > 1:
            result.metrics = self.group.broadcast(result.metrics)
        return result
