"""Fixtures for the multi-process tests: two gloo ranks on CPU, tiny float64 data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lightkit as lk
from tests.distributed.support import reference_flags


@pytest.fixture
def flags(tmp_path: Path) -> dict[str, Any]:
    return reference_flags(tmp_path)


@pytest.fixture(scope="session")
def spec() -> lk.TrainingSpec:
    from tests.distributed import programs

    return lk.collect(programs)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, spec: lk.TrainingSpec) -> dict[str, Any]:
    """One process: global batch 64 (and 32 x 4 accumulated) in DistributedSampler's order,
    what two ranks of 32 (of 16 x 4) must reproduce; and the same for three epochs."""
    base = reference_flags(tmp_path_factory.mktemp("reference"))
    one = spec.with_hparams(reference=True)
    plain = lk.Trainer(**base).fit(one.with_hparams(batch_size=64, val_batch_size=64))
    accumulated = lk.Trainer(**base, accumulate_grad_batches=4, check_val_every_n_epoch=None).fit(
        one.with_hparams(batch_size=32)
    )
    longer = lk.Trainer(**{**base, "max_epochs": 3}).fit(
        one.with_hparams(batch_size=64, val_batch_size=64)
    )
    return {"plain": plain, "accumulated": accumulated, "three_epochs": longer}
