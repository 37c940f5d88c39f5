"""``ctx.estimated_stepping_batches``: the optimizer steps a fit takes, readable in
``configure_optimizers`` for a scheduler's length (Lightning's
``trainer.estimated_stepping_batches``)."""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import lightkit as lk
from tests.engine.engine_helpers import (
    X_TRAIN,
    Y_TRAIN,
    assert_same_weights,
    make_net,
    registry,
    train_loader,
    trainer,
)

# 50 samples in batches of 8: 7 training batches an epoch.


def one_cycle(net, ctx):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    total = ctx.estimated_stepping_batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=total)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_a_one_cycle_schedule_sized_by_it_trains_like_a_hand_written_loop() -> None:
    result = trainer(max_epochs=3, seed=0).fit(lk.collect(registry(optim=one_cycle)))
    assert result.global_step == 21

    torch.manual_seed(0)
    net = make_net()
    loader = train_loader()  # what the hand-written loop needs for the schedule's length
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=3 * len(loader))
    for _ in range(3):
        for x, y in loader:
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
    assert_same_weights(result.models["net"], net)


class Endless(IterableDataset):  # type: ignore[type-arg]
    def __iter__(self):  # type: ignore[no-untyped-def]
        while True:
            yield X_TRAIN[:8], Y_TRAIN[:8]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"max_epochs": 3}, 21),
        ({"max_epochs": 3, "accumulate_grad_batches": 3}, 9),  # 3 windows an epoch: 3, 3, 1
        ({"max_epochs": 3, "max_steps": 10}, 10),
        ({"max_epochs": 2, "limit_train_batches": 0.5}, 6),  # 3 batches an epoch
        ({"max_epochs": 2, "limit_train_batches": 2}, 4),
        ({"fast_dev_run": True}, 1),
        ({"fast_dev_run": 4}, 4),
        ({"max_epochs": 2, "overfit_batches": 2}, 4),
        ({"max_epochs": -1}, math.inf),
        ({"max_steps": 12}, 12),
        ({}, 7000),  # Lightning's default of 1000 epochs
    ],
)
def test_it_counts_the_optimizer_steps_the_flags_allow(
    flags: dict[str, Any], expected: float
) -> None:
    seen: list[Any] = []

    def optim(net, ctx):
        seen.append(ctx.estimated_stepping_batches)
        return torch.optim.SGD(net.parameters(), lr=0.0)

    def stop_at_once(ctx):
        ctx.should_stop = True

    reg = registry(optim=optim)
    reg.on("train_batch_end", stop_at_once)  # the value is the point, not the training
    trainer(**flags).fit(lk.collect(reg))
    assert seen == [expected]


def test_an_iterable_without_a_length_is_bounded_by_max_steps_only() -> None:
    def data():
        return DataLoader(Endless(), batch_size=None)

    seen: list[Any] = []

    def optim(net, ctx):
        seen.append(ctx.estimated_stepping_batches)
        return torch.optim.SGD(net.parameters(), lr=0.0)

    result = trainer(max_steps=5).fit(lk.collect(registry(optim=optim, train_data=data)))
    assert (seen, result.global_step) == ([5], 5)


def test_reading_it_builds_the_training_data_once_before_the_optimizer() -> None:
    order: list[str] = []

    def data():
        order.append("data")
        return train_loader()

    def optim(net, ctx):
        order.append("configure_optimizers")
        total = ctx.estimated_stepping_batches
        order.append(f"total={total}")
        return torch.optim.SGD(net.parameters(), lr=0.1)

    def late(net, ctx):
        return torch.optim.SGD(net.parameters(), lr=0.1)

    trainer(max_epochs=2).fit(lk.collect(registry(optim=optim, train_data=data)))
    assert order == ["configure_optimizers", "data", "total=14"]
    order.clear()
    trainer(max_epochs=2).fit(lk.collect(registry(optim=late, train_data=data)))
    assert order == ["data"]  # not read: the data comes after the optimizers, as before


def test_a_hook_reads_it_during_fit_and_evaluation_refuses_it() -> None:
    seen: list[Any] = []

    def at_start(ctx):
        seen.append(ctx.estimated_stepping_batches)

    def in_validation(ctx):
        seen.append(ctx.estimated_stepping_batches)

    reg = registry(val=True)
    reg.on("fit_start", at_start)
    spec = lk.collect(reg)
    trainer(max_epochs=2, num_sanity_val_steps=0).fit(spec)
    assert seen == [14]

    reg.on("validation_epoch_start", in_validation)
    with pytest.raises(lk.ConfigError, match="read during validate") as info:
        trainer().validate(lk.collect(reg))
    assert info.value.code == "fit-only"
    assert "configure_optimizers" in str(info.value)
    line = inspect.getsourcelines(in_validation)[1] + 1  # the line that reads it
    where = f"by {in_validation.__qualname__}() at {os.path.relpath(__file__)}:{line}:"
    assert where in str(info.value)


def test_two_ranks_count_their_own_share_of_the_batches() -> None:
    def report(ctx):
        lk.log("total", float(ctx.estimated_stepping_batches))

    reg = registry()
    reg.on("train_epoch_end", report)
    strategy = lk.DDPStrategy(start_method="fork")
    result = trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=strategy).fit(
        lk.collect(reg)
    )
    # 50 samples over 2 ranks: 25 each (one padded), batches of 8: 4 an epoch.
    assert result.metrics["total"] == 8.0
    assert result.global_step == 8


def test_a_model_function_cannot_read_it():
    # validate, test, predict and lk.load_models build models without a fit: refused in fit too.
    def net(ctx):
        _ = ctx.estimated_stepping_batches
        return make_net()

    reg = lk.Registry()
    reg.model(net)
    reg.train_data(train_loader)
    reg.training_step(lambda net, batch: torch.nn.functional.cross_entropy(net(batch[0]), batch[1]))
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(lk.ConfigError, match="read during a @model function") as info:
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert info.value.code == "fit-only"


def test_the_training_data_function_cannot_read_it():
    # It counts that function's batches: reading it there would call the function again.
    def data(ctx):
        _ = ctx.estimated_stepping_batches
        return train_loader()

    reg = lk.Registry()
    reg.model(make_net, name="net")
    reg.train_data(data)
    reg.training_step(lambda net, batch: torch.nn.functional.cross_entropy(net(batch[0]), batch[1]))
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert info.value.code == "fit-only"
    message = str(info.value)
    assert message.startswith(
        "ctx.estimated_stepping_batches was read by "
        "test_the_training_data_function_cannot_read_it.<locals>.data() at "
    )
    assert "while test_the_training_data_function_cannot_read_it.<locals>.data(ctx) at" in message
    assert message.endswith("Read it in configure_optimizers or a fit hook, after the data exists.")
