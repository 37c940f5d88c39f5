"""A small CNN on scikit-learn's bundled 8x8 handwritten digits: lightkit's main example.

The default run (15 epochs, well under two minutes on two CPU cores) reaches 98% test
accuracy, writes TensorBoard and CSV logs and a checkpoint under ``lightkit_logs/digits/``, then
tests the best checkpoint. The data ships with scikit-learn (``pip install -e ".[examples]"``);
nothing is downloaded.

    python examples/digits.py                                   # CPU, float32
    python examples/digits.py --precision bf16-mixed --channels 64
    python examples/digits.py --strategy ddp --devices 2       # two processes
    python examples/digits.py --plot docs/digits_loss.png      # training curves from metrics.csv
    lightkit fit examples/digits.py --lr 1e-3 --max-epochs 5   # the same functions, via the CLI

Every function below is a plain function: ``cnn(channels=8)`` builds a network, and
``train(model, batch)`` returns a loss, with or without lightkit around them.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

SPLIT_SEED = 0  # the test set is the same whatever the training seed


@functools.lru_cache(maxsize=1)
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 1797 digits as ``(N, 1, 8, 8)`` floats in [0, 1], split 70/10/20, seeded."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test, n_val = int(0.2 * len(y)), int(0.1 * len(y))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}


@lk.model
def cnn(channels: int = 32, hidden: int = 128, dropout: float = 0.2) -> nn.Module:
    """Three 3x3 conv blocks (8x8 -> 4x4 -> 2x2) and a two-layer head."""
    c = channels

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, c),
        *block(c, 2 * c),
        nn.MaxPool2d(2),
        *block(2 * c, 2 * c),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * c * 4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


@lk.train_data
def train_loader(batch_size: int = 64, subset: int = 0) -> DataLoader:
    """Shuffled training images; ``subset`` > 0 keeps only that many (smoke runs)."""
    x, y = splits()["train"]
    if subset:
        x, y = x[:subset], y[:subset]
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


@lk.val_data
def val_loader(batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(*splits()["val"]), batch_size=batch_size)


@lk.test_data
def test_loader(batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(*splits()["test"]), batch_size=batch_size)


@lk.predict_data
def predict_loader(batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(splits()["test"][0]), batch_size=batch_size)


@lk.training_step
def train(cnn, batch):
    x, y = batch
    loss = F.cross_entropy(cnn(x), y)
    lk.log("train/loss", loss, prog_bar=True)
    return loss


def evaluate(cnn: nn.Module, batch: Any, stage: str) -> None:
    x, y = batch
    logits = cnn(x)
    # sync_dist: with --devices 2, the epoch's figures cover both ranks' shares of the data.
    lk.log(f"{stage}/loss", F.cross_entropy(logits.float(), y), sync_dist=True)
    lk.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True)


@lk.validation_step
def validate(cnn, batch):
    evaluate(cnn, batch, "val")


@lk.test_step
def test(cnn, batch):
    evaluate(cnn, batch, "test")


@lk.predict_step
def predict(cnn, batch):
    (x,) = batch
    return cnn(x).argmax(1)


@lk.configure_optimizers
def optimizer(cnn, lr: float = 3e-3, weight_decay: float = 1e-4):
    opt = torch.optim.AdamW(cnn.parameters(), lr=lr, weight_decay=weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss"}}


def plot_curves(metrics_csv: Path, out: Path) -> Path:
    """Training loss per step and validation accuracy per epoch, from ``metrics.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from examples._common import read_metrics_csv

    series = read_metrics_csv(metrics_csv)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    steps, loss = zip(*series["train/loss"], strict=True)
    ax.plot(steps, loss, lw=1, color="tab:blue", label="train loss")
    if "val/loss" in series:
        steps, val_loss = zip(*series["val/loss"], strict=True)
        ax.plot(steps, val_loss, "s-", ms=3, lw=1, color="tab:green", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    steps, acc = zip(*series["val/acc"], strict=True)
    ax2.plot(steps, [100 * a for a in acc], "o-", ms=3, color="tab:orange", label="val accuracy")
    ax2.set_ylabel("validation accuracy (%)")
    ax2.set_ylim(min(90.0, 100 * min(acc)), 100)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    fig.legend(lines, [str(line.get_label()) for line in lines], loc="lower center", ncol=3)
    ax.set_title("examples/digits.py")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit, test the checkpoint with the best validation accuracy, print the results."""
    from examples import _common

    spec, flags, args = _common.command_line(
        lk.collect(),
        argv,
        doc=__doc__,
        trainer={"max_epochs": 15, "seed": 0, "log_every_n_steps": 5},
        smoke_hparams={"subset": 256},
        smoke_trainer={"max_epochs": 2, "log_every_n_steps": 1},
        extra=lambda p: p.add_argument("--plot", type=Path, help="write training curves here"),
    )
    if flags.get("enable_checkpointing", True):
        # Keep the checkpoint with the best validation accuracy (and last.ckpt), test that one.
        best = lk.ModelCheckpoint(monitor="val/acc", mode="max", save_last=True)
        flags["callbacks"] = [best]
    trainer = lk.Trainer(**flags)
    start = time.perf_counter()
    fitted = trainer.fit(spec)
    results: dict[str, Any] = {}
    if fitted.best_checkpoint is not None:
        tested = trainer.test(spec, ckpt_path=fitted.best_checkpoint)
        results["test_acc"] = tested.metrics["test/acc"]
        results["test_loss"] = tested.metrics["test/loss"]
    results |= {
        "val_acc": fitted.metrics["val/acc"],
        "train_loss": fitted.metrics["train/loss"],
        "epochs": fitted.epoch,
        "steps": fitted.global_step,
        "wall_s": round(time.perf_counter() - start, 1),
        "log_dir": str(fitted.log_dir),
        "checkpoint": str(fitted.best_checkpoint),
    }
    if args.plot is not None and fitted.log_dir is not None:
        results["plot"] = str(plot_curves(fitted.log_dir / "metrics.csv", args.plot))
    _common.report("digits: results", results)
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file, so the spec records importable names
    # ("examples.digits:train") that checkpoints and other processes (devices=N) can load.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.digits import main

    main()
