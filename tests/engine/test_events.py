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
