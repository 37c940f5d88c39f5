"""Apply a function to every tensor in a nested batch (tuples, lists, dicts, dataclasses)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch


def apply_to_tensors(
    data: Any,
    fn: Callable[[torch.Tensor], Any],
    other: Callable[[Any], Any] | None = None,
) -> Any:
    """Return ``data`` with ``fn`` applied to each tensor (and ``other``, if given, to every
    other leaf); containers are rebuilt, not mutated."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, (list, tuple)):
        if other is not None and hasattr(data, "_fields") and callable(getattr(data, "to", None)):
            # A namedtuple with its own `to` (PackedSequence) moves as a whole: its parts
            # have rules of their own (batch_sizes stays on the CPU).
            return other(data)
        items = [apply_to_tensors(x, fn, other) for x in data]
        if hasattr(data, "_fields"):  # namedtuple
            return type(data)(*items)
        return type(data)(items)
    if isinstance(data, Mapping):
        values = {k: apply_to_tensors(v, fn, other) for k, v in data.items()}
        if isinstance(data, defaultdict):  # built from its factory first
            return type(data)(data.default_factory, values)
        return type(data)(values)  # type: ignore[call-arg]
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), fn, other)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    return data if other is None else other(data)


def first_tensor(data: Any) -> torch.Tensor | None:
    """The first tensor found in ``data`` (depth first), or ``None``."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, (list, tuple)):
        for x in data:
            t = first_tensor(x)
            if t is not None:
                return t
    elif isinstance(data, Mapping):
        for x in data.values():
            t = first_tensor(x)
            if t is not None:
                return t
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        for f in dataclasses.fields(data):
            t = first_tensor(getattr(data, f.name))
            if t is not None:
                return t
    return None
