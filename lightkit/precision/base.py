"""The ``Precision`` protocol: how modules, inputs, forward passes and steps change with dtype.

Every method has a no-op default, so a plugin overrides only what it changes. The Runtime
calls them in this order per optimization step::

    convert_input(batch) -> with autocast(): step -> backward(loss)
    -> unscale_gradients(opt) -> [clip] -> optimizer_step(opt) -> update()
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.utils.apply import apply_to_tensors


def to_dtype(value: Any) -> Any:
    """A dtype given by name (``"float16"``, ``"torch.float16"``, as a config file writes it)
    as the ``torch.dtype``; anything else unchanged, for the field's check to judge."""
    if isinstance(value, str):
        found = getattr(torch, value.strip().removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    return value


@attrs.define
class Precision:
    """Full-precision float32 training (``"32-true"``), and the base every plugin builds on."""

    @property
    def name(self) -> str:
        """The config string of this precision (``"32-true"``, ``"bf16-mixed"``, ...)."""
        return "32-true"

    def __str__(self) -> str:
        return self.name

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the parameters are held in."""
        return torch.float32

    def setup(self, device: torch.device) -> None:
        """Check that this precision can work on ``device``; raise ``ConfigError`` if not.

        Called by the connector when the trainer compiles, before any tensor is made.
        """

    def convert_module(self, module: nn.Module) -> nn.Module:
        """The module with its floating parameters and buffers in ``param_dtype``."""
        return module

    def convert_input(self, batch: Any) -> Any:
        """The batch with its floating tensors in the dtype the module expects."""
        return batch

    @property
    def converts_input(self) -> bool:
        """Whether ``convert_input`` does anything (the runtime skips the call if not)."""
        return type(self).convert_input is not Precision.convert_input

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context every step (training, evaluation, prediction) runs in."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward(*args, **kwargs)``, or what the precision needs instead."""
        loss.backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the gradients true gradients before clipping or inspection. The Runtime
        calls it at most once per optimizer per step."""

    @property
    def unscales(self) -> bool:
        """Whether :meth:`unscale_gradients` does anything (after :meth:`setup`); the
        Runtime skips its bookkeeping when not."""
        return type(self).unscale_gradients is not Precision.unscale_gradients

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer``; return whether it really stepped (a scaler may skip)."""
        optimizer.step()
        return True

    def update(self) -> None:
        """End an optimization iteration, after every optimizer of it stepped. A no-op
        when nothing stepped since the last call."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores for this plugin (the grad scaler's state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def convert_floating(batch: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor in ``batch`` to ``dtype``; others pass unchanged."""
    return apply_to_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a wrapper that exposes it as ``.optimizer`` (the one handed
    to a manual step). A grad scaler tracks optimizers by identity, so it must see this one."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


class DefaultDtype:
    """Set ``torch``'s default floating dtype inside the block and restore it after, so a
    tensor made in a ``-true`` step (``torch.zeros(n)``) has the parameters' dtype."""

    __slots__ = ("_dtype", "_saved")

    def __init__(self, dtype: torch.dtype) -> None:
        self._dtype = dtype
        self._saved: list[torch.dtype] = []

    def __enter__(self) -> None:
        self._saved.append(torch.get_default_dtype())
        torch.set_default_dtype(self._dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._saved.pop())
