"""The public API is pinned: a rename or a removal breaks this test on purpose."""

from __future__ import annotations

import inspect

import pytest

import lightkit as lk
import lightkit.callbacks
import lightkit.loggers

PUBLIC = [
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DDPStrategy",
    "DistributedError",
    "EarlyStopping",
    "FSDPStrategy",
    "GradientNormMonitor",
    "Hparams",
    "LearningRateMonitor",
    "LightkitError",
    "LightkitWarning",
    "Logger",
    "MixedPrecision",
    "ModelCheckpoint",
    "ModelSummary",
    "Precision",
    "ProgressBar",
    "Registry",
    "Result",
    "RunContext",
    "Runtime",
    "SingleDevice",
    "SpecEntry",
    "SpecError",
    "StepError",
    "Strategy",
    "TensorBoardLogger",
    "Timer",
    "Trainer",
    "TrainerConfig",
    "TrainingSpec",
    "TruePrecision",
    "__version__",
    "cli",
    "collect",
    "configure_optimizers",
    "load_models",
    "log",
    "log_dict",
    "model",
    "on",
    "plot_metrics",
    "predict_data",
    "predict_step",
    "seed_everything",
    "test_data",
    "test_step",
    "train_data",
    "training_step",
    "val_data",
    "validation_step",
]


def test_all_is_pinned_and_sorted():
    assert lk.__all__ == PUBLIC
    assert sorted(lk.__all__) == lk.__all__


def test_every_public_name_resolves_and_is_documented():
    for name in lk.__all__:
        obj = getattr(lk, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(obj), f"lightkit.{name} has no docstring"


def test_built_in_callbacks_are_exported_from_both_places():
    for name in (
        "ModelCheckpoint",
        "EarlyStopping",
        "LearningRateMonitor",
        "ModelSummary",
        "ProgressBar",
        "Timer",
        "GradientNormMonitor",
        "Callback",
    ):
        assert getattr(lightkit.callbacks, name) is getattr(lk, name)
        assert name in lightkit.callbacks.__all__
    assert sorted(lightkit.callbacks.__all__) == lightkit.callbacks.__all__
    for name in ("Logger", "CSVLogger", "TensorBoardLogger"):
        assert getattr(lightkit.loggers, name) is getattr(lk, name)


def test_decorators_return_the_function_itself():
    def f(batch):
        return batch

    reg = lk.Registry()
    assert reg.training_step(f) is f
    assert not hasattr(f, "__wrapped__")


def test_seed_everything_seeds_what_the_trainers_seed_flag_seeds():
    import random

    import torch

    assert lk.seed_everything(7) == 7
    drawn = (random.random(), torch.rand(3))
    random.seed(7)
    torch.manual_seed(7)
    assert drawn[0] == random.random()
    assert torch.equal(drawn[1], torch.rand(3))


@pytest.mark.parametrize("bad", ["7", 1.5, True, None])
def test_seed_everything_refuses_what_is_not_an_int_before_seeding(bad):
    import torch

    state = torch.get_rng_state()
    with pytest.raises(lk.ConfigError, match="the seed must be an int") as info:
        lk.seed_everything(bad)
    assert info.value.code == "bad-seed"
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_everything_takes_lightnings_workers_flag_and_says_what_it_does():
    with pytest.warns(UserWarning, match="installs no worker_init_fn"):
        assert lk.seed_everything(3, workers=True) == 3


def test_seed_everything_takes_numpy_ints_and_refuses_what_torch_cannot_take():
    import numpy as np
    import pydantic

    assert lk.seed_everything(np.int64(3)) == 3
    with pytest.raises(lk.ConfigError, match=r"torch takes seeds from -2\*\*63 to 2\*\*64 - 1"):
        lk.seed_everything(2**64)
    with pytest.raises(pydantic.ValidationError, match="seed"):
        lk.Trainer(seed=2**64)
