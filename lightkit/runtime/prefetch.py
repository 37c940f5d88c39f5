"""Copy the next batch to the GPU while the current step computes.

A training step on CUDA is queued, not run: the CPU returns from ``loss.backward()`` long
before the GPU is done. Reading batch ``i + 1`` and starting its host-to-device copy on a side
stream before step ``i`` is handed to the loop lets the copy run under step ``i``'s kernels
instead of in front of step ``i + 1``'s.

Reading ahead is done only when it cannot change what a run draws from the random generators:
the loader must be a ``DataLoader`` with worker processes. Workers draw from their own
generators (seeded when the epoch's iterator is created, as in a hand-written loop), so the
main process draws the same numbers in the same order whether it reads one batch ahead or not.
With ``num_workers=0`` the dataset's ``__getitem__`` runs in the main process, and reading
ahead would move its draws (a random crop from the global generator) in front of the step's
(dropout on a CPU tensor, a ``torch.randint`` in the step); there, each batch is copied when
it is used, with ``non_blocking=True``, which is asynchronous when the loader pins memory
(``pin_memory=True``).

The one visible difference: when training stops mid-epoch (``max_steps``, ``should_stop``,
``max_time``) the loader has produced one batch more than the loop used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from lightkit.utils.apply import apply_to_tensors

T = TypeVar("T")
S = TypeVar("S")


def reads_ahead_safely(loader: Any) -> bool:
    """True for a ``DataLoader`` whose batches come from worker processes."""
    from torch.utils.data import DataLoader

    return isinstance(loader, DataLoader) and loader.num_workers > 0


def one_ahead(items: Iterator[T], start: Callable[[T], S], finish: Callable[[S], T]) -> Iterator[T]:
    """Yield ``finish(start(item))`` for each item, calling ``start`` on the next item before
    yielding the current one. An error reading the next item is raised after the current one
    was yielded, where a plain loop would have met it."""
    it = iter(items)
    try:
        current = start(next(it))
    except StopIteration:
        return
    while True:
        try:
            following = start(next(it))
        except StopIteration:
            yield finish(current)
            return
        except BaseException:
            yield finish(current)
            raise
        yield finish(current)
        current = following


def _as_is(obj: Any) -> Any:
    return obj


def cuda_prefetch(
    batches: Iterator[tuple[int, Any]], device: torch.device
) -> Iterator[tuple[int, Any]]:
    """``(batch_idx, batch)`` pairs with every CPU tensor of each batch copied to ``device``,
    the next batch's copy running on a side stream while the current batch is in use."""
    side = torch.cuda.Stream(device)
    main = torch.cuda.current_stream(device)

    def copy(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cpu":
            return t
        if not t.is_pinned():  # pageable memory cannot be copied asynchronously
            t = t.pin_memory()
        return t.to(device, non_blocking=True)

    def start(item: tuple[int, Any]) -> tuple[int, Any, torch.cuda.Event]:
        idx, batch = item
        with torch.cuda.stream(side):
            moved = apply_to_tensors(batch, copy, _as_is)  # a PackedSequence moves later
            done = torch.cuda.Event()
            done.record(side)
        return idx, moved, done

    def use(t: torch.Tensor) -> torch.Tensor:
        # Made on the side stream, used on the main one: the allocator must not reuse the
        # memory before the main stream's work on it is done.
        if t.device.type == "cuda":
            t.record_stream(main)
        return t

    def finish(started: tuple[int, Any, torch.cuda.Event]) -> tuple[int, Any]:
        idx, moved, done = started
        main.wait_event(done)
        return idx, apply_to_tensors(moved, use, _as_is)

    return one_ahead(batches, start, finish)
