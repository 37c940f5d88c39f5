"""attrs validators for the options of the built-in callbacks and loggers.

attrs' own validators raise a ``ValueError`` whose arguments include the whole ``Attribute``
repr. These raise lightkit's ``ConfigError`` (code ``bad-plugin-argument``) with a message
that names the class, the argument, the value, what is allowed, and the closest allowed
value when one is close::

    ModelCheckpoint(mode='maximum'): mode must be one of 'min', 'max'. Did you mean 'max'?
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from lightkit.errors import ConfigError, did_you_mean
from lightkit.utils.duration import parse_duration

__all__ = ["at_least", "bad_argument", "bad_choice", "kind_of", "one_of", "seconds"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def bad_argument(call: str, message: str) -> ConfigError:
    """The error for a bad option: ``call`` shows it (``"Timer(interval='batch')"``)."""
    return ConfigError(f"{call}: {message}", code="bad-plugin-argument")


def bad_choice(call: str, name: str, value: Any, choices: Sequence[Any]) -> ConfigError:
    """``value`` of ``name`` is none of ``choices``; suggests the closest string choice."""
    allowed = ", ".join(repr(c) for c in choices)
    hint = ""
    if isinstance(value, str):
        hint = did_you_mean(value, [c for c in choices if isinstance(c, str)])
    return bad_argument(call, f"{name} must be one of {allowed}.{hint}")


def _call(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> tuple[str, str]:
    name = attribute.alias or attribute.name
    return f"{type(instance).__name__}({name}={value!r})", name


def one_of(*choices: Any) -> Validator:
    """The value must be one of ``choices`` (strings or ``None``)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            call, name = _call(instance, attribute, value)
            raise bad_choice(call, name, value, choices)

    return check


def at_least(minimum: float, *, integer: bool = True, optional: bool = False) -> Validator:
    """The value must be a number (an int with ``integer``) of at least ``minimum``;
    ``None`` too with ``optional``."""
    kind = "an integer" if integer else "a number"
    types = numbers.Integral if integer else numbers.Real

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, types) and not isinstance(value, bool) and float(value) >= minimum:
            return
        call, name = _call(instance, attribute, value)
        expected = f"{kind} >= {minimum:g}" + (" or None" if optional else "")
        raise bad_argument(call, f"{name} must be {expected}.")

    return check


def kind_of(types: type | tuple[type, ...], expected: str) -> Validator:
    """The value must be an instance of ``types`` (a ``bool`` only where ``bool`` is named:
    ``True`` is no version number); ``expected`` says so in words."""
    allowed = types if isinstance(types, tuple) else (types,)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
            return
        call, name = _call(instance, attribute, value)
        raise bad_argument(call, f"{name} must be {expected}.")

    return check


def seconds(value: Any, owner: str, name: str) -> float | None:
    """``value`` (an option ``name`` of class ``owner``) in seconds, from a number, a
    ``timedelta``, a dict of ``timedelta`` arguments or ``"DD:HH:MM:SS"``; ``None`` stays."""
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        raise bad_argument(
            f"{owner}({name}={value!r})",
            f"{name} must be a positive number of seconds, a timedelta, a dict of timedelta "
            f"arguments or 'DD:HH:MM:SS'.",
        ) from None
