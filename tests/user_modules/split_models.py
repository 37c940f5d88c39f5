"""The model half of a spec split across two modules (see split_data.py)."""

import lightkit as lk


@lk.model
def net(hidden: int = 32):
    return ("mlp", hidden)


@lk.training_step
def train(net, batch, label_smoothing: float = 0.0):
    return batch


@lk.configure_optimizers
def optim(net, lr: float = 1e-2):
    return ("sgd", lr)
