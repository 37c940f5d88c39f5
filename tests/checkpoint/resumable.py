"""A small run that exercises every source of randomness a resume must reproduce: shuffling
(with or without an explicit generator), dropout, a step-wise scheduler, validation drawing
from the global generator, and a dataset that returns its indices."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightkit as lk

N_IN, N_OUT = 6, 3

#: Test controls, set by the tests (and by child processes from the environment).
CONTROL: dict = {
    "fail_at": None,
    "kill_at": None,
    "signal_at": None,
    "signal": None,
    "nan_at": None,
    "stop_at": None,
}
#: Every (epoch, sample index) the training step saw, in order.
SEEN: list[tuple[int, int]] = []
#: Per-batch losses as floats, in order (the values lk.log recorded).
LOSSES: list[float] = []


class IndexedData(Dataset):
    """Sample i is a fixed random vector, a label, and i itself."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, N_IN, generator=g)
        self.y = torch.randint(0, N_OUT, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        # Random augmentations drawn from the global generators (torch, numpy, python) of the
        # process that loads the sample.
        noise = 0.01 * torch.randn(N_IN) + 0.001 * float(np.random.rand() + random.random())
        return self.x[i] + noise, self.y[i], i


@lk.model
def net(hidden: int = 16, dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_IN, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, N_OUT)
    )


@lk.train_data
def train_loader(
    batch_size: int = 4, num_samples: int = 40, generator: bool = False, num_workers: int = 0
) -> DataLoader:
    g = torch.Generator().manual_seed(7) if generator else None
    return DataLoader(
        IndexedData(num_samples, 0),
        batch_size=batch_size,
        shuffle=True,
        generator=g,
        num_workers=num_workers,
        persistent_workers=False,
    )


@lk.val_data
def val_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(IndexedData(12, 1), batch_size=batch_size, shuffle=True)


@lk.training_step
def train(net, batch, ctx):
    x, y, idx = batch
    SEEN.extend((ctx.epoch, int(i)) for i in idx)
    loss = nn.functional.cross_entropy(net(x), y)
    if CONTROL["nan_at"] is not None and ctx.global_step == CONTROL["nan_at"][0]:
        loss = loss * CONTROL["nan_at"][1]
    lk.log("train/loss", loss)
    LOSSES.append(float(loss.detach()))
    return loss


@lk.validation_step
def val(net, batch):
    x, y, _ = batch
    lk.log("val/loss", nn.functional.cross_entropy(net(x), y))


@lk.configure_optimizers
def optim(net, lr: float = 0.05):
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@lk.on("train_batch_start")
def interrupt(ctx, batch_idx):
    import os
    import signal

    at = (ctx.epoch, batch_idx)
    if CONTROL["fail_at"] == at:
        raise RuntimeError(f"injected failure at {at}")
    if CONTROL["kill_at"] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    if CONTROL["signal_at"] == at:
        os.kill(os.getpid(), getattr(signal, CONTROL["signal"] or "SIGTERM"))
    if CONTROL["stop_at"] == at:
        ctx.should_stop = True
    # Ranks started by the launcher see only the environment: "epoch,batch_idx,rank".
    ranked = os.environ.get("LK_TEST_SIGTERM_AT")
    if ranked and tuple(map(int, ranked.split(","))) == (*at, ctx.rank):
        os.kill(os.getpid(), signal.SIGTERM)


def reset() -> None:
    for key in CONTROL:
        CONTROL[key] = None
    SEEN.clear()
    LOSSES.clear()
