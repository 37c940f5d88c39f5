"""A bad option of a built-in callback or logger is a ``ConfigError`` (``bad-plugin-argument``)
naming the class, the option, the value and what is allowed — never attrs' raw
``ValueError`` with its ``Attribute(...)`` repr."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import lightkit as lk

CASES: list[tuple[Callable[[], Any], str]] = [
    (
        lambda: lk.ModelCheckpoint(mode="maximum"),
        "ModelCheckpoint(mode='maximum'): mode must be one of 'min', 'max'. Did you mean 'max'?",
    ),
    (
        lambda: lk.EarlyStopping(monitor="x", mode="maximum"),
        "EarlyStopping(mode='maximum'): mode must be one of 'min', 'max'. Did you mean 'max'?",
    ),
    (
        lambda: lk.EarlyStopping(monitor="x", mode="Min"),
        "EarlyStopping(mode='Min'): mode must be one of 'min', 'max'. Did you mean 'min'?",
    ),
    (
        lambda: lk.LearningRateMonitor(logging_interval="batch"),
        "LearningRateMonitor(logging_interval='batch'): logging_interval must be one of None, "
        "'step', 'epoch'.",
    ),
    (
        lambda: lk.LearningRateMonitor(logging_interval="epochs"),
        "LearningRateMonitor(logging_interval='epochs'): logging_interval must be one of None, "
        "'step', 'epoch'. Did you mean 'epoch'?",
    ),
    (
        lambda: lk.Timer(interval="steps"),
        "Timer(interval='steps'): interval must be one of 'step', 'epoch'. Did you mean 'step'?",
    ),
    (
        lambda: lk.ProgressBar(mode="fancy"),
        "ProgressBar(mode='fancy'): mode must be one of 'auto', 'bar', 'text'.",
    ),
    (
        lambda: lk.ModelCheckpoint(save_top_k=-2),
        "ModelCheckpoint(save_top_k=-2): save_top_k must be an integer >= -1.",
    ),
    (
        lambda: lk.ModelCheckpoint(every_n_epochs=1.5),
        "ModelCheckpoint(every_n_epochs=1.5): every_n_epochs must be an integer >= 0 or None.",
    ),
    (
        lambda: lk.ModelCheckpoint(train_time_interval="soon"),
        "ModelCheckpoint(train_time_interval='soon'): train_time_interval must be a positive "
        "number of seconds, a timedelta, a dict of timedelta arguments or 'DD:HH:MM:SS'.",
    ),
    (
        lambda: lk.EarlyStopping(monitor="x", patience=-1),
        "EarlyStopping(patience=-1): patience must be an integer >= 0.",
    ),
    (
        lambda: lk.ProgressBar(refresh_rate=-1),
        "ProgressBar(refresh_rate=-1): refresh_rate must be an integer >= 0.",
    ),
    (
        lambda: lk.ProgressBar(min_interval=-0.5),
        "ProgressBar(min_interval=-0.5): min_interval must be a number >= 0.",
    ),
    (
        lambda: lk.ModelSummary(max_depth=-2),
        "ModelSummary(max_depth=-2): max_depth must be an integer >= -1.",
    ),
    (
        lambda: lk.GradientNormMonitor(every_n_steps=0),
        "GradientNormMonitor(every_n_steps=0): every_n_steps must be an integer >= 1 or None.",
    ),
    (
        lambda: lk.GradientNormMonitor(norm_type=0),
        "GradientNormMonitor(norm_type=0): norm_type must be a positive number or 'inf'.",
    ),
    (
        lambda: lk.Timer(duration="soon"),
        "Timer(duration='soon'): duration must be a positive number of seconds, a timedelta, a "
        "dict of timedelta arguments or 'DD:HH:MM:SS'.",
    ),
    (
        lambda: lk.Timer().time_elapsed("fit"),  # type: ignore[arg-type]
        "Timer.time_elapsed(stage='fit'): stage must be one of 'train', 'validate', 'test', "
        "'predict'.",
    ),
    (
        lambda: lk.ModelCheckpoint(save_last="always"),  # type: ignore[arg-type]
        "ModelCheckpoint(save_last='always'): save_last must be one of True, False, None, 'link'.",
    ),
    (
        lambda: lk.CSVLogger(flush_every_n_steps=0),
        "CSVLogger(flush_every_n_steps=0): flush_every_n_steps must be an integer >= 1.",
    ),
    (
        lambda: lk.TensorBoardLogger(flush_every_n_steps=True),
        "TensorBoardLogger(flush_every_n_steps=True): flush_every_n_steps must be an integer >= 1.",
    ),
]


@pytest.mark.parametrize(("make", "message"), CASES, ids=[m.split(": ")[0] for _, m in CASES])
def test_bad_option_is_a_config_error_with_a_clear_message(make, message):
    with pytest.raises(lk.ConfigError) as info:
        make()
    assert str(info.value) == message
    assert info.value.code == "bad-plugin-argument"
    assert isinstance(info.value, ValueError)  # what attrs raised before: except clauses hold
    assert info.value.args == (message,)  # no attrs Attribute in the arguments


def test_assigning_a_bad_option_later_is_checked_too():
    cb = lk.EarlyStopping(monitor="x")
    with pytest.raises(lk.ConfigError, match=r"^EarlyStopping\(mode='up'\): mode must be one"):
        cb.mode = "up"  # type: ignore[assignment]
    assert cb.mode == "min"


def test_good_options_pass():
    assert lk.ModelCheckpoint(mode="max", save_top_k=-1, every_n_epochs=None).mode == "max"
    assert lk.LearningRateMonitor(logging_interval=None).logging_interval is None
    assert lk.LearningRateMonitor(logging_interval="epoch").logging_interval == "epoch"
    assert lk.ProgressBar(min_interval=0).min_interval == 0
    assert lk.Timer(duration=5, interval="epoch").duration == 5.0
    assert lk.GradientNormMonitor(norm_type="inf").norm_type == float("inf")
