"""``TrainerConfig`` and ``Trainer(...)``: Lightning's flag names, validated."""

from __future__ import annotations

import json
import pickle

import pydantic
import pytest

import lightkit as lk


def test_defaults_are_lightnings():
    c = lk.TrainerConfig()
    assert (c.max_epochs, c.max_steps, c.min_epochs, c.min_steps) == (None, -1, None, None)
    assert (c.accumulate_grad_batches, c.gradient_clip_val, c.gradient_clip_algorithm) == (
        1,
        None,
        "norm",
    )
    assert (c.val_check_interval, c.check_val_every_n_epoch, c.num_sanity_val_steps) == (1.0, 1, 2)
    assert (c.log_every_n_steps, c.precision, c.logger) == (50, "32-true", True)
    assert c.enable_checkpointing and c.enable_progress_bar and c.enable_model_summary


@pytest.mark.parametrize(
    ("flag", "port", "cli_port"),
    [
        ("gpus", "Lightning 1.x's gpus=N is accelerator='gpu', devices=N.",
         "Lightning 1.x's --gpus N is --accelerator gpu --devices N."),
        ("resume_from_checkpoint", "Resume with trainer.fit(spec, ckpt_path=...)",
         "Resume with --ckpt-path (a path, last or best)."),
        ("num_processes", "num_processes=N is devices=N", "--num-processes N is --devices N."),
        ("progress_bar_refresh_rate", "lk.ProgressBar(refresh_rate=n)", "lk.ProgressBar(refresh_rate=n)"),
    ],
)  # fmt: skip
def test_a_flag_lightning_removed_gets_its_port_not_a_near_spelling(flag, port, cli_port, capsys):
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(**{flag: 1})
    assert f"'{flag}' is not a Trainer flag. " in str(info.value)
    assert port in str(info.value) and "Did you mean" not in str(info.value)
    from lightkit import cli

    code = cli.main(["fit", "examples/digits.py", f"--{flag.replace('_', '-')}", "1"])
    assert code == 2 and cli_port in capsys.readouterr().err


def test_unknown_flag_names_itself_and_the_likely_fix():
    with pytest.raises(pydantic.ValidationError) as info:
        lk.Trainer(max_epoch=3, gpus=2)
    text = str(info.value)
    assert (
        "'max_epoch' is not a Trainer flag. Did you mean 'max_epochs'? 'gpus' is not a "
        "Trainer flag. Lightning 1.x's gpus=N is accelerator='gpu', devices=N. Flags: "
        "accelerator, accumulate_grad_batches, " in text
    )


@pytest.mark.parametrize(
    ("make", "code", "loc"),
    [
        (lambda: lk.Trainer(precision="fp8"), "unknown-precision", ("precision",)),
        (lambda: lk.Trainer(strategy="horovod"), "unknown-strategy", ("strategy",)),
        (lambda: lk.Trainer(max_epoch=3), "unknown-flag", ()),
        (lambda: lk.Trainer(max_epochs=-2), "invalid-config", ("max_epochs",)),
        (lambda: lk.Trainer(precision="fp8", max_epochs=-2), "invalid-config", ("max_epochs",)),
        (lambda: lk.TrainerConfig.model_validate({"devices": 0}), "bad-devices", ("devices",)),
        (lambda: lk.TrainerConfig.model_validate_json('{"precision": 3}'), None, None),
    ],
)
def test_a_refused_flag_is_a_config_error_and_a_validation_error(make, code, loc):
    # Lightning users catch the library's error (or ValueError); pydantic users catch
    # ValidationError and read errors(): one exception serves both.
    with pytest.raises(lk.ConfigError) as info:
        make()
    err = info.value
    assert isinstance(err, pydantic.ValidationError) and isinstance(err, ValueError)
    if code is not None:
        assert err.code == code
        assert err.errors()[0]["loc"] == loc
    assert str(err).startswith(f"{err.error_count()} validation error")
    copy = pickle.loads(pickle.dumps(err))  # as a failed rank's error travels
    assert (type(copy), copy.code, str(copy)) == (type(err), err.code, str(err))


