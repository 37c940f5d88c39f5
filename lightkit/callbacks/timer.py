"""``Timer``: time each stage, and stop training once a time budget is spent (Lightning's
``Timer``)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, ClassVar, Literal

import attrs

from lightkit.callbacks.base import Callback
from lightkit.utils.validators import bad_choice, one_of, seconds

Stage = Literal["train", "validate", "test", "predict"]
_STAGES = ("train", "validate", "test", "predict")


def _seconds(value: Any) -> float | None:
    return seconds(value, "Timer", "duration")


@attrs.define
class Timer(Callback):
    """Measure the time spent in each stage; with ``duration``, stop training when it is spent.

    Args:
        duration: the budget for training: seconds, a ``timedelta``, a dict of ``timedelta``
            arguments or ``"DD:HH:MM:SS"``. ``None`` only measures.
        interval: check the budget after every ``"step"`` or every ``"epoch"``.
        verbose: print a line when the budget stops training.

    Training time runs from the first training epoch's start (after the sanity check) to the
    end of fit, and includes validation during training; it carries over when a run resumes
    from a checkpoint. ``time_elapsed("validate")`` is the latest validation run.

    Example::

        timer = lk.Timer(duration="00:12:00:00")
        lk.Trainer(callbacks=[timer]).fit(spec)
        print(timer.time_elapsed("train"))
    """

    starts_resumed_epoch: ClassVar[bool] = True

    duration: float | None = attrs.field(default=None, converter=_seconds)
    interval: Literal["step", "epoch"] = attrs.field(
        default="step", validator=one_of("step", "epoch")
    )
    verbose: bool = True

    _start: dict[str, float | None] = attrs.field(
        factory=lambda: dict.fromkeys(_STAGES), init=False, repr=False
    )
    _end: dict[str, float | None] = attrs.field(
        factory=lambda: dict.fromkeys(_STAGES), init=False, repr=False
    )
    _offset: float = attrs.field(default=0.0, init=False, repr=False)

    # -- queries -------------------------------------------------------------------------------
    def start_time(self, stage: Stage = "train") -> float | None:
        """``time.monotonic()`` when ``stage`` last started."""
        return self._start[_stage(stage, "start_time")]

    def end_time(self, stage: Stage = "train") -> float | None:
        """``time.monotonic()`` when ``stage`` last ended (``None`` while it runs)."""
        return self._end[_stage(stage, "end_time")]

    def time_elapsed(self, stage: Stage = "train") -> float:
        """Seconds spent in ``stage`` (training includes time before a resume)."""
        start, end = self._start[_stage(stage, "time_elapsed")], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return (time.monotonic() if end is None else end) - start + offset

    def time_remaining(self, stage: Stage = "train") -> float | None:
        """Seconds left of ``duration`` (``None`` without one)."""
        if self.duration is None:
            return None
        return self.duration - self.time_elapsed(stage)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}  # type: ignore[arg-type]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))

    # -- events --------------------------------------------------------------------------------
    def _begin(self, stage: str) -> None:
        self._start[stage] = time.monotonic()
        self._end[stage] = None

    def _finish(self, stage: str) -> None:
        self._end[stage] = time.monotonic()

    def on_fit_start(self, ctx: Any) -> None:
        # Before any batch, whatever the interval: a resumed run's budget may be spent already.
        if self.duration is not None:
            self._check(ctx)

    def on_train_epoch_start(self, ctx: Any) -> None:
        if self._start["train"] is None or self._end["train"] is not None:
            self._begin("train")

    def on_fit_end(self, ctx: Any) -> None:
        if self._start["train"] is not None:
            self._finish("train")

    def on_validation_epoch_start(self, ctx: Any) -> None:
        self._begin("validate")

    def on_validation_epoch_end(self, ctx: Any) -> None:
        self._finish("validate")

    def on_test_epoch_start(self, ctx: Any) -> None:
        self._begin("test")

    def on_test_epoch_end(self, ctx: Any) -> None:
        self._finish("test")

    def on_predict_epoch_start(self, ctx: Any) -> None:
        self._begin("predict")

    def on_predict_epoch_end(self, ctx: Any) -> None:
        self._finish("predict")

    def on_train_batch_end(self, ctx: Any) -> None:
        if self.interval == "step" and self.duration is not None:
            self._check(ctx)

    def on_train_epoch_end(self, ctx: Any) -> None:
        if self.interval == "epoch" and self.duration is not None:
            self._check(ctx)

    def _check(self, ctx: Any) -> None:
        assert self.duration is not None
        over = self.time_elapsed("train") >= self.duration
        runtime = ctx.runtime
        if runtime.world_size > 1:  # ranks' clocks differ: stop together
            over = runtime.strategy.reduce_any(over)
        if over and not ctx.should_stop:
            ctx.should_stop = True
            if self.verbose and ctx.is_global_zero:
                elapsed = timedelta(seconds=int(self.time_elapsed("train")))
                print(
                    f"Timer: time limit reached ({elapsed} elapsed). Signaling the trainer to "
                    f"stop.",
                    flush=True,
                )


def _stage(stage: str, method: str) -> str:
    if stage not in _STAGES:
        raise bad_choice(f"Timer.{method}(stage={stage!r})", "stage", stage, _STAGES)
    return stage
