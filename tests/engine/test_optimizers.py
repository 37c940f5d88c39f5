"""Every ``configure_optimizers`` return form, and when schedulers step."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

import lightkit as lk
from lightkit.engine.optim import SchedulerConfig, parse_optimizers
from tests.engine.engine_helpers import assert_same_weights, ce, raw_fit, registry, trainer

# 7 optimizer steps per epoch.


def sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def lambda_lr(opt):
    """A scheduler that leaves the lr alone; ``last_epoch`` counts its steps."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@pytest.mark.parametrize(
    "form",
    [
        lambda opt: opt,
        lambda opt: [opt],
        lambda opt: (opt,),
        lambda opt: {"optimizer": opt},
        lambda opt: [{"optimizer": opt}],
        lambda opt: ([opt], []),
    ],
    ids=["optimizer", "list", "tuple", "dict", "list-of-dicts", "opts-and-no-scheds"],
)
def test_optimizer_forms_train_like_a_hand_written_loop(form):
    def optim(net):
        return form(sgd(net))

    result = trainer(max_epochs=2, seed=0).fit(lk.collect(registry(optim=optim)))
    assert result.global_step == 14
    assert_same_weights(result.models["net"], raw_fit(epochs=2))


def run_with(scheduler_form, epochs: int = 2, **flags: Any):
    """Fit with ``configure_optimizers`` returning ``scheduler_form(opt, sched)``; return the
    scheduler."""
    made: list[Any] = []

    def optim(net):
        opt = sgd(net)
        sched = lambda_lr(opt)
        made.append(sched)
        return scheduler_form(opt, sched)

    trainer(max_epochs=epochs, seed=0, **flags).fit(lk.collect(registry(optim=optim)))
    return made[0]


@pytest.mark.parametrize(
    ("form", "steps"),
    [
        (lambda o, s: ([o], [s]), 3),  # default interval: epoch
        (lambda o, s: (o, s), 3),
        (lambda o, s: {"optimizer": o, "lr_scheduler": s}, 3),
        (lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s}}, 3),
        (lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}}, 21),
        (
            lambda o, s: {
                "optimizer": o,
                "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 2},
            },
            9,  # batches 2, 4 and 6 of each 7-batch epoch (Lightning's count)
        ),
        (
            lambda o, s: {
                "optimizer": o,
                "lr_scheduler": {"scheduler": s, "interval": "epoch", "frequency": 2},
            },
            1,  # after epoch 2 of 3
        ),
        (lambda o, s: [{"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}}], 21),
        (lambda o, s: ([o], [{"scheduler": s, "interval": "step", "frequency": 7}]), 3),
    ],
    ids=[
        "lists",
        "pair",
        "dict-plain",
        "dict-default",
        "per-step",
        "every-2-steps",
        "every-2-epochs",
        "list-of-dicts",
        "config-in-tuple",
    ],
)
def test_scheduler_step_counts(form, steps):
    assert run_with(form, epochs=3).last_epoch == steps


def test_step_schedulers_count_optimizer_steps_not_batches():
    sched = run_with(
        lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}},
        epochs=2,
        accumulate_grad_batches=3,
    )
    assert sched.last_epoch == 6


def test_step_frequency_counts_batches_of_the_epoch_as_lightning():
    # 7 batches, accumulating 3: windows end after batches 3, 6 and 7 of each epoch; with
    # frequency 2 only the one after batch 6 steps the scheduler (Lightning's batch_idx + 1).
    sched = run_with(
        lambda o, s: {
            "optimizer": o,
            "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 2},
        },
        epochs=2,
        accumulate_grad_batches=3,
    )
    assert sched.last_epoch == 2


def test_epoch_schedulers_do_not_step_for_an_unfinished_epoch():
    sched = run_with(lambda o, s: ([o], [s]), epochs=5, max_steps=10)
    assert sched.last_epoch == 1


def plateau_registry(made: list[Any], monitor: str, interval: str = "epoch"):
    def optim(net):
        opt = sgd(net)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        made.append(sched)
        config = {"scheduler": sched, "monitor": monitor, "interval": interval}
        return {"optimizer": opt, "lr_scheduler": config}

    def train(net, batch):
        loss = ce(net, batch)
        lk.log("train/loss", loss)
        return loss

    return registry(optim=optim, step=train, val=True)


