"""The ``Logger`` protocol and the run folder loggers write into.

A logger buffers what it is given and writes it out every ``flush_every_n_steps`` steps and
always in ``finalize`` (also when training raised, before the error propagates). Only global
rank 0 logs.

The trainer calls, in order: ``setup(run_dir)``, ``log_hparams(params)``, ``log_graph(model)``
per model (fit only), ``log_metrics(row, step)`` per logging step, and at the end
``log_hparams(params, final_metrics)`` (a successful fit) and ``finalize(status)``. A step may
come again right after its row: the evaluation and epoch aggregates computed at a step follow
its training values, and on a shared name the later value is the one to keep.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lightkit.utils.validators import at_least, bad_argument, kind_of


# Not slotted: a subclass may be a plain class with its own ``__init__`` that never calls
# ``super().__init__()``, and its attributes must survive pickling (``devices=N`` sends the
# loggers to the processes it starts); the fields' defaults are put back on the class below.
@attrs.define(slots=False)
class Logger:
    """Base of every logger; each method is a no-op by default, so a custom logger overrides
    what it needs. A subclass may define its own ``__init__`` without calling
    ``super().__init__()``: it then has the defaults below (writes into the run folder).

    Args:
        save_dir: ``None``: write into the run folder the trainer creates
            (``default_root_dir/lightkit_logs/<name>/version_N``). A folder: write into
            ``save_dir/<name>/version_N`` of its own.
        name: the folder name under ``save_dir`` (default ``"default"``; ``""``: the version
            folders go in ``save_dir`` itself, as Lightning's).
        version: a fixed version (an int gives ``version_<int>``, a string is the folder
            name); ``None`` takes the next free number.
        flush_every_n_steps: logging steps buffered between writes.

    Example::

        @attrs.define
        class PrintLogger(lk.Logger):
            def log_metrics(self, metrics, step):
                print(step, metrics)
    """

    save_dir: str | Path | None = attrs.field(
        default=None, validator=kind_of((str, os.PathLike, type(None)), "a folder path or None")
    )
    name: str | None = attrs.field(
        default=None, validator=kind_of((str, type(None)), "a folder name or None")
    )
    version: int | str | None = attrs.field(
        default=None,
        validator=kind_of((int, str, type(None)), "an int (version_<int>), a folder name or None"),
    )
    flush_every_n_steps: int = attrs.field(default=100, validator=at_least(1))
    log_dir: Path | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        given = [n for n in ("name", "version") if getattr(self, n) is not None]
        if self.save_dir is None and given:
            args = ", ".join(f"{n}={getattr(self, n)!r}" for n in given)
            what = " and ".join(given)
            raise bad_argument(
                f"{type(self).__name__}({args})",
                f"{what} {'pick' if len(given) > 1 else 'picks'} a folder under save_dir, and "
                f"there is none: without save_dir the logger writes into the run folder, which "
                f"the trainer names (<default_root_dir>/lightkit_logs/<module>/version_N). Pass "
                f"save_dir too, or drop {what}.",
            )

    def setup(self, run_dir: Path) -> None:
        """Choose the folder to write into: ``run_dir``, or a version folder of ``save_dir``."""
        if self.save_dir is None:
            self.log_dir = Path(run_dir)
        else:
            root = Path(self.save_dir)
            self.log_dir = make_version_dir(
                root if self.name == "" else root / (self.name or "default"), self.version
            )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""

    def log_hparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record the run's hyperparameters (and, at the end, its final metrics)."""

    def log_graph(self, model: Any, example_input: Any = None) -> None:
        """Record ``model``'s graph (fit start; ``example_input`` or its
        ``example_input_array``)."""

    def save(self) -> None:
        """Write out everything buffered."""

    def finalize(self, status: str) -> None:
        """Write everything out and close; ``status`` is ``"success"``, ``"failed"`` or ``"interrupted"``."""
        self.save()


# attrs takes the defaults off a class that is not slotted; back on it, they are what a
# subclass whose ``__init__`` skips ``super().__init__()`` reads (an instance's own values,
# set by the attrs ``__init__``, come first).
for _field in attrs.fields(Logger):
    setattr(Logger, _field.name, _field.default)
del _field


def reset_run_state(logger: Any) -> None:
    """Set an attrs logger's ``init=False`` fields (what it remembers of a run: buffered rows,
    columns, the last values) back to their defaults: a logger used again starts clean."""
    for field in attrs.fields(type(logger)):
        if field.init:
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory(logger) if default.takes_self else default.factory()
        object.__setattr__(logger, field.name, default)


def make_version_dir(parent: Path, version: int | str | None = None) -> Path:
    """Create ``parent/version_N`` with the next free N, race-free across processes."""
    parent.mkdir(parents=True, exist_ok=True)
    if version is not None:
        path = parent / (version if isinstance(version, str) else f"version_{version}")
        path.mkdir(parents=True, exist_ok=True)
        return path
    existing = [
        int(p.name.split("_", 1)[1])
        for p in parent.iterdir()
        if p.name.startswith("version_") and p.name.split("_", 1)[1].isdigit()
    ]
    n = max(existing, default=-1) + 1
    while True:
        path = parent / f"version_{n}"
        try:
            os.mkdir(path)  # atomic: exactly one process wins each number
            return path
        except FileExistsError:
            n += 1


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Hyperparameters as scalars/strings, the form TensorBoard and CSV can hold; a dict (or a
    pydantic model) becomes one entry per item, ``"outer/inner"``, as Lightning flattens them."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        dump = getattr(value, "model_dump", None)
        if callable(dump) and not isinstance(value, type):
            value = dump()
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}/"))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif hasattr(value, "value") and isinstance(value.value, (int, float, str)):
            out[name] = value.value  # enums
        else:
            out[name] = str(value)
    return out
