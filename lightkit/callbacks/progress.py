"""``ProgressBar``: epoch, batch, speed, ETA and the ``prog_bar=True`` metrics.

Three ways to draw, picked when a run starts (``mode="auto"``):

- a terminal (stdout is a TTY): tqdm bars, the validation bar nested under the epoch's;
- a notebook: tqdm's widget (``tqdm.auto``), when ipywidgets is installed;
- anything else (a log file, CI, a pipe): plain text lines, at most ``text_lines_per_epoch``
  per training epoch plus one per validation, never carriage returns.

Cost per batch is a counter and, every ``refresh_rate`` batches, a clock read: the bar is
redrawn and the metrics read (a host sync) at most every ``min_interval`` seconds.
Only global rank 0 draws.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, ClassVar, Literal

import attrs

from lightkit.callbacks.base import Callback
from lightkit.utils.validators import at_least, one_of

_EVAL_NAMES = {"validate": "Validation", "test": "Testing", "predict": "Predicting"}


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stdout is not a TTY but widgets can draw)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def format_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@attrs.define
class ProgressBar(Callback):
    """Show training progress (global rank 0 only). On by default
    (``enable_progress_bar=False`` turns it off).

    Args:
        refresh_rate: batches between updates (Lightning's name); ``0`` shows nothing, as
            Lightning's. The bar is also redrawn at most every ``min_interval`` seconds, so a
            fast loop pays almost nothing.
        leave: keep each finished epoch's bar on screen instead of reusing one bar.
        mode: ``"auto"``, ``"bar"`` (tqdm, widget in notebooks) or ``"text"`` (plain lines).
        text_lines_per_epoch: in text mode, the most lines a training epoch prints.
        min_interval: seconds between redraws of a bar.
        file: the stream to write to (default: ``sys.stdout`` when the run starts).

    Example::

        lk.Trainer(callbacks=[lk.ProgressBar(refresh_rate=10)])
    """

    starts_resumed_epoch: ClassVar[bool] = True

    refresh_rate: int = attrs.field(default=1, validator=at_least(0))
    leave: bool = False
    mode: Literal["auto", "bar", "text"] = attrs.field(
        default="auto", validator=one_of("auto", "bar", "text")
    )
    text_lines_per_epoch: int = attrs.field(default=5, validator=at_least(1))
    min_interval: float = attrs.field(default=0.1, validator=at_least(0, integer=False))
    file: Any = None

    _enabled: bool = attrs.field(default=False, init=False, repr=False)
    _text: bool = attrs.field(default=False, init=False, repr=False)
    _notebook: bool = attrs.field(default=False, init=False, repr=False)
    _stream: Any = attrs.field(default=None, init=False, repr=False)
    _engine: Any = attrs.field(default=None, init=False, repr=False)
    _stage: str = attrs.field(default="fit", init=False, repr=False)
    # The training bar (epoch) and the evaluation bar (validation/test/predict).
    _train: Any = attrs.field(default=None, init=False, repr=False)
    _train_total: int | None = attrs.field(default=None, init=False, repr=False)
    _train_start: float = attrs.field(default=0.0, init=False, repr=False)
    _train_initial: int = attrs.field(default=0, init=False, repr=False)
    _train_n: int = attrs.field(default=0, init=False, repr=False)
    _next_draw: float = attrs.field(default=0.0, init=False, repr=False)
    _next_line: float = attrs.field(default=math.inf, init=False, repr=False)
    _line_every: int = attrs.field(default=0, init=False, repr=False)
    _eval: Any = attrs.field(default=None, init=False, repr=False)
    _eval_total: int | None = attrs.field(default=None, init=False, repr=False)
    _eval_n: int = attrs.field(default=0, init=False, repr=False)
    _eval_start: float = attrs.field(default=0.0, init=False, repr=False)
    _eval_next_draw: float = attrs.field(default=0.0, init=False, repr=False)
    _sanity: bool = attrs.field(default=False, init=False, repr=False)
    #: Text lines written in this run (text mode); for tests and log scrapers.
    lines_written: int = attrs.field(default=0, init=False, repr=False)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: Any, stage: str) -> None:
        self._enabled = bool(ctx.is_global_zero) and self.refresh_rate > 0
        self._engine = ctx._engine
        self._stage = stage
        self._stream = self.file if self.file is not None else sys.stdout
        self._notebook = False
        if self.mode == "text":
            self._text = True
        elif self.mode == "bar":
            self._text = False
            self._notebook = in_notebook()
        elif in_notebook():
            self._notebook = _has_widgets()
            self._text = not self._notebook
        else:
            try:
                self._text = not self._stream.isatty()
            except (AttributeError, ValueError):
                self._text = True
        self.lines_written = 0

    def teardown(self, ctx: Any, stage: str) -> None:
        self._close_all()
        self._engine = None

    def on_exception(self, ctx: Any) -> None:
        self._close_all()

    def _close_all(self) -> None:
        for bar in (self._eval, self._train):
            if bar is not None:
                bar.close()
        self._eval = self._train = None

    def _tqdm(self, **kwargs: Any) -> Any:
        if self._notebook:
            from tqdm.auto import tqdm

            return tqdm(mininterval=self.min_interval, **kwargs)
        from tqdm import tqdm

        try:
            width, height = os.get_terminal_size(self._stream.fileno())
        except (AttributeError, OSError, ValueError):
            width = height = 0
        # A terminal reporting no size (a pty some log capturers open) hides tqdm's bars.
        size: dict[str, Any] = {"dynamic_ncols": True} if width > 0 else {"ncols": 100}
        if height <= 0:
            size["nrows"] = 50
        return tqdm(file=self._stream, mininterval=self.min_interval, **size, **kwargs)

    def _write(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
        self.lines_written += 1

    def _metrics(self) -> dict[str, float]:
        return self._engine.store.progress() if self._engine is not None else {}

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self, ctx: Any) -> None:
        if not self._enabled:
            return
        engine = self._engine
        total = engine.train_iter.num_batches if engine.train_iter is not None else None
        initial = min(engine.skip_batches, total) if total is not None else engine.skip_batches
        self._train_total, self._train_initial, self._train_n = total, initial, initial
        self._train_start = time.monotonic()
        self._next_draw = self._train_start + self.min_interval
        desc = f"Epoch {ctx.epoch}"
        if self._text:
            if total:
                self._line_every = max(1, math.ceil(total / self.text_lines_per_epoch))
                self._next_line = self._line_every * (initial // self._line_every + 1)
            else:  # unknown length: lines at 32, 64, 128, ... batches
                self._line_every, self._next_line = 0, 32
            return
        if self._train is not None and not self.leave:
            self._train.set_description(desc, refresh=False)
            self._train.reset(total=total)
            self._train.initial = self._train.n = initial
        else:
            if self._train is not None:
                self._train.close()
            self._train = self._tqdm(total=total, initial=initial, desc=desc, leave=True)

    def on_train_batch_end(self, ctx: Any, batch_idx: int) -> None:
        if not self._enabled:
            return
        n = batch_idx + 1
        if n % self.refresh_rate and n != self._train_total:
            return
        self._train_n = n
        if self._text:
            if n >= self._next_line and n != self._train_total:
                self._next_line = n + self._line_every if self._line_every else 2 * n
                self._write(self._train_line(ctx, n))
            return
        now = time.monotonic()
        if now < self._next_draw:
            return  # the epoch's end draws the final state
        self._next_draw = now + self.min_interval
        bar = self._train
        bar.set_postfix_str(format_metrics(self._metrics()), refresh=False)
        bar.update(n - bar.n)

    def on_train_epoch_end(self, ctx: Any) -> None:
        if not self._enabled:
            return
        if self._text:
            self._write(self._train_line(ctx, self._train_n))
            return
        bar = self._train
        if bar is None:
            return
        bar.set_postfix_str(format_metrics(self._metrics()), refresh=False)
        delta = self._train_n - bar.n
        if not (delta and bar.update(delta)):  # one draw, whether update drew or not
            bar.refresh()
        if self.leave:
            bar.close()
            self._train = None

    def on_fit_end(self, ctx: Any) -> None:
        self._close_all()

    def _train_line(self, ctx: Any, n: int) -> str:
        total = self._train_total
        elapsed = time.monotonic() - self._train_start
        rate = (n - self._train_initial) / elapsed if elapsed > 0 else 0.0
        if total:
            eta = (total - n) / rate if rate > 0 else math.inf
            where = f"{100 * n // total:3d}% {n}/{total} [{format_time(elapsed)}<{format_time(eta)}"
        else:
            where = f"{n} [{format_time(elapsed)}"
        line = f"Epoch {ctx.epoch}: {where}, {rate:.2f} it/s] step {ctx.global_step}"
        metrics = format_metrics(self._metrics())
        return f"{line}, {metrics}" if metrics else line

    # -- evaluation ----------------------------------------------------------------------------
    def on_sanity_check_start(self, ctx: Any) -> None:
        self._sanity = True

    def on_sanity_check_end(self, ctx: Any) -> None:
        self._sanity = False

    def _eval_start_bar(self, kind: str) -> None:
        if not self._enabled:
            return
        engine = self._engine
        total: int | None = 0
        for loader in engine.eval_loaders:
            n = loader.num_batches
            if n is not None and self._sanity and engine.limits.sanity != -1:
                n = min(n, engine.limits.sanity)
            total = None if n is None or total is None else total + n
        self._eval_total, self._eval_n = total, 0
        self._eval_start = time.monotonic()
        self._eval_next_draw = self._eval_start + self.min_interval
        if self._text:
            return
        desc = "Sanity Checking" if self._sanity else _EVAL_NAMES[kind]
        standalone = self._stage != "fit"
        self._eval = self._tqdm(total=total, desc=desc, leave=standalone)

    def _eval_batch(self) -> None:
        if not self._enabled:
            return
        self._eval_n += 1
        n = self._eval_n
        if self._text or (n % self.refresh_rate and n != self._eval_total):
            return
        now = time.monotonic()
        if now < self._eval_next_draw and n != self._eval_total:
            return
        self._eval_next_draw = now + self.min_interval
        self._eval.update(n - self._eval.n)

    def _eval_end(self, ctx: Any, kind: str) -> None:
        if not self._enabled:
            return
        bar, self._eval = self._eval, None
        if self._stage == "fit":
            metrics = format_metrics(self._metrics())
        else:  # a standalone validate/test ends with every metric it logged (Lightning's table)
            metrics = format_metrics(self._engine.store.floats() if self._engine else {})
        if bar is not None:
            bar.update(self._eval_n - bar.n)
            if self._stage != "fit":
                bar.set_postfix_str(metrics, refresh=False)
            bar.close()
        if self._sanity:
            return
        if self._train is not None:  # show the new validation metrics on the epoch's bar
            self._train.set_postfix_str(metrics, refresh=False)
            self._train.refresh()
        if not self._text:
            return
        at_epoch_end = (
            self._stage == "fit"
            and self._train_total is not None
            and self._train_n == self._train_total
        )
        if at_epoch_end:
            return  # the epoch's own line follows with these metrics
        elapsed = time.monotonic() - self._eval_start
        line = f"{_EVAL_NAMES[kind]}: {self._eval_n} batches [{format_time(elapsed)}]"
        if self._stage == "fit":
            line = f"Epoch {ctx.epoch} step {ctx.global_step} {line}"
        self._write(f"{line}, {metrics}" if metrics else line)

    def on_validation_epoch_start(self, ctx: Any) -> None:
        self._eval_start_bar("validate")

    def on_validation_batch_end(self, ctx: Any) -> None:
        self._eval_batch()

    def on_validation_epoch_end(self, ctx: Any) -> None:
        self._eval_end(ctx, "validate")

    def on_test_epoch_start(self, ctx: Any) -> None:
        self._eval_start_bar("test")

    def on_test_batch_end(self, ctx: Any) -> None:
        self._eval_batch()

    def on_test_epoch_end(self, ctx: Any) -> None:
        self._eval_end(ctx, "test")

    def on_predict_epoch_start(self, ctx: Any) -> None:
        self._eval_start_bar("predict")

    def on_predict_batch_end(self, ctx: Any) -> None:
        self._eval_batch()

    def on_predict_epoch_end(self, ctx: Any) -> None:
        self._eval_end(ctx, "predict")
