"""Every way a fit ends, and the ``Result.epoch``/``global_step`` each leaves."""

from __future__ import annotations

import pytest
import torch

import lightkit as lk
from lightkit.engine.engine import Limits
from tests.engine.engine_helpers import (
    X_TRAIN,
    Y_TRAIN,
    assert_same_weights,
    ce,
    raw_fit,
    registry,
    trainer,
)

# The training data: 50 samples in batches of 8, so 7 batches (and steps) per epoch.


def test_max_epochs():
    result = trainer(max_epochs=3, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step, result.stopped_by) == (3, 21, "max_epochs")


def test_max_steps_mid_epoch():
    result = trainer(max_epochs=5, max_steps=10, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 10, "max_steps")
    assert_same_weights(result.models["net"], raw_fit(epochs=2, max_steps=10))


def test_max_steps_at_an_epoch_end_completes_the_epoch():
    result = trainer(max_steps=14, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step, result.stopped_by) == (2, 14, "max_steps")


def test_only_max_steps_means_unbounded_epochs():
    result = trainer(max_steps=30, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step, result.stopped_by) == (4, 30, "max_steps")
    assert_same_weights(result.models["net"], raw_fit(epochs=5, max_steps=30))


def test_max_steps_counts_optimizer_steps_under_accumulation():
    # 3 steps per epoch (windows of 3, 3, 1): the 4th step ends inside epoch 1.
    result = trainer(max_steps=4, accumulate_grad_batches=3, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step) == (1, 4)
    assert_same_weights(result.models["net"], raw_fit(epochs=2, max_steps=4, accumulate=3))


def test_epoch_limits_without_flags():
    assert Limits(lk.TrainerConfig()).max_epochs == 1000
    assert Limits(lk.TrainerConfig(max_steps=5)).max_epochs == -1
    assert Limits(lk.TrainerConfig(max_steps=5, max_epochs=2)).max_epochs == 2
    assert Limits(lk.TrainerConfig(max_epochs=-1)).max_epochs == -1


def test_max_time():
    # Any real step outlasts a microsecond: the run stops after its first batch.
    result = trainer(max_epochs=5, max_time=1e-6, seed=0).fit(lk.collect(registry()))
    assert (result.epoch, result.global_step, result.stopped_by) == (0, 1, "max_time")


