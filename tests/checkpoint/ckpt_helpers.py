"""Shared pieces of the checkpoint tests: the run flags, reference (uninterrupted) runs, and
exact comparisons of weights, optimizer and scheduler states and logged losses."""

from __future__ import annotations

import csv
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import lightkit as lk
from tests.checkpoint import resumable

SPEC = lk.collect(resumable)
EPOCHS = 3
BATCHES = 10  # 40 samples, batch size 4


def flags(root: Path | str, **extra: Any) -> dict[str, Any]:
    """Quiet trainer flags writing into ``root``; every step logged and flushed."""
    return {
        "max_epochs": EPOCHS,
        "seed": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
        "logger": lk.CSVLogger(flush_every_n_steps=1),
        "log_every_n_steps": 1,
        **extra,
    }


def every_step(**kwargs: Any) -> list[lk.Callback]:
    """A checkpoint after every optimizer step (last.ckpt only)."""
    return [lk.ModelCheckpoint(every_n_train_steps=1, save_last=True, save_top_k=0, **kwargs)]


def snapshot(trainer: lk.Trainer, result: lk.Result) -> dict[str, Any]:
    """Everything a resumed run must reproduce bitwise."""
    engine = trainer.last_engine
    assert engine is not None
    return {
        "weights": {k: v.clone() for k, v in result.models["net"].state_dict().items()},
        "optimizer": engine.optimizers[0].state_dict(),
        "scheduler": engine.schedulers[0].scheduler.state_dict(),
        "global_step": result.global_step,
        "epoch": result.epoch,
    }


@functools.cache
def reference(hparams: tuple[tuple[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    """The uninterrupted run (cached per configuration)."""
    root = Path(tempfile.mkdtemp(prefix="lk-ref-"))
    try:
        resumable.reset()
        trainer = lk.Trainer(**flags(root, **extra))
        result = trainer.fit(SPEC.with_hparams(**dict(hparams)))
        out = snapshot(trainer, result)
        out["rows"] = loss_rows(result.log_dir)
        out["seen"] = list(resumable.SEEN)
        out["val"] = result.metrics["val/loss"]
        return out
    finally:
        resumable.reset()
        shutil.rmtree(root, ignore_errors=True)


def loss_rows(run_dir: Path | None) -> list[tuple[int, float]]:
    """``(step, train/loss)`` of every row of a run's ``metrics.csv`` that logged a loss."""
    assert run_dir is not None
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            (int(row["step"]), float(row["train/loss"]))
            for row in csv.DictReader(f)
            if row.get("train/loss")
        ]


def assert_equal(a: Any, b: Any, where: str = "state") -> None:
    """Exact equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(ref: dict[str, Any], got: dict[str, Any]) -> None:
    for key in ("weights", "optimizer", "scheduler", "global_step", "epoch"):
        assert_equal(ref[key], got[key], key)


def stored_position(path: Path) -> int:
    """Training batches a checkpoint had consumed in all."""
    ckpt = torch.load(path, weights_only=True)
    return int(ckpt["loop"]["batches_seen"])
