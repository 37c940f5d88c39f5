"""The module-level decorators: ``@lk.model``, ``@lk.training_step``, ``@lk.on(...)``, ...

Each records the function in the registry of the module that defines it and returns the
function itself (``decorated is original``), so it stays a plain, directly callable function.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, overload

from typing_extensions import ParamSpec

from lightkit.errors import LightkitWarning
from lightkit.spec.registry import check_event, registry_for

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "configure_optimizers",
    "model",
    "on",
    "predict_data",
    "predict_step",
    "test_data",
    "test_step",
    "train_data",
    "training_step",
    "val_data",
    "validation_step",
]


def _module_of(fn: Callable[..., Any], role: str) -> str:
    """The module whose registry records ``fn``: the one that defines it (DESIGN's rule). A
    callable object defines nothing (a ``functools.partial`` says ``"functools"``): it goes
    to the module that registers it. A function of another module registered by a plain call
    (``lk.train_data(imported_fn)``) stays in its own module's registry, with a warning, since
    ``lk.collect()`` in the calling module will not find it there."""
    caller, depth, top_level = _calling_module()
    if not (inspect.isfunction(inspect.unwrap(fn)) or isinstance(fn, type)):
        return caller or "__main__"
    module = getattr(fn, "__module__", None) or "__main__"
    # Only a call at a module's top level: inside a function it may be the user's own
    # decorator (`def my_model(fn): return lk.model(fn)`), applied where fn is defined.
    if top_level and caller is not None and caller != module:
        warnings.warn(
            LightkitWarning(
                f"lk.{role}({fn.__qualname__}) called in {caller!r} records {fn.__qualname__} "
                f"in the registry of {module!r}, the module that defines it, so lk.collect() in "
                f"{caller!r} does not see it. Collect that module too (lk.collect({module!r}, "
                f"...)), or register on an explicit registry: reg = lk.Registry(); "
                f"reg.{role}({fn.__qualname__}); lk.collect(reg).",
                code="registered-elsewhere",
            ),
            stacklevel=depth,
        )
    return module


def _calling_module() -> tuple[str | None, int, bool]:
    """The module of the first frame outside this file (where the decorator was used), the
    ``stacklevel`` that points a warning raised in :func:`_module_of` there, and whether
    that frame is the module's top level."""
    frame: Any = sys._getframe(2)
    depth = 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, depth = frame.f_back, depth + 1
    if frame is None:
        return None, depth, False
    return frame.f_globals.get("__name__"), depth, frame.f_code.co_name == "<module>"


@overload
def model(fn: Callable[P, R], /, *, name: str | None = None) -> Callable[P, R]: ...
@overload
def model(
    fn: None = None, /, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def model(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a function that builds an ``nn.Module``.

    Other functions receive the built module through a parameter of its name (the function's
    name, or ``name=``). Parameters with defaults are hyperparameters.

    Example::

        @lk.model
        def net(hidden: int = 64) -> nn.Module:
            return nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    """

    def record(f: Callable[P, R]) -> Callable[P, R]:
        return registry_for(_module_of(f, "model")).model(f, name=name)

    return record if fn is None else record(fn)


def _bare_or_called(fn: Any, record: Callable[[Any], Any]) -> Any:
    """``@lk.train_data`` and ``@lk.train_data()`` both record the function below them."""
    return record if fn is None else record(fn)


@overload
def training_step(fn: Callable[P, R], /, *, manual: bool = False) -> Callable[P, R]: ...
@overload
def training_step(
    fn: None = None, /, *, manual: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def training_step(fn: Any = None, /, *, manual: bool = False) -> Any:
    """Mark the training step: it returns the loss (a scalar tensor), a dict with ``"loss"``,
    or ``None`` (skip the step; always ``None`` in manual optimization).

    Example::

        @lk.training_step
        def train(net, batch):
            x, y = batch
            return nn.functional.cross_entropy(net(x), y)
    """

    def record(f: Callable[P, R]) -> Callable[P, R]:
        return registry_for(_module_of(f, "training_step")).training_step(f, manual=manual)

    return record if fn is None else record(fn)


@overload
def validation_step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def validation_step() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def validation_step(fn: Any = None, /) -> Any:
    """Mark the validation step (no grad, models in eval mode). Example::

    @lk.validation_step
    def val(net, batch):
        lk.log("val/loss", loss_of(net, batch))
    """
    return _bare_or_called(
        fn, lambda f: registry_for(_module_of(f, "validation_step")).validation_step(f)
    )


@overload
def test_step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def test_step() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def test_step(fn: Any = None, /) -> Any:
    """Mark the test step (like the validation step, for ``trainer.test``)."""
    return _bare_or_called(fn, lambda f: registry_for(_module_of(f, "test_step")).test_step(f))


@overload
def predict_step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def predict_step() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def predict_step(fn: Any = None, /) -> Any:
    """Mark the prediction step; ``trainer.predict`` returns what it returns, per batch."""
    return _bare_or_called(
        fn, lambda f: registry_for(_module_of(f, "predict_step")).predict_step(f)
    )


@overload
def configure_optimizers(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def configure_optimizers() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def configure_optimizers(fn: Any = None, /) -> Any:
    """Mark the function that returns the optimizer(s) and scheduler(s). Example::

    @lk.configure_optimizers
    def optim(net, lr: float = 1e-3):
        return torch.optim.AdamW(net.parameters(), lr=lr)
    """
    return _bare_or_called(
        fn, lambda f: registry_for(_module_of(f, "configure_optimizers")).configure_optimizers(f)
    )


@overload
def train_data(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def train_data() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def train_data(fn: Any = None, /) -> Any:
    """Mark the function that returns the training ``DataLoader``."""
    return _bare_or_called(fn, lambda f: registry_for(_module_of(f, "train_data")).train_data(f))


@overload
def val_data(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def val_data() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def val_data(fn: Any = None, /) -> Any:
    """Mark the function that returns the validation loader (or a list of loaders)."""
    return _bare_or_called(fn, lambda f: registry_for(_module_of(f, "val_data")).val_data(f))


@overload
def test_data(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def test_data() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def test_data(fn: Any = None, /) -> Any:
    """Mark the function that returns the test loader (or a list of loaders)."""
    return _bare_or_called(fn, lambda f: registry_for(_module_of(f, "test_data")).test_data(f))


@overload
def predict_data(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def predict_data() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def predict_data(fn: Any = None, /) -> Any:
    """Mark the function that returns the prediction loader (or a list of loaders)."""
    return _bare_or_called(
        fn, lambda f: registry_for(_module_of(f, "predict_data")).predict_data(f)
    )


def on(event: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a hook for ``event``; it receives injected names like any other function.

    Example::

        @lk.on("train_epoch_end")
        def report(ctx):
            print(ctx.epoch, ctx.metrics)
    """
    check_event(event, "@lk.on")

    def record(f: Callable[P, R]) -> Callable[P, R]:
        return registry_for(_module_of(f, "on")).on(event, f)  # type: ignore[no-any-return]

    return record
