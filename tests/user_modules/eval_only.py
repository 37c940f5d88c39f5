"""A spec with no training step: valid, usable for validate, not for fit."""

import lightkit as lk


@lk.model
def net(hidden: int = 16):
    return hidden


@lk.validation_step
def val(net, batch):
    return None


@lk.val_data
def val_loader(batch_size: int = 8):
    return [batch_size]
