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
    "check_callbacks",
    "default_callbacks",
]


def check_callbacks(given: Any) -> list[Callback]:
    """``given`` as a list; a clear error for anything that is not a :class:`Callback`."""
    callbacks: list[Callback] = list(given)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            from lightkit.errors import ConfigError

            raise ConfigError(
                f"callbacks=[..., {cb!r}]: {type(cb).__name__} is not a lk.Callback. Subclass "
                f"lk.Callback and override the on_<event> methods you need.",
                code="not-a-callback",
            )
    return callbacks


def default_callbacks(config: Any, stage: str, dev_run: bool) -> list[Callback]:
    """The user's callbacks plus the defaults the flags ask for, in run order."""
    callbacks = check_callbacks(config.callbacks)
    kinds = {type(cb).__name__ for cb in callbacks}
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
    return callbacks
