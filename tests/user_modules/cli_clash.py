"""Hyperparameters named like trainer flags (``seed``, ``precision``): on the command line they
become ``--hparams.seed`` and ``--hparams.precision``."""

import lightkit as lk


@lk.model
def net(width: int = 2):
    return ("net", width)


@lk.train_data
def data(seed: int = 0, precision: str = "float32"):
    return [(seed, precision)]
