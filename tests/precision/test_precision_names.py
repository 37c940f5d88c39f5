"""Precision names: canonical strings, Lightning's aliases, instances, and unknown names."""

from __future__ import annotations

import pydantic
import pytest
import torch

import lightkit as lk
from lightkit.precision import PRECISIONS, canonical_name, precision_from
from lightkit.runtime.connector import connect

CANONICAL = ["32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]


def test_the_table_holds_the_six_precisions():
    assert list(PRECISIONS) == CANONICAL


@pytest.mark.parametrize("name", CANONICAL)
def test_each_name_builds_its_plugin(name):
    plugin = precision_from(name)
    assert plugin.name == name == str(plugin)
    assert lk.Trainer(precision=name).config.precision == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        (32, "32-true"),
        ("32", "32-true"),
        (64, "64-true"),
        ("64", "64-true"),
        (16, "16-mixed"),
        ("16", "16-mixed"),
        ("bf16", "bf16-mixed"),
    ],
)
def test_lightning_aliases_keep_lightnings_meaning(alias, name):
    assert canonical_name(alias) == name
    assert precision_from(alias).name == name
    assert lk.Trainer(precision=alias).config.precision == name
    assert lk.Runtime(accelerator="cpu", precision=alias).precision.name == name


@pytest.mark.parametrize(
    ("plugin", "name", "dtype"),
    [
        (lk.Precision(), "32-true", torch.float32),
        (lk.TruePrecision(torch.float64), "64-true", torch.float64),
        (lk.TruePrecision(torch.float16), "16-true", torch.float16),
        (lk.TruePrecision(torch.bfloat16), "bf16-true", torch.bfloat16),
        (lk.MixedPrecision(torch.float16), "16-mixed", torch.float32),
        (lk.MixedPrecision(torch.bfloat16), "bf16-mixed", torch.float32),
    ],
)
def test_instances_are_used_as_given(plugin, name, dtype):
    assert plugin.name == name
    assert plugin.param_dtype == dtype
    assert precision_from(plugin) is plugin
    assert lk.Trainer(precision=plugin).config.precision is plugin
    runtime = lk.Runtime(accelerator="cpu", precision=plugin)
    assert runtime.precision is plugin
    assert runtime.strategy.precision is plugin


@pytest.mark.parametrize("bad", ["fp8", "bf16_mixed", "32-mixed", 8, 16.0, True])
def test_unknown_precision_is_a_config_error_listing_the_available_ones(bad):
    with pytest.raises(lk.ConfigError) as info:
        precision_from(bad)
    assert info.value.code == "unknown-precision"
    message = str(info.value)
    assert message.startswith(f"precision={bad!r} is not a precision.")
    assert "Available: 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true" in message
    assert "aliases: 32, 64, 16, 'bf16'" in message


def test_a_near_miss_gets_a_suggestion():
    with pytest.raises(lk.ConfigError, match="Did you mean 'bf16-mixed'"):
        precision_from("bf16_mixed")


def test_runtime_and_connector_raise_the_config_error():
    with pytest.raises(lk.ConfigError, match="Available: 32-true"):
        lk.Runtime(accelerator="cpu", precision="fp8")
    with pytest.raises(lk.ConfigError, match="Available: 32-true"):
        connect("cpu", 1, "auto", "half")


def test_trainer_reports_the_config_error_as_a_field_error():
    # TrainerConfig validates every flag through pydantic, which wraps the ConfigError.
    with pytest.raises(pydantic.ValidationError) as info:
        lk.Trainer(precision="fp8")
    (error,) = info.value.errors()
    assert error["loc"] == ("precision",)
    cause = error["ctx"]["error"]
    assert isinstance(cause, lk.ConfigError)
    assert cause.code == "unknown-precision"
    assert "Available: 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true" in str(cause)


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: lk.MixedPrecision(torch.float32), "autocast runs in torch.float16"),
        (lambda: lk.TruePrecision(torch.float32), "float32 is the default precision='32-true'"),
        (lambda: lk.TruePrecision(torch.int8), "expected torch.float64, torch.float16"),
    ],
)
def test_a_plugin_with_a_wrong_dtype_is_a_config_error(make, text):
    with pytest.raises(lk.ConfigError, match=text) as info:
        make()
    assert info.value.code == "unknown-precision"


def test_none_is_the_default_as_in_lightning():
    assert lk.Trainer(precision=None).config.precision == "32-true"
    assert lk.Runtime(accelerator="cpu", precision=None).precision.name == "32-true"


@pytest.mark.parametrize(
    "plugin",
    [
        lk.MixedPrecision(torch.float16, scaler_kwargs={"init_scale": 2.0**10}),
        lk.TruePrecision(torch.bfloat16),
        lk.MixedPrecision("bfloat16"),
    ],
)
def test_a_plugin_with_its_own_dtype_is_written_and_read_back(plugin):
    text = lk.TrainerConfig(precision=plugin).model_dump_json()
    back = lk.TrainerConfig.model_validate_json(text).precision
    assert type(back) is type(plugin)
    assert back == plugin  # dtype and arguments
    assert back.name == plugin.name
