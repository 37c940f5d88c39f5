"""LearningRateMonitor: Lightning's key names and the scheduler's values, read back from the
CSV file the run wrote."""

from __future__ import annotations

import csv

import torch

import lightkit as lk
from tests.callbacks.cb_helpers import spec, trainer


def rows(result) -> list[dict[str, str]]:
    with open(result.log_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(result, name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows(result) if r.get(name)]


def fit(tmp_path, optim, hooks=None, step=None, **flags):
    extra = {"step": step} if step is not None else {}
    flags = {
        "callbacks": [lk.LearningRateMonitor()],
        "max_epochs": 2,
        "log_every_n_steps": 1,
        **flags,
    }
    return trainer(tmp_path, logger=lk.CSVLogger(), **flags).fit(
        spec(optim=optim, hooks=hooks, **extra)
    )


def test_step_scheduler_values_at_every_step(tmp_path):
    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    result = fit(tmp_path, optim)
    assert column(result, "lr-SGD") == [(s, 0.05 * (1 / (s + 1))) for s in range(8)]
    assert result.metrics["lr-SGD"] == 0.05 * (1 / 8)


def test_epoch_scheduler_values_at_each_epochs_first_step(tmp_path):
    seen = []

    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.3)]

    def remember(optimizer):
        seen.append(optimizer.param_groups[0]["lr"])

    result = fit(tmp_path, optim, hooks={"train_epoch_start": remember}, max_epochs=3)
    got = [(r["epoch"], float(r["lr-SGD"])) for r in rows(result) if r.get("lr-SGD")]
    assert got == [("0", seen[0]), ("1", seen[1]), ("2", seen[2])]
    assert seen[1] == 0.05 * 0.3
    # As Lightning writes them: at the step each epoch starts at (4 batches an epoch).
    assert [s for s, _ in column(result, "lr-SGD")] == [0, 4, 8]
    assert result.metrics["lr-SGD"] == seen[2]


def test_epoch_values_are_written_whatever_log_every_n_steps(tmp_path):
    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    result = fit(tmp_path, optim, max_epochs=3, log_every_n_steps=50)
    assert column(result, "lr-SGD") == [(0, 0.05), (4, 0.025), (8, 0.0125)]


def test_param_groups_and_their_names(tmp_path):
    def optim(net):
        return torch.optim.SGD(
            [
                {"params": net[0].parameters(), "lr": 0.1},
                {"params": net[2].parameters(), "lr": 0.01},
            ]
        )

    result = fit(tmp_path / "a", optim, max_epochs=1)
    assert column(result, "lr-SGD/pg1") == [(s, 0.1) for s in range(4)]
    assert column(result, "lr-SGD/pg2") == [(s, 0.01) for s in range(4)]

    def named(net):
        return torch.optim.SGD(
            [
                {"params": net[0].parameters(), "lr": 0.1, "name": "body"},
                {"params": net[2].parameters(), "lr": 0.01, "name": "head"},
            ]
        )

    result = fit(tmp_path / "b", named, max_epochs=1)
    assert result.metrics["lr-SGD/body"] == 0.1 and result.metrics["lr-SGD/head"] == 0.01


def test_two_optimizers_of_one_class_momentum_and_weight_decay(tmp_path):
    def optim(net):
        return [
            torch.optim.Adam(net[0].parameters(), lr=1e-3, weight_decay=0.1),
            torch.optim.Adam(net[2].parameters(), lr=2e-3, betas=(0.5, 0.9)),
        ]

    def manual(net, batch, optimizers, ctx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(net(x), y)
        ctx.backward(loss)
        for opt in optimizers:
            opt.step()
            opt.zero_grad()

    monitor = lk.LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    result = fit(tmp_path, optim, step=manual, callbacks=[monitor], max_epochs=1)
    m = result.metrics
    assert (m["lr-Adam"], m["lr-Adam-1"]) == (1e-3, 2e-3)
    assert (m["lr-Adam-momentum"], m["lr-Adam-1-momentum"]) == (0.9, 0.5)
    assert (m["lr-Adam-weight_decay"], m["lr-Adam-1-weight_decay"]) == (0.1, 0.0)
    assert monitor.keys == [
        "lr-Adam",
        "lr-Adam-momentum",
        "lr-Adam-weight_decay",
        "lr-Adam-1",
        "lr-Adam-1-momentum",
        "lr-Adam-1-weight_decay",
    ]


def test_interval_override_and_scheduler_name(tmp_path):
    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "my-lr"},
        }

    result = fit(tmp_path, optim, callbacks=[lk.LearningRateMonitor(logging_interval="epoch")])
    # The rate at each epoch's start, at the step it starts at.
    assert column(result, "my-lr") == [(0, 0.05), (4, 0.05 * 0.5**4)]


