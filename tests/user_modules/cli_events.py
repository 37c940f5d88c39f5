"""Hooks on every fit event, and a callback, that append their names to ``cli_tiny.EVENTS``:
collected with ``cli_tiny`` they record the order a real fit runs things in, for comparing with
what ``lightkit explain`` prints."""

from __future__ import annotations

import attrs

import lightkit as lk
from tests.user_modules.cli_tiny import EVENTS


@lk.on("fit_start")
def on_fit_start(ctx):
    EVENTS.append("on_fit_start")


@lk.on("sanity_check_start")
def on_sanity_check_start():
    EVENTS.append("on_sanity_check_start")


@lk.on("sanity_check_end")
def on_sanity_check_end():
    EVENTS.append("on_sanity_check_end")


@lk.on("train_epoch_start")
def on_train_epoch_start(ctx):
    EVENTS.append("on_train_epoch_start")


@lk.on("train_batch_start")
def on_train_batch_start(batch_idx):
    EVENTS.append("on_train_batch_start")


@lk.on("before_backward")
def on_before_backward(loss):
    EVENTS.append("on_before_backward")


@lk.on("after_backward")
def on_after_backward(net):
    EVENTS.append("on_after_backward")


@lk.on("before_optimizer_step")
def on_before_optimizer_step(optimizer):
    EVENTS.append("on_before_optimizer_step")


@lk.on("train_batch_end")
def on_train_batch_end(outputs, batch_idx):
    EVENTS.append("on_train_batch_end")


@lk.on("validation_epoch_start")
def on_validation_epoch_start():
    EVENTS.append("on_validation_epoch_start")


@lk.on("validation_batch_start")
def on_validation_batch_start(dataloader_idx):
    EVENTS.append("on_validation_batch_start")


@lk.on("validation_batch_end")
def on_validation_batch_end(outputs):
    EVENTS.append("on_validation_batch_end")


@lk.on("validation_epoch_end")
def on_validation_epoch_end(ctx):
    EVENTS.append("on_validation_epoch_end")


@lk.on("train_epoch_end")
def on_train_epoch_end(ctx):
    EVENTS.append("on_train_epoch_end")


@lk.on("save_checkpoint")
def on_save_checkpoint(checkpoint):
    EVENTS.append("on_save_checkpoint")


@lk.on("fit_end")
def on_fit_end(ctx):
    EVENTS.append("on_fit_end")


@attrs.define
class EveryEpochCheckpoint(lk.Callback):
    """Stands in for a checkpoint callback: where it is called is where checkpoints are due."""

    def on_validation_epoch_end(self, ctx):
        EVENTS.append("EveryEpochCheckpoint.on_validation_epoch_end")

    def on_train_epoch_end(self, ctx, net):
        EVENTS.append("EveryEpochCheckpoint.on_train_epoch_end")
