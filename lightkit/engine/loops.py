"""The loops: fit, evaluate (validate/test/sanity check) and predict.

Who owns what:
- the ``Engine`` holds what was compiled: bound callers, models, optimizers, loaders, events;
- the ``EpochIterator`` owns limits, ``set_epoch`` and the resume position;
- the ``Runtime`` owns devices, dtypes, autocast, backward and optimizer steps;
- ``Events`` holds, per event, the hooks and callbacks that listen to it;
- the ``MetricStore`` owns what ``lk.log`` recorded;
- ``stepping.py`` owns the end of a training step: the loss, the non-finite check, the
  optimizer step and step-interval schedulers.

The loops only sequence. Event order in fit (``lightkit explain`` prints it for a given
spec and config; ``tests/engine/test_hook_order.py`` pins it)::

    fit_start
    sanity_check_start, validation (num_sanity_val_steps batches), sanity_check_end
    per epoch:
        train_epoch_start
        per batch:
            train_batch_start
            training_step
            before_backward, backward, after_backward
            when an accumulation window ends:
                before_optimizer_step, clip, optimizer step, zero_grad, step schedulers
            train_batch_end
            validation, when due (by default after the epoch's last batch)
            save point: ModelCheckpoint saves if due; a preemption signal saves and exits
        train_epoch_end
        epoch schedulers
        save point (the epoch is complete)
    fit_end

    validation (and test):
        validation_epoch_start
        per loader, per batch: validation_batch_start, validation_step, validation_batch_end
        validation_epoch_end

In manual optimization the step itself runs backward and the optimizers, so the per-batch
events are train_batch_start, training_step, train_batch_end. Within one event, function hooks
run first, then callbacks in the order given, EarlyStopping and ModelCheckpoint last.

When nothing runs per batch but the step (automatic optimization, an optimizer step per
batch, one process; no batch event, logger, checkpoint callback, ``max_time``, or validation
inside the epoch), ``plain_epoch`` runs each epoch's batches: the same loop without the
branches that cannot fire, a few µs per step cheaper on a tiny model.
``tests/engine/test_plain_epoch.py`` runs each case both ways and compares what the user sees.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lightkit.callbacks.checkpoint import ModelCheckpoint
from lightkit.checkpoint.resume import begin_epoch, resume_before_epoch
from lightkit.engine.engine import Engine
from lightkit.engine.epoch_iterator import EpochIterator, val_every
from lightkit.engine.stepping import (
    backward_failed,
    checked_manual_step,
    checks_loss,
    detached,
    loss_of,
    nonfinite_loss,
    skip_optimizer_step,
    step_schedulers,
    window_stepper,
)
from lightkit.errors import describe_function
from lightkit.utils.seed import isolate_rng

Tensor = torch.Tensor


def fit_loop(engine: Engine) -> None:
    """Train until a stop condition holds; validate when due."""
    ctx, rt, events, store = engine.ctx, engine.runtime, engine.events, engine.store
    limits, cfg = engine.limits, engine.config
    train = engine.train_iter
    assert train is not None
    step_call, manual = engine.step_call, engine.manual
    accumulate = cfg.accumulate_grad_batches
    models = list(engine.models.values())
    to_device = rt.to_device if rt.moves_batches else None
    backward = Tensor.backward if rt.plain_steps else rt.backward
    end_window = window_stepper(engine)
    end_iteration = rt.precision.update
    sync_free = rt.world_size > 1 and accumulate > 1
    log_every = cfg.log_every_n_steps
    loggers = engine.loggers
    deadline = None if cfg.max_time is None else time.monotonic() + cfg.max_time
    # The ranks' clocks differ: with max_time and several processes they agree each batch
    # (one small collective) so that all stop after the same batch.
    agree = rt.strategy.reduce_any if rt.world_size > 1 else bool
    max_steps, max_epochs = limits.max_steps, limits.max_epochs
    can_validate = engine.eval_call is not None and bool(engine.eval_loaders) and limits.val != 0
    num_batches = train.num_batches
    check_n = limits.check_val_every_n_epoch
    every = (
        val_every(num_batches, limits.val_check_interval, check_n is not None)
        if can_validate
        else math.inf
    )
    check_loss = checks_loss(engine)
    # With several processes, a stop that one rank asks for waits until all agree on it.
    agreed_stop = stop_agreement(engine) if rt.world_size > 1 else None
    checkpointers = [cb for cb in engine.callbacks if isinstance(cb, ModelCheckpoint)]
    preemption = engine.preemption
    step = under(rt.autocast, step_call) if rt.autocasts else step_call
    # Nothing per batch but the step, its backward and optimizer step: the plain loop runs the
    # epochs (same results; tests/engine/test_plain_epoch.py runs both loops side by side).
    plain = (
        not manual
        and accumulate == 1
        and rt.world_size == 1
        and to_device is None
        and not loggers
        and every == math.inf
        and deadline is None
        and not checkpointers
        and not (events.train_batch_start or events.train_batch_end)
        and not (events.before_backward or events.after_backward)
    )

    ctx.stage = store.stage = "train_epoch"
    events.fire("fit_start")
    if can_validate and limits.sanity and engine.start_epoch == 0 and engine.skip_batches == 0:
        sanity_check(engine)

    epoch = engine.start_epoch
    stop = max_steps != -1 and ctx.global_step >= max_steps
    if stop:  # resumed at or past max_steps: nothing to train
        engine.stopped_by = "max_steps"
    elif num_batches == 0:  # limit_train_batches=0: no epoch runs (Lightning skips fit)
        stop = True
    unchecked = manual and engine.start_epoch == 0 and engine.skip_batches == 0
    for m in models:
        m.train()
    while not stop and (max_epochs == -1 or epoch < max_epochs):
        ctx.epoch = epoch
        if engine.resume is not None:  # resuming at an epoch boundary: the random states first
            resume_before_epoch(engine, train)
        ctx.stage = store.stage = "train_epoch"
        events.fire("train_epoch_start")
        store.stage = "train"
        validate_epoch = can_validate and (check_n is None or (epoch + 1) % check_n == 0)
        skip, engine.skip_batches = engine.skip_batches, 0
        last_idx = (num_batches - 1) if num_batches is not None else -1
        batch_idx = skip - 1
        pending = False  # an accumulation window with gradients not yet stepped
        bad_window = False  # nonfinite_loss="skip": the window's optimizer step is skipped
        # On CUDA with loader workers, the next batch's copy starts before this step runs.
        batches = rt.prefetch(begin_epoch(engine, train, epoch, skip), train.loader)
        if plain:
            batch_idx, stop = plain_epoch(
                engine, batches, epoch, batch_idx, last_idx, step, backward
            )
        else:
            for batch_idx, batch in batches:
                if to_device is not None:
                    batch = to_device(batch)
                ctx.batch_idx = batch_idx
                store.batch = batch
                if events.train_batch_start:
                    for call in events.train_batch_start:
                        call(batch, batch_idx)
                step_of_row = engine.row_step = ctx.global_step
                if manual:
                    if unchecked:  # the first batch: did the step step an optimizer?
                        output = checked_manual_step(engine, step, batch, batch_idx)
                        unchecked = False
                    else:
                        output = step(batch, batch_idx)
                    end_iteration()  # 16-mixed: the scaler updates once its optimizers stepped
                    ctx.global_step += 1
                else:
                    window_end = (batch_idx + 1) % accumulate == 0 or batch_idx == last_idx
                    # DDP decides in forward whether the coming backward all-reduces, so inside an
                    # accumulation window forward and backward both skip the sync (FSDP checks at
                    # backward): one gradient all-reduce per window.
                    if sync_free and not window_end:
                        with no_sync(rt, models):
                            output = step(batch, batch_idx)
                    else:
                        output = step(batch, batch_idx)
                    # A scalar tensor is the common case; loss_of reads every other form.
                    loss = (
                        output
                        if type(output) is Tensor and not output.dim()
                        else loss_of(output, engine)
                    )
                    if loss is not None:
                        raw_loss = loss
                        if accumulate > 1:
                            loss = loss / accumulate
                        if events.before_backward:
                            for call in events.before_backward:
                                call(batch, batch_idx, loss)
                        try:
                            if sync_free and not window_end:
                                with no_sync(rt, models):
                                    rt.backward(loss)
                            else:
                                backward(loss)
                        except RuntimeError as exc:
                            raise backward_failed(engine, exc) from exc
                        if check_loss and not math.isfinite(raw_loss.item()):
                            bad_window = nonfinite_loss(engine, raw_loss) or bad_window
                        if events.after_backward:
                            for call in events.after_backward:
                                call(batch, batch_idx)
                        if window_end:
                            if bad_window:
                                skip_optimizer_step(engine)
                                bad_window = False
                            else:
                                end_window()
                            pending = False
                        else:
                            pending = True
                if events.train_batch_end:
                    outputs = detached(output)
                    for call in events.train_batch_end:
                        call(batch, batch_idx, outputs)
                engine.batches_seen += 1
                # Lightning's count: a row every `log_every` optimizer steps (a batch inside an
                # accumulation window steps none and writes no row).
                if loggers and ctx.global_step != step_of_row and ctx.global_step % log_every == 0:
                    engine.log_rows(store.take_unwritten(), step_of_row)
                stop_requested = (
                    ctx.should_stop if agreed_stop is None else agreed_stop(engine.batches_seen)
                ) and can_stop(engine, epoch)
                due = validate_epoch and (
                    (engine.batches_seen if check_n is None else batch_idx + 1) % every == 0
                )
                if due or (
                    validate_epoch
                    and stop_requested
                    and batch_idx != last_idx
                    and every != math.inf
                ):
                    stop_requested = validate_in_epoch(
                        engine, epoch, not due, agreed_stop, checkpointers
                    )
                if max_steps != -1 and ctx.global_step >= max_steps:
                    engine.stopped_by, stop = "max_steps", True
                elif deadline is not None and agree(time.monotonic() >= deadline):
                    engine.stopped_by, stop = "max_time", True
                elif stop_requested:
                    engine.stopped_by, stop = engine.stopped_by or "should_stop", True
                for (
                    cb
                ) in checkpointers:  # a consistent point: a checkpoint resumes at batch_idx + 1
                    cb.batch_done(engine, stop and batch_idx != last_idx)
                if preemption is not None and preemption.due(engine.batches_seen):
                    preemption.stop((epoch, batch_idx + 1))  # saves last.ckpt, raises Preempted
                if stop and batch_idx != last_idx:
                    break
        # An unsized loader ended inside an accumulation window: step it. A run stopped early
        # (max_time, should_stop) drops its partial window, as Lightning does.
        if pending and not stop:
            end_window()
        finished = num_batches is None or batch_idx == last_idx
        validate_now = validate_epoch and every == math.inf and batch_idx >= 0
        epoch = close_epoch(engine, epoch, batch_idx, finished, validate_now, checkpointers)
        if (ctx.should_stop if agreed_stop is None else agreed_stop()) and can_stop(engine, epoch):
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
    if not stop:
        engine.stopped_by = engine.stopped_by or "max_epochs"
    ctx.stage = store.stage = "train_epoch"
    events.fire("fit_end")


def plain_epoch(
    engine: Engine,
    batches: Iterator[tuple[int, Any]],
    epoch: int,
    batch_idx: int,
    last_idx: int,
    step: Callable[..., Any],
    backward: Callable[[Tensor], None],
) -> tuple[int, bool]:
    """One epoch of ``fit_loop`` when nothing but the step runs per batch: automatic
    optimization, an optimizer step per batch, one process, and no batch events, logger,
    checkpoint callback, ``max_time`` or validation inside the epoch. It is ``fit_loop``'s
    batch loop without the branches that cannot fire then, so the run's results are the
    same. ``batch_idx`` is the index before the first batch (the resume position - 1).
    Return the last ``batch_idx`` and whether the run stops."""
    ctx, store, preemption = engine.ctx, engine.store, engine.preemption
    end_window = window_stepper(engine)
    check_loss = checks_loss(engine)
    max_steps = math.inf if engine.limits.max_steps == -1 else engine.limits.max_steps
    stop = False
    for batch_idx, batch in batches:
        ctx.batch_idx = batch_idx
        store.batch = batch
        output = step(batch, batch_idx)
        loss = output if type(output) is Tensor and not output.dim() else loss_of(output, engine)
        if loss is not None:
            try:
                backward(loss)
            except RuntimeError as exc:
                raise backward_failed(engine, exc) from exc
            if check_loss and not math.isfinite(loss.item()) and nonfinite_loss(engine, loss):
                skip_optimizer_step(engine)
            else:
                end_window()
        engine.batches_seen += 1
        if ctx.global_step >= max_steps:
            engine.stopped_by, stop = "max_steps", True
        elif ctx.should_stop and can_stop(engine, epoch):
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
        # One process: a received signal needs no agreement (``Preemption.due``).
        if preemption is not None and preemption.received is not None:
            preemption.stop((epoch, batch_idx + 1))
        if stop and batch_idx != last_idx:
            break
    return batch_idx, stop


def sanity_check(engine: Engine) -> None:
    """A few validation batches before training, under their own random stream."""
    with isolate_rng():  # the sanity check must not shift the run's random stream
        engine.events.fire("sanity_check_start")
        evaluate(engine, "validate", engine.eval_loaders, engine.eval_call, sanity=True)
        engine.events.fire("sanity_check_end")


def close_epoch(
    engine: Engine,
    epoch: int,
    batch_idx: int,
    finished: bool,
    validate: bool,
    checkpointers: list[ModelCheckpoint],
) -> int:
    """An epoch's batches ran out (``finished``) or training stops inside it: validate when
    due at the epoch's end, close its metrics and epoch schedulers, then the save point (a
    checkpoint, a preemption). Return the epoch the run is in now."""
    if validate:
        evaluate(engine, "validate", engine.eval_loaders, engine.eval_call)
    end_train_epoch(engine, finished)
    if finished:
        epoch += 1
        engine.epochs_done = epoch
        for cb in checkpointers:
            cb.epoch_done(engine)
    preemption = engine.preemption
    if preemption is not None and preemption.due(engine.batches_seen, force=True):
        preemption.stop((epoch, 0) if finished else (engine.ctx.epoch, batch_idx + 1))
    return epoch


def eval_mode(engine: Engine) -> Any:
    """``torch.inference_mode`` (``inference_mode=True``), or ``torch.no_grad`` where the
    strategy cannot use it: FSDP's gathered parameters must stay ordinary tensors."""
    allowed = getattr(engine.runtime.strategy, "allows_inference_mode", True)
    return torch.inference_mode if engine.config.inference_mode and allowed else torch.no_grad


