"""Shared pieces of the engine tests: tiny data, a tiny MLP, a registry builder, and the
hand-written loops the trainer must match bitwise."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

#: Every default that needs a module another part of lightkit provides is off.
QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}

N_TRAIN, N_VAL, N_IN, N_OUT = 50, 20, 8, 3

_g = torch.Generator().manual_seed(1234)
X_TRAIN = torch.randn(N_TRAIN, N_IN, generator=_g)
Y_TRAIN = torch.randint(0, N_OUT, (N_TRAIN,), generator=_g)
X_VAL = torch.randn(N_VAL, N_IN, generator=_g)
Y_VAL = torch.randint(0, N_OUT, (N_VAL,), generator=_g)


def trainer(**flags: Any) -> lk.Trainer:
    """A trainer with the quiet defaults; ``flags`` override them."""
    return lk.Trainer(**{**QUIET, **flags})


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(N_IN, 16), nn.ReLU(), nn.Linear(16, N_OUT))


def train_loader(batch_size: int = 8, shuffle: bool = True) -> DataLoader:
    return DataLoader(TensorDataset(X_TRAIN, Y_TRAIN), batch_size=batch_size, shuffle=shuffle)


def val_loader(batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=batch_size)


def ce(net: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(net(x), y)


def registry(
    *,
    step: Callable[..., Any] | None = None,
    optim: Callable[..., Any] | None = None,
    val: Callable[..., Any] | bool | None = False,
    train_data: Callable[..., Any] | None = None,
    val_data: Callable[..., Any] | None = None,
    manual: bool = False,
) -> lk.Registry:
    """A registry with model ``net``, training data (shuffled, batch 8), an SGD optimizer and
    a cross-entropy step (``manual`` marks it manual); each piece can be replaced. ``val=True`` adds a validation step
    logging ``val/loss`` and the validation data."""
    reg = lk.Registry()

    def net():
        return make_net()

    def data():
        return train_loader()

    def train(net, batch):
        return ce(net, batch)

    def sgd(net):
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def validation(net, batch):
        lk.log("val/loss", ce(net, batch))

    def vdata():
        return val_loader()

    reg.model(net)
    reg.train_data(train_data or data)
    reg.training_step(step or train, manual=manual)
    reg.configure_optimizers(optim or sgd)
    if val:
        reg.validation_step(validation if val is True else val)
        reg.val_data(val_data or vdata)
    return reg


def raw_fit(
    *,
    seed: int = 0,
    epochs: int = 1,
    max_steps: int | None = None,
    accumulate: int = 1,
    clip: tuple[str, float] | None = None,
    make_optimizer: Callable[[nn.Module], Any] | None = None,
    scheduler_interval: str | None = None,
    limit_batches: int | None = None,
) -> nn.Module:
    """The hand-written loop the trainer must reproduce: seed, model, optimizer, loader."""
    torch.manual_seed(seed)
    net = make_net()
    if make_optimizer is None:
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        sched = None
    else:
        made = make_optimizer(net)
        opt, sched = made if isinstance(made, tuple) else (made, None)
    loader = train_loader()
    steps = 0
    for _ in range(epochs):
        n = len(loader) if limit_batches is None else min(limit_batches, len(loader))
        for i, (x, y) in enumerate(itertools.islice(loader, n)):
            loss = nn.functional.cross_entropy(net(x), y)
            if accumulate > 1:
                loss = loss / accumulate
            loss.backward()
            if (i + 1) % accumulate == 0 or i == n - 1:
                if clip is not None:
                    algorithm, value = clip
                    if algorithm == "norm":
                        nn.utils.clip_grad_norm_(net.parameters(), value)
                    else:
                        nn.utils.clip_grad_value_(net.parameters(), value)
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps += 1
                if sched is not None and scheduler_interval == "step":
                    sched.step()
                if max_steps is not None and steps >= max_steps:
                    return net
        if sched is not None and scheduler_interval == "epoch":
            sched.step()
    return net


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{name} differs"


def weights_differ(a: nn.Module, b: nn.Module) -> bool:
    return any(
        not torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
