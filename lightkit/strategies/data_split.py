"""Each rank's share of a loader, for DDP and FSDP.

A ``DataLoader`` with a ``RandomSampler`` or ``SequentialSampler`` is rebuilt around a
``DistributedSampler`` (``shuffle`` kept; ``seed`` the Trainer's ``seed``, else 0; the epoch
set by the loop each epoch, so the order changes per epoch as ``DistributedSampler`` does).
``drop_last=False`` (the default) pads the last rank's share by repeating samples from the
start, so every rank runs the same number of batches (an evaluation loader warns: its metrics
count those samples twice); ``drop_last=True`` drops the tail instead. A loader the strategy cannot split (an ``IterableDataset``, a custom sampler or
batch sampler, a plain iterable) is left alone with a warning: every rank iterates it whole.
Ranks that would run different numbers of batches are cut to the shortest, so a run never
hangs waiting for a rank that has run out.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightkit.errors import LightkitWarning, user_stacklevel

if TYPE_CHECKING:
    from lightkit.strategies.process_group import ProcessGroup


def distribute(
    group: ProcessGroup, loader: Any, evaluation: bool = False, name: str | None = None
) -> Any:
    """This rank's share of ``loader`` (see the module docstring); ``evaluation``: a
    validation, test or predict loader, whose padding repeats samples in the figures;
    ``name``: whose loader it is, for the warnings."""
    whose = f"{name}: " if name else ""
    if group.world_size == 1 or not group.active:
        return loader
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        DistributedSampler,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
    )

    from lightkit.utils.data import rebuild_with_sampler

    if not isinstance(loader, DataLoader):
        why = f"is a {type(loader).__name__}, not a DataLoader"
    elif isinstance(loader.dataset, IterableDataset):
        why = (
            "reads an IterableDataset, which must split itself by rank "
            "(torch.distributed.get_rank(), or ctx.rank)"
        )
    else:
        batch_sampler = loader.batch_sampler
        # A custom batch sampler need not have ``.sampler``: then it cannot be split.
        sampler = (
            getattr(batch_sampler, "sampler", None) if batch_sampler is not None else loader.sampler
        )
        if isinstance(sampler, DistributedSampler):
            return loader  # split already, by the user
        plain = type(sampler) in (RandomSampler, SequentialSampler)
        if isinstance(sampler, RandomSampler):
            plain = plain and not sampler.replacement and sampler._num_samples is None
        if plain and (batch_sampler is None or type(batch_sampler) is BatchSampler):
            shuffle = isinstance(sampler, RandomSampler)
            split: DistributedSampler[Any] = DistributedSampler(
                loader.dataset,
                num_replicas=group.world_size,
                rank=group.rank,
                shuffle=shuffle,
                seed=group.seed,
                drop_last=loader.drop_last,
            )
            padded = split.total_size - len(loader.dataset)  # type: ignore[arg-type]
            if evaluation and padded > 0 and group.rank == 0:
                warnings.warn(
                    LightkitWarning(
                        f"{whose}{len(loader.dataset)} evaluation samples over {group.world_size} ranks: "  # type: ignore[arg-type]
                        f"DistributedSampler repeats {padded} of them so that every rank runs "
                        f"the same batches, and epoch metrics count those twice. Evaluate with "
                        f"devices=1 for exact figures, or use a dataset whose size is a multiple "
                        f"of {group.world_size}.",
                        code="uneven-eval-split",
                    ),
                    stacklevel=user_stacklevel(),
                )
            return rebuild_with_sampler(loader, split)
        why = f"uses a {type(batch_sampler or sampler).__name__}, which cannot be split"
    if group.rank == 0:
        warnings.warn(
            LightkitWarning(
                f"{whose}the loader {why}; every rank iterates all of it. Give a DataLoader over a "
                f"map-style dataset to have it split across the {group.world_size} ranks.",
                code="loader-not-split",
            ),
            stacklevel=user_stacklevel(),
        )
    return even(group, loader, whose)


def even(group: ProcessGroup, loader: Any, whose: str = "") -> Any:
    """``loader`` cut so that every rank runs the same number of batches."""
    from lightkit.utils.data import EvenBatches, loader_length

    length = loader_length(loader)
    if group.reduce_any(length is None):  # a rank cannot tell: agree batch by batch
        return EvenBatches(loader, any_done=group.reduce_any)
    assert length is not None
    lengths = group.all_gather(torch.tensor(length, dtype=torch.int64)).tolist()
    if len(set(lengths)) == 1:
        return loader
    if group.rank == 0:
        warnings.warn(
            LightkitWarning(
                f"{whose}the ranks' loaders have different lengths {lengths}; every rank runs "
                f"{min(lengths)} batches per epoch so that none waits forever.",
                code="uneven-loaders",
            ),
            stacklevel=user_stacklevel(),
        )
    return EvenBatches(loader, length=min(lengths))


__all__ = ["distribute", "even"]