def test_reduce_lr_on_plateau_reads_the_monitored_epoch_value():
    made: list[Any] = []
    val_losses: list[float] = []
    reg = plateau_registry(made, "val/loss")

    @reg.on("validation_epoch_end")
    def record(ctx):
        val_losses.append(ctx.metrics["val/loss"])

    trainer(max_epochs=4, num_sanity_val_steps=0).fit(lk.collect(reg))
    sched = made[0]
    assert len(val_losses) == 4
    assert sched.last_epoch == 4
    assert sched.best == min(val_losses)


def test_a_step_plateau_on_a_validation_metric_reads_the_validation_of_its_batch():
    # As Lightning: a step-interval ReduceLROnPlateau steps at the batch's end, after the
    # validation the batch ends with, so it reads that validation's value.
    made: list[Any] = []
    validated: list[tuple[int, float]] = []
    stepped: list[tuple[int, float]] = []

    def optim(net):
        opt = sgd(net)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        made.append(sched)
        step = sched.step
        sched.step = lambda value: (stepped.append((ctx_ref[0].global_step, value)), step(value))
        config = {"scheduler": sched, "monitor": "val/loss", "interval": "step", "frequency": 2}
        return {"optimizer": opt, "lr_scheduler": config}

    ctx_ref: list[Any] = []
    reg = registry(optim=optim, val=True)
    reg.on("fit_start")(lambda ctx: ctx_ref.append(ctx))
    reg.on("validation_epoch_end")(
        lambda ctx: validated.append((ctx.global_step, ctx.metrics["val/loss"]))
    )
    trainer(max_epochs=1, num_sanity_val_steps=0, val_check_interval=2).fit(lk.collect(reg))
    assert [step for step, _ in validated] == [2, 4, 6]  # 7 batches
    assert stepped == validated


def test_reduce_lr_on_plateau_per_step_on_a_training_metric():
    made: list[Any] = []
    reg = plateau_registry(made, "train/loss", interval="step")
    trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert made[0].last_epoch == 7


def test_monitor_key_next_to_the_optimizer():
    made: list[Any] = []

    def optim(net):
        opt = sgd(net)
        made.append(torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
        return {"optimizer": opt, "lr_scheduler": made[0], "monitor": "val/loss"}

    trainer(max_epochs=2, num_sanity_val_steps=0).fit(lk.collect(registry(optim=optim, val=True)))
    assert made[0].last_epoch == 2


def test_a_monitor_that_was_never_logged_names_the_logged_metrics():
    reg = plateau_registry([], "val/acc")
    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=2, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert info.value.code == "monitor-not-logged"
    message = str(info.value)
    assert "optim(net) at tests/engine/test_optimizers.py:" in message
    assert "the lr_scheduler's ReduceLROnPlateau monitors 'val/acc', which was never logged" in (
        message
    )
    assert "Logged metrics: train/loss, val/loss." in message
    assert "lk.log('val/acc', value)" in message


def test_a_monitor_missing_because_validation_skipped_the_epoch_suggests_frequency():
    reg = plateau_registry([], "val/loss")
    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=2, num_sanity_val_steps=0, check_val_every_n_epoch=2).fit(
            lk.collect(reg)
        )
    assert info.value.code == "monitor-not-logged"
    assert str(info.value).endswith(
        "Validation runs every 2 epochs (check_val_every_n_epoch), so a metric it logs is "
        'missing in the others: give the scheduler "frequency": 2.'
    )


def test_plateau_monitoring_a_misspelt_training_metric_gets_its_near_name():
    def step(net, batch):
        loss = ce(net, batch)
        lk.log("train/loss", loss)
        return loss

    def optim(net):
        opt = sgd(net)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train/los"}}

    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(step=step, optim=optim)))
    assert "Did you mean 'train/loss'?" in str(info.value)
    assert "never validates" not in str(info.value)


def test_plateau_without_monitor():
    def optim(net):
        opt = sgd(net)
        return [opt], [torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]

    with pytest.raises(lk.ConfigError, match="without a metric to watch") as info:
        trainer(max_epochs=1).fit(lk.collect(registry(optim=optim)))
    assert info.value.code == "plateau-needs-monitor"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("adam", "returned str 'adam'; expected an optimizer"),
        (None, "returned NoneType None; expected an optimizer"),
        ([], "returned list"),
        ({"optimizer": "x"}, "returned dict"),
        ({"optimizer": "OPT", "lr_scheduler": {"scheduler": "S", "when": "step"}}, "unknown"),
        (
            {"optimizer": "OPT", "scheduler": "S"},
            "unknown keys scheduler; allowed: optimizer, lr_scheduler, monitor",
        ),
        ({"optimizer": "OPT", "lr_scheduler": {"interval": "step"}}, "needs a 'scheduler' key"),
        ({"optimizer": "OPT", "lr_scheduler": object()}, "has no step\\(\\) method"),
    ],
)
def test_bad_return_values(value, match):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    def fill(v: Any) -> Any:
        if v == "OPT":
            return opt
        if v == "S":
            return lambda_lr(opt)
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v

    with pytest.raises(lk.ConfigError, match=match) as info:
        parse_optimizers(fill(value), "optim(net) at x.py:1")
    assert info.value.code == "bad-optimizer-config"


