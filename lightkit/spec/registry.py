"""Registries record decorated functions and their roles; they never wrap them.

One registry per Python module by default (keyed by ``fn.__module__``), or an explicit
:class:`Registry` whose methods are the same decorators. Re-registering a function of the same
name and role replaces the old entry, so a notebook cell run twice registers once.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from typing_extensions import ParamSpec

from lightkit.errors import (
    LightkitWarning,
    SpecError,
    describe_function,
    sorted_list,
    user_frame,
)
from lightkit.spec.roles import EVENTS, event_hint

P = ParamSpec("P")
R = TypeVar("R")

_order = itertools.count()


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded function: its role, injection name and options."""

    role: str
    fn: Callable[..., Any]
    name: str
    manual: bool = False
    event: str | None = None
    order: int = 0
    #: The functions running when it was registered, innermost first (none at a module's top
    #: level): what a no-argument ``collect()`` in a function keeps or leaves out.
    registered_in: tuple[types.CodeType, ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        # Role (or event), where the function is defined and the injection name: a rerun
        # notebook cell replaces its entry, while one library function may back two models
        # (``reg.model(mlp, name="encoder"); reg.model(mlp, name="decoder")``) and two
        # functions claiming one model name both stay, for collect() to report.
        # The module too: two libraries' functions of one name are two hooks.
        return (f"on:{self.event}" if self.role == "on" else self.role, self.where, self.name)

    @property
    def where(self) -> str:
        """What the function is, stably across a rerun cell: ``module:qualname`` of where it
        is defined. A partial is its function's plus its arguments, a callable object its
        class's plus its value (both without memory addresses, which change each time a
        cell runs): two partials or objects that differ are two entries."""
        fn = self.fn
        if isinstance(fn, functools.partial):
            args = ", ".join(
                [_stable_repr(a) for a in fn.args]
                + [f"{k}={_stable_repr(v)}" for k, v in fn.keywords.items()]
            )
            return f"partial:{Entry(self.role, fn.func, self.name).where}({args})"
        if not hasattr(fn, "__qualname__"):
            return f"{origin_where(type(fn))}={_stable_repr(fn)}"
        return origin_where(fn)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return _ADDRESS.sub("", text)


def origin(fn: Any) -> Any:
    """The function or class a registered callable comes from: what a rerun cell defines
    anew (through partials, bound methods and ``functools.wraps`` decorators)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    if isinstance(fn, types.FunctionType):
        return inspect.unwrap(fn)
    return fn if hasattr(fn, "__qualname__") else type(fn)  # a callable object: its class


def origin_where(fn: Any) -> str:
    """``module:qualname`` of ``fn``; a lambda's also says where it is written (every lambda
    has that one name; a rerun cell writes it at the same place)."""
    where = f"{getattr(fn, '__module__', None)}:{fn.__qualname__}"
    code = getattr(fn, "__code__", None)
    if code is not None and fn.__qualname__.endswith("<lambda>"):
        end = max((e for *_, e in code.co_positions() if e), default=0)
        where += f"@{code.co_filename}:{code.co_firstlineno}:{end}"
    return where


def redefines(new: Any, old: Any) -> bool:
    """Whether origin ``new`` is ``old`` defined again (a notebook cell run again, a module
    reloaded), rather than the same definition or another of the same name. Closures of one
    definition share their code; two functions of one name in one file start on different
    lines of it; a cell run again is compiled again (another file name, or the same lines)."""
    if new is old:
        return False
    if isinstance(new, types.FunctionType) and isinstance(old, types.FunctionType):
        a, b = new.__code__, old.__code__
        if a is b:
            return False
        return a.co_filename != b.co_filename or a.co_firstlineno == b.co_firstlineno
    return isinstance(new, type) and isinstance(old, type)


def pasted_copy(new: Any, old: Any) -> bool:
    """Whether functions ``new`` and ``old`` were written at two places of one piece of code
    that is running now (a file defining one name twice), rather than ``new`` being ``old``
    compiled again (a cell run again, a module reloaded, even edited). The code that runs a
    definition holds its code object, so both are among that code's constants."""
    if not (isinstance(new, types.FunctionType) and isinstance(old, types.FunctionType)):
        return False
    if new.__code__ is old.__code__:
        return False
    frame: Any = sys._getframe(1)
    while frame is not None:
        consts = frame.f_code.co_consts
        if any(c is new.__code__ for c in consts):
            # At a module's top level only: in a function body, two definitions of one name
            # are usually alternatives (`if kind == "mse": def step ... else: def step ...`).
            top_level = frame.f_code.co_name == "<module>"
            return top_level and any(c is old.__code__ for c in consts)
        frame = frame.f_back
    return False


