"""``Events`` declares one typed attribute per event, and the names match ``EVENTS``."""

from __future__ import annotations

import typing

import pytest

import lightkit as lk
from lightkit.engine.events import Events
from lightkit.spec.roles import EVENTS
from tests.engine.engine_helpers import registry, trainer


def test_events_declares_every_event() -> None:
    declared = set(typing.get_type_hints(Events))
    assert declared == set(EVENTS)


def test_events_without_listeners_are_empty_tuples() -> None:
    events = Events(hooks=(), callbacks=(), constants={}, model_names=(), hparams=None)
    for event in EVENTS:
        assert getattr(events, event) == ()
        assert events.listeners(event) == ()


def test_a_callback_method_named_like_no_event_warns():
    # Lightning ignores a misspelt hook silently; nothing would ever call it.
    class Typo(lk.Callback):
        def on_train_batch_endd(self, ctx):
            pass

        def on_validation_end(self, ctx):
            pass

        def helper(self):
            pass

    reg = registry()
    with pytest.warns(UserWarning) as record:
        trainer(max_epochs=1, limit_train_batches=1, callbacks=[Typo()]).fit(lk.collect(reg))
    messages = sorted(str(w.message) for w in record if "not an event" in str(w.message))
    assert messages == [
        "callback Typo defines on_train_batch_endd, which is not an event, so it is never "
        "called. Did you mean 'on_train_batch_end'? The events are the on_<event> methods of "
        "lk.Callback.",
        "callback Typo defines on_validation_end, which is not an event, so it is never called. "
        "Lightning's on_validation_end is on_validation_epoch_end here. The events are the "
        "on_<event> methods of lk.Callback.",
    ]
    assert record[0].filename == __file__  # points at the call that started the run


def test_a_value_returned_from_train_batch_start_is_ignored_with_one_warning():
    # Lightning's `return -1` ends the epoch; here it changes nothing, and says so once.
    reg = registry()
    reg.on("train_batch_start")(lambda batch_idx: -1 if batch_idx == 2 else None)
    reg.on("train_batch_end")(lambda: None)
    with pytest.warns(lk.LightkitWarning) as record:
        result = trainer(max_epochs=2).fit(lk.collect(reg))
    mine = [w for w in record if getattr(w.message, "code", "") == "batch-start-return"]
    assert len(mine) == 1 and mine[0].filename == __file__
    assert "Lightning's `return -1` (skip the rest of the epoch) has no equivalent" in str(
        mine[0].message
    )
    assert result.global_step == 14  # every batch of both epochs trained
