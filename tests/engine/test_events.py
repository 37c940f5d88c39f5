"""``Events`` declares one typed attribute per event, and the names match ``EVENTS``."""

from __future__ import annotations

import typing

from lightkit.engine.events import Events
from lightkit.spec.roles import EVENTS


def test_events_declares_every_event() -> None:
    declared = set(typing.get_type_hints(Events))
    assert declared == set(EVENTS)


def test_events_without_listeners_are_empty_tuples() -> None:
    events = Events(hooks=(), callbacks=(), constants={}, model_names=(), hparams=None)
    for event in EVENTS:
        assert getattr(events, event) == ()
        assert events.listeners(event) == ()
