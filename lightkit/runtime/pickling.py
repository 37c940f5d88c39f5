"""Pickling for another process: what ``devices=N`` sends to its ranks and gets back.

cloudpickle sends functions of ``__main__`` (a script, a notebook) and the spec's run-time
hyperparameter model by value, which plain pickle refuses; the override below also sends
plain subclasses of lightkit's slotted plugins whole.
"""

from __future__ import annotations

import io
import linecache
import os
import pickle
import types
from typing import Any

import attrs


def dumps(obj: Any) -> bytes:
    """Pickle for another process: cloudpickle (functions of ``__main__`` and the spec's
    run-time hyperparameter model by value), and whole plain subclasses of lightkit's slotted
    plugins (below)."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            # A plain subclass of a slotted attrs class (``class Counter(lk.Callback)``
            # setting ``self.count`` in __init__) has a __dict__ that attrs' __getstate__
            # leaves out: send both.
            cls = type(obj)
            if (
                not isinstance(obj, type)
                and attrs.has(cls)
                and getattr(obj, "__dict__", None)
                and any("__slots__" in vars(k) for k in cls.__mro__[1:-1] if attrs.has(k))
            ):
                slots = {n: getattr(obj, n) for n in _slot_names(cls) if hasattr(obj, n)}
                return _rebuild_slotted, (cls, slots, dict(obj.__dict__))
            if isinstance(obj, types.CodeType):
                return _code_reduce(obj)
            parent = getattr(super(), "reducer_override", None)
            return parent(obj) if parent is not None else NotImplemented

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _code_reduce(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, keeping its file name: cloudpickle writes
    ``<dynamic-code>``, so a rank's traceback through a script's function would show neither
    the file nor its lines."""
    from cloudpickle import cloudpickle as impl

    reduce = getattr(impl, "_code_reduce", None)
    if reduce is None:
        return NotImplemented
    constructor, args = reduce(code)
    args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    # A notebook cell's "file" exists only in the kernel's line cache: send its lines too, so
    # a rank's traceback shows the failing line as the notebook's own does.
    entry = linecache.cache.get(code.co_filename)
    # A full entry (size, mtime, lines, name); a lazy one holds a loader, which need not pickle.
    full = isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[2], list)
    if full and not os.path.isfile(code.co_filename):
        return _code_with_lines, (constructor, args, code.co_filename, entry)
    return constructor, args


def _code_with_lines(constructor: Any, args: tuple[Any, ...], filename: str, entry: Any) -> Any:
    linecache.cache.setdefault(filename, entry)
    return constructor(*args)


def _slot_names(cls: type) -> list[str]:
    names = [n for k in cls.__mro__ for n in vars(k).get("__slots__", ())]
    return [n for n in names if n not in ("__weakref__", "__dict__")]


def _rebuild_slotted(cls: Any, slots: dict[str, Any], values: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    for name, value in slots.items():
        object.__setattr__(obj, name, value)
    obj.__dict__.update(values)
    return obj


__all__ = ["dumps"]