_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


def running_functions(frame: types.FrameType | None) -> tuple[types.CodeType, ...]:
    """The code of the functions running at ``frame`` and around it, innermost first, up to
    the module-level code that called them (a module, a script, a notebook cell): empty at a
    module's top level. A class body or a comprehension belongs to where it is written."""
    codes: list[types.CodeType] = []
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>":
            break
        if code.co_flags & inspect.CO_NEWLOCALS and code.co_name not in _COMPREHENSIONS:
            codes.append(code)
        frame = frame.f_back
    return tuple(codes)


def _default_name(fn: Any) -> str:
    """A function's name; for a partial or a callable object, one without a memory address
    (which would change each time a notebook cell runs)."""
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(fn, functools.partial):
        return f"functools.partial({_default_name(fn.func)})"
    return f"{type(fn).__name__}()"


def _check_callable(fn: object, role: str) -> None:
    nn = sys.modules.get("torch.nn")  # a module instance exists only once torch is imported
    if nn is not None and isinstance(fn, nn.Module):
        raise SpecError(
            f"@{role} expects a function, got the {type(fn).__name__} module itself. Register "
            f"the function that builds it (`def net(): return ...`), or wrap the module you "
            f'have: `reg.{role}(lambda: module, name="net")`.',
            code="not-a-function",
        )
    if not callable(fn):
        raise SpecError(
            f"@{role} expects a function, got {type(fn).__name__} {fn!r}. "
            f"Decorate a function (`@lk.{role}` above `def ...`), or pass one: "
            f"`reg.{role}(my_function)`.",
            code="not-a-function",
        )


def check_event(event: object, decorator: str) -> None:
    """Raise a ``SpecError`` if ``event`` is not a string (``@lk.on`` used bare). An unknown
    event name is recorded and reported by ``collect()``, with the function and the others'
    problems (:func:`unknown_event`)."""
    if callable(event):
        raise SpecError(
            f'{decorator} needs an event name: write `{decorator}("train_epoch_end")` above '
            f"`def {getattr(event, '__name__', '...')}`, not bare `{decorator}`.",
            code="unknown-event",
        )
    if not isinstance(event, str):
        raise SpecError(
            f"{decorator}({event!r}): the event must be a string, one of {sorted_list(EVENTS)}.",
            code="unknown-event",
        )


def unknown_event(event: str) -> str:
    """What is wrong with an unknown event name, and the likely fix."""
    return (
        f"@on({event!r}): unknown event.{event_hint(event)} "
        f"Available events: {sorted_list(EVENTS)}."
    )


