"""``-true`` precisions: parameters and floating inputs held in one dtype, no autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.errors import ConfigError
from lightkit.precision.base import DefaultDtype, Precision, convert_floating, to_dtype

_NAMES = {torch.float64: "64-true", torch.float16: "16-true", torch.bfloat16: "bf16-true"}


def _check_dtype(instance: Any, attribute: Any, value: Any) -> None:
    if value not in _NAMES:
        raise ConfigError(
            f"TruePrecision(dtype={value!r}): expected torch.float64, torch.float16 or "
            f"torch.bfloat16. float32 is the default precision='32-true'.",
            code="unknown-precision",
        )


@attrs.define
class TruePrecision(Precision):
    """Parameters and floating inputs converted to ``dtype``: ``64-true``, ``16-true``,
    ``bf16-true``. The optimizer is built over the converted parameters, and tensors made
    inside a step default to ``dtype`` (``torch.set_default_dtype``), as in Lightning.

    Example::

        lk.Trainer(precision="bf16-true")  # or precision=TruePrecision(torch.bfloat16)
    """

    dtype: torch.dtype = attrs.field(
        default=torch.float64, converter=to_dtype, validator=_check_dtype
    )
    _context: DefaultDtype = attrs.field(init=False, repr=False, eq=False)

    @_context.default
    def _make_context(self) -> DefaultDtype:
        return DefaultDtype(self.dtype)

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]

    @property
    def param_dtype(self) -> torch.dtype:
        return self.dtype

    def setup(self, device: torch.device) -> None:
        if device.type == "mps" and self.dtype is torch.float64:
            raise ConfigError(
                "precision='64-true' cannot run on MPS: it has no float64. Use "
                "accelerator='cpu', or precision='32-true'.",
                code="precision-unsupported",
            )

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, batch: Any) -> Any:
        return convert_floating(batch, self.dtype)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self._context
