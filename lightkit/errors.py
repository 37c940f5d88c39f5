"""lightkit's errors: a small hierarchy, each problem with a stable kebab-case code.

Every code has a section in ``docs/errors.md``; a test keeps the two in step.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType, MappingProxyType
from typing import Any

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistributedError",
    "LightkitError",
    "MisconfigurationError",
    "Problem",
    "SpecError",
    "StepError",
    "describe_function",
]


class LightkitError(Exception):
    """Base class of every error lightkit raises on purpose.

    ``code`` is the kebab-case name of the problem (a section of ``docs/errors.md``).
    """

    code: str = "lightkit-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Problem:
    """One problem found while collecting a spec: where, what and the fix."""

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"Problem({self.code!r}, {self.message!r})"


class SpecError(LightkitError, ValueError):
    """The decorated functions do not form a valid spec. Lists every problem at once."""

    code = "invalid-spec"

    def __init__(
        self, problems: Sequence[Problem] | str, *, where: str = "", code: str | None = None
    ):
        if isinstance(problems, str):
            problems = [Problem(code or self.code, problems)]
        self.problems: list[Problem] = list(problems)
        codes = {p.code for p in self.problems}
        if len(self.problems) == 1:
            message = self.problems[0].message
        else:
            head = f"{len(self.problems)} problems" + (f" in {where}" if where else "") + ":"
            message = head + "".join(
                f"\n\n  [{p.code}] " + p.message.replace("\n", "\n  ") for p in self.problems
            )
        super().__init__(message, code=code or (codes.pop() if len(codes) == 1 else self.code))

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]


class LightkitWarning(UserWarning):
    """A warning lightkit gives on purpose; ``code`` names it, as an error's does."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Under -W error it is raised, and may cross to another process or be copied.
        return _warning, (str(self), self.code)


def _warning(message: str, code: str) -> LightkitWarning:
    return LightkitWarning(message, code=code)


class ConfigError(LightkitError, ValueError):
    """The trainer's configuration cannot work (impossible flag combination, unknown plugin)."""

    code = "invalid-config"


MisconfigurationError = ConfigError


class StepError(LightkitError, TypeError):
    """A user function returned something the loop cannot use."""

    code = "bad-step-output"


class CheckpointError(LightkitError, RuntimeError):
    """A checkpoint cannot be written, read or used for what was asked."""

    code = "bad-checkpoint"


class DistributedError(LightkitError, RuntimeError):
    """A distributed run failed: a rank raised or died, or the group could not form.

    ``rank``: the rank that failed first; ``exception_type``: its exception's class
    (``"builtins.ValueError"``), ``None`` when it died without raising; ``exitcodes``: every
    rank's exit code. ``None`` and empty where the failure is not one rank's (the group could
    not form)."""

    code = "distributed-failure"
    rank: int | None = None
    exception_type: str | None = None
    exitcodes: Mapping[int, int | None] = MappingProxyType({})


def _code_owner(fn: Any) -> Any:
    """What holds the code of a callable: a partial's function, a callable object's
    ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if not (inspect.isroutine(fn) or isinstance(fn, type)) and callable(fn):
        return type(fn).__call__
    return fn


def _code_of(fn: Callable[..., Any]) -> Any:
    """The code object behind ``fn`` (``None`` for a builtin or a class without one)."""
    fn = _code_owner(fn)
    fn = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    return getattr(fn, "__code__", None)


def _location(fn: Callable[..., Any]) -> str:
    code = _code_of(fn)
    if code is None:
        return getattr(_code_owner(fn), "__module__", "?") or "?"
    return _place(code.co_filename, code.co_firstlineno)


def _place(path: str, line: int) -> str:
    """``x.py:12``, or IPython's own ``Cell In[5], line 2`` for a notebook cell (whose file
    name is a kernel's temporary one, which tells the reader nothing)."""
    cell = _notebook_cell(path)
    return f"Cell In[{cell}], line {line}" if cell is not None else f"{_relative(path)}:{line}"


def file_label(fn: Callable[..., Any]) -> str:
    """The file that defines ``fn`` as messages name it: ``x.py`` or ``Cell In[5]``."""
    code = _code_of(fn)
    if code is None:
        return getattr(_code_owner(fn), "__module__", "?") or "?"
    cell = _notebook_cell(code.co_filename)
    return f"Cell In[{cell}]" if cell is not None else _relative(code.co_filename)


def _notebook_cell(path: str) -> int | None:
    """The execution count of the IPython cell compiled under ``path``, if any."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
        # IPython's {filename: execution_count}, which its own tracebacks read.
        found = shell.compile._filename_map.get(path) if shell is not None else None
    except Exception:
        return None
    return found if isinstance(found, int) else None


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def describe_function(fn: Callable[..., Any]) -> str:
    """Render a function as ``train(net, batch, foo) at examples/x.py:12`` for messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        owner = _code_owner(fn)
        inner = getattr(owner, "__qualname__", None) or repr(fn)
        if isinstance(fn, functools.partial):
            name = f"partial({inner})"
        else:
            name = inner.removesuffix(".__call__") if callable(fn) else repr(fn)
    try:
        params = ", ".join(
            ("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + name
            for name, p in inspect.signature(fn).parameters.items()
        )
    except (TypeError, ValueError):
        params = "..."
    return f"{name}({params}) at {_location(fn)}"


def sorted_list(names: Iterable[str]) -> str:
    """``a, b, c`` or ``(none)``: for the "available: ..." part of a message."""
    items = sorted(set(names))
    return ", ".join(items) if items else "(none)"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` when a close match exists, else an empty string."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def user_frame() -> FrameType | None:
    """The innermost frame outside lightkit (``None`` if lightkit's own frames are all)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return frame


def user_call_site() -> str:
    """Where the first frame outside lightkit stands: ``train() at examples/x.py:31``."""
    frame = user_frame() or sys._getframe(1)
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
    return f"{name}() at {_place(code.co_filename, frame.f_lineno)}"


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes the caller's warning name the first frame outside
    lightkit (the user's ``fit(...)`` line, say), however deep the caller sits."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
