"""Hyperparameter values at the edges: infinity, a list the model builder changes in place,
a fixed-length tuple, an optional bool, and one float declared with an int and a float
default."""

import itertools

import torch
from torch import nn

import lightkit as lk

BUILT: list[list[int]] = []  # the `layers` each build received


@lk.model
def net(layers: list[int] = [3]):  # noqa: B006 - the point: a mutable default
    layers.append(1)  # builds its layer list in place
    BUILT.append(list(layers))
    dims = [2, *layers]
    return nn.Sequential(*[nn.Linear(a, b) for a, b in itertools.pairwise(dims)])


@lk.train_data
def data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 2, generator=g), torch.randn(4, 1, generator=g)) for _ in range(2)]


@lk.training_step
def step(net, batch, scale: float = 1):
    x, y = batch
    return scale * ((net(x) - y) ** 2).mean()


@lk.configure_optimizers
def optim(net, lr: float = 0.1, max_norm: float = float("inf"), scale: float = 1.0):
    return torch.optim.SGD(net.parameters(), lr=lr)


@lk.on("fit_start")
def options(betas: tuple[float, float] = (0.9, 0.99), fused: bool | None = None):
    pass
