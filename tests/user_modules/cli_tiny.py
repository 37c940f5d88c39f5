"""A tiny regression program for the command line's tests, with a hyperparameter of every kind
a flag can carry. Its steps append their names to ``EVENTS`` (see ``cli_events.py``)."""

from __future__ import annotations

import enum
from typing import Literal, Optional

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

#: What ran, in order (the steps here and the hooks of ``cli_events`` append to it).
EVENTS: list[str] = []


class Init(enum.Enum):
    ZEROS = "zeros"
    DEFAULT = "default"


@lk.model
def net(
    hidden: int = Field(4, ge=1, description="hidden units"),
    activation: Literal["relu", "tanh"] = "relu",
    init: Init = Init.DEFAULT,
) -> nn.Module:
    act = nn.ReLU() if activation == "relu" else nn.Tanh()
    module = nn.Sequential(nn.Linear(3, hidden), act, nn.Linear(hidden, 1))
    if init is Init.ZEROS:
        for p in module.parameters():
            nn.init.zeros_(p)
    return module


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


@lk.train_data
def train_loader(batch_size: int = 4, num_samples: int = 24, shuffle: bool = True) -> DataLoader:
    return DataLoader(_data(num_samples, 0), batch_size=batch_size, shuffle=shuffle)


@lk.val_data
def val_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(_data(8, 1), batch_size=batch_size)


@lk.training_step
def train(net, batch, batch_idx):
    EVENTS.append("train")
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    lk.log("train/loss", loss)
    return loss


@lk.validation_step
def val(net, batch):
    EVENTS.append("val")
    x, y = batch
    lk.log("val/loss", nn.functional.mse_loss(net(x), y))


@lk.configure_optimizers
def optim(
    net,
    lr: float = Field(0.05, gt=0, description="learning rate"),
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: Optional[float] = None,
    tags: list[str] = ["a"],  # noqa: B006
):
    return torch.optim.AdamW(net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay or 0)


@lk.test_data
def test_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(_data(8, 2), batch_size=batch_size)


@lk.test_step
def test(net, batch):
    x, y = batch
    lk.log("test/loss", nn.functional.mse_loss(net(x), y))


@lk.predict_data
def predict_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(_data(8, 3), batch_size=batch_size)


@lk.predict_step
def predict(net, batch):
    x, _ = batch
    return net(x)
