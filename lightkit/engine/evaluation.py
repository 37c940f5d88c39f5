"""Evaluation: validate, test and the sanity check (``evaluate``), and predict.

Event order (``tests/engine/test_hook_order.py`` pins it)::

    <stage>_epoch_start
    per loader, per batch: <stage>_batch_start, <stage>_step, <stage>_batch_end
    <stage>_epoch_end

Models run in eval mode under ``torch.inference_mode`` (``torch.no_grad`` where the strategy
needs ordinary tensors) and go back to train mode afterwards.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lightkit.engine.engine import Engine
from lightkit.engine.epoch_iterator import EpochIterator
from lightkit.errors import LightkitWarning, user_stacklevel
from lightkit.utils.apply import apply_to_tensors


def eval_mode(engine: Engine) -> Any:
    """``torch.inference_mode`` (``inference_mode=True``), or ``torch.no_grad`` where the
    strategy cannot use it: FSDP's gathered parameters must stay ordinary tensors."""
    allowed = getattr(engine.runtime.strategy, "allows_inference_mode", True)
    return torch.inference_mode if engine.config.inference_mode and allowed else torch.no_grad


def length_mismatch(engine: Engine, role: str, what: str) -> None:
    """The ``loader-length-mismatch`` warning: the loader of ``role`` ``what``."""
    warnings.warn(
        LightkitWarning(
            f"{engine.describe_role(role, role)}'s loader {what}. The schedule counts on "
            f"len(), as Lightning's does (when validation runs, where the last accumulation "
            f"window ends, where an evaluation stops). Make the dataset's __len__ match what "
            f"it yields (an IterableDataset split across workers yields its own items in "
            f"each), or give it no __len__.",
            code="loader-length-mismatch",
        ),
        stacklevel=user_stacklevel(),
    )


def check_length(engine: Engine, loader: EpochIterator, role: str) -> None:
    """Warn when a sized loader had batches beyond its ``len()``, which the run dropped."""
    if loader.overran():
        length_mismatch(
            engine,
            role,
            f"gave more batches than its len() of {loader.num_batches}: the run stopped "
            f"there, as Lightning's does, and the rest were not evaluated",
        )


def evaluate(
    engine: Engine, stage: str, loaders: list[EpochIterator], call: Any, *, sanity: bool = False
) -> dict[str, float]:
    """Run ``call`` over every loader under no-grad with models in eval mode; return the
    epoch aggregates. ``stage`` is ``"validate"`` or ``"test"``."""
    if all(loader.num_batches == 0 for loader in loaders):
        return {}  # no batch to run: no loop, and none of its events (Lightning skips it too)
    ctx, store, events, rt = engine.ctx, engine.store, engine.events, engine.runtime
    prefix = "validation" if stage == "validate" else stage
    pending = store.unwritten_step
    if engine.stage == "fit" and pending is not None and pending < (store.row_step or 0):
        # Step values of an earlier batch than the one this validation follows (its step
        # returned None before logging): their row comes first, so the rows stay in order.
        engine.log_rows(store.take_unwritten(), pending)
    # Every submodule's mode, not just the top one's: a submodule the user keeps in eval mode
    # (frozen batch norm) stays so after validation, as in Lightning.
    modes = [(sub, sub.training) for m in engine.models.values() for sub in m.modules()]
    for m in engine.models.values():
        m.eval()
    saved_stage = store.stage
    ctx.stage = store.stage = stage
    try:
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
                    check_length(
                        engine, loader, "val_data" if prefix == "validation" else "test_data"
                    )
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
            # Lightning's steps: inside fit, the row of the batch that triggered the validation
            # (the steps taken before it: a batch inside an accumulation window took none);
            # on its own (validate/test after fit or from a checkpoint), the weights' step.
            step = ctx.global_step
            if engine.stage == "fit":
                row = store.row_step
                step = row if row is not None else max(step - 1, 0)
            engine.log_rows(results, step)
        return results
    finally:  # an error leaves the modules as it found them too
        for sub, was_training in modes:
            sub.training = was_training
        ctx.stage = store.stage = saved_stage


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
    # Kept predictions go to host memory, as Lightning's do: a run's worth would fill the GPU.
    to_host = None if rt.device.type == "cpu" else _to_host
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
                outputs.append(output if to_host is None else to_host(output))
            check_length(engine, loader, "predict_data")
            per_loader.append(outputs)
    events.fire("predict_epoch_end")
    return per_loader[0] if len(per_loader) == 1 else per_loader


def _to_host(output: Any) -> Any:
    return apply_to_tensors(output, lambda t: t.cpu())
