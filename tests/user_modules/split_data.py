"""The data half of a spec split across two modules (see split_models.py)."""

import lightkit as lk


@lk.train_data
def train_loader(batch_size: int = 16, shuffle: bool = True):
    return [batch_size, shuffle]


@lk.val_data
def val_loader(batch_size: int = 16):
    return [batch_size]
