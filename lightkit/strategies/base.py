"""The ``Strategy`` protocol: where modules live and how ranks cooperate.

Every method has a default for a single process, so a strategy overrides only what it changes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.precision.base import Precision


@attrs.define
class Strategy:
    """One process, one device. Distributed strategies override the collective methods."""

    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"), converter=torch.device)
    precision: Precision = attrs.field(factory=Precision)

    @property
    def name(self) -> str:
        return "single_device"

    # -- topology --------------------------------------------------------------------------
    @property
    def is_distributed(self) -> bool:
        return False

    @property
    def rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    def setup_environment(self) -> None:
        """Join or create the process group (distributed strategies)."""

    def teardown(self) -> None:
        """Release what ``setup_environment`` created; safe to call twice."""

    # -- objects ---------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def setup_dataloader(
        self, loader: Any, *, shuffle_default: bool = True, name: str | None = None
    ) -> Any:
        return loader

    def unwrap(self, module: nn.Module) -> nn.Module:
        """The user's module inside any wrapper this strategy added."""
        return module

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Skip gradient synchronisation in this backward (inside an accumulation window)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.precision.backward(loss, *args, **kwargs)

    def clip_gradients(
        self, parameters: list[torch.Tensor], max_value: float, algorithm: str
    ) -> torch.Tensor | None:
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, max_value)
            return None
        return torch.nn.utils.clip_grad_norm_(parameters, max_value)

    # -- collectives -----------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """Every rank's ``obj`` (picklable), in rank order, on rank ``dst``; ``None`` on the
        others."""
        return [obj]

    def reduce_any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        return flag

    # -- state -----------------------------------------------------------------------------
    def module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        return self.unwrap(module).state_dict()

    def load_module_state_dict(
        self, module: nn.Module, state: dict[str, Any], strict: bool = True
    ) -> None:
        self.unwrap(module).load_state_dict(state, strict=strict)

    def optimizer_state_dict(
        self, module: nn.Module | None, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, module: nn.Module | None, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(self, state: dict[str, Any], path: str | Path) -> None:
        from lightkit.checkpoint.io import atomic_save

        if self.rank == 0:
            atomic_save(state, path)

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        from lightkit.strategies.fsdp_checkpoint import read_checkpoint

        return read_checkpoint(path, map_location="cpu")
