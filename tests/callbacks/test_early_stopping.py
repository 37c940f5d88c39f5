"""EarlyStopping on scripted metric sequences: the epoch it stops at, why, and its state."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

import lightkit as lk
from tests.callbacks.cb_helpers import mse_step, spec, trainer

NAN = math.nan


def scripted(values: list[float], name: str = "score"):
    """A validation step logging ``values[i]`` at the i-th validation run."""
    runs: list[int] = []

    def count(ctx) -> None:
        runs.append(ctx.epoch)

    def val(ctx, batch) -> None:
        lk.log(name, values[len(runs)])

    return val, count


def fit_scripted(values: list[float], max_epochs: int = 10, **es_args):
    val, count = scripted(values)
    es = lk.EarlyStopping(monitor="score", **es_args)
    result = trainer(max_epochs=max_epochs, callbacks=[es]).fit(
        spec(val=val, hooks={"validation_epoch_end": count})
    )
    return result, es


@pytest.mark.parametrize(
    ("values", "args", "stopped_epoch", "best"),
    [
        # min mode, patience 2: best 3.0 at epoch 2, no better at 3 and 4 -> stop after 4.
        ([5.0, 4.0, 3.0, 3.5, 3.0, 1.0, 1.0], {"patience": 2}, 4, 3.0),
        # max mode with min_delta: 0.605 and 0.61 are not 0.05 better than 0.6.
        ([0.5, 0.6, 0.605, 0.61, 0.9], {"mode": "max", "min_delta": 0.05, "patience": 2}, 3, 0.6),
        # A negative min_delta keeps its sign, as Lightning's: up to 0.5 worse still counts as
        # an improvement (and becomes the best); 6.5 is more than that.
        ([5.0, 5.2, 5.6, 5.3, 5.4, 6.5, 7.0], {"min_delta": -0.5, "patience": 1}, 5, 5.4),
        # NaN stops at once (check_finite).
        ([3.0, 2.0, NAN, 1.0, 1.0], {"patience": 5}, 2, 2.0),
        # stopping_threshold: better than 1.0 stops.
        ([3.0, 2.0, 0.5, 0.4, 0.3], {"stopping_threshold": 1.0, "patience": 5}, 2, 2.0),
        # divergence_threshold: worse than 10 stops.
        ([3.0, 2.0, 50.0, 1.0, 1.0], {"divergence_threshold": 10.0, "patience": 5}, 2, 2.0),
        # check_finite=False: NaN is just "no improvement".
        ([3.0, NAN, NAN, 1.0, 1.0], {"check_finite": False, "patience": 2}, 2, 3.0),
        # patience 0: the first non-improvement stops.
        ([3.0, 2.0, 2.0, 1.0], {"patience": 0}, 2, 2.0),
    ],
)
def test_stops_at_the_right_epoch(values, args, stopped_epoch, best):
    result, es = fit_scripted(values, **args)
    assert es.stopped_epoch == stopped_epoch
    assert result.epoch == stopped_epoch + 1
    assert result.stopped_by == "should_stop"
    assert es.best_score == best
    assert es.stopping_reason is not None


def test_runs_to_the_end_while_improving():
    result, es = fit_scripted([5.0, 4.0, 3.0, 2.0], max_epochs=4, patience=1)
    assert result.epoch == 4 and result.stopped_by == "max_epochs"
    assert es.stopped_epoch == 0 and es.stopping_reason is None and es.wait_count == 0


REASON = (
    "Monitored metric score did not improve in the last 2 records. Best score: 1.000. "
    "Signaling Trainer to stop."
)


def test_quiet_without_verbose_but_keeps_the_reason(capsys):
    # Lightning prints nothing unless verbose=True; the reason is still there to read.
    result, es = fit_scripted([1.0, 2.0, 3.0], patience=2)
    assert capsys.readouterr().out == ""
    assert result.stopped_by == "should_stop" and es.stopped_epoch == 2
    assert es.stopping_reason == REASON
    assert es.stopping_reason_message == REASON


def test_verbose_prints_why_it_stopped(capsys):
    _, es = fit_scripted([1.0, 2.0, 3.0], patience=2, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "EarlyStopping: Metric score improved. New best score: 1.000",
        f"EarlyStopping: {REASON}",
    ]
    assert es.stopping_reason == REASON


def test_verbose_prints_improvements(capsys):
    fit_scripted([2.0, 1.0, 1.5, 1.5], patience=2, verbose=True)
    out = capsys.readouterr().out
    assert "Metric score improved by 1.000 >= min_delta = 0.0. New best score: 1.000" in out


@pytest.mark.parametrize(
    ("rank", "zero_only", "expected"),
    [
        (0, False, "[rank: 0] EarlyStopping: why\n"),
        (1, False, "[rank: 1] EarlyStopping: why\n"),
        (0, True, "[rank: 0] EarlyStopping: why\n"),
        (1, True, ""),
    ],
)
def test_verbose_lines_of_several_processes_name_their_rank(capsys, rank, zero_only, expected):
    # Lightning's rule: every rank prints, prefixed, unless log_rank_zero_only=True.
    es = lk.EarlyStopping(monitor="score", verbose=True, log_rank_zero_only=zero_only)
    es._print(SimpleNamespace(world_size=2, rank=rank), "EarlyStopping: why")
    assert capsys.readouterr().out == expected
    es._print(SimpleNamespace(world_size=1, rank=0), "EarlyStopping: why")
    assert capsys.readouterr().out == "EarlyStopping: why\n"


def test_checks_after_each_validation_when_validating_within_the_epoch():
    # 4 batches per epoch, validation every 2: two checks per epoch; the 4th check stops.
    val, count = scripted([3.0, 2.0, 2.5, 2.5, 1.0, 1.0])
    es = lk.EarlyStopping(monitor="score", patience=2)
    result = trainer(max_epochs=5, val_check_interval=2, callbacks=[es]).fit(
        spec(val=val, hooks={"validation_epoch_end": count})
    )
    assert es.stopped_epoch == 1
    assert result.global_step == 8  # stopped after the 4th validation, at the end of epoch 1
    assert es.wait_count == 2


def test_monitors_a_training_metric_without_validation():
    losses = iter([4.0, 3.0, 3.0, 3.5, 2.0, 2.0])

    def step(net, batch):
        loss = mse_step(net, batch)
        return loss

    def epoch_end(ctx) -> None:
        lk.log("train/epoch_score", next(losses))

    es = lk.EarlyStopping(monitor="train/epoch_score", patience=2)
    result = trainer(max_epochs=10, callbacks=[es]).fit(
        spec(step=step, val=None, hooks={"train_epoch_end": epoch_end})
    )
    assert es.stopped_epoch == 3 and result.epoch == 4


def test_missing_metric_is_an_error_naming_what_was_logged():
    es = lk.EarlyStopping(monitor="val/acc")
    with pytest.raises(lk.ConfigError, match=r"val/acc.*never logged.*val/loss") as info:
        trainer(callbacks=[es]).fit(spec())
    assert info.value.code == "monitor-not-logged"


@pytest.mark.parametrize(
    ("flags", "validation", "why"),
    [
        ({"limit_val_batches": 0}, True, "(limit_val_batches=0)"),
        ({}, False, "(the spec has no @validation_step and no @val_data)"),
    ],
)
def test_a_validation_metric_in_a_fit_that_never_validates_says_so(flags, validation, why):
    # Not "Did you mean 'train/loss'?": the metric is missing because nothing validates.
    es = lk.EarlyStopping(monitor="val/loss")
    chosen = spec() if validation else spec(val=None)
    with pytest.raises(lk.ConfigError) as info:
        trainer(callbacks=[es], **flags).fit(chosen)
    message = str(info.value)
    assert f"This fit never validates {why}, so a metric the validation step logs" in message
    assert "Did you mean" not in message


def test_a_misspelt_training_metric_keeps_its_near_name_when_nothing_validates():
    es = lk.EarlyStopping(monitor="train/los")

    def step(net, batch):
        loss = mse_step(net, batch)
        lk.log("train/loss", loss)
        return loss

    with pytest.raises(lk.ConfigError) as info:
        trainer(callbacks=[es], limit_val_batches=0).fit(spec(step=step))
    assert "Did you mean 'train/loss'?" in str(info.value)
    assert "never validates" not in str(info.value)


def test_missing_metric_is_skipped_when_not_strict():
    es = lk.EarlyStopping(monitor="val/acc", strict=False)
    result = trainer(max_epochs=3, callbacks=[es]).fit(spec())
    assert result.epoch == 3


def test_min_epochs_delays_the_stop():
    val, count = scripted([1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    es = lk.EarlyStopping(monitor="score", patience=1)
    result = trainer(max_epochs=6, min_epochs=4, callbacks=[es]).fit(
        spec(val=val, hooks={"validation_epoch_end": count})
    )
    assert result.epoch == 4


def test_state_dict_round_trip_and_state_key():
    es = lk.EarlyStopping(monitor="val/loss", patience=4, mode="max")
    for v in (1.0, 3.0, 2.0):
        es.evaluate(v)
    state = es.state_dict()
    assert state == {"wait_count": 1, "stopped_epoch": 0, "best_score": 3.0, "patience": 4}
    other = lk.EarlyStopping(monitor="val/loss", mode="max")
    other.load_state_dict(state)
    assert (other.wait_count, other.best_score, other.patience) == (1, 3.0, 4)
    assert es.state_key == "EarlyStopping{'monitor': 'val/loss', 'mode': 'max'}"


def test_sanity_check_does_not_count():
    # The sanity check sees 0.5; the epochs see 2.0, 1.0, 1.5, 1.5. Counted, 0.5 would be the
    # best and epoch 0 would stop the run (patience 1).
    val, count = scripted([0.5, 2.0, 1.0, 1.5, 1.5])
    es = lk.EarlyStopping(monitor="score", patience=1)
    result = trainer(max_epochs=5, num_sanity_val_steps=1, callbacks=[es]).fit(
        spec(val=val, hooks={"validation_epoch_end": count})
    )
    assert es.best_score == 1.0 and es.stopped_epoch == 2 and result.epoch == 3


def test_validate_stage_never_stops_anything():
    val, count = scripted([1.0, 2.0, 3.0])
    es = lk.EarlyStopping(monitor="score", patience=0)
    trainer(callbacks=[es]).validate(spec(val=val, hooks={"validation_epoch_end": count}))
    assert es.wait_count == 0 and es.best_score == math.inf


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        lk.EarlyStopping(monitor="x", mode="up")  # type: ignore[arg-type]