def test_a_scheduler_on_an_optimizer_not_returned_is_refused():
    # Its steps would change a learning rate nobody uses: silently, the returned optimizer's
    # would stay put.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for value in [(opt, lambda_lr(other)), {"optimizer": opt, "lr_scheduler": lambda_lr(other)}]:
        with pytest.raises(lk.ConfigError) as info:
            parse_optimizers(value, "optim(net) at x.py:1")
        assert info.value.code == "bad-optimizer-config"
        assert str(info.value).startswith(
            "optim(net) at x.py:1 returned a scheduler (LambdaLR) built on an optimizer it did "
            "not return"
        )
    assert parse_optimizers((opt, lambda_lr(opt)), "optim").optimizers == [opt]


def test_bad_return_value_names_the_function():
    def optim(net):
        return "adam"

    with pytest.raises(lk.ConfigError, match=r"optim\(net\) at .*test_optimizers.py:\d+"):
        trainer(max_epochs=1).fit(lk.collect(registry(optim=optim)))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("interval", "batch", r"SchedulerConfig\(interval='batch'\): interval must be one of "),
        ("frequency", 0, r"SchedulerConfig\(frequency=0\): frequency must be an integer >= 1\."),
    ],
)
def test_bad_interval_or_frequency_names_the_function(key, value, match):
    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": lambda_lr(opt), key: value}}

    with pytest.raises(lk.ConfigError, match=match) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(optim=optim)))
    assert info.value.code == "bad-optimizer-config"
    assert re.match(
        r".*\.optim\(net\) at .*\.py:\d+ returned a scheduler dict that does not ", str(info.value)
    )


def test_a_scheduler_config_built_directly_is_checked_too():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(lk.ConfigError, match=r"^SchedulerConfig\(frequency=0\): frequency must"):
        SchedulerConfig(lambda_lr(opt), frequency=0)


def test_optimizer_and_scheduler_are_injected():
    got: dict[str, Any] = {}

    def optim(net):
        opt = sgd(net)
        sched = lambda_lr(opt)
        got["made"] = (opt, sched)
        return [opt], [sched]

    def train(net, batch, optimizer, scheduler, optimizers, schedulers):
        got["step"] = (optimizer, scheduler, optimizers, schedulers)
        return ce(net, batch)

    trainer(max_epochs=1).fit(lk.collect(registry(optim=optim, step=train)))
    opt, sched = got["made"]
    assert got["step"] == (opt, sched, [opt], [sched])


def test_a_missing_monitor_with_strict_false_warns_and_skips():
    made: list[Any] = []

    def optim(net):
        opt = sgd(net)
        made.append(torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
        config = {"scheduler": made[0], "monitor": "val/acc", "strict": False}
        return {"optimizer": opt, "lr_scheduler": config}

    with pytest.warns(UserWarning, match="'val/acc', which was not logged yet"):
        trainer(max_epochs=2).fit(lk.collect(registry(optim=optim)))
    assert made[0].last_epoch == 0


def test_an_optimizer_that_needs_a_closure_is_stepped_in_a_manual_step():
    def lbfgs(net):
        return torch.optim.LBFGS(net.parameters(), lr=0.1, max_iter=3)

    with pytest.raises(
        lk.ConfigError, match=r"returned LBFGS, whose step\(\) needs a closure"
    ) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(optim=lbfgs)))
    assert info.value.code == "optimizer-needs-closure"
    assert "@lk.training_step(manual=True)" in str(info.value)

    evaluations: list[int] = []

    def train(net, batch, optimizer, ctx):
        def closure():
            optimizer.zero_grad()
            loss = ce(net, batch)
            ctx.backward(loss)
            evaluations.append(1)
            return loss

        optimizer.step(closure)

    result = trainer(max_epochs=1, seed=0).fit(
        lk.collect(registry(step=train, optim=lbfgs, manual=True))
    )
    assert result.global_step == 7 and len(evaluations) > 7  # LBFGS evaluates several times
