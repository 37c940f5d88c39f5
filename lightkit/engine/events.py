"""Event dispatch lists, built once: per event, the bound callers of every function hook and
every callback that overrides the event's method. An event nobody listens to is an empty tuple,
so the loop's ``if events.train_batch_end:`` costs one attribute read."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightkit.callbacks.base import Callback
from lightkit.engine.binders import bind_callback_method, bind_plan, check_callback_parameters
from lightkit.errors import LightkitWarning, user_stacklevel
from lightkit.spec.roles import EVENT_ARGS, EVENT_SUPPLIES, EVENTS, event_hint
from lightkit.spec.signature import FunctionPlan

EventCaller = Callable[..., Any]


def check_callback_methods(callbacks: Iterable[Callback], model_names: Iterable[str]) -> None:
    """Before any model is built: raise if an event method asks for a parameter its event can
    never supply (the binding, later, checks against what a run has), and warn about a method
    named like an event that is none (``on_train_batch_endd``): nothing would ever call it."""

    known = [f"on_{event}" for event in EVENTS]
    for cb in callbacks:
        cls = type(cb)
        for event in EVENTS:
            method = getattr(cls, f"on_{event}", None)
            if method is not None and method is not getattr(Callback, f"on_{event}"):
                supplied = {*EVENT_SUPPLIES[event], *EVENT_ARGS[event], *model_names}
                check_callback_parameters(getattr(cb, f"on_{event}"), event, supplied)
        for name in sorted(_own_names(cls)):
            if name.startswith("on_") and name not in known and callable(getattr(cb, name, None)):
                warnings.warn(
                    LightkitWarning(
                        f"callback {cls.__name__} defines {name}, which is not an event, so it is "
                        f"never called.{event_hint(name[3:], 'on_')} The events are the on_<event> "
                        f"methods of lk.Callback.",
                        code="not-an-event",
                    ),
                    stacklevel=user_stacklevel(),
                )


def _own_names(cls: type) -> set[str]:
    """The attribute names ``cls`` and its bases define, below ``Callback``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is Callback or klass is object:
            continue
        names.update(vars(klass))
    return names


class Events:
    """``events.<name>`` is a tuple of callers taking that event's values (``EVENT_ARGS``)."""

    # One attribute per name in ``EVENTS`` (tests/engine/test_events.py checks they match).
    fit_start: tuple[EventCaller, ...]
    fit_end: tuple[EventCaller, ...]
    train_epoch_start: tuple[EventCaller, ...]
    train_epoch_end: tuple[EventCaller, ...]
    train_batch_start: tuple[EventCaller, ...]
    train_batch_end: tuple[EventCaller, ...]
    validation_epoch_start: tuple[EventCaller, ...]
    validation_epoch_end: tuple[EventCaller, ...]
    test_epoch_start: tuple[EventCaller, ...]
    test_epoch_end: tuple[EventCaller, ...]
    predict_epoch_start: tuple[EventCaller, ...]
    predict_epoch_end: tuple[EventCaller, ...]
    before_backward: tuple[EventCaller, ...]
    after_backward: tuple[EventCaller, ...]
    before_optimizer_step: tuple[EventCaller, ...]
    save_checkpoint: tuple[EventCaller, ...]
    load_checkpoint: tuple[EventCaller, ...]
    exception: tuple[EventCaller, ...]
    sanity_check_start: tuple[EventCaller, ...]
    sanity_check_end: tuple[EventCaller, ...]
    validation_batch_start: tuple[EventCaller, ...]
    validation_batch_end: tuple[EventCaller, ...]
    test_batch_start: tuple[EventCaller, ...]
    test_batch_end: tuple[EventCaller, ...]
    predict_batch_start: tuple[EventCaller, ...]
    predict_batch_end: tuple[EventCaller, ...]
    train_start: tuple[EventCaller, ...]
    train_end: tuple[EventCaller, ...]

    def __init__(
        self,
        hooks: Sequence[FunctionPlan],
        callbacks: Sequence[Callback],
        constants: Mapping[str, Any],
        model_names: Iterable[str],
        hparams: Any,
        events: Iterable[str] = EVENTS,
    ) -> None:
        names = set(model_names)
        #: Per event, the callers of ``@lk.on`` hooks alone (a weights-only checkpoint calls
        #: no callback, as Lightning), and of the callbacks that ``starts_resumed_epoch`` (what
        #: a resumed epoch still needs: the progress bar, the timer).
        self.hooks_only: dict[str, tuple[EventCaller, ...]] = {}
        self.resumed: dict[str, tuple[EventCaller, ...]] = {}
        for event in EVENTS:
            setattr(self, event, ())
        for event in events:
            dynamic = EVENT_ARGS[event]
            supplied = {
                k: v
                for k, v in constants.items()
                if (k in EVENT_SUPPLIES[event] or k in names) and k not in dynamic
            }
            callers = [bind_plan(p, dynamic, supplied, hparams) for p in hooks if p.event == event]
            self.hooks_only[event] = tuple(callers)
            resumed = []
            for cb in callbacks:
                method = getattr(type(cb), f"on_{event}", None)
                if method is not None and method is not getattr(Callback, f"on_{event}"):
                    caller = bind_callback_method(
                        getattr(cb, f"on_{event}"), event, dynamic, supplied
                    )
                    callers.append(caller)
                    if cb.starts_resumed_epoch:
                        resumed.append(caller)
            self.resumed[event] = tuple(resumed)
            setattr(self, event, tuple(callers))

    def fire(self, event: str, *args: Any) -> None:
        """Call every listener of ``event`` (for events off the hot path)."""
        for call in getattr(self, event):
            call(*args)

    def listeners(self, event: str) -> tuple[EventCaller, ...]:
        callers: tuple[EventCaller, ...] = getattr(self, event)
        return callers
