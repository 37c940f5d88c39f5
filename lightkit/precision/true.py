"""``-true`` precisions: parameters and floating inputs held in one dtype, no autocast."""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from lightkit.precision.base import Precision, convert_floating

_NAMES = {torch.float64: "64-true", torch.float16: "16-true", torch.bfloat16: "bf16-true"}


@attrs.define
class TruePrecision(Precision):
    """Parameters and floating inputs converted to ``dtype``: ``64-true``, ``16-true``,
    ``bf16-true``. The optimizer is built over the converted parameters.

    Example::

        lk.Trainer(precision="bf16-true")  # or precision=TruePrecision(torch.bfloat16)
    """

    dtype: torch.dtype = attrs.field(
        default=torch.float64, validator=attrs.validators.in_(tuple(_NAMES))
    )

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]

    @property
    def param_dtype(self) -> torch.dtype:
        return self.dtype

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, batch: Any) -> Any:
        return convert_floating(batch, self.dtype)