def test_a_refused_range_says_what_the_flag_means_and_links_nowhere():
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(max_epochs=-5, accumulate_grad_batches=0)
    text = str(info.value)
    assert text.startswith("2 validation errors for TrainerConfig\nmax_epochs\n")
    assert "input_value=-5" in text and "errors.pydantic.dev" not in text
    assert text.endswith(
        "\nmax_epochs: Stop after this many epochs (-1: no limit)."
        "\naccumulate_grad_batches: Step the optimizer every k batches."
    )


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("dpp", "Did you mean 'ddp'?"),
        ("fsdb", "Did you mean 'fsdp'?"),
        ("ddp_spawn", "Lightning's 'ddp_spawn' is not offered: use strategy='ddp', it starts the processes itself (start_method='spawn' by default)"),
        ("ddp_notebook", "Lightning's 'ddp_notebook' is not offered: use strategy='ddp'"),
        ("ddp_fork", "Lightning's 'ddp_fork' is strategy=DDPStrategy(start_method='fork') here."),
        ("dp", "DataParallel ('dp') is not offered: strategy='ddp' runs one process per device."),
        ("ddp_find_unused_parameters_true", "strategy=DDPStrategy(find_unused_parameters=True)"),
    ],
)  # fmt: skip
def test_an_unknown_strategy_gets_the_closest_name_or_lightkits_way(given, hint):
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(strategy=given)
    assert info.value.code == "unknown-strategy"
    assert f"strategy={given!r} is unknown. Available: auto, single_device, ddp, fsdp" in str(
        info.value
    )
    assert hint in str(info.value)


