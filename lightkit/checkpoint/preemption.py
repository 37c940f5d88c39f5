"""Preemption: a signal asks the run to stop; it finishes the step, saves, and exits.

While ``fit`` runs, the signals in ``TrainerConfig.preemption_signals`` (``SIGTERM`` by
default; add ``SIGUSR1`` for SLURM's ``--signal``) are caught. The handler only records the
signal. The fit loop notices it after the current training batch (or evaluation) is done,
writes ``last.ckpt`` (into the ``ModelCheckpoint`` folder, else ``<run_dir>/checkpoints``),
lets the loggers flush, calls the handler that was installed before ``fit`` (if it was a
function), and raises :class:`Preempted`, a ``SystemExit`` with status ``128 + signal``:
143 for SIGTERM, 138 for SIGUSR1. The previous handlers are restored when ``fit`` returns.

With several processes, each rank checks every ``log_every_n_steps`` batches (one small
collective) whether any rank got the signal, so all ranks stop after the same batch.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine


class Preempted(SystemExit):
    """Raised by ``fit`` after a preemption signal, once ``last.ckpt`` is written.

    ``code`` is ``128 + signal`` (143 for SIGTERM), the status the process exits with unless
    the exception is caught. ``checkpoint`` is the file written (``None`` if none could be).
    """

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.signum, self.checkpoint))


class Preemption:
    """The signal handlers of one ``fit`` call and the loop's check for them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.received: int | None = None
        self.handled = False
        self._previous: dict[int, Any] = {}
        self._distributed = engine.runtime.world_size > 1
        self._every = engine.config.log_every_n_steps

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum

    def due(self, batches_seen: int, force: bool = False) -> bool:
        """Whether to stop now. Free in one process; with several, a collective every
        ``log_every_n_steps`` batches (and whenever ``force``) so all ranks agree."""
        if not self._distributed:
            return self.received is not None
        if not force and batches_seen % self._every:
            return False
        return bool(self.engine.runtime.strategy.reduce_any(self.received is not None))

    def stop(self, position: tuple[int, int]) -> None:
        """Save ``last.ckpt`` at ``position`` (epoch, batches done), then raise ``Preempted``."""
        self.handled = True
        self.engine.stopped_by = "signal"
        signum = self.received if self.received is not None else int(signal.SIGTERM)
        path = save_last(self.engine, position)
        if self.engine.runtime.is_global_zero:
            name = signal.Signals(signum).name
            saved = f"saved {path}" if path is not None else "nothing saved (no run folder)"
            print(
                f"lightkit: {name} received; {saved}; exiting with status {128 + signum}.",
                file=sys.stderr,
                flush=True,
            )
        self.call_previous(signum)
        raise Preempted(signum, path)

    def call_previous(self, signum: int) -> None:
        """Run the handler the user had installed for ``signum`` before ``fit``."""
        call_previous(self._previous, signum)


def save_last(engine: Engine, position: tuple[int, int]) -> Path | None:
    """Write ``last.ckpt`` now, through the first ``ModelCheckpoint`` if there is one."""
    from lightkit.callbacks.checkpoint import ModelCheckpoint
    from lightkit.checkpoint.state import build_checkpoint

    for cb in engine.callbacks:
        if isinstance(cb, ModelCheckpoint):
            return cb.save_last_now(engine, position)
    if engine.run_dir is None:
        return None
    path = engine.run_dir / "checkpoints" / "last.ckpt"
    engine.runtime.strategy.save_checkpoint(build_checkpoint(engine, position=position), path)
    engine.runtime.barrier("preemption-save")
    engine.last_checkpoint = path
    return path


@contextlib.contextmanager
def preemption_guard(engine: Engine, stage: str) -> Iterator[None]:
    """Catch the configured signals while ``fit`` runs; restore the handlers afterwards."""
    names = list(getattr(engine.config, "preemption_signals", []) or [])
    if stage != "fit" or not names:
        yield
        return
    guard = Preemption(engine)
    engine.preemption = guard
    try:
        with handling(names, guard._handle) as guard._previous:
            yield
        if guard.received is not None and not guard.handled:
            # The signal came after the last batch: the run is complete, but was asked to end.
            signum = guard.received
            guard.call_previous(signum)
            raise Preempted(signum, engine.last_checkpoint)
    finally:
        engine.preemption = None


@contextlib.contextmanager
def handling(names: list[str], handler: Any) -> Iterator[dict[int, Any]]:
    """``handler`` for the signals ``names`` while the block runs, then the previous handlers
    again; yields those (empty outside the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {
        int(sig): signal.signal(sig, handler) for sig in map(signal.Signals.__getitem__, names)
    }
    try:
        yield previous
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def call_previous(previous: dict[int, Any], signum: int) -> None:
    """Run the handler the user had installed for ``signum`` before lightkit's, if a function."""
    handler = previous.get(signum)
    if callable(handler):
        handler(signum, None)


__all__ = ["Preempted", "Preemption", "call_previous", "handling", "preemption_guard", "save_last"]
