"""``EpochIterator``: one loader's batches for one epoch.

Owns what the loops should not: ``limit_*_batches`` (int or fraction), ``set_epoch`` on
distributed samplers, and the resume position (batches already consumed in this epoch).
A full epoch of a sized loader is its ``len()`` batches (Lightning's rule), then
:meth:`EpochIterator.overran` reads once more, as the end of ``for batch in loader:`` does, so
samplers and their generators advance as they do in a hand-written loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lightkit.errors import ConfigError
from lightkit.utils.data import loader_length


def resolve_limit(length: int | None, limit: int | float | None, flag: str) -> int | None:
    """Batches to run: an int limit is a count, a float a fraction of ``length``, ``None`` all.

    ``None`` means "until the loader ends" (unknown length, no limit).
    """
    if limit is None:
        return length
    if isinstance(limit, float):
        if limit == 1.0:
            return length
        if length is None:
            raise ConfigError(
                f"{flag}={limit} is a fraction, but the loader has no length (no __len__: a "
                f"generator, or an IterableDataset without one). Give {flag} an int number "
                f"of batches instead.",
                code="fraction-of-unsized-loader",
            )
        return 0 if limit == 0.0 else max(1, int(length * limit))
    return limit if length is None else min(limit, length)


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's samplers which epoch starts (``DistributedSampler`` reshuffles)."""
    for sampler in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


_END = object()


class EpochIterator:
    """Batches of one loader, epoch by epoch. ``num_batches`` is ``None`` when unknown."""

    def __init__(
        self,
        loader: Iterable[Any],
        limit: int | float | None = 1.0,
        flag: str = "limit_train_batches",
    ):
        self.loader = loader
        self.length = loader_length(loader)
        self.num_batches = resolve_limit(self.length, limit, flag)
        #: The open full epoch's iterator, for :meth:`overran` (until :meth:`release`), and
        #: what its one more read found.
        self._batches: Iterator[Any] | None = None
        self._more = False

    def __len__(self) -> int:
        return self.num_batches if self.num_batches is not None else 0

    @property
    def is_full(self) -> bool:
        """True when an epoch runs the loader to its end."""
        return self.num_batches is None or self.num_batches == self.length

    def epoch(
        self, epoch: int, skip: int = 0, on_skipped: Callable[[], None] | None = None
    ) -> Iterator[tuple[int, Any]]:
        """``(batch_idx, batch)`` pairs for ``epoch``, starting after ``skip`` consumed batches.

        With ``on_skipped``, the consumed batches are read now (so the loader advances exactly
        as it did the first time), then ``on_skipped()`` runs, before the first batch is read.
        """
        set_epoch(self.loader, epoch)
        self._batches, self._more = None, False
        if self.num_batches == 0:
            return iter(())
        stop = self.num_batches  # None: until the loader ends (its length is unknown)
        batches = iter(self.loader)
        if self.is_full:
            # A sized loader's epoch is its len() batches, as Lightning's: the loop schedules
            # the epoch's end (validation, the last accumulation window) from it. Kept for
            # overran(), until release().
            self._batches = batches
        if skip == 0 and stop is None:
            return enumerate(batches)
        if on_skipped is None:
            return zip(itertools.count(skip), itertools.islice(batches, skip, stop))
        for _ in itertools.islice(batches, skip):
            pass
        on_skipped()
        rest = None if stop is None else max(stop - skip, 0)
        return zip(itertools.count(skip), itertools.islice(batches, rest))

    def overran(self) -> bool:
        """After a full epoch's batches: whether the loader had more (a sized loader's beyond
        its ``len()``, which the epoch dropped; an unsized one's after a stop). Reads the next
        batch once, as the end of a ``for`` loop over the loader would (asked again, the same
        answer); ``False`` when no full epoch is open."""
        if self._batches is not None:
            batches, self._batches = self._batches, None
            self._more = next(batches, _END) is not _END
        return self._more

    def release(self) -> None:
        """Drop the epoch's iterator (and with it a ``DataLoader``'s worker processes)."""
        self._batches = None


def val_every(num_batches: int | None, interval: int | float, per_epoch: bool = True) -> float:
    """Training batches between validations: an int is a count, a float a fraction of the
    epoch (``1.0``: once, at its end). ``inf``: validate when the epoch ends.

    ``per_epoch`` (``check_val_every_n_epoch`` is set): the count restarts each epoch, so an
    int longer than the epoch would never validate, and is an error (as in Lightning).
    """
    if isinstance(interval, int):
        if per_epoch and num_batches is not None and interval > num_batches:
            raise ConfigError(
                f"val_check_interval={interval} is more than the {num_batches} training batches "
                f"of an epoch, so validation would never run. Lower it, set "
                f"check_val_every_n_epoch=None to count batches across epochs, or set "
                f"limit_val_batches=0 to turn validation off.",
                code="val-check-interval-too-long",
            )
        return float(interval)
    if num_batches is None:
        if interval != 1.0:
            raise ConfigError(
                f"val_check_interval={interval} is a fraction of an epoch, but the training "
                f"loader has no length. Use an int number of batches.",
                code="fraction-of-unsized-loader",
            )
        return math.inf
    return float(max(1, int(num_batches * interval)))