def test_a_field_set_to_a_refused_value_is_a_config_error_and_keeps_the_old_value():
    c = lk.TrainerConfig(max_epochs=3)
    with pytest.raises(lk.ConfigError, match="precision='x' is not a precision") as info:
        c.precision = "x"
    assert info.value.code == "unknown-precision" and c.precision == "32-true"
    with pytest.raises(lk.ConfigError):  # the combination check, after the field's own
        c.min_epochs = 5
    assert c.min_epochs is None
    with pytest.raises(lk.ConfigError):
        lk.TrainerConfig.model_validate_strings({"max_epochs": "many"})


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"max_epochs": -2}, "max_epochs"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches"),
        ({"gradient_clip_algorithm": "max"}, "gradient_clip_algorithm"),
        ({"val_check_interval": 0}, "val_check_interval"),
        ({"log_every_n_steps": 0}, "log_every_n_steps"),
        ({"max_time": "soon"}, "max_time"),
        ({"fast_dev_run": -1}, "fast_dev_run"),
    ],
)
def test_bad_values_name_the_flag(flags, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        lk.TrainerConfig(**flags)


def test_unknown_strategy_lists_the_available_ones():
    with pytest.raises(
        pydantic.ValidationError, match=r"strategy='horovod' is unknown\. Available: auto"
    ):
        lk.TrainerConfig(strategy="horovod")


def test_trainer_takes_a_config_and_overrides():
    base = lk.TrainerConfig(max_epochs=3, seed=1)
    t = lk.Trainer(base, max_epochs=5)
    assert (t.config.max_epochs, t.config.seed) == (5, 1)
    assert base.max_epochs == 3
    assert lk.Trainer(base).config is base
    assert "max_epochs=5" in repr(t) and "seed=1" in repr(t)


def test_assignment_is_validated():
    c = lk.TrainerConfig()
    with pytest.raises(pydantic.ValidationError):
        c.max_steps = -5


def test_config_round_trips_as_json():
    c = lk.TrainerConfig(max_epochs=2, max_time="00:00:01:00", precision="bf16-mixed")
    data = json.loads(c.model_dump_json())
    assert data["max_time"] == 60.0 and data["precision"] == "bf16-mixed"
    assert lk.TrainerConfig(**data) == c


def test_callbacks_loggers_and_plugins_round_trip_as_json():
    from tests.user_modules.callback_kinds import Counting

    c = lk.TrainerConfig(
        callbacks=[lk.EarlyStopping(monitor="val/loss", patience=7), Counting(every=3)],
        logger=[lk.CSVLogger(save_dir="logs", name="exp")],
        strategy=lk.DDPStrategy(find_unused_parameters=True),
    )
    data = json.loads(c.model_dump_json())
    assert data["callbacks"][0] == {
        "class_path": "lightkit.callbacks.early_stopping:EarlyStopping",
        "init_args": {"monitor": "val/loss", "patience": 7},
    }
    assert data["callbacks"][1]["init_args"] == {"every": 3}  # label kept its default
    back = lk.TrainerConfig.model_validate_json(c.model_dump_json())
    early, counting = back.callbacks
    assert (early.monitor, early.patience) == ("val/loss", 7)
    assert type(counting) is Counting and (counting.every, counting.label) == (3, "n")
    (csv,) = back.logger
    assert type(csv) is lk.CSVLogger and (csv.save_dir, csv.name) == ("logs", "exp")
    assert type(back.strategy) is lk.DDPStrategy and back.strategy.find_unused_parameters


def test_an_object_that_cannot_be_written_fails_to_load_with_the_reason():
    from tests.user_modules.callback_kinds import Hidden

    text = lk.TrainerConfig(callbacks=[Hidden(every=3)]).model_dump_json()
    assert json.loads(text)["callbacks"] == [repr(Hidden(every=3))]
    with pytest.raises(pydantic.ValidationError) as info:
        lk.TrainerConfig.model_validate_json(text)
    assert "not-a-callback" in str(info.value) or "config.json" in str(info.value)
    assert "cannot be written as data" in str(info.value)


def test_a_class_reference_that_cannot_be_built_names_the_class():
    data = {"callbacks": [{"class_path": "tests.user_modules.callback_kinds:Nope"}]}
    with pytest.raises(pydantic.ValidationError, match=r"cannot import.*Nope"):
        lk.TrainerConfig.model_validate(data)
    data = {"callbacks": [{"class_path": "lightkit.callbacks:EarlyStopping",
                           "init_args": {"patience": 1, "bogus": 2}}]}  # fmt: skip
    with pytest.raises(pydantic.ValidationError, match=r"EarlyStopping.*bogus"):
        lk.TrainerConfig.model_validate(data)


@pytest.mark.parametrize(
    "devices", ["x", 0, "0", [], "", [-1], -3, "1,a"], ids=lambda d: f"devices={d!r}"
)
def test_malformed_devices_are_refused_when_the_trainer_is_made(devices):
    with pytest.raises(pydantic.ValidationError, match="devices") as info:
        lk.Trainer(devices=devices)
    assert "expected 'auto', a count (1, 2, ...; -1 for all), a list of indices" in str(info.value)
    assert info.value.errors()[0]["ctx"]["error"].code == "bad-devices"  # as errors.md says


@pytest.mark.parametrize("devices", ["auto", 1, 2, -1, "-1", "2", "0,1", "1,", [0], [0, 1]])
def test_every_devices_form_lightning_takes_is_accepted(devices):
    assert lk.TrainerConfig(devices=devices).devices == devices


def test_an_unknown_accelerator_is_refused_when_the_trainer_is_made():
    with pytest.raises(pydantic.ValidationError, match="accelerator") as info:
        lk.Trainer(accelerator="cpuu")
    assert (
        "accelerator='cpuu' is unknown. Did you mean 'cpu'? Available: auto, cpu, cuda, gpu, mps."
        in str(info.value)
    )
    assert info.value.errors()[0]["ctx"]["error"].code == "unknown-accelerator"


def test_none_means_lightnings_defaults_for_logger_and_callbacks():
    config = lk.TrainerConfig(logger=None, callbacks=None)
    assert config.logger is True and config.callbacks == []


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        ({"logger": "csv"}, "not-a-logger"),
        ({"logger": [True]}, "not-a-logger"),
        ({"callbacks": [object()]}, "not-a-callback"),
    ],
    ids=["logger-name", "logger-in-list", "callback"],
)
def test_loggers_and_callbacks_are_checked_when_the_trainer_is_made(flags, code):
    with pytest.raises(pydantic.ValidationError, match=next(iter(flags))) as info:
        lk.Trainer(**flags)
    assert info.value.errors()[0]["ctx"]["error"].code == code
    if flags.get("logger") == "csv":
        assert "chooses a logger on the command line only" in str(info.value)
