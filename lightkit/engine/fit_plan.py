"""``FitPlan``: what ``fit_loop`` resolves once, before its first batch.

The bound step (under autocast when the precision needs it), the backward and optimizer-step
paths, the validation schedule, the stop conditions, and whether the epochs can run through
``plain_epoch``. The batch loops read its fields into locals once per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch

from lightkit.callbacks.checkpoint import ModelCheckpoint
from lightkit.engine.engine import Engine
from lightkit.engine.epoch_iterator import val_every
from lightkit.engine.stepping import checks_loss, window_stepper
from lightkit.errors import ConfigError

Tensor = torch.Tensor


@attrs.frozen
class FitPlan:
    """What ``fit_loop`` resolves once from the engine, so that the batch loops only read it."""

    step: Callable[..., Any]  # the bound training step, under autocast when it applies
    backward: Callable[[Tensor], None]
    end_window: Callable[[], None]  # the optimizer step(s) ending an accumulation window
    to_device: Callable[[Any], Any] | None  # None: batches stay where they are
    models: list[Any]
    accumulate: int
    sync_free: bool  # several processes and accumulation: windows skip the gradient sync
    check_loss: bool  # read each loss for NaN/inf
    every: float  # batches between validations; inf: at the epoch's end, or never
    step_plateaus: bool  # a step-interval ReduceLROnPlateau: stepped at each batch's end
    check_n: int | None  # check_val_every_n_epoch
    can_validate: bool
    deadline: float | None  # max_time's end on this process's monotonic clock, from train_start
    agree: Callable[[bool], bool]  # max_time's decision, taken by all ranks together
    # With several processes, a stop that one rank asks for waits until all agree on it.
    agreed_stop: Callable[..., bool] | None
    checkpointers: list[ModelCheckpoint]
    preemption: Any  # the signal handler's record while fit runs (``Preemption``), or None
    manual: bool
    loggers: list[Any]
    log_every: int
    max_steps: int  # -1: no limit
    # Some train_batch_end listener takes ``outputs``: only then is the step's output detached.
    wants_outputs: bool
    # Nothing per batch but the step, its backward and optimizer step: ``plain_epoch`` runs the
    # epochs (same results; tests/engine/test_plain_epoch.py runs both side by side).
    plain: bool


def fit_plan(engine: Engine) -> FitPlan:
    rt, events, limits, cfg = engine.runtime, engine.events, engine.limits, engine.config
    train = engine.train_iter
    assert train is not None
    accumulate = cfg.accumulate_grad_batches
    to_device = rt.to_device if rt.moves_batches else None
    can_validate = engine.eval_call is not None and bool(engine.eval_loaders) and limits.val != 0
    check_n = limits.check_val_every_n_epoch
    interval, num_batches = limits.val_check_interval, train.num_batches
    if train.length is None and interval == 1.0 and isinstance(interval, float):
        # An unsized loader's epoch may run out before its limit: validate as it ends.
        num_batches = None
    try:
        every = val_every(num_batches, interval, check_n is not None) if can_validate else math.inf
    except ConfigError as exc:
        if exc.code != "fraction-of-unsized-loader":
            raise
        where = engine.describe_role("train_data", "the training data")
        raise ConfigError(f"{where}: {exc}", code=exc.code) from None
    checkpointers = [cb for cb in engine.callbacks if isinstance(cb, ModelCheckpoint)]
    step_plateaus = not engine.manual and any(
        cfg.is_plateau and cfg.interval == "step" for cfg in engine.schedulers
    )
    plain = (
        not engine.manual
        and not step_plateaus
        and accumulate == 1
        and rt.world_size == 1
        and to_device is None
        and not engine.loggers
        and every == math.inf
        and cfg.max_time is None
        and not checkpointers
        and not (events.train_batch_start or events.train_batch_end)
        and not (events.before_backward or events.after_backward)
    )
    return FitPlan(
        step=under(rt.autocast, engine.step_call) if rt.autocasts else engine.step_call,
        backward=Tensor.backward if rt.plain_steps else rt.backward,
        end_window=window_stepper(engine),
        to_device=to_device,
        models=list(engine.models.values()),
        accumulate=accumulate,
        sync_free=rt.world_size > 1 and accumulate > 1,
        check_loss=checks_loss(engine),
        every=every,
        step_plateaus=step_plateaus,
        check_n=check_n,
        can_validate=can_validate,
        deadline=None,  # set when training starts (after the sanity check), as Lightning's
        # The ranks' clocks differ: with several processes they agree on max_time each batch
        # (one small collective) so that all stop after the same batch.
        agree=rt.strategy.reduce_any if rt.world_size > 1 else bool,
        agreed_stop=stop_agreement(engine) if rt.world_size > 1 else None,
        checkpointers=checkpointers,
        preemption=engine.preemption,
        manual=engine.manual,
        loggers=engine.loggers,
        log_every=cfg.log_every_n_steps,
        max_steps=limits.max_steps,
        wants_outputs=any(
            "outputs" in getattr(call, "__injects__", ("outputs",))
            for call in events.train_batch_end
        ),
        plain=plain,
    )


def under(context: Callable[[], Any], call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` run inside ``context()`` (the precision's autocast), as one callable; the loop
    binds it once instead of entering a no-op context every step."""

    def run(*args: Any) -> Any:
        with context():
            return call(*args)

    return run


def stop_agreement(engine: Engine) -> Callable[..., bool]:
    """With several processes: ``agree(batches_seen)`` is whether any rank set
    ``ctx.should_stop``, asked of all ranks (one small collective) every ``log_every_n_steps``
    batches, and False in between; ``agree()`` asks now (after a validation, at an epoch's
    end). The agreed value becomes every rank's ``ctx.should_stop``, so the ranks leave the
    loop after the same batch instead of one waiting in a collective the others never enter."""
    ctx, every = engine.ctx, engine.config.log_every_n_steps
    reduce_any = engine.runtime.strategy.reduce_any

    def agree(batches_seen: int | None = None) -> bool:
        if batches_seen is not None and batches_seen % every:
            return False
        ctx.should_stop = reduce_any(ctx.should_stop)
        return ctx.should_stop

    return agree