def no_sync(rt: Any, models: list[Any]) -> contextlib.AbstractContextManager[Any]:
    """Skip gradient synchronisation of every model (DDP ``no_sync``, FSDP's flag)."""
    if len(models) == 1:
        return rt.no_backward_sync(models[0])  # type: ignore[no-any-return]
    stack = contextlib.ExitStack()
    for m in models:
        stack.enter_context(rt.no_backward_sync(m))
    return stack


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


def validate_in_epoch(
    engine: Engine,
    epoch: int,
    early: bool,
    agreed_stop: Callable[..., bool] | None,
    checkpointers: list[ModelCheckpoint],
) -> bool:
    """Validate after a training batch: it was due, or (``early``) only because the run
    stops mid-epoch, as in Lightning (an unsized loader's epoch ends instead: ``close_epoch``
    validates). Return whether the run stops after this batch."""
    if early:
        # The run that never stopped draws no such validation, so the step's checkpoint is
        # written before it, as Lightning writes it at the batch's end; the save after the
        # validation finds the step saved.
        for cb in checkpointers:
            cb.batch_done(engine, True)
    evaluate(engine, "validate", engine.eval_loaders, engine.eval_call)
    engine.store.stage = "train"
    ctx = engine.ctx
    return (ctx.should_stop if agreed_stop is None else agreed_stop()) and can_stop(engine, epoch)


