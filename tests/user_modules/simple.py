"""The example from DESIGN.md's public API, without touching torch at import time."""

import lightkit as lk


@lk.model
def net(hidden: int = 64):
    return ("mlp", 32, hidden, 10)


@lk.train_data
def train_loader(batch_size: int = 64):
    return [(batch_size, "x", "y")]


@lk.val_data
def val_loader(batch_size: int = 64):
    return [(batch_size, "x", "y")]


@lk.training_step
def train(net, batch):
    x, y = batch
    return (net, x, y)


@lk.validation_step
def val(net, batch):
    return None


@lk.configure_optimizers
def optim(net, lr: float = 1e-3):
    return ("adamw", net, lr)
