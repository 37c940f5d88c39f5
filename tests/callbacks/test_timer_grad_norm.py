"""Timer (stage times, stopping on a budget, state) and GradientNormMonitor (norms equal to
a hand computation from the same gradients)."""

from __future__ import annotations

import csv
import math
from datetime import timedelta

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.callbacks.cb_helpers import make_net, mse_step, spec, trainer

# -- Timer ---------------------------------------------------------------------------------------


def test_timer_measures_each_stage():
    timer = lk.Timer()
    t = trainer(max_epochs=2, callbacks=[timer])
    t.fit(spec())
    train, val = timer.time_elapsed("train"), timer.time_elapsed("validate")
    assert 0 < val < train
    assert timer.end_time("train") is not None and timer.time_remaining() is None
    assert timer.time_elapsed("test") == 0.0
    t.test(spec_with_test())
    assert timer.time_elapsed("test") > 0


def spec_with_test() -> lk.TrainingSpec:
    from tests.callbacks import cb_helpers as h

    reg = lk.Registry()
    reg.model(make_net, name="net")
    reg.test_data(lambda: h.loader(16, 8))  # type: ignore[arg-type]
    reg.test_step(h.val_step)
    return lk.collect(reg)


@pytest.mark.parametrize(("interval", "steps", "epochs"), [("step", 1, 0), ("epoch", 4, 1)])
def test_timer_stops_training_when_the_budget_is_spent(interval, steps, epochs, capsys):
    timer = lk.Timer(duration=1e-9, interval=interval)
    result = trainer(max_epochs=5, callbacks=[timer]).fit(spec())
    assert (result.global_step, result.epoch) == (steps, epochs)
    assert "Timer: time limit reached" in capsys.readouterr().out
    assert timer.time_remaining() < 0


def test_timer_durations_and_state():
    assert lk.Timer(duration="00:01:00:05").duration == 3605.0
    assert lk.Timer(duration=timedelta(minutes=2)).duration == 120.0
    assert lk.Timer(duration={"hours": 1}).duration == 3600.0
    with pytest.raises(ValueError):
        lk.Timer(duration="soon")
    with pytest.raises(ValueError):
        lk.Timer(interval="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lk.Timer().time_elapsed("fit")  # type: ignore[arg-type]
    timer = lk.Timer(duration=100)
    timer.load_state_dict({"time_elapsed": {"train": 40.0, "validate": 1.0}})
    assert timer.time_elapsed("train") == 40.0 and timer.time_remaining() == 60.0
    assert timer.state_dict()["time_elapsed"]["train"] == 40.0


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_resumed_time_counts_against_the_budget(interval):
    # As Lightning's Timer, checked when fit starts (after a resume loaded the state): a
    # spent budget trains nothing, whatever the interval.
    timer = lk.Timer(duration=60, interval=interval)
    timer.load_state_dict({"time_elapsed": {"train": 60.0}})
    result = trainer(max_epochs=5, callbacks=[timer]).fit(spec())
    assert (result.global_step, result.stopped_by) == (0, "should_stop")
    timer = lk.Timer(duration=60, interval=interval)
    timer.load_state_dict({"time_elapsed": {"train": 59.0}})
    assert trainer(max_epochs=1, callbacks=[timer]).fit(spec()).global_step == 4


def test_a_spent_budget_in_the_checkpoint_stops_the_resumed_fit_before_any_batch(tmp_path):
    first = trainer(
        max_epochs=2, default_root_dir=tmp_path, enable_checkpointing=True, callbacks=[lk.Timer()]
    ).fit(spec())
    timer = lk.Timer(duration=timedelta(microseconds=1), interval="epoch", verbose=False)
    resumed = trainer(
        max_epochs=4, default_root_dir=tmp_path, enable_checkpointing=True, callbacks=[timer]
    ).fit(spec(), ckpt_path="last")
    assert (first.global_step, resumed.global_step) == (8, 8)


# -- GradientNormMonitor -------------------------------------------------------------------------


def expected_norms(models: dict[str, nn.Module], p: float) -> dict[str, float]:
    per = {}
    for name, m in models.items():
        grads = [q.grad.detach().flatten() for q in m.parameters() if q.grad is not None]
        per[name] = torch.linalg.vector_norm(torch.cat(grads), p).item()
    total = torch.linalg.vector_norm(torch.tensor(list(per.values())), p).item()
    return {**{f"grad_norm/{k}": v for k, v in per.items()}, "grad_norm/total": total}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, "inf"])
def test_grad_norms_match_a_hand_computation(tmp_path, norm_type):
    p = float(norm_type)
    expected: list[dict[str, float]] = []

    def critic() -> nn.Module:
        return nn.Linear(4, 1)

    def step(net, critic, batch):
        x, y = batch
        return nn.functional.mse_loss(net(x) + critic(x), y)

    def remember(net, critic, ctx):  # function hooks run before callbacks: same gradients
        expected.append(
            {"step": ctx.global_step, **expected_norms({"net": net, "critic": critic}, p)}
        )

    def optim(net, critic):
        return torch.optim.SGD([*net.parameters(), *critic.parameters()], lr=0.05)

    monitor = lk.GradientNormMonitor(norm_type=norm_type, every_n_steps=1)
    result = trainer(
        tmp_path, max_epochs=1, logger=lk.CSVLogger(), log_every_n_steps=1, callbacks=[monitor]
    ).fit(
        spec(
            step=step,
            optim=optim,
            val=None,
            more_models={"critic": critic},
            hooks={"before_optimizer_step": remember},
        )
    )
    with open(result.log_dir / "metrics.csv", newline="") as f:
        got = [r for r in csv.DictReader(f) if r.get("grad_norm/total")]
    assert len(got) == len(expected) == 4
    for row, exp in zip(got, expected, strict=True):
        assert int(row["step"]) == exp["step"]
        for key in ("grad_norm/net", "grad_norm/critic", "grad_norm/total"):
            assert math.isclose(float(row[key]), exp[key], rel_tol=1e-6), key


def test_grad_norm_every_n_steps_follows_log_every_n_steps(tmp_path):
    result = trainer(
        tmp_path,
        max_epochs=2,
        logger=lk.CSVLogger(),
        log_every_n_steps=3,
        callbacks=[lk.GradientNormMonitor()],
    ).fit(spec(step=mse_step))
    with open(result.log_dir / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("grad_norm/net")]
    assert steps == [2, 5]
    with pytest.raises(ValueError):
        lk.GradientNormMonitor(norm_type=0)