def can_stop(engine: Engine, epochs_done: int) -> bool:
    """``should_stop`` is honoured once ``min_epochs`` epochs are complete and ``min_steps``
    steps taken (Lightning's rule): mid-epoch, ``epochs_done`` is the current epoch's index."""
    cfg = engine.config
    if cfg.min_epochs is not None and epochs_done < cfg.min_epochs:
        return False
    return not (cfg.min_steps is not None and engine.ctx.global_step < cfg.min_steps)


def end_train_epoch(engine: Engine, finished: bool) -> None:
    ctx, store = engine.ctx, engine.store
    rows = store.end_epoch(("train",))
    ctx.stage = store.stage = "train_epoch"
    engine.events.fire("train_epoch_end")
    rows.update(store.end_epoch(("train_epoch",)))
    engine.log_rows({**store.take_unwritten(), **rows}, max(ctx.global_step - 1, 0))
    if finished and engine.schedulers and not engine.manual:
        step_schedulers(engine, "epoch", ctx.epoch + 1)
    if finished and ctx.epoch == 0 and ctx.global_step == 0 and not engine.manual:
        # A whole first epoch without an optimizer step: the step returned None every time.
        plan = engine.spec.plan("training_step")
        warnings.warn(
            f"{describe_function(plan.fn) if plan else 'the training step'} returned None for "
            f"every batch of the first epoch, so nothing was trained: None skips a batch. "
            f"Return the loss (`return loss`, or {{'loss': loss, ...}}).",
            stacklevel=2,
        )


