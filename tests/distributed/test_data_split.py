"""How a loader is split across ranks, checked without starting any: this rank's share."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightkit.strategies.data_split import distribute


def group(rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(world_size=2, rank=rank, active=True, seed=0)


def loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=4)


def test_a_padded_evaluation_split_says_which_samples_count_twice():
    with pytest.warns(UserWarning, match="repeats 1 of them") as seen:
        split = distribute(group(), loader(11), evaluation=True)  # type: ignore[arg-type]
    assert "Evaluate with devices=1 for exact figures" in str(seen[0].message)
    assert isinstance(split.sampler, DistributedSampler) and len(split.sampler) == 6


@pytest.mark.parametrize(
    ("n", "evaluation", "rank"),
    [(12, True, 0), (11, False, 0), (11, True, 1)],
    ids=["even", "training", "not-rank-0"],
)
def test_no_warning_where_nothing_is_counted_twice_or_rank_0_speaks(n, evaluation, rank):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = distribute(group(rank), loader(n), evaluation=evaluation)  # type: ignore[arg-type]
    assert isinstance(split.sampler, DistributedSampler)
