"""The ``Precision`` protocol: how modules, inputs, forward passes and steps change with dtype.

Every method has a no-op default, so a plugin overrides only what it changes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.utils.apply import apply_to_tensors


@attrs.define
class Precision:
    """Full-precision float32 training, and the base every precision plugin builds on."""

    @property
    def name(self) -> str:
        """The config string of this precision (``"32-true"``, ``"bf16-mixed"``, ...)."""
        return "32-true"

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the parameters are held in."""
        return torch.float32

    def setup(self, device: torch.device) -> None:
        """Check that this precision can work on ``device``; raise ``ConfigError`` if not."""

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module

    def convert_input(self, batch: Any) -> Any:
        return batch

    @property
    def converts_input(self) -> bool:
        return type(self).convert_input is not Precision.convert_input

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the gradients true gradients before clipping or inspection."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer``; return whether it really stepped (a scaler may skip)."""
        optimizer.step()
        return True

    def update(self) -> None:
        """Called once per optimization iteration after every optimizer stepped."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def convert_floating(batch: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor in ``batch`` to ``dtype``; others pass unchanged."""
    return apply_to_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)
