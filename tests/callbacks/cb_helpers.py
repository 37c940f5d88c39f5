"""A tiny regression run for the callback and logger tests: data, an MLP, a registry
builder and a quiet trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

N_IN = 4
_g = torch.Generator().manual_seed(0)
X = torch.randn(64, N_IN, generator=_g)
Y = X.sum(1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=_g)

#: Defaults that print or write are off; a test turns on what it checks.
QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
    "num_sanity_val_steps": 0,
    "max_epochs": 2,
    "seed": 0,
}


def trainer(root: Path | None = None, **flags: Any) -> lk.Trainer:
    """A quiet trainer writing under ``root``; ``flags`` override the quiet defaults."""
    if root is not None:
        flags.setdefault("default_root_dir", root)
    return lk.Trainer(**{**QUIET, **flags})


def make_net(hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(N_IN, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(X[:n], Y[:n]), batch_size=batch_size)


def mse_step(net: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    lk.log("train/loss", loss, prog_bar=True)
    return loss


def val_step(net: nn.Module, batch: Any) -> None:
    x, y = batch
    lk.log("val/loss", nn.functional.mse_loss(net(x), y), prog_bar=True)


def sgd(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=0.05)


def spec(
    *,
    step: Callable[..., Any] = mse_step,
    val: Callable[..., Any] | None = val_step,
    optim: Callable[..., Any] = sgd,
    n_train: int = 32,
    n_val: int = 16,
    batch_size: int = 8,
    hooks: dict[str, Callable[..., Any]] | None = None,
    net: Callable[..., nn.Module] = make_net,
    more_models: dict[str, Callable[..., nn.Module]] | None = None,
    data: Callable[..., Any] | None = None,
) -> lk.TrainingSpec:
    """A spec over the tiny data: ``n_train // batch_size`` training batches per epoch."""
    reg = lk.Registry()
    reg.model(net, name="net")
    for name, fn in (more_models or {}).items():
        reg.model(fn, name=name)

    def train_data() -> DataLoader:
        return loader(n_train, batch_size)

    def val_data() -> DataLoader:
        return loader(n_val, batch_size)

    reg.train_data(data or train_data)
    reg.training_step(step)
    reg.configure_optimizers(optim)
    if val is not None:
        reg.val_data(val_data)
        reg.validation_step(val)
    for event, fn in (hooks or {}).items():
        reg.on(event)(fn)
    return lk.collect(reg)
