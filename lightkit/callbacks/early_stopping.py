"""``EarlyStopping``: stop training when a monitored metric stops improving (Lightning's
semantics and arguments)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import attrs

from lightkit.callbacks.base import Callback
from lightkit.errors import ConfigError, LightkitWarning, did_you_mean, sorted_list, user_stacklevel
from lightkit.utils.validators import at_least, one_of


@attrs.define
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    checks in a row, or crossed a threshold, or became NaN/inf.

    Args:
        monitor: the metric to watch (a name given to ``lk.log``).
        min_delta: the least change that counts as an improvement (negative: how much worse
            a value may be and still count, as in Lightning).
        patience: checks without improvement before stopping. A check happens after every
            validation (or at every training epoch's end, see ``check_on_train_epoch_end``).
        mode: ``"min"`` (lower is better) or ``"max"``.
        strict: raise if ``monitor`` was never logged (else skip the check; with ``verbose``, warn).
        check_finite: stop when the metric becomes NaN or infinite.
        stopping_threshold: stop as soon as the metric is better than this.
        divergence_threshold: stop as soon as the metric is worse than this.
        check_on_train_epoch_end: check at the end of each training epoch instead of after
            each validation; ``None`` picks it when validation runs once per epoch at its end
            (or never).
        verbose: print each improvement and the reason for stopping (Lightning's rule: nothing
            is printed without it). The reason is kept in ``stopping_reason`` either way.
        log_rank_zero_only: with several processes, print on rank 0 only; by default every
            rank prints, its lines prefixed ``[rank: N]`` (as Lightning).

    Example::

        lk.Trainer(callbacks=[lk.EarlyStopping("val/loss", patience=3)])
    """

    monitors: ClassVar[bool] = True

    monitor: str
    min_delta: float = attrs.field(default=0.0, converter=float)
    patience: int = attrs.field(default=3, validator=at_least(0))
    verbose: bool = False
    mode: Literal["min", "max"] = attrs.field(default="min", validator=one_of("min", "max"))
    strict: bool = True
    check_finite: bool = True
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_on_train_epoch_end: bool | None = None
    log_rank_zero_only: bool = False

    wait_count: int = attrs.field(default=0, init=False)
    stopped_epoch: int = attrs.field(default=0, init=False)
    best_score: float = attrs.field(default=math.nan, init=False)
    #: Why training was stopped (``None`` until it is), printed only with ``verbose``.
    stopping_reason: str | None = attrs.field(default=None, init=False)
    _on_epoch_end: bool = attrs.field(default=False, init=False, repr=False)
    _active: bool = attrs.field(default=False, init=False, repr=False)
    _sanity: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.best_score = math.inf if self.mode == "min" else -math.inf

    @property
    def stopping_reason_message(self) -> str | None:
        """Lightning's name for ``stopping_reason`` (the message)."""
        return self.stopping_reason

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = int(state["wait_count"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_score = float(state["best_score"])
        self.patience = int(state.get("patience", self.patience))

    # -- when to check -------------------------------------------------------------------------
    def setup(self, ctx: Any, stage: str) -> None:
        self._active = stage == "fit"
        cfg = ctx._engine.config if ctx._engine is not None else None
        if self.check_on_train_epoch_end is not None:
            self._on_epoch_end = self.check_on_train_epoch_end
        elif cfg is not None:  # validation once per epoch, at its end: check with the epoch
            interval = cfg.val_check_interval
            self._on_epoch_end = (
                isinstance(interval, float) and interval == 1.0
            ) and cfg.check_val_every_n_epoch in (1, None)
        else:
            self._on_epoch_end = True

    def on_sanity_check_start(self, ctx: Any) -> None:
        self._sanity = True

    def on_sanity_check_end(self, ctx: Any) -> None:
        self._sanity = False

    def on_train_epoch_end(self, ctx: Any) -> None:
        if self._active and self._on_epoch_end:
            self._check(ctx)

    def on_validation_epoch_end(self, ctx: Any) -> None:
        if self._active and not self._on_epoch_end and not self._sanity:
            self._check(ctx)

    # -- the check -----------------------------------------------------------------------------
    def _check(self, ctx: Any) -> None:
        metrics = ctx.metrics
        if self.monitor not in metrics:
            engine = ctx._engine
            hint = (
                engine.monitor_hint(self.monitor, metrics)
                if engine is not None
                else did_you_mean(self.monitor, metrics)
            )
            message = (
                f"EarlyStopping(monitor={self.monitor!r}): the metric was never logged. Logged "
                f"metrics: {sorted_list(metrics)}.{hint} Log it with "
                f"lk.log({self.monitor!r}, value) or change `monitor`."
            )
            if self.strict:
                raise ConfigError(message, code="monitor-not-logged")
            if self.verbose:
                import warnings

                warnings.warn(
                    LightkitWarning(message + " Skipping this check.", code="monitor-not-logged"),
                    stacklevel=user_stacklevel(),
                )
            return
        should_stop, reason = self.evaluate(metrics[self.monitor])
        runtime = ctx.runtime
        if runtime.world_size > 1:  # every rank must agree, or the job hangs
            should_stop = runtime.strategy.reduce_any(should_stop)
        if should_stop:
            ctx.should_stop = True
            self.stopped_epoch = ctx.epoch
            self.stopping_reason = reason
        if reason and self.verbose:
            self._print(ctx, f"EarlyStopping: {reason}")

    def _print(self, ctx: Any, message: str) -> None:
        if ctx.world_size > 1:
            if self.log_rank_zero_only and ctx.rank != 0:
                return
            message = f"[rank: {ctx.rank}] {message}"
        print(message, flush=True)

    def evaluate(self, current: float) -> tuple[bool, str | None]:
        """Update the state with a new value of the metric; return (stop?, why)."""
        monitor = self.monitor
        if self.check_finite and not math.isfinite(current):
            return True, (
                f"Monitored metric {monitor} = {current} is not finite. Previous best value "
                f"was {self.best_score:.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and self._better(current, self.stopping_threshold):
            return True, (
                f"Stopping threshold reached: {monitor} = {current} "
                f"{'<' if self.mode == 'min' else '>'} {self.stopping_threshold}. Signaling "
                f"Trainer to stop."
            )
        if self.divergence_threshold is not None and self._better(
            -current, -self.divergence_threshold
        ):
            return True, (
                f"Divergence threshold reached: {monitor} = {current} "
                f"{'>' if self.mode == 'min' else '<'} {self.divergence_threshold}. Signaling "
                f"Trainer to stop."
            )
        # Signed, as Lightning's: a negative min_delta tolerates a worse value as improvement.
        delta = -self.min_delta if self.mode == "min" else self.min_delta
        if self._better(current - delta, self.best_score):
            if math.isfinite(self.best_score):
                why = (
                    f"Metric {monitor} improved by {abs(self.best_score - current):.3f} >= "
                    f"min_delta = {abs(self.min_delta)}. New best score: {current:.3f}"
                )
            else:
                why = f"Metric {monitor} improved. New best score: {current:.3f}"
            self.best_score = current
            self.wait_count = 0
            return False, why
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (
                f"Monitored metric {monitor} did not improve in the last {self.wait_count} "
                f"records. Best score: {self.best_score:.3f}. Signaling Trainer to stop."
            )
        return False, None
