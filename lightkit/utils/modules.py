"""Which module an optimizer belongs to."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def optimizer_owner(
    optimizer: torch.optim.Optimizer, modules: Iterable[nn.Module]
) -> nn.Module | None:
    """The first of ``modules`` whose parameters ``optimizer`` updates; ``None`` if none.
    FSDP gathers and scatters an optimizer's state through its module."""
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in modules:
        if any(id(p) in ids for p in module.parameters()):
            return module
    return None


__all__ = ["optimizer_owner"]
