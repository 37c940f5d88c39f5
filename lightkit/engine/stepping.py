"""The end of a training step in automatic optimization: the loss read from what the step
returned, a non-finite loss caught before the optimizer steps, and the end of an accumulation
window (unscale, hooks, clipping, the optimizer step through the precision plugin, zero_grad,
step-interval schedulers). The fit loop (``loops.py``) calls these.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from lightkit.engine.engine import Engine
from lightkit.engine.optim import SchedulerConfig
from lightkit.errors import (
    ConfigError,
    LightkitWarning,
    StepError,
    describe_function,
    sorted_list,
    user_stacklevel,
)

Tensor = torch.Tensor


def loss_of(output: Any, engine: Engine) -> Tensor | None:
    """The loss in what the training step returned: a scalar tensor, ``{"loss": ...}`` or None."""
    if type(output) is Tensor or isinstance(output, Tensor):
        if output.dim() == 0 or output.numel() == 1:
            return output.reshape(()) if output.dim() else output
        problem = f"a tensor of shape {tuple(output.shape)}"
        fix = "Reduce the loss to one number (e.g. `.mean()`)."
    elif output is None:
        return None
    elif isinstance(output, dict):
        if "loss" in output:
            return loss_of(output["loss"], engine)
        problem = f"a dict without a 'loss' key (keys: {sorted_list(map(str, output))})"
        fix = "Put the loss under 'loss'" + (
            "; log values with lk.log (Lightning 1.x's 'log' key is gone)."
            if "log" in output
            else "."
        )
    elif isinstance(output, (int, float)):
        problem = f"the number {output!r}"
        fix = "Return the loss tensor itself: `.item()` cuts it from the graph."
    elif isinstance(output, (tuple, list)):
        problem = f"a {type(output).__name__} of {len(output)}"
        fix = "Return {'loss': loss, ...} to pass other values to train_batch_end."
    else:
        problem = f"{type(output).__name__} {output!r:.60}"
        fix = "Return the loss tensor."
    raise StepError(
        f"{engine.describe_role('training_step')} returned {problem}; expected "
        f"a scalar loss tensor, a dict with a 'loss' key, or None to skip the batch. {fix}",
        code="bad-step-output",
    )


def backward_failed(engine: Engine, exc: RuntimeError) -> Exception:
    """What to raise when backward of the step's loss failed: a loss without a graph, or one
    the step backpropagated itself (autograd's "second time"), gets the fix; anything else
    is raised as it is."""
    where = engine.describe_role("training_step", "the training step")
    if "does not require grad and does not have a grad_fn" in str(exc):
        return StepError(
            f"{where} returned a loss "
            f"with no graph to backpropagate: it was detached (`.detach()`, `.item()`, a new "
            f"tensor), computed under torch.no_grad(), or no parameter it uses requires grad. "
            f"Return the loss tensor the models computed, or None to skip the batch.",
            code="loss-without-graph",
        )
    if "backward through the graph a second time" not in str(exc):
        return exc
    return StepError(
        f"{where} returned a loss "
        f"whose graph was already backpropagated: the step calls backward (and the "
        f"optimizer) itself. In automatic optimization lightkit does both with the loss the "
        f"step returns: remove them from the step, or optimize manually with "
        f"@lk.training_step(manual=True) and ctx.backward(loss).",
        code="step-backpropagated",
    )


def detached(output: Any) -> Any:
    """What ``train_batch_end`` hooks receive as ``outputs``: the step's return value with its
    tensors detached (as Lightning's), so that keeping it does not keep the graph alive."""
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, dict):
        return {k: v.detach() if isinstance(v, Tensor) else v for k, v in output.items()}
    return output


def checked_manual_step(engine: Engine, step: Callable[..., Any], *args: Any) -> Any:
    """Run the first batch of a manual-optimization fit, and raise if the step returned a loss
    with a graph but neither backpropagated nor stepped an optimizer: it was written for
    automatic optimization, and would otherwise train nothing, silently."""
    stepped: list[bool] = []
    handles = [
        opt.register_step_post_hook(lambda *_: stepped.append(True)) for opt in engine.optimizers
    ]
    try:
        output = step(*args)
    finally:
        for handle in handles:
            handle.remove()
    loss = output.get("loss") if isinstance(output, dict) else output
    # A step the grad scaler skipped (an overflow) was still taken by the user's step. Nor is
    # there a verdict when gradients exist: the step backpropagated and accumulates.
    skipped = getattr(engine.runtime.precision, "step_pending", False)
    if stepped or skipped or not (isinstance(loss, Tensor) and loss.requires_grad):
        return output
    if any(p.grad is not None for m in engine.models.values() for p in m.parameters()):
        return output
    plan = engine.spec.plan("training_step")
    why = (
        "manual=True"
        if plan is not None and plan.manual
        else f"{len(engine.optimizers)} optimizers from configure_optimizers"
    )
    raise StepError(
        f"{engine.describe_role('training_step', 'the training step')} returned a loss with a "
        f"graph, but no optimizer stepped in the first batch. With {why}, the step optimizes "
        f"manually: lightkit does not backpropagate what it returns. Ask for `optimizers` and "
        f"call ctx.backward(loss) and opt.step() in the step, or return one optimizer from "
        f"configure_optimizers for automatic optimization.",
        code="manual-step-stepped-nothing",
    )


def step_schedulers(engine: Engine, interval: str, count: int, plateau: bool | None = None) -> None:
    """Step the schedulers of ``interval`` whose ``frequency`` divides ``count`` (the batch
    in the epoch, from 1, for ``"step"``; the epoch, from 1, for ``"epoch"``); ``plateau``:
    only the ``ReduceLROnPlateau`` ones (``True``) or only the others (``False``)."""
    for cfg in engine.schedulers:
        if cfg.interval != interval or count % cfg.frequency:
            continue
        if plateau is not None and cfg.is_plateau != plateau:
            continue
        if cfg.is_plateau:
            value = monitored(engine, cfg)
            if value is not None:
                cfg.scheduler.step(value)
        else:
            cfg.scheduler.step()


def monitored(engine: Engine, cfg: SchedulerConfig) -> float | None:
    """The monitored metric's latest value; ``None`` (with a warning) if it is missing and the
    scheduler config says ``strict=False``."""
    metrics = engine.store.floats()
    if cfg.monitor not in metrics:
        if not cfg.strict:
            warnings.warn(
                LightkitWarning(
                    f"ReduceLROnPlateau monitors {cfg.monitor!r}, which was not logged yet "
                    f"(logged: {sorted_list(metrics)}); the scheduler does not step (strict=False).",
                    code="monitor-not-logged",
                ),
                stacklevel=user_stacklevel(),
            )
            return None
        plan = engine.spec.plan("configure_optimizers")
        where = f"{describe_function(plan.fn)}: " if plan else ""
        skipped = ""
        check_n = engine.config.check_val_every_n_epoch
        if cfg.interval == "epoch" and check_n not in (None, 1) and cfg.frequency % check_n:
            skipped = (
                f" Validation runs every {check_n} epochs (check_val_every_n_epoch), so a "
                f"metric it logs is missing in the others: give the scheduler "
                f'"frequency": {check_n}.'
            )
        raise ConfigError(
            f"{where}the lr_scheduler's ReduceLROnPlateau monitors {cfg.monitor!r}, which was "
            f"never logged. Logged metrics: {sorted_list(metrics)}."
            f"{engine.monitor_hint(cfg.monitor or '', metrics)} "
            f"Log it with lk.log({cfg.monitor!r}, value), or change its 'monitor'.{skipped}",
            code="monitor-not-logged",
        )
    return metrics[cfg.monitor]


def optimizer_step(engine: Engine) -> None:
    """End an accumulation window: clip, step through the precision plugin, zero the grads."""
    rt, cfg, ctx = engine.runtime, engine.config, engine.ctx
    opt = engine.optimizers[0]
    rt.unscale_gradients(opt)  # 16-mixed: hooks and clipping see true gradients (Lightning's order)
    if engine.events.before_optimizer_step:
        for call in engine.events.before_optimizer_step:
            call(opt)
    if cfg.gradient_clip_val:
        rt.clip_gradients(opt, cfg.gradient_clip_val, cfg.gradient_clip_algorithm)
    rt.optimizer_step(opt)
    opt.zero_grad(set_to_none=True)
    ctx.global_step += 1
    if engine.schedulers:
        # Lightning's count: a step scheduler's `frequency` counts batches of the epoch. A
        # ReduceLROnPlateau steps at the batch's end, after a validation the batch ends with
        # (the fit loop), as Lightning steps it once the metrics are logged.
        step_schedulers(engine, "step", ctx.batch_idx + 1, plateau=False)


def window_stepper(engine: Engine) -> Callable[[], None]:
    """What ends an accumulation window: :func:`optimizer_step`, or, when nothing listens,
    clips or schedules and the runtime adds nothing, the three plain calls it comes down to."""
    rt, cfg, ctx = engine.runtime, engine.config, engine.ctx
    if (
        rt.plain_steps
        and not engine.events.before_optimizer_step
        and not cfg.gradient_clip_val
        and not engine.schedulers
    ):
        opt = engine.optimizers[0]
        step, zero_grad = opt.step, opt.zero_grad

        def plain_step() -> None:
            step()
            zero_grad(set_to_none=True)
            ctx.global_step += 1

        return plain_step
    return lambda: optimizer_step(engine)


def checks_loss(engine: Engine) -> bool:
    """Whether the fit loop reads each loss to catch NaN/inf (``nonfinite_loss``). Reading
    it is free on CPU but a device sync on a GPU: ``"auto"`` checks on CPU only."""
    mode = engine.config.nonfinite_loss
    return mode in ("raise", "skip") or (mode == "auto" and engine.runtime.device.type == "cpu")


def nonfinite_loss(engine: Engine, loss: Tensor) -> bool:
    """A NaN/inf loss, after its backward and before any optimizer step: raise (the default),
    or warn and return True so the accumulation window's optimizer step is skipped."""
    ctx, value = engine.ctx, loss.item()
    where = engine.describe_role("training_step", "the training step")
    logged = {name: float(v) for name, v in engine.store.unwritten.items()}
    what = (
        f"non-finite loss: the loss is {value} at global step {ctx.global_step} (epoch "
        f"{ctx.epoch}, batch_idx {ctx.batch_idx}), returned by {where}. Metrics logged since "
        f"the last logger write: {logged or '(none)'}."
    )
    if engine.config.nonfinite_loss == "skip":
        warnings.warn(
            LightkitWarning(
                f"{what} Its optimizer step is skipped (nonfinite_loss='skip').",
                code="nonfinite-loss",
            ),
            stacklevel=user_stacklevel(),
        )
        return True
    params = f"those after step {ctx.global_step - 1}" if ctx.global_step else "the initial ones"
    raise StepError(
        f"{what} The optimizer step was not taken: the parameters are {params}, and "
        f"checkpoints already written are unaffected. Find the "
        f"operation with detect_anomaly=True; lower the learning rate or clip gradients "
        f"(gradient_clip_val); or set nonfinite_loss='skip' to skip such steps.",
        code="nonfinite-loss",
    )


def skip_optimizer_step(engine: Engine) -> None:
    """End an accumulation window that saw a non-finite loss: drop its gradients without
    stepping. The step still counts (as a step a grad scaler skips does)."""
    for opt in engine.optimizers:
        opt.zero_grad(set_to_none=True)
    engine.ctx.global_step += 1
    if engine.schedulers:
        step_schedulers(engine, "step", engine.ctx.batch_idx + 1, plateau=False)


__all__ = [
    "backward_failed",
    "checked_manual_step",
    "checks_loss",
    "detached",
    "loss_of",
    "monitored",
    "nonfinite_loss",
    "optimizer_step",
    "skip_optimizer_step",
    "step_schedulers",
    "window_stepper",
]