class Registry:
    """A collection of decorated functions. Its methods are the decorators.

    Example::

        reg = lk.Registry()
        reg.model(make_net, name="net")
        reg.training_step(regress)
        spec = lk.collect(reg)
    """

    def __init__(self, name: str = "registry") -> None:
        self.name = name
        self._entries: dict[tuple[str, str, str], Entry] = {}

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._entries)} functions)"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> list[Entry]:
        """Recorded entries in the order their functions were first registered."""
        return sorted(self._entries.values(), key=lambda e: e.order)

    def clear(self) -> None:
        """Forget every recorded function."""
        self._entries.clear()

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.key)
        # A function redefined with another role, event, model name or arguments (a notebook
        # cell edited and run again) replaces its old entries too. One function stacked under
        # two decorators keeps both, and so do closures of one definition registered under
        # other names or events, and two partials or objects that differ.
        new = origin(entry.fn)
        where = origin_where(new)
        stale = [
            key
            for key, e in self._entries.items()
            if key != entry.key  # replaced in place below
            and origin_where(origin(e.fn)) == where
            and redefines(new, origin(e.fn))
        ]
        if stale and old is None:
            old = self._entries[stale[0]]
        for key in stale:
            del self._entries[key]
        if old is not None and pasted_copy(new, origin(old.fn)):
            # The same name defined again further down one file: the later one wins, as it
            # does for the module's name, but a pasted copy should not pass unseen.
            code = new.__code__
            role = f"model {entry.name!r}" if entry.role == "model" else f"@{entry.role}"
            if entry.event:
                role = f"@on({entry.event!r}) hook"
            warnings.warn_explicit(
                LightkitWarning(
                    f"{describe_function(new)} replaces {describe_function(origin(old.fn))} as "
                    f"{role}: a file that defines one name twice keeps the later, as Python does. "
                    f"Rename one if both are meant.",
                    code="function-replaced",
                ),
                LightkitWarning,
                filename=code.co_filename,
                lineno=code.co_firstlineno,
            )
        if old is not None:
            # A redefinition (a notebook cell run again) keeps its place in the build order.
            entry = replace(entry, order=old.order)
        self._entries[entry.key] = entry

    def _record(self, role: str, fn: Callable[..., Any], **options: Any) -> None:
        _check_callable(fn, role)
        name = options.pop("name", None) or _default_name(fn)
        where = running_functions(user_frame())
        self._add(Entry(role, fn, name, order=next(_order), registered_in=where, **options))

    # -- the decorators -------------------------------------------------------------------

    @overload
    def model(self, fn: Callable[P, R], /, *, name: str | None = None) -> Callable[P, R]: ...
    @overload
    def model(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def model(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Record a function that builds an ``nn.Module``; ``name`` is its injection name."""
        if name is not None and not (isinstance(name, str) and name.isidentifier()):
            fixed = re.sub(r"\W", "_", str(name))
            fixed = fixed if fixed.isidentifier() else f"model_{fixed}"
            raise SpecError(
                f"@model(name={name!r}): a model's name must be a Python identifier, since "
                f"other functions receive the model through a parameter of that name. Use "
                f"e.g. name={fixed!r}.",
                code="bad-model-name",
            )

        def record(f: Callable[P, R]) -> Callable[P, R]:
            self._record("model", f, name=name)
            return f

        return record if fn is None else record(fn)

    @overload
    def training_step(self, fn: Callable[P, R], /, *, manual: bool = False) -> Callable[P, R]: ...
    @overload
    def training_step(
        self, fn: None = None, /, *, manual: bool = False
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def training_step(self, fn: Any = None, /, *, manual: bool = False) -> Any:
        """Record the training step. ``manual=True``: the step calls ``ctx.backward`` and
        ``opt.step()`` itself."""

        def record(f: Callable[P, R]) -> Callable[P, R]:
            self._record("training_step", f, manual=bool(manual))
            return f

        return record if fn is None else record(fn)

    def _simple(self, role: str, fn: Any) -> Any:
        def record(f: Callable[P, R]) -> Callable[P, R]:
            self._record(role, f)
            return f

        # `@reg.train_data` and `@reg.train_data()` both record the function below them.
        return record if fn is None else record(fn)

    @overload
    def validation_step(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def validation_step(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def validation_step(self, fn: Any = None, /) -> Any:
        """Record the validation step (runs under ``torch.no_grad`` with models in eval mode)."""
        return self._simple("validation_step", fn)

    @overload
    def test_step(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def test_step(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def test_step(self, fn: Any = None, /) -> Any:
        """Record the test step."""
        return self._simple("test_step", fn)

    @overload
    def predict_step(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def predict_step(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def predict_step(self, fn: Any = None, /) -> Any:
        """Record the prediction step; what it returns is collected by ``trainer.predict``."""
        return self._simple("predict_step", fn)

    @overload
    def configure_optimizers(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def configure_optimizers(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def configure_optimizers(self, fn: Any = None, /) -> Any:
        """Record the function that returns the optimizers (and schedulers)."""
        return self._simple("configure_optimizers", fn)

    @overload
    def train_data(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def train_data(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def train_data(self, fn: Any = None, /) -> Any:
        """Record the function that returns the training ``DataLoader`` (or any iterable)."""
        return self._simple("train_data", fn)

    @overload
    def val_data(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def val_data(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def val_data(self, fn: Any = None, /) -> Any:
        """Record the validation data function (a loader, or a list of loaders)."""
        return self._simple("val_data", fn)

    @overload
    def test_data(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def test_data(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def test_data(self, fn: Any = None, /) -> Any:
        """Record the test data function."""
        return self._simple("test_data", fn)

    @overload
    def predict_data(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def predict_data(self, /) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def predict_data(self, fn: Any = None, /) -> Any:
        """Record the prediction data function."""
        return self._simple("predict_data", fn)

    def on(self, event: str, fn: Callable[P, R] | None = None, /) -> Any:
        """Record a hook for ``event`` (``@reg.on("train_epoch_end")``)."""
        check_event(event, "@reg.on")

        def record(f: Callable[P, R]) -> Callable[P, R]:
            self._record("on", f, event=event)
            return f

        return record if fn is None else record(fn)


#: One registry per Python module, created on first use.
_MODULE_REGISTRIES: dict[str, Registry] = {}


def registry_for(module: str) -> Registry:
    """The default registry of a module (created empty if the module registered nothing)."""
    reg = _MODULE_REGISTRIES.get(module)
    if reg is None:
        reg = _MODULE_REGISTRIES[module] = Registry(module)
    return reg


def has_registry(module: str) -> bool:
    return module in _MODULE_REGISTRIES