def evaluate(
    engine: Engine, stage: str, loaders: list[EpochIterator], call: Any, *, sanity: bool = False
) -> dict[str, float]:
    """Run ``call`` over every loader under no-grad with models in eval mode; return the
    epoch aggregates. ``stage`` is ``"validate"`` or ``"test"``."""
    ctx, store, events, rt = engine.ctx, engine.store, engine.events, engine.runtime
    prefix = "validation" if stage == "validate" else stage
    # Every submodule's mode, not just the top one's: a submodule the user keeps in eval mode
    # (frozen batch norm) stays so after validation, as in Lightning.
    modes = [(sub, sub.training) for m in engine.models.values() for sub in m.modules()]
    for m in engine.models.values():
        m.eval()
    saved_stage = store.stage
    ctx.stage = store.stage = stage
    batch_start, batch_end = (
        events.listeners(f"{prefix}_batch_start"),
        events.listeners(f"{prefix}_batch_end"),
    )
    events.fire(f"{prefix}_epoch_start")
    no_grad = eval_mode(engine)
    to_device, autocast = rt.to_device, rt.autocast
    saved_batch_idx = ctx.batch_idx
    saved_metrics = store.snapshot() if sanity else None
    try:
        with no_grad():
            for dl_idx, loader in enumerate(loaders):
                store.suffix = f"/dataloader_idx_{dl_idx}" if len(loaders) > 1 else ""
                ctx.dataloader_idx = dl_idx
                if sanity:
                    limit = engine.limits.sanity
                    loader = EpochIterator(
                        loader.loader,
                        loader.num_batches
                        if limit == -1
                        else min(limit, loader.num_batches or limit),
                        "num_sanity_val_steps",
                    )
                for batch_idx, batch in loader.epoch(ctx.epoch):
                    batch = to_device(batch)
                    ctx.batch_idx = batch_idx
                    store.batch = batch
                    for hook in batch_start:
                        hook(batch, batch_idx, dl_idx)
                    with autocast():
                        output = call(batch, batch_idx, dl_idx)
                    for hook in batch_end:
                        hook(batch, batch_idx, dl_idx, output)
    finally:
        store.suffix = ""
        ctx.batch_idx = saved_batch_idx
    results = store.end_epoch((stage,))
    events.fire(f"{prefix}_epoch_end")
    results.update(store.end_epoch((stage,)))
    if saved_metrics is not None:  # hooks saw the sanity check's metrics; nothing keeps them
        store.restore(saved_metrics)
        results = {}
    else:
        # Lightning's steps: inside fit, the row of the batch that triggered the validation;
        # on its own (validate/test after fit or from a checkpoint), the weights' step.
        step = ctx.global_step if engine.stage != "fit" else max(ctx.global_step - 1, 0)
        engine.log_rows(results, step)
    for sub, was_training in modes:
        sub.training = was_training
    ctx.stage = store.stage = saved_stage
    return results


def predict_loop(engine: Engine, loaders: list[EpochIterator]) -> list[Any]:
    """Collect what ``predict_step`` returns per batch (a list per loader if several)."""
    ctx, store, events, rt = engine.ctx, engine.store, engine.events, engine.runtime
    for m in engine.models.values():
        m.eval()
    ctx.stage = store.stage = "predict"
    events.fire("predict_epoch_start")
    no_grad = eval_mode(engine)
    per_loader: list[list[Any]] = []
    call = engine.step_call
    with no_grad():
        for dl_idx, loader in enumerate(loaders):
            ctx.dataloader_idx = dl_idx
            outputs: list[Any] = []
            for batch_idx, batch in loader.epoch(0):
                batch = rt.to_device(batch)
                ctx.batch_idx = batch_idx
                store.batch = batch
                for hook in events.predict_batch_start:
                    hook(batch, batch_idx, dl_idx)
                with rt.autocast():
                    output = call(batch, batch_idx, dl_idx)
                for hook in events.predict_batch_end:
                    hook(batch, batch_idx, dl_idx, output)
                outputs.append(output)
            per_loader.append(outputs)
    events.fire("predict_epoch_end")
    return per_loader[0] if len(per_loader) == 1 else per_loader
