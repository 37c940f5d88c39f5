"""Rebuild a ``DataLoader`` around another sampler, keeping every other setting."""

from __future__ import annotations

import warnings
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Sampler

_KEEP = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def rebuild_with_sampler(loader: DataLoader[Any], sampler: Sampler[Any]) -> DataLoader[Any]:
    """A new ``DataLoader`` like ``loader`` but drawing indices from ``sampler``.

    A custom ``batch_sampler`` cannot be rebuilt generically; the loader is returned unchanged
    with a warning. Subclasses of ``DataLoader`` are rebuilt as plain ``DataLoader``s.
    """
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        warnings.warn(
            f"the loader uses a custom batch_sampler ({type(batch_sampler).__name__}); its "
            f"sampler cannot be replaced, so it is used as is.",
            stacklevel=3,
        )
        return loader
    if type(loader) is not DataLoader:
        warnings.warn(
            f"{type(loader).__name__} is rebuilt as a plain DataLoader to change its sampler.",
            stacklevel=3,
        )
    kwargs: dict[str, Any] = {k: getattr(loader, k) for k in _KEEP if hasattr(loader, k)}
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    batch_size = loader.batch_size
    drop_last = loader.drop_last
    if batch_sampler is not None and batch_size is None:
        batch_size, drop_last = batch_sampler.batch_size, batch_sampler.drop_last
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        shuffle=False,
        **kwargs,
    )
