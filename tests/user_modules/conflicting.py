"""Clashes with split_models.py and split_data.py when collected together."""

import lightkit as lk


@lk.model
def net(hidden: int = 32):
    return ("other mlp", hidden)


@lk.training_step
def regress(net, batch):
    return batch


@lk.train_data
def loader(batch_size: int = 128):
    return [batch_size]
