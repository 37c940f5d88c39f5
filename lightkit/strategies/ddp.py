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
from collections.abc import Callable
from typing import Any

import attrs
from torch import nn

from lightkit.strategies.parallel import ParallelStrategy


@functools.cache
def _has_forward_sync_buffers() -> bool:
    """Newer torch renamed ``broadcast_buffers`` (the old name warns)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    return "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters


@attrs.define
class DDPStrategy(ParallelStrategy):
    """Data-parallel training over ``torch.distributed``.

    Args:
        find_unused_parameters: let DDP handle parameters a forward pass did not use.
        static_graph: the set of used parameters never changes (lets DDP skip checks).
        gradient_as_bucket_view: gradients are views into the all-reduce buckets (less memory).
        broadcast_buffers: copy rank 0's buffers (batch norm statistics) at each forward.
        bucket_cap_mb: all-reduce bucket size (DDP's default when ``None``).
        comm_hook: a DDP communication hook, ``hook(state, bucket) -> Future``, registered
            on each wrapper (``torch.distributed.algorithms.ddp_comm_hooks``: fp16 or bf16
            compression, PowerSGD, ...); Lightning's ``ddp_comm_hook``.
        comm_state: the state the hook receives (Lightning's ``ddp_comm_state``).
        backend, timeout, start_method, failure_timeout, seed: see
            :class:`~lightkit.strategies.parallel.ParallelStrategy`.

    Example::

        lk.Trainer(strategy=DDPStrategy(find_unused_parameters=True), devices=4)
    """

    find_unused_parameters: bool = False
    static_graph: bool = False
    gradient_as_bucket_view: bool = False
    broadcast_buffers: bool = True
    bucket_cap_mb: float | None = None
    comm_hook: Callable[..., Any] | None = None
    comm_state: Any = None
    _wrappers: list[nn.Module] = attrs.field(init=False, factory=list, repr=False)

    @property
    def name(self) -> str:
        return "ddp"

    def teardown(self) -> None:
        # The reducer holds the process group: drop it before destroying the group, or the
        # group dies whenever the wrapper is collected (at exit, gloo can deadlock there).
        for wrapper in self._wrappers:
            for attr in ("reducer", "logger", "process_group", "_comm_hooks"):
                wrapper.__dict__.pop(attr, None)
        self._wrappers.clear()
        super().teardown()

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
        if self.comm_hook is not None:
            wrapped.register_comm_hook(self.comm_state, self.comm_hook)
        self._wrappers.append(wrapped)
        return wrapped

    def unwrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return module.module if isinstance(module, DistributedDataParallel) else module

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(module, DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()