def test_only_on_steps_whose_rows_are_written(tmp_path):
    result = trainer(
        tmp_path,
        logger=lk.CSVLogger(),
        log_every_n_steps=3,
        max_epochs=2,
        callbacks=[lk.LearningRateMonitor()],
    ).fit(spec())
    # Every 3rd optimizer step, and the step each epoch starts at (as Lightning writes them).
    assert [s for s, _ in column(result, "lr-SGD")] == [0, 2, 4, 5]


def test_an_optimizer_without_a_scheduler_is_logged_each_epoch_in_short_epochs(tmp_path):
    # Lightning logs such an optimizer at each epoch's start too, so a run with fewer batches
    # than log_every_n_steps still records its rate: at the step each epoch starts at.
    result = trainer(
        tmp_path, logger=lk.CSVLogger(), log_every_n_steps=50, max_epochs=3,
        callbacks=[lk.LearningRateMonitor()],
    ).fit(spec(val=None))  # fmt: skip
    assert column(result, "lr-SGD") == [(0, 0.05), (4, 0.05), (8, 0.05)]
    # And in the metrics, as in Lightning's callback_metrics (an EarlyStopping may watch it).
    assert result.metrics["lr-SGD"] == 0.05


def test_the_rate_is_logged_on_the_optimizer_steps_whose_rows_are_written(tmp_path):
    # Windows of 2 batches: optimizer steps 1..4 end at batches 1, 3, 5, 7; every 2nd writes.
    result = trainer(
        tmp_path, logger=lk.CSVLogger(), log_every_n_steps=2, max_epochs=2,
        accumulate_grad_batches=2, callbacks=[lk.LearningRateMonitor(logging_interval="step")],
    ).fit(spec(val=None))  # fmt: skip
    assert [s for s, _ in column(result, "lr-SGD")] == [1, 3]


def test_a_resumed_run_logs_the_rates_its_optimizer_uses(tmp_path):
    # Loading a checkpoint replaces the optimizer's parameter-group dicts: the monitor must
    # read the new ones, not the ones it saw at set-up.
    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.08)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    checkpoint = lk.ModelCheckpoint(dirpath=str(tmp_path / "c"), save_last=True)
    fit(tmp_path, optim, callbacks=[lk.LearningRateMonitor(), checkpoint], max_epochs=2)
    resumed = trainer(
        tmp_path,
        logger=lk.CSVLogger(),
        callbacks=[lk.LearningRateMonitor(), lk.ModelCheckpoint(dirpath=str(tmp_path / "c"))],
        max_epochs=4,
        log_every_n_steps=1,
    ).fit(spec(optim=optim), ckpt_path=str(tmp_path / "c" / "last.ckpt"))
    assert column(resumed, "lr-SGD") == [(8, 0.02), (12, 0.01)]  # 0.08 halved per epoch
    assert resumed.metrics["lr-SGD"] == 0.01


def test_a_parameter_group_added_during_training_gets_its_own_keys(tmp_path):
    """Unfreezing a backbone adds a group to the optimizer mid-run (what Lightning's
    BackboneFinetuning does): from then on each group has its key, as Lightning logs them,
    and ``lrs`` holds every value logged (the first group's history moved under /pg1)."""

    def optim(net):
        return torch.optim.SGD(net[2].parameters(), lr=0.05)

    def unfreeze(net, optimizer, ctx):
        if ctx.epoch == 1 and len(optimizer.param_groups) == 1:
            optimizer.add_param_group({"params": net[0].parameters(), "lr": 0.001})

    monitor = lk.LearningRateMonitor(logging_interval="step")
    result = fit(tmp_path, optim, hooks={"train_epoch_start": unfreeze}, callbacks=[monitor])
    assert column(result, "lr-SGD") == [(s, 0.05) for s in range(4)]
    assert column(result, "lr-SGD/pg1") == [(s, 0.05) for s in range(4, 8)]
    assert column(result, "lr-SGD/pg2") == [(s, 0.001) for s in range(4, 8)]
    assert result.metrics["lr-SGD/pg2"] == 0.001
    assert monitor.lrs == {"lr-SGD/pg1": [0.05] * 8, "lr-SGD/pg2": [0.001] * 4}


def test_momentum_and_weight_decay_values_last_logged(tmp_path):
    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.8, weight_decay=0.01)

    monitor = lk.LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    fit(tmp_path, optim, callbacks=[monitor], max_epochs=1)
    assert monitor.last_momentum_values == {"lr-SGD-momentum": 0.8}
    assert monitor.last_weight_decay_values == {"lr-SGD-weight_decay": 0.01}
    assert monitor.lrs["lr-SGD"][-1] == 0.05


def test_what_a_fit_logged_stays_readable_after_a_validate(tmp_path):
    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.05)

    monitor = lk.LearningRateMonitor()
    t = trainer(tmp_path, logger=lk.CSVLogger(), callbacks=[monitor], max_epochs=1)
    t.fit(spec(optim=optim))
    logged = dict(monitor.lrs)
    t.validate(spec(optim=optim))
    assert monitor.lrs == logged and logged["lr-SGD"][-1] == 0.05
