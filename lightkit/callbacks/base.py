"""The ``Callback`` base class: a no-op method per event; override what you need.

A callback method receives values by parameter name, like a function hook: ``ctx``, the models
by name, ``hparams``, and what its event supplies (``batch``, ``batch_idx``, ``outputs``,
``optimizer``, ``checkpoint``, ``exception``...). Only overridden methods are called, and only
with what they ask for; lists of them are built once, at compile time.

Function hooks (``@lk.on``) of an event run first, then callbacks in the order given.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class Callback:
    """Base of every callback. Example::

    @attrs.define
    class PrintLoss(lk.Callback):
        def on_train_epoch_end(self, ctx: Any):
            print(ctx.epoch, ctx.metrics.get("train/loss"))
    """

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

    def on_fit_start(self, ctx: Any) -> None:
        pass

    def on_fit_end(self, ctx: Any) -> None:
        pass

    def on_train_epoch_start(self, ctx: Any) -> None:
        pass

    def on_train_epoch_end(self, ctx: Any) -> None:
        pass

    def on_train_batch_start(self, ctx: Any, batch: Any, batch_idx: Any) -> None:
        pass

    def on_train_batch_end(self, ctx: Any, batch: Any, batch_idx: Any, outputs: Any) -> None:
        pass

    def on_validation_epoch_start(self, ctx: Any) -> None:
        pass

    def on_validation_epoch_end(self, ctx: Any) -> None:
        pass

    def on_test_epoch_start(self, ctx: Any) -> None:
        pass

    def on_test_epoch_end(self, ctx: Any) -> None:
        pass

    def on_predict_epoch_start(self, ctx: Any) -> None:
        pass

    def on_predict_epoch_end(self, ctx: Any) -> None:
        pass

    def on_before_backward(self, ctx: Any, batch: Any, batch_idx: Any, loss: Any) -> None:
        pass

    def on_after_backward(self, ctx: Any, batch: Any, batch_idx: Any) -> None:
        pass

    def on_before_optimizer_step(self, ctx: Any, optimizer: Any) -> None:
        pass

    def on_save_checkpoint(self, ctx: Any, checkpoint: Any) -> None:
        pass

    def on_load_checkpoint(self, ctx: Any, checkpoint: Any) -> None:
        pass

    def on_exception(self, ctx: Any, exception: Any) -> None:
        pass

    def on_sanity_check_start(self, ctx: Any) -> None:
        pass

    def on_sanity_check_end(self, ctx: Any) -> None:
        pass

    def on_validation_batch_start(
        self, ctx, batch: Any, batch_idx: Any, dataloader_idx: Any
    ) -> None:
        pass

    def on_validation_batch_end(
        self, ctx, batch: Any, batch_idx: Any, dataloader_idx: Any, outputs: Any
    ) -> None:
        pass

    def on_test_batch_start(
        self, ctx: Any, batch: Any, batch_idx: Any, dataloader_idx: Any
    ) -> None:
        pass

    def on_test_batch_end(
        self, ctx, batch: Any, batch_idx: Any, dataloader_idx: Any, outputs: Any
    ) -> None:
        pass

    def on_predict_batch_start(
        self, ctx: Any, batch: Any, batch_idx: Any, dataloader_idx: Any
    ) -> None:
        pass

    def on_predict_batch_end(
        self, ctx, batch: Any, batch_idx: Any, dataloader_idx: Any, outputs: Any
    ) -> None:
        pass
