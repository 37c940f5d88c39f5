"""A user module written with the decorators: a manual training step over one optimizer."""

import torch

import lightkit as lk
from tests.engine.engine_helpers import ce, make_net, train_loader


@lk.model
def net():
    return make_net()


@lk.train_data
def data():
    return train_loader()


@lk.training_step(manual=True)
def train(net, batch, optimizer, ctx):
    optimizer.zero_grad()
    loss = ce(net, batch)
    ctx.backward(loss)
    optimizer.step()
    lk.log("loss", loss)


@lk.configure_optimizers
def optim(net, lr: float = 0.1):
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
