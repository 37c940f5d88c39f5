"""The ``Callback`` base class: a no-op method per event; override what you need.

A callback method receives values by parameter name, like a function hook: ``ctx``, the models
by name, ``hparams``, and what its event supplies (``batch``, ``batch_idx``, ``outputs``,
``optimizer``, ``checkpoint``, ``exception``...). Only overridden methods are called, and only
with what they ask for; lists of them are built once, at compile time.

Function hooks (``@lk.on``) of an event run first, then callbacks in the order given, except
the callbacks that act on what the others log (``monitors``: ``EarlyStopping``,
``ModelCheckpoint``), which run last, as in Lightning.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs


@attrs.define
class Callback:
    """Base of every callback. Example::

    @attrs.define
    class PrintLoss(lk.Callback):
        def on_train_epoch_end(self, ctx: Any):
            print(ctx.epoch, ctx.metrics.get("train/loss"))

    The ``on_<event>`` methods here take ``*args, **kwargs`` so that an override may declare any
    subset of what its event supplies (plus the models by name and ``hparams``). They are never
    called: only methods a subclass overrides are bound.
    """

    #: Acts on logged metrics (EarlyStopping, ModelCheckpoint): runs after the other
    #: callbacks of an event, so that it sees what they log.
    monitors: ClassVar[bool] = False
    #: Its ``on_train_epoch_start`` also runs for the epoch a mid-epoch resume continues
    #: (lightkit's progress bar and timer set up there). Lightning, and so every other
    #: callback, gets no epoch start then: restored state stays as saved.
    starts_resumed_epoch: ClassVar[bool] = False

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints (its class name by default)."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to resume; stored in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def setup(self, ctx: Any, stage: str) -> None:
        """Called once before a run (``stage``: fit, validate, test or predict)."""

    def teardown(self, ctx: Any, stage: str) -> None:
        """Called once after a run, also after an error."""

    def on_fit_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_fit_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_train_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx."""

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, outputs."""

    def on_validation_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_validation_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_test_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_test_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_predict_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_predict_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_before_backward(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, loss."""

    def on_after_backward(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx."""

    def on_before_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, optimizer."""

    def on_save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, checkpoint."""

    def on_load_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, checkpoint."""

    def on_exception(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, exception."""

    def on_sanity_check_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_sanity_check_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx."""

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx."""

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx, outputs."""

    def on_test_batch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx."""

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx, outputs."""

    def on_predict_batch_start(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx."""

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Can ask for: ctx, batch, batch_idx, dataloader_idx, outputs."""
