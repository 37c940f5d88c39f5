"""Callbacks: the ``Callback`` base class and the built-ins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightkit.callbacks.base import Callback
from lightkit.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightkit.callbacks.checkpoint import ModelCheckpoint
    from lightkit.callbacks.early_stopping import EarlyStopping
    from lightkit.callbacks.grad_norm import GradientNormMonitor
    from lightkit.callbacks.lr_monitor import LearningRateMonitor
    from lightkit.callbacks.model_summary import ModelSummary
    from lightkit.callbacks.progress import ProgressBar
    from lightkit.callbacks.timer import Timer

# The built-ins are imported when first used: a run loads only its own callbacks.
__getattr__ = lazy_attributes(
    __name__,
    {
        "ModelCheckpoint": "lightkit.callbacks.checkpoint",
        "EarlyStopping": "lightkit.callbacks.early_stopping",
        "GradientNormMonitor": "lightkit.callbacks.grad_norm",
        "LearningRateMonitor": "lightkit.callbacks.lr_monitor",
        "ModelSummary": "lightkit.callbacks.model_summary",
        "ProgressBar": "lightkit.callbacks.progress",
        "Timer": "lightkit.callbacks.timer",
    },
    globals(),
)

__all__ = [
    "Callback",
    "EarlyStopping",
    "GradientNormMonitor",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "Timer",
]


def check_callbacks(given: Any) -> list[Callback]:
    """``given`` as a list; a clear error for anything that is not a :class:`Callback`
    instance, for ``setup``/``teardown`` written Lightning's way, and for two callbacks whose
    states would share one key in checkpoints."""
    from lightkit.errors import ConfigError

    callbacks: list[Callback] = list(given)
    for cb in callbacks:
        if isinstance(cb, type) and issubclass(cb, Callback):
            raise ConfigError(
                f"callbacks=[..., {cb.__name__}]: this is the class; pass an instance, "
                f"{cb.__name__}(...).",
                code="not-a-callback",
            )
        if not isinstance(cb, Callback):
            written = (
                ' In a file, a callback is {"class_path": "module:Class", "init_args": {...}}; '
                "a run folder's config.json holds only the description of one whose class or "
                "arguments cannot be written as data (a class in __main__ or in a function, "
                "arguments that are not plain values): pass that callback again."
                if isinstance(cb, str)
                else ""
            )
            name = type(cb).__name__
            module = type(cb).__module__ or ""
            if module.split(".")[0] in ("lightning", "pytorch_lightning"):
                ours = ", ".join(n for n in __all__ if n != "Callback")
                use = (
                    f"use lk.{name}(...), with the same arguments"
                    if name in __all__
                    else f"lightkit has no {name}: port it to an lk.Callback (from_lightning.md)"
                )
                fix = f"Lightning's own callbacks do not run here: {use}. lightkit's: {ours}."
            else:
                fix = "Subclass lk.Callback and override the on_<event> methods you need."
            raise ConfigError(
                f"callbacks=[..., {cb!r:.80}]: {name} is not a lk.Callback. {fix}{written}",
                code="not-a-callback",
            )
        _check_setup_signatures(cb)
    by_key: dict[str, Callback] = {}
    for cb in callbacks:
        if type(cb).state_dict is Callback.state_dict:
            continue  # no state: nothing to mix up
        first = by_key.setdefault(cb.state_key, cb)
        if first is not cb:
            raise ConfigError(
                f"callbacks: {first!r} and {cb!r} keep their states under one key in "
                f"checkpoints ({cb.state_key!r}), so a resume would give both the same state. "
                f"Give them different settings, or override state_key in your class to tell "
                f"them apart (Lightning refuses this too).",
                code="duplicate-callback-state",
            )
    return callbacks


def _check_setup_signatures(cb: Callback) -> None:
    """``setup``/``teardown`` take ``(ctx, stage)``; Lightning's ``(trainer, pl_module, stage)``
    would fail at the run's start with a bare TypeError."""
    import inspect

    from lightkit.errors import ConfigError, describe_function

    for name in ("setup", "teardown"):
        method = getattr(cb, name)
        try:
            inspect.signature(method).bind(None, "fit")
        except TypeError:
            raise ConfigError(
                f"callback {type(cb).__name__}: {describe_function(method)} must take "
                f"(ctx, stage): ctx is the run context (ctx.runtime, ctx.metrics, ...), stage "
                f"is 'fit', 'validate', 'test' or 'predict'. Lightning's (trainer, pl_module, "
                f"stage) does not apply: the models are ctx's or the hooks' by name.",
                code="bad-callback-method",
            ) from None
        except ValueError:
            continue  # a signature inspect cannot read: let the call decide


def default_callbacks(config: Any, stage: str, dev_run: bool) -> list[Callback]:
    """The user's callbacks plus the defaults the flags ask for, in run order."""
    callbacks = check_callbacks(config.callbacks)
    # The built-in classes the user's callbacks are (subclasses included, as Lightning checks
    # isinstance), by name: a flags-off fit need not import their modules.
    kinds = {
        k.__qualname__
        for cb in callbacks
        for k in type(cb).__mro__
        if k.__module__.startswith("lightkit.callbacks.")
    }
    if (
        stage == "fit"
        and config.enable_model_summary
        and not dev_run
        and "ModelSummary" not in kinds
    ):
        from lightkit.callbacks.model_summary import ModelSummary

        callbacks.insert(0, ModelSummary())
    if (
        stage == "fit"
        and config.enable_checkpointing
        and not dev_run
        and "ModelCheckpoint" not in kinds
    ):
        from lightkit.callbacks.checkpoint import ModelCheckpoint

        # The newest checkpoint is always `last.ckpt`, so `ckpt_path="last"` finds it.
        callbacks.append(ModelCheckpoint(save_last=True))
    if config.enable_progress_bar and "ProgressBar" not in kinds:
        from lightkit.callbacks.progress import ProgressBar

        callbacks.append(ProgressBar())
    # Monitors last (stable), so an epoch's end reaches them after the others logged.
    return sorted(callbacks, key=lambda cb: cb.monitors)
