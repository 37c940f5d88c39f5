"""Which module an optimizer belongs to; BatchNorm layers made ``SyncBatchNorm``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lightkit.errors import ConfigError


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


def sync_batchnorm(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """``models`` with their BatchNorm layers made ``nn.SyncBatchNorm`` (the Trainer's
    ``sync_batchnorm=True`` with more than one process); other layers are kept as they are."""
    return {name: nn.SyncBatchNorm.convert_sync_batchnorm(m) for name, m in models.items()}


def check_sync_batchnorm(world_size: int, device: torch.device) -> None:
    """Refuse ``sync_batchnorm=True`` where torch's ``SyncBatchNorm`` cannot synchronize.

    Raises:
        ConfigError: ``sync-batchnorm-device``: more than one process on a device other than
            CUDA (on the CPU, ``SyncBatchNorm`` fails at its first forward).
    """
    if world_size > 1 and device.type not in ("cuda", torch._C._get_privateuse1_backend_name()):
        raise ConfigError(
            f"sync_batchnorm=True: torch's SyncBatchNorm synchronizes batch statistics across "
            f"processes on CUDA devices only, and these {world_size} processes run on "
            f"{device.type}. Train on GPUs (accelerator='cuda'), or leave sync_batchnorm off "
            f"(each process then normalizes with its own batch's statistics).",
            code="sync-batchnorm-device",
        )


__all__ = ["check_sync_batchnorm", "optimizer_owner", "sync_batchnorm"]
