"""The callback list as a run sees it: what is refused when the trainer is made, and the
order in which an event reaches callbacks that act on what the others log."""

from __future__ import annotations

from typing import Any

import attrs
import pydantic
import pytest
import torch

import lightkit as lk
from tests.callbacks.cb_helpers import spec, trainer


@attrs.define
class Tagged(lk.Callback):
    tag: str = ""

    def state_dict(self) -> dict[str, Any]:
        return {"tag": self.tag}


def error_of(flags: dict[str, Any]) -> lk.ConfigError:
    with pytest.raises(pydantic.ValidationError) as info:
        lk.Trainer(**flags)
    return info.value.errors()[0]["ctx"]["error"]  # type: ignore[no-any-return]


def test_a_callback_class_instead_of_an_instance_says_so():
    error = error_of({"callbacks": [lk.EarlyStopping]})
    assert error.code == "not-a-callback"
    assert str(error) == (
        "callbacks=[..., EarlyStopping]: this is the class; pass an instance, EarlyStopping(...)."
    )


def test_two_stateful_callbacks_under_one_key_are_refused():
    # A resume would give both the state saved last (Lightning refuses this too).
    error = error_of({"callbacks": [Tagged("a"), Tagged("b")]})
    assert error.code == "duplicate-callback-state"
    assert "keep their states under one key in checkpoints ('Tagged')" in str(error)
    error = error_of({"callbacks": [lk.ModelCheckpoint(dirpath="a"), lk.ModelCheckpoint("b")]})
    assert error.code == "duplicate-callback-state"
    # Stateless callbacks, or the same class with different keys, are fine.
    lk.Trainer(callbacks=[LogsAtEpochEnd([]), LogsAtEpochEnd([])])
    lk.Trainer(callbacks=[lk.ModelCheckpoint(monitor="a"), lk.ModelCheckpoint(monitor="b")])


def test_lightnings_setup_signature_is_refused_with_the_fix():
    class LitSetup(lk.Callback):
        def setup(self, trainer, pl_module, stage):
            pass

    error = error_of({"callbacks": [LitSetup()]})
    assert error.code == "bad-callback-method"
    assert "must take (ctx, stage): ctx is the run context" in str(error)


class LogsAtEpochEnd(lk.Callback):
    """Logs a score at each training epoch's end and after each validation."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)

    def on_train_epoch_end(self, ctx: Any) -> None:
        ctx.log("train/custom", next(self.scores))


@pytest.mark.parametrize("first", ["early-stopping", "logger"])
def test_early_stopping_sees_what_another_callback_logs_whatever_the_order(first):
    # Lightning runs its monitoring callbacks after the others at an epoch's end.
    stopping = lk.EarlyStopping(monitor="train/custom", patience=2)
    logs = LogsAtEpochEnd([3.0, 2.0, 2.5, 2.5, 2.5, 1.0])
    callbacks = [stopping, logs] if first == "early-stopping" else [logs, stopping]
    result = trainer(max_epochs=6, callbacks=callbacks).fit(spec(val=None))
    assert (result.epoch, result.stopped_by) == (4, "should_stop")
    assert stopping.best_score == 2.0


@attrs.define
class MyCheckpoint(lk.ModelCheckpoint):
    pass


@attrs.define
class MySummary(lk.ModelSummary):
    pass


@attrs.define
class MyBar(lk.ProgressBar):
    pass


def test_a_subclass_of_a_default_callback_replaces_the_default(tmp_path, capsys):
    # Lightning adds its checkpoint, summary and progress bar only when no callback is one
    # (isinstance): a subclass counts.
    mine = [MyCheckpoint(dirpath=str(tmp_path / "ckpt")), MySummary(), MyBar(mode="text")]
    flags = {
        "enable_checkpointing": True,
        "enable_model_summary": True,
        "enable_progress_bar": True,
        "callbacks": mine,
    }
    from lightkit.callbacks import default_callbacks

    callbacks = default_callbacks(lk.TrainerConfig(**flags), "fit", dev_run=False)
    assert sorted(type(cb).__name__ for cb in callbacks) == ["MyBar", "MyCheckpoint", "MySummary"]
    trainer(tmp_path, **flags, max_epochs=1).fit(spec())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch=0-step=4.ckpt"]
    assert capsys.readouterr().out.count("Total params") == 1


def test_one_callback_without_a_list_is_taken_as_lightning_takes_it(tmp_path):
    ck = lk.ModelCheckpoint(dirpath=tmp_path / "ck", filename="only")
    t = trainer(tmp_path, callbacks=ck, max_epochs=1)
    assert t.config.callbacks == [ck]
    t.fit(spec())
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["only.ckpt"]
    assert error_of({"callbacks": lk.EarlyStopping}).code == "not-a-callback"  # checked alike


def test_an_event_method_asking_for_what_no_event_supplies_fails_before_any_model():
    built: list[int] = []

    def net() -> torch.nn.Module:
        built.append(1)
        return torch.nn.Linear(4, 1)

    class Bad(lk.Callback):
        def on_fit_start(self, net, nonexistent_thing):
            pass

    with pytest.raises(lk.ConfigError) as info:
        trainer(callbacks=[Bad()]).fit(spec(net=net))
    assert info.value.code == "unknown-parameter"
    assert "parameter 'nonexistent_thing' is not something the 'fit_start' event" in str(info.value)
    assert built == []  # refused before any compute, as the spec's own problems are


@pytest.mark.parametrize("signature", ["*args, **kwargs", "ctx, **kwargs", "*args"])
def test_a_catch_all_event_method_is_refused_before_any_model(signature):
    # Values go by name: *args/**kwargs would silently receive nothing (a Lightning habit).
    built: list[int] = []

    def net() -> torch.nn.Module:
        built.append(1)
        return torch.nn.Linear(4, 1)

    namespace: dict[str, Any] = {}
    exec(f"def on_train_batch_end(self, {signature}):\n    pass\n", namespace)
    CatchAll = type(
        "CatchAll", (lk.Callback,), {"on_train_batch_end": namespace["on_train_batch_end"]}
    )
    with pytest.raises(lk.ConfigError) as info:
        trainer(callbacks=[CatchAll()]).fit(spec(net=net))
    assert info.value.code == "variadic-parameter"
    assert "would receive nothing: lightkit passes an event's values by name" in str(info.value)
    assert "the 'train_batch_end' event supplies: batch, batch_idx, ctx, hparams, net," in str(
        info.value
    )
    assert built == []


def test_lightnings_trainer_and_pl_module_parameters_get_the_lightkit_way():
    class Ported(lk.Callback):
        def on_fit_start(self, trainer, pl_module):
            pass

    with pytest.raises(lk.ConfigError) as info:
        trainer(callbacks=[Ported()]).fit(spec())
    assert info.value.code == "unknown-parameter"
    assert str(info.value).endswith(
        "Lightning's (trainer, pl_module) are not passed: ask for ctx and the models by name."
    )


def test_a_lightning_callback_is_pointed_at_lightkits_own():
    # A class of Lightning's (by its module): the port is lk.<Name>(...), same arguments.
    EarlyStopping = type("EarlyStopping", (), {"__module__": "pytorch_lightning.callbacks"})
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(callbacks=[EarlyStopping()])
    assert (
        "Lightning's own callbacks do not run here: use lk.EarlyStopping(...), with the same arguments"
        in str(info.value)
    )
