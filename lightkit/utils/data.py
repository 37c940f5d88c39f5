"""Rebuild a ``DataLoader`` around another sampler, keeping every other setting; cut a
loader so that every rank of a distributed run sees the same number of batches."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Sampler

from lightkit.errors import LightkitWarning, user_stacklevel

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


def loader_length(loader: Any) -> int | None:
    """``len(loader)``, or ``None`` for loaders without one (iterable datasets, generators)."""
    try:
        return len(loader)
    except (TypeError, NotImplementedError):  # IterableDataset loaders raise either
        return None
    except RuntimeError:  # a length known once iterated (Lightning's CombinedLoader)
        if isinstance(loader, DataLoader):
            raise  # a dataset's own __len__ failed (a file it reads): not "no length"
        return None


def rebuild_with_sampler(loader: DataLoader[Any], sampler: Sampler[Any]) -> DataLoader[Any]:
    """A new ``DataLoader`` like ``loader`` but drawing indices from ``sampler``.

    A custom ``batch_sampler`` cannot be rebuilt generically; the loader is returned unchanged
    with a warning. Subclasses of ``DataLoader`` are rebuilt as plain ``DataLoader``s.
    """
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        warnings.warn(
            LightkitWarning(
                f"the loader uses a custom batch_sampler ({type(batch_sampler).__name__}); its "
                f"sampler cannot be replaced, so it is used as is.",
                code="sampler-not-replaced",
            ),
            stacklevel=user_stacklevel(),
        )
        return loader
    if type(loader) is not DataLoader:
        warnings.warn(
            LightkitWarning(
                f"{type(loader).__name__} is rebuilt as a plain DataLoader to change its sampler.",
                code="loader-rebuilt",
            ),
            stacklevel=user_stacklevel(),
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


class EvenBatches:
    """``loader`` cut so every rank of a distributed run yields the same number of batches.

    With ``length``, each epoch yields the first ``length`` batches (the shortest rank's
    count). Without, the ranks agree before every batch whether any of them has run out
    (``any_done``, one small collective per batch): for loaders whose length is unknown.
    Other attributes (``sampler``, ``dataset``, ...) are the loader's.
    """

    def __init__(
        self,
        loader: Any,
        length: int | None = None,
        any_done: Callable[[bool], bool] | None = None,
    ) -> None:
        if (length is None) == (any_done is None):
            raise ValueError("EvenBatches needs exactly one of length= and any_done=")
        self.loader = loader
        self.length = length
        self.any_done = any_done

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("the length of this loader is not known")
        return self.length

    def __iter__(self) -> Iterator[Any]:
        if self.length is not None:
            yield from itertools.islice(self.loader, self.length)
            return
        assert self.any_done is not None
        batches = iter(self.loader)
        while True:
            batch = next(batches, _DONE)
            if self.any_done(batch is _DONE):
                return
            yield batch

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


_DONE = object()