class FakeClock:
    """The fit loop's clock (``lightkit.engine.loops.time``), moved by the steps themselves:
    stopping on time is then exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def timed_registry(clock: FakeClock, *, train_s: float, sanity_s: float = 0.0) -> lk.Registry:
    calls = []

    def train(net, batch):
        clock.now += train_s
        return ce(net, batch)

    def validation(net, batch):
        calls.append(1)
        if len(calls) <= 2:  # the sanity check's batches
            clock.now += sanity_s
        lk.log("val/loss", ce(net, batch))

    return registry(step=train, val=validation)


def test_max_time_counts_from_train_start_not_from_the_sanity_check(monkeypatch):
    # Lightning's Timer starts at on_train_start: the sanity check's two batches (5 s each
    # here) spend none of the budget. 10 s at 1 s a step: 10 steps.
    import lightkit.engine.loops as loops

    clock = FakeClock()
    monkeypatch.setattr(loops, "time", clock)
    spec = lk.collect(timed_registry(clock, train_s=1.0, sanity_s=5.0))
    result = trainer(max_epochs=5, max_time=10, num_sanity_val_steps=2, seed=0).fit(spec)
    assert (result.global_step, result.stopped_by) == (10, "max_time")


@pytest.mark.parametrize(
    ("minimum", "steps"),
    [({"min_epochs": 2}, 14), ({"min_steps": 9}, 9), ({}, 5)],
)
def test_min_epochs_and_min_steps_outlast_max_time(monkeypatch, minimum, steps):
    # As Lightning: the time stop waits for the minimums (7 batches an epoch, 1 s each).
    import lightkit.engine.loops as loops

    clock = FakeClock()
    monkeypatch.setattr(loops, "time", clock)
    spec = lk.collect(timed_registry(clock, train_s=1.0))
    result = trainer(max_epochs=5, max_time=5, seed=0, **minimum).fit(spec)
    assert (result.global_step, result.stopped_by) == (steps, "max_time")


def test_time_that_runs_out_in_an_epochs_validation_stops_at_the_next_batch(monkeypatch):
    # As Lightning's Timer (interval "step"): time is checked after training batches only,
    # so the next epoch starts and runs one batch. 7 batches of 1 s, then validation (3
    # batches of 5 s after the sanity check's two): 22 s at the end of epoch 0, past 10.
    import lightkit.engine.loops as loops

    clock = FakeClock()
    monkeypatch.setattr(loops, "time", clock)
    calls = []

    def train(net, batch):
        clock.now += 1.0
        return ce(net, batch)

    def validation(net, batch):
        calls.append(1)
        if len(calls) > 2:
            clock.now += 5.0
        lk.log("val/loss", ce(net, batch))

    spec = lk.collect(registry(step=train, val=validation))
    result = trainer(max_epochs=5, max_time=10, seed=0).fit(spec)
    assert (result.global_step, result.stopped_by) == (8, "max_time")


def test_max_time_accepts_lightning_forms():
    from datetime import timedelta

    assert lk.TrainerConfig(max_time="00:01:02:03").max_time == 3723.0
    assert lk.TrainerConfig(max_time=timedelta(minutes=2)).max_time == 120.0
    assert lk.TrainerConfig(max_time={"hours": 1}).max_time == 3600.0


def stopping_step(at: tuple[int, int]):
    """A training step that sets ``ctx.should_stop`` at (epoch, batch_idx) ``at``."""

    def train(net, batch, ctx):
        if (ctx.epoch, ctx.batch_idx) >= at:
            ctx.should_stop = True
        return ce(net, batch)

    return train


def test_should_stop_stops_after_this_step():
    reg = registry(step=stopping_step((1, 2)))
    result = trainer(max_epochs=5, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 10, "should_stop")
    assert_same_weights(result.models["net"], raw_fit(epochs=2, max_steps=10))


def test_should_stop_at_the_last_batch_completes_the_epoch():
    reg = registry(step=stopping_step((0, 6)))
    result = trainer(max_epochs=5, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 7, "should_stop")


@pytest.mark.parametrize(("at", "stopped_by"), [((1, 6), "max_epochs"), ((1, 5), "should_stop")])
def test_a_stop_at_the_last_epochs_end_is_max_epochs_as_in_lightning(at, stopped_by):
    # Lightning asks max_steps, then max_epochs, then should_stop: a stop that comes as the
    # last epoch ends anyway is reported as max_epochs; one a batch earlier, as should_stop.
    reg = registry(step=stopping_step(at))
    result = trainer(max_epochs=2, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.stopped_by) == (2 if stopped_by == "max_epochs" else 1, stopped_by)


def test_should_stop_from_a_hook():
    reg = registry()

    @reg.on("train_epoch_end")
    def stop(ctx):
        ctx.should_stop = True

    result = trainer(max_epochs=5, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 7, "should_stop")


@pytest.mark.parametrize("sized", [True, False], ids=["sized", "unsized-loader"])
def test_a_stop_mid_epoch_validates_once_first(sized):
    # As Lightning: the run validates before it stops. An unsized loader's epoch ends at the
    # stop, and its end validates: once, not a second time inside the loop.
    def data():
        class Batches(torch.utils.data.IterableDataset):
            def __iter__(self):
                for i in range(0, 48, 8):
                    yield X_TRAIN[i : i + 8], Y_TRAIN[i : i + 8]

        return (
            [(X_TRAIN[i : i + 8], Y_TRAIN[i : i + 8]) for i in range(0, 48, 8)]
            if sized
            else (torch.utils.data.DataLoader(Batches(), batch_size=None))
        )

    reg = registry(val=True, train_data=data, step=stopping_step((0, 2)))
    validated: list[int] = []
    reg.on("validation_epoch_start")(lambda ctx: validated.append(ctx.global_step))
    result = trainer(max_epochs=3, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert (result.global_step, result.stopped_by) == (3, "should_stop")
    assert validated == [3]


def test_min_epochs_overrides_should_stop():
    reg = registry(step=stopping_step((0, 0)))  # asks to stop at every step
    result = trainer(max_epochs=5, min_epochs=3, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (3, 21, "should_stop")
    assert_same_weights(result.models["net"], raw_fit(epochs=3))


def test_min_steps_overrides_should_stop():
    reg = registry(step=stopping_step((0, 0)))
    result = trainer(max_epochs=5, min_steps=9, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step) == (1, 9)


def test_min_steps_alone_also_trains_the_first_epoch_as_lightning():
    # Lightning reads min_steps without min_epochs as min_epochs=1: a stop asked early in
    # epoch 0 waits for its end even after min_steps are done. min_epochs=0 says otherwise.
    reg = registry(step=stopping_step((0, 0)))
    result = trainer(max_epochs=5, min_steps=3, seed=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 7, "should_stop")
    result = trainer(max_epochs=5, min_steps=3, min_epochs=0, seed=0).fit(lk.collect(reg))
    assert (result.global_step, result.stopped_by) == (3, "should_stop")


def test_a_minimum_cannot_exceed_its_maximum():
    with pytest.raises(ValueError, match="min_epochs=3 is more than max_epochs=2: ") as info:
        lk.TrainerConfig(max_epochs=2, min_epochs=3)
    assert "Lower min_epochs or raise max_epochs" in str(info.value)
    with pytest.raises(ValueError, match="min_steps=8 is more than max_steps=4: "):
        lk.TrainerConfig(max_steps=4, min_steps=8)
    assert lk.TrainerConfig(max_steps=-1, min_steps=8).min_steps == 8  # unbounded: no conflict


def test_a_second_fit_starts_over():
    spec = lk.collect(registry())
    t = trainer(max_epochs=1, seed=0)
    first, second = t.fit(spec), t.fit(spec)
    assert (first.global_step, second.global_step) == (7, 7)
    assert_same_weights(first.models["net"], second.models["net"])
