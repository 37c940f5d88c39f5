"""The fit loop: ``fit_loop`` sequences the epochs, ``train_epoch`` and ``plain_epoch`` run
an epoch's batches. Validation, test and predict are in ``evaluation.py``.

Who owns what:
- the ``Engine`` holds what was compiled: bound callers, models, optimizers, loaders, events;
- the ``EpochIterator`` owns limits, ``set_epoch`` and the resume position;
- the ``Runtime`` owns devices, dtypes, autocast, backward and optimizer steps;
- ``Events`` holds, per event, the hooks and callbacks that listen to it;
- the ``MetricStore`` owns what ``lk.log`` recorded;
- ``stepping.py`` owns the end of a training step: the loss, the non-finite check, the
  optimizer step and step-interval schedulers;
- ``fit_plan.py`` resolves, once per fit, what the batch loops read (``FitPlan``).

The loops only sequence. Event order in fit (``lightkit explain`` prints it for a given
spec and config; ``tests/engine/test_hook_order.py`` pins it)::

    fit_start
    sanity_check_start, validation (num_sanity_val_steps batches), sanity_check_end
    train_start (when an epoch can start)
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
    train_end (when train_start fired)
    fit_end

    validation (its own events): see ``evaluation.py``.

In manual optimization the step itself runs backward and the optimizers, so the per-batch
events are train_batch_start, training_step, train_batch_end; each ``ctx.backward`` fires
before_backward and after_backward, and each optimizer step before_optimizer_step. Within
one event, function hooks run first, then callbacks in the order given, EarlyStopping and
ModelCheckpoint last.

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

import attrs
import torch

from lightkit.callbacks.checkpoint import ModelCheckpoint
from lightkit.checkpoint.resume import begin_epoch, resume_before_epoch
from lightkit.engine.engine import Engine
from lightkit.engine.evaluation import evaluate, length_mismatch
from lightkit.engine.fit_plan import FitPlan, fit_plan
from lightkit.engine.stepping import (
    backward_failed,
    checked_manual_step,
    detached,
    loss_of,
    nonfinite_loss,
    skip_optimizer_step,
    step_schedulers,
)
from lightkit.errors import LightkitWarning, describe_function, user_stacklevel
from lightkit.utils.seed import isolate_rng

Tensor = torch.Tensor


def fit_loop(engine: Engine) -> None:
    """Train until a stop condition holds; validate when due."""
    ctx, rt, events, store, limits = (
        engine.ctx,
        engine.runtime,
        engine.events,
        engine.store,
        engine.limits,
    )
    train = engine.train_iter
    assert train is not None
    plan = fit_plan(engine)
    max_steps, max_epochs, num_batches = limits.max_steps, limits.max_epochs, train.num_batches

    ctx.stage = store.stage = "train_epoch"
    events.fire("fit_start")
    fresh = engine.start_epoch == 0 and engine.skip_batches == 0
    if plan.can_validate and limits.sanity and fresh:
        sanity_check(engine)

    epoch = engine.start_epoch
    stop = max_steps != -1 and ctx.global_step >= max_steps
    if stop:  # resumed at or past max_steps: nothing to train
        engine.stopped_by = "max_steps"
    elif num_batches == 0:  # limit_train_batches=0: no epoch runs (Lightning skips fit)
        stop = True
        if limits.train != 0:
            warnings.warn(
                LightkitWarning(
                    f"{engine.describe_role('train_data', 'the training data')} gave a "
                    f"loader with no batches, so fit trains nothing. Check the dataset's length "
                    f"(and drop_last with a batch size larger than it).",
                    code="empty-loader",
                ),
                stacklevel=user_stacklevel(),
            )
    warn_models_in_eval(engine)
    agreed_stop = plan.agreed_stop

    def stop_asked() -> bool:
        # At an epoch's end, and before an epoch's first batch: a should_stop set in
        # fit_start, sanity_check_end, train_start or train_epoch_start runs no batch, as in
        # Lightning.
        # (With several processes, one small collective: the ranks agree.)
        asked = ctx.should_stop if agreed_stop is None else agreed_stop()
        return asked and can_stop(engine, epoch)

    # Lightning's on_train_start/on_train_end: after the sanity check, around the epochs, in
    # a resumed fit too; not at all when no epoch can start (Lightning skips its fit loop).
    training = not stop and (max_epochs == -1 or epoch < max_epochs)
    if training and stop_asked():  # asked in fit_start or the sanity check
        engine.stopped_by, stop, training = engine.stopped_by or "should_stop", True, False
    if training:
        events.fire("train_start")
    if engine.config.max_time is not None:
        # Lightning's Timer counts from train_start: the sanity check and fit_start hooks
        # spend none of the training's time.
        plan = attrs.evolve(plan, deadline=time.monotonic() + engine.config.max_time)

    position = (epoch, engine.skip_batches)  # where a resumed run would continue
    first = True
    while not stop and (max_epochs == -1 or epoch < max_epochs):
        ctx.epoch = epoch
        position = (epoch, engine.skip_batches)
        # Before the first epoch only: later ones follow the end-of-epoch check, which asked
        # the same question of the same state.
        if first and stop_asked():  # the epoch does not start (Lightning fires no event)
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
            break
        first = False
        if engine.resume is not None:  # resuming at an epoch boundary: the random states first
            resume_before_epoch(engine, train)
        ctx.stage = store.stage = "train_epoch"
        if engine.skip_batches:
            # A mid-epoch resume continues an epoch that started before the checkpoint. The
            # function hooks run again: what they set for the epoch (a frozen layer, a
            # curriculum) is not in the checkpoint, and the resume must be exact. Callbacks
            # do not (Lightning's rule): their restored state stays as saved, but for the
            # progress bar and timer (`starts_resumed_epoch`).
            for call in (
                events.hooks_only["train_epoch_start"] + events.resumed["train_epoch_start"]
            ):
                call()
        else:
            events.fire("train_epoch_start")
        if stop_asked():  # asked in train_epoch_start: the epoch ends at once
            end_train_epoch(engine, False, ran=False)
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
            break
        store.stage = "train"
        check_n = plan.check_n
        validate_epoch = plan.can_validate and (check_n is None or (epoch + 1) % check_n == 0)
        skip, engine.skip_batches = engine.skip_batches, 0
        last_idx = (num_batches - 1) if num_batches is not None else -1
        # On CUDA with loader workers, the next batch's copy starts before this step runs.
        batches = rt.prefetch(begin_epoch(engine, train, epoch, skip), train.loader)
        if plan.plain:
            batch_idx, stop = plain_epoch(engine, plan, batches, epoch, skip - 1, last_idx)
            pending = False
        else:
            batch_idx, stop, pending = train_epoch(
                engine, plan, batches, epoch, skip - 1, last_idx, validate_epoch, fresh
            )
        fresh = False
        # An unsized loader ended inside an accumulation window: step it. A run stopped early
        # (max_time, should_stop) drops its partial window, as Lightning does.
        if pending and not stop:
            plan.end_window()
        finished, validate_now = epoch_ending(
            engine, plan, stop, batch_idx, skip - 1, last_idx, validate_epoch
        )
        epoch = close_epoch(engine, epoch, batch_idx, finished, validate_now, plan.checkpointers)
        position = (epoch, 0) if finished else (ctx.epoch, batch_idx + 1)
        if stop_asked():
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
        elif not stop and engine.time_up and can_stop(engine, epoch):
            # max_time passed inside an epoch that min_epochs kept going: it ends here.
            engine.stopped_by, stop = "max_time", True
    if not stop:
        engine.stopped_by = engine.stopped_by or "max_epochs"
    elif engine.stopped_by == "should_stop" and max_epochs != -1 and epoch >= max_epochs:
        engine.stopped_by = "max_epochs"  # the last epoch ended too: Lightning names it first
    for cb in plan.checkpointers:
        cb.train_done(engine, position)
    ctx.stage = store.stage = "train_epoch"
    trained = ctx.epoch
    ctx.epoch = epoch  # as Lightning's current_epoch at fit's end: the epochs completed
    if training:
        events.fire("train_end")
    events.fire("fit_end")
    # What fit_end hooks logged reaches the loggers too, in the last row written (its step
    # and epoch unchanged).
    rows = {**store.take_unwritten(), **store.end_epoch(("train_epoch",))}
    if rows:
        engine.log_rows(rows, *(engine.last_row or (max(ctx.global_step - 1, 0), trained)))


def train_epoch(
    engine: Engine,
    plan: FitPlan,
    batches: Iterator[tuple[int, Any]],
    epoch: int,
    batch_idx: int,
    last_idx: int,
    validate_epoch: bool,
    first: bool,
) -> tuple[int, bool, bool]:
    """One epoch's batches, every feature considered. ``batch_idx`` is the index before the
    first batch (the resume position - 1); ``first``: the run's first epoch, not resumed.
    Return the last ``batch_idx``, whether the run stops, and whether an accumulation window
    is left with gradients not yet stepped."""
    ctx, rt, events, store = engine.ctx, engine.runtime, engine.events, engine.store
    step, backward, end_window, to_device = (
        plan.step,
        plan.backward,
        plan.end_window,
        plan.to_device,
    )
    accumulate, sync_free, models = plan.accumulate, plan.sync_free, plan.models
    every, check_n, deadline, agree = plan.every, plan.check_n, plan.deadline, plan.agree
    step_plateaus = plan.step_plateaus
    agreed_stop, checkpointers, preemption = plan.agreed_stop, plan.checkpointers, plan.preemption
    manual, loggers, log_every, max_steps = (
        plan.manual,
        plan.loggers,
        plan.log_every,
        plan.max_steps,
    )
    check_loss, end_iteration = plan.check_loss, rt.precision.update
    wants_outputs = plan.wants_outputs
    unchecked = manual and first  # the first batch: did the manual step step an optimizer?
    stop = pending = False  # pending: an accumulation window with gradients not yet stepped
    bad_window = False  # nonfinite_loss="skip": the window's optimizer step is skipped
    for batch_idx, batch in batches:
        if to_device is not None:
            batch = to_device(batch)
        ctx.batch_idx = batch_idx
        store.batch = batch
        if events.train_batch_start:
            for call in events.train_batch_start:
                if call(batch, batch_idx) is not None:
                    returned_from_batch_start(engine)
        step_of_row = store.row_step = ctx.global_step
        if manual:
            if unchecked:
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
                output if type(output) is Tensor and not output.dim() else loss_of(output, engine)
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
                pending = True
            # A window whose last step returned None still steps what its other batches
            # accumulated (as Lightning does): nothing leaks into the next window.
            if window_end and pending:
                if bad_window:
                    skip_optimizer_step(engine)
                    bad_window = False
                else:
                    end_window()
                pending = False
        if events.train_batch_end:
            outputs = detached(output) if wants_outputs else None
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
        # Read at the batch's end, before a validation it triggers (Lightning's Timer order).
        timed_out = deadline is not None and agree(time.monotonic() >= deadline)
        due = validate_epoch and (
            (engine.batches_seen if check_n is None else batch_idx + 1) % every == 0
        )
        early = validate_epoch and stop_requested and batch_idx != last_idx and every != math.inf
        if due or early:
            stop_requested = validate_in_epoch(engine, epoch, not due, agreed_stop, checkpointers)
        if step_plateaus and ctx.global_step != step_of_row:  # an optimizer step was taken
            step_schedulers(engine, "step", batch_idx + 1, plateau=True)
        if max_steps != -1 and ctx.global_step >= max_steps:
            engine.stopped_by, stop = "max_steps", True
        elif timed_out:
            engine.time_up = True  # kept: once min_epochs and min_steps are met, it stops
            if can_stop(engine, epoch):  # the minimums win, as in Lightning
                engine.stopped_by, stop = "max_time", True
        elif stop_requested:
            engine.stopped_by, stop = engine.stopped_by or "should_stop", True
        # A consistent point: a checkpoint written now resumes at batch_idx + 1.
        leaving = stop and batch_idx != last_idx
        if leaving and last_idx < 0:  # an unsized stream that ended here too leaves no epoch
            leaving = plan.agree(engine.train_iter.overran())  # type: ignore[union-attr]
        for cb in checkpointers:
            cb.batch_done(engine, leaving)
        if preemption is not None and preemption.due(engine.batches_seen):
            preemption.stop((epoch, batch_idx + 1))  # saves last.ckpt, raises Preempted
        if stop and batch_idx != last_idx:
            break
    return batch_idx, stop, pending


def plain_epoch(
    engine: Engine,
    plan: FitPlan,
    batches: Iterator[tuple[int, Any]],
    epoch: int,
    batch_idx: int,
    last_idx: int,
) -> tuple[int, bool]:
    """One epoch of ``fit_loop`` when nothing but the step runs per batch: automatic
    optimization, an optimizer step per batch, one process, and no batch events, logger,
    checkpoint callback, ``max_time`` or validation inside the epoch. It is
    :func:`train_epoch` without the branches that cannot fire then, so the run's results are
    the same. ``batch_idx`` is the index before the first batch (the resume position - 1).
    Return the last ``batch_idx`` and whether the run stops."""
    ctx, store, preemption = engine.ctx, engine.store, plan.preemption
    step, backward, end_window, check_loss = (
        plan.step,
        plan.backward,
        plan.end_window,
        plan.check_loss,
    )
    max_steps = math.inf if plan.max_steps == -1 else plan.max_steps
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


def returned_from_batch_start(engine: Engine) -> None:
    """A ``train_batch_start`` listener returned a value: warn once that it is ignored
    (Lightning's ``return -1`` ends the epoch; here ``ctx.should_stop`` stops the run)."""
    if engine.warned_batch_start:
        return
    engine.warned_batch_start = True
    warnings.warn(
        LightkitWarning(
            "a train_batch_start hook returned a value, which lightkit ignores: Lightning's "
            "`return -1` (skip the rest of the epoch) has no equivalent. To stop training, "
            "set ctx.should_stop = True.",
            code="batch-start-return",
        ),
        stacklevel=user_stacklevel(),
    )


def no_sync(rt: Any, models: list[Any]) -> contextlib.AbstractContextManager[Any]:
    """Skip gradient synchronisation of every model (DDP ``no_sync``, FSDP's flag)."""
    if len(models) == 1:
        return rt.no_backward_sync(models[0])  # type: ignore[no-any-return]
    stack = contextlib.ExitStack()
    for m in models:
        stack.enter_context(rt.no_backward_sync(m))
    return stack


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


def warn_models_in_eval(engine: Engine) -> None:
    """The models keep the modes their functions and hooks gave them, as in Lightning (which
    does not call train() either): a submodule frozen in eval mode stays so. A whole model in
    eval mode is more likely a slip."""
    for name, m in engine.models.items():
        if m.training:
            continue
        made_by = next(
            (
                describe_function(p.fn)
                for p in engine.spec.plans
                if p.role == "model" and p.name == name
            ),
            "its @model function",
        )
        warnings.warn(
            LightkitWarning(
                f"model {name!r} (built by {made_by}) is in eval mode as training starts, so "
                f"its dropout and batch norm layers run as in evaluation. To freeze some "
                f"layers only, leave the model in train mode and call .eval() on those "
                f"submodules. If the whole model is frozen on purpose, silence this with "
                f"warnings.filterwarnings('ignore', message=\"model {name!r}\", "
                f"category=lk.LightkitWarning).",
                code="model-in-eval-mode",
            ),
            stacklevel=user_stacklevel(),
        )


def epoch_ending(
    engine: Engine,
    plan: FitPlan,
    stop: bool,
    batch_idx: int,
    before: int,
    last_idx: int,
    validate_epoch: bool,
) -> tuple[bool, bool]:
    """Whether the epoch that ran batches ``before + 1 .. batch_idx`` is complete, and whether
    it validates as it ends; says (once a run) when the loader's ``len()`` was wrong."""
    train = engine.train_iter
    assert train is not None
    # The batches ran out (an unsized loader's perhaps before its limit), or the run
    # stopped at the epoch's last batch: the epoch is complete.
    finished = not stop or batch_idx == last_idx
    if stop and last_idx < 0 and batch_idx > before:
        # An unsized loader stopped (max_steps, max_time, should_stop): complete if its
        # batches ended there too (Lightning's prefetch knows; one more read tells). Every
        # rank must agree: one that validates alone would wait for the others.
        finished = not plan.agree(train.overran())
    elif batch_idx == last_idx >= 0 and train.overran() and not engine.warned_length:
        said_wrong_length(engine, None)
    short = not stop and batch_idx < last_idx  # a sized loader gave fewer than its len()
    if short and train.length is not None and not engine.warned_length:
        said_wrong_length(engine, batch_idx - before)
    elif last_idx < 0 and batch_idx == before == -1 and not stop and not engine.warned_length:
        ran_dry(engine, engine.ctx.epoch)  # not a resumed epoch, whose batches were all read
    train.release()
    # An epoch whose end the schedule cannot see validates as it ends: an unsized loader's
    # (unless max_steps or max_time stopped it inside the epoch), or one that ran short.
    # (A sized one that ran short: Lightning waits for its last batch, and never validates.)
    validate_now = (
        validate_epoch
        and batch_idx >= 0
        and (
            (plan.every == math.inf and (finished or engine.stopped_by == "should_stop"))
            or (short and plan.every == last_idx + 1)
        )
    )
    return finished, validate_now


def said_wrong_length(engine: Engine, gave: int | None) -> None:
    """Warn that the training loader's ``len()`` was not its number of batches: it ran out
    after ``gave`` batches, or (``None``) it had more than ``len()`` (read once, dropped)."""
    train = engine.train_iter
    assert train is not None
    if gave is not None:
        what = (
            f"gave {gave} batches, fewer than its len() of {train.length}: the epoch ended "
            f"when it ran out (validating then, when due at the epoch's end)"
        )
    else:
        what = (
            f"gave more batches than its len() of {train.length}: the epoch ended at "
            f"{train.length}, as Lightning's does, and the rest were not trained on"
        )
    engine.warned_length = True
    length_mismatch(engine, "train_data", what)


def ran_dry(engine: Engine, epoch: int) -> None:
    """An unsized training loader gave no batch in ``epoch``: after the first, most often an
    iterator or generator that an earlier epoch used up (the data function runs once a fit)."""
    engine.warned_length = True
    why = (
        "An iterator or generator is used up by the first epoch it serves (the data function "
        "is called once a fit): return something that can be iterated again each epoch (a "
        "DataLoader, a list, an object whose __iter__ starts over)."
        if epoch > 0
        else "Check what the data function returns: its batches ran out before the first."
    )
    warnings.warn(
        LightkitWarning(
            f"{engine.describe_role('train_data', 'the training data')}'s loader gave no "
            f"batches in epoch {epoch}, which trained nothing. {why}",
            code="empty-loader",
        ),
        stacklevel=user_stacklevel(),
    )


def can_stop(engine: Engine, epochs_done: int) -> bool:
    """``should_stop`` is honoured once ``min_epochs`` epochs are complete and ``min_steps``
    steps taken (Lightning's rule, which reads ``min_steps`` alone as ``min_epochs=1`` too):
    mid-epoch, ``epochs_done`` is the current epoch's index."""
    cfg = engine.config
    min_epochs = cfg.min_epochs
    if min_epochs is None and cfg.min_steps is not None:
        min_epochs = 1  # Lightning's rule: min_steps alone still trains one whole epoch
    if min_epochs is not None and epochs_done < min_epochs:
        return False
    return not (cfg.min_steps is not None and engine.ctx.global_step < cfg.min_steps)


def end_train_epoch(engine: Engine, finished: bool, ran: bool = True) -> None:
    """Close the epoch's metrics (its row at the step its last batch began, or, for an epoch
    that ``ran`` no batch, at the step its first would have), then its epoch schedulers."""
    ctx, store = engine.ctx, engine.store
    rows = store.end_epoch(("train",))
    ctx.stage = store.stage = "train_epoch"
    engine.events.fire("train_epoch_end")
    rows.update(store.end_epoch(("train_epoch",)))
    if not ran:
        step = ctx.global_step
    else:  # the last batch's row; it differs from global_step - 1 when that batch stepped none
        step = store.row_step if store.row_step is not None else max(ctx.global_step - 1, 0)
    pending_step = store.unwritten_step
    pending = store.take_unwritten()
    if pending and pending_step is not None and pending_step != step:
        engine.log_rows(pending, pending_step)  # under the step their batch began at
        pending = {}
    engine.log_rows({**pending, **rows}, step)
    if finished and engine.schedulers and not engine.manual:
        step_schedulers(engine, "epoch", ctx.epoch + 1)
    if finished and ctx.epoch == 0 and ctx.global_step == 0 and not engine.manual:
        # A whole first epoch without an optimizer step: the step returned None every time.
        warnings.warn(
            LightkitWarning(
                f"{engine.describe_role('training_step', 'the training step')} returned None "
                f"for every batch of the first epoch, so nothing was trained: None skips a "
                f"batch. Return the loss (`return loss`, or {{'loss': loss, ...}}).",
                code="nothing-trained",
            ),
            stacklevel=user_stacklevel(),
        )
