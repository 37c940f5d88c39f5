"""A resumed run carries on with the metrics the interrupted one had logged: what callbacks read
at the epoch's end (an ``EarlyStopping`` monitor logged before the save) and the training
step's epoch aggregates of an epoch that began before the save. Its rows in ``metrics.csv``
continue the interrupted run's exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

BATCHES = 4  # 16 samples, batch size 4
FAIL_AT: list[tuple[int, int]] = []  # (epoch, batch_idx) whose train_batch_start raises


@lk.model
def net() -> nn.Module:
    return nn.Linear(3, 1)


def _data(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(4 * BATCHES, 3, generator=g), torch.randn(4 * BATCHES, 1))


@lk.train_data
def train_loader() -> DataLoader:
    return DataLoader(_data(0), batch_size=4)


@lk.val_data
def val_loader() -> DataLoader:
    return DataLoader(_data(1), batch_size=8)


@lk.training_step
def train(net, batch):
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    lk.log("train/loss", loss, on_epoch=True)  # train/loss_step and train/loss_epoch
    lk.log("train/sum", loss, on_step=False, on_epoch=True, reduce="sum")
    return loss


@lk.validation_step
def val(net, batch):
    x, y = batch
    lk.log("val_loss", nn.functional.mse_loss(net(x), y))


@lk.configure_optimizers
def optim(net):
    return torch.optim.SGD(net.parameters(), lr=0.05)


@lk.on("train_batch_start")
def interrupt(ctx, batch_idx):
    if FAIL_AT and FAIL_AT[0] == (ctx.epoch, batch_idx):
        FAIL_AT.clear()
        raise RuntimeError("injected failure")


SPEC = lk.collect(__name__)


def trainer(root: Path) -> lk.Trainer:
    return lk.Trainer(
        max_epochs=3,
        seed=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        logger=lk.CSVLogger(flush_every_n_steps=1),
        log_every_n_steps=1,
        callbacks=[
            lk.ModelCheckpoint(every_n_train_steps=1, save_last=True, save_top_k=0),
            # Checked as each epoch ends: it reads the validation's value, logged before the
            # step's checkpoint was written.
            lk.EarlyStopping(monitor="val_loss", strict=True, patience=5),
        ],
    )


def rows(run_dir: Path | None) -> list[dict[str, str]]:
    assert run_dir is not None
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    "fail_at",
    [(1, 0), (1, 2)],
    ids=["saved-at-an-epochs-last-batch", "saved-inside-an-epoch"],
)
def test_resume_continues_the_logged_metrics(tmp_path, fail_at):
    ref = trainer(tmp_path / "ref").fit(SPEC)
    FAIL_AT[:] = [fail_at]
    with pytest.raises(RuntimeError, match="injected failure"):
        trainer(tmp_path / "run").fit(SPEC)
    first_dir = tmp_path / "run/lightkit_logs/test_resume_metrics/version_0"
    resumed = trainer(tmp_path / "run").fit(SPEC, ckpt_path="last")

    assert resumed.metrics == ref.metrics
    assert torch.equal(resumed.models["net"].weight, ref.models["net"].weight)
    # The interrupted run's rows up to its checkpoint, then the resumed run's, are the rows
    # of the run that never stopped: the epoch values of the resumed epoch included. (Saved
    # at an epoch's last batch, the resumed run closes that epoch again: its row for that
    # step repeats the epoch values the interrupted run wrote after the save.)
    saved_step = fail_at[0] * BATCHES + fail_at[1]
    merged: dict[int, dict[str, str]] = {}
    before = [r for r in rows(first_dir) if int(r["step"]) < saved_step]
    for row in before + rows(resumed.log_dir):
        merged.setdefault(int(row["step"]), {}).update(row)
    expected = rows(ref.log_dir)
    assert list(merged.values()) == expected
    epoch_rows = [r for r in expected if "train/loss_epoch" in r]
    assert [int(r["epoch"]) for r in epoch_rows] == [0, 1, 2]
    assert all("train/sum" in r and "val_loss" in r for r in epoch_rows)
