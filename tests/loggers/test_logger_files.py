"""What the loggers write, read back: TensorBoard events (steps and values of every scalar,
HParams plugin data, the graph), metrics.csv rows against Result.metrics, hparams.json, and
flushing before an error propagates."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch

import lightkit as lk
from tests.callbacks.cb_helpers import QUIET, mse_step, spec, trainer
from tests.loggers.tb_events import all_events, has_graph, hparams_data, scalars


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_scalars(rows: list[dict[str, str]]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, cell in row.items():
            if key != "step" and cell != "":
                out.setdefault(key, []).append((int(row["step"]), float(cell)))
    return out


def hp_step(net, batch, ctx, lr: float = 0.05, tag: str = "a"):
    loss = mse_step(net, batch)
    lk.log("train/double", loss * 2, on_step=False, on_epoch=True)
    return loss


def hp_optim(net, lr: float = 0.05):
    return torch.optim.SGD(net.parameters(), lr=lr)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    t = trainer(root, logger=True, max_epochs=3, log_every_n_steps=2)
    result = t.fit(spec(step=hp_step, optim=hp_optim))
    return result


def test_default_run_folder(default_run):
    log_dir = default_run.log_dir
    assert log_dir.name == "version_0" and log_dir.parent.parent.name == "lightkit_logs"
    assert (log_dir / "metrics.csv").is_file() and (log_dir / "hparams.json").is_file()
    assert list(log_dir.glob("events.out.tfevents.*"))


def test_csv_rows_match_result_metrics(default_run):
    rows = read_csv(default_run.log_dir / "metrics.csv")
    assert next(iter(rows[0])) == "step"
    cols = csv_scalars(rows)
    for name, value in default_run.metrics.items():
        assert cols[name][-1][1] == value, name  # exact: CSV keeps repr(float)
    # One row per logging step: steps 1, 3, ... (every 2nd batch) and each epoch's end.
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps))
    assert [s for s, _ in cols["train/loss"]] == [1, 3, 5, 7, 9, 11]
    assert [s for s, _ in cols["val/loss"]] == [3, 7, 11]
    assert [s for s, _ in cols["train/double"]] == [3, 7, 11]
    assert [v for _, v in cols["epoch"]] == [0, 0, 1, 1, 2, 2]


def test_tensorboard_scalars_match_the_csv(default_run):
    tb = scalars(default_run.log_dir)
    cols = csv_scalars(read_csv(default_run.log_dir / "metrics.csv"))
    assert set(tb) == set(cols)
    for name, points in cols.items():
        # TensorBoard stores float32 scalars.
        assert tb[name] == [(s, float(np.float32(v))) for s, v in points], name


def test_hparams_reach_tensorboard_and_json(default_run):
    data = hparams_data(default_run.log_dir)
    assert set(data) == {"experiment", "session_start_info", "session_end_info"}
    start = data["session_start_info"].session_start_info
    assert start.hparams["lr"].number_value == 0.05
    assert start.hparams["tag"].string_value == "a"
    exp = data["experiment"].experiment
    assert {h.name for h in exp.hparam_infos} == {"hidden", "lr", "tag"}
    assert {m.name.tag for m in exp.metric_infos} == set(default_run.metrics)
    from tensorboardX.proto.api_pb2 import Status

    assert data["session_end_info"].session_end_info.status == Status.Value("STATUS_SUCCESS")
    saved = json.loads((default_run.log_dir / "hparams.json").read_text())
    assert saved == {
        "hparams": {"hidden": 8, "lr": 0.05, "tag": "a"},
        "metrics": default_run.metrics,
    }


def crash_at(step_no: int):
    def step(net, batch, ctx):
        loss = mse_step(net, batch)
        if ctx.global_step == step_no:
            raise RuntimeError(f"boom at step {step_no}")
        return loss

    return step


def test_a_crash_leaves_every_earlier_step_on_disk(tmp_path):
    t = trainer(tmp_path, logger=True, max_epochs=5, log_every_n_steps=1)
    with pytest.raises(RuntimeError, match=r"^boom at step 7$"):
        t.fit(spec(step=crash_at(7), val=None))
    (run,) = (tmp_path / "lightkit_logs").glob("*/version_0")
    loss_steps = [s for s, _ in csv_scalars(read_csv(run / "metrics.csv"))["train/loss"]]
    assert loss_steps[:7] == list(range(7))
    assert [s for s, _ in scalars(run)["train/loss"]][:7] == list(range(7))
    from tensorboardX.proto.api_pb2 import Status

    end = hparams_data(run)["session_end_info"].session_end_info
    assert end.status == Status.Value("STATUS_FAILURE")


@pytest.mark.parametrize("logs_first", [False, True])
def test_values_not_yet_written_at_a_crash_keep_the_step_they_were_logged_at(tmp_path, logs_first):
    # log_every_n_steps=50: nothing is due before the crash at step 5, so the values logged
    # last wait in the buffer; the error writes them under their own step (4 when the
    # failing step raised before logging, 5 when it logged first).
    def step(net, batch, ctx):
        if ctx.global_step == 5 and not logs_first:
            raise RuntimeError("boom")
        loss = mse_step(net, batch)
        if ctx.global_step == 5:
            raise RuntimeError("boom")
        return loss

    t = trainer(tmp_path, logger=lk.CSVLogger(), max_epochs=3, log_every_n_steps=50)
    with pytest.raises(RuntimeError, match=r"^boom$"):
        t.fit(spec(step=step, val=None))
    (run,) = (tmp_path / "lightkit_logs").glob("*/version_0")
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["train/loss"]][-1] == (5 if logs_first else 4)


def test_buffered_rows_are_flushed_every_n_steps(tmp_path):
    seen: list[int] = []

    def peek(ctx):
        path = ctx.log_dir / "metrics.csv"
        seen.append(len(read_csv(path)) if path.exists() else 0)

    csv_logger = lk.CSVLogger(flush_every_n_steps=3)
    trainer(tmp_path, logger=csv_logger, max_epochs=1, log_every_n_steps=1).fit(
        spec(val=None, n_train=64, hooks={"train_batch_start": peek})
    )
    # Before batch i, rows 0..i-1 were logged; whole groups of 3 are on disk.
    assert seen == [0, 0, 0, 3, 3, 3, 6, 6]


def test_log_every_n_steps_counts_optimizer_steps_as_lightning_does(tmp_path):
    # 8 batches an epoch, a window of 2: optimizer steps after batches 2, 4, 6, 8 (global
    # steps 1..4). Every 2nd optimizer step writes a row, at the step it ends (1, 3); a batch
    # inside a window writes none.
    result = trainer(
        tmp_path, logger=lk.CSVLogger(), max_epochs=1, log_every_n_steps=2,
        accumulate_grad_batches=2,
    ).fit(spec(val=None, n_train=64))  # fmt: skip
    assert result.global_step == 4
    rows = read_csv(result.log_dir / "metrics.csv")
    assert [s for s, _ in csv_scalars(rows)["train/loss"]] == [1, 3]


def _batch_logger(stop_at: int | None = None, skip_last: bool = False):
    def step(net, batch, batch_idx, ctx):
        lk.log("v", float(batch_idx))
        lk.log("e", float(batch_idx), on_step=False, on_epoch=True)
        if batch_idx == stop_at:
            ctx.should_stop = True
        if skip_last and batch_idx == 3:
            return None
        return mse_step(net, batch)

    return step


def test_a_last_batch_that_steps_no_optimizer_keeps_its_row(tmp_path):
    # 4 batches an epoch; the last returns None, so it begins and ends at the same global
    # step as the next epoch's first batch. Its values are written under that step, after
    # the batch before it kept its own, and the next epoch's first batch does not replace
    # them: one row per step and epoch, in order, and no value lost.
    result = trainer(tmp_path, logger=True, max_epochs=2, log_every_n_steps=1).fit(
        spec(step=_batch_logger(skip_last=True))
    )
    assert result.global_step == 6
    rows = read_csv(result.log_dir / "metrics.csv")
    assert [(r["step"], r["epoch"], r["v"]) for r in rows] == [
        ("0", "0", "0.0"), ("1", "0", "1.0"), ("2", "0", "2.0"), ("3", "0", "3.0"),
        ("3", "1", "0.0"), ("4", "1", "1.0"), ("5", "1", "2.0"), ("6", "1", "3.0"),
    ]  # fmt: skip
    # The epoch's aggregate and its validation share the last batch's row.
    assert [(r["step"], r["e"] != "", r["val/loss"] != "") for r in rows if r["e"]] == [
        ("3", True, True),
        ("6", True, True),
    ]
    tb = scalars(result.log_dir)
    assert tb["v"] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (3, 0.0),
        (4, 1.0),
        (5, 2.0),
        (6, 3.0),
    ]


def test_values_of_a_batch_before_a_last_one_that_logs_nothing_come_before_the_validation(
    tmp_path,
):
    # No row is due before the epoch ends (log_every_n_steps=50); the last batch returns
    # None before logging, so the pending values are the batch before's, at its step: their
    # row comes before the validation's, which the epoch aggregate then joins.
    def step(net, batch, batch_idx):
        if batch_idx == 3:
            return None
        loss = mse_step(net, batch)
        lk.log("e", float(batch_idx), on_step=False, on_epoch=True)
        return loss

    result = trainer(tmp_path, logger=True, max_epochs=2, log_every_n_steps=50).fit(spec(step=step))
    rows = read_csv(result.log_dir / "metrics.csv")
    assert [
        (r["step"], r["epoch"], bool(r["train/loss"]), bool(r["val/loss"]), r["e"]) for r in rows
    ] == [
        ("2", "0", True, False, ""),
        ("3", "0", False, True, "1.0"),
        ("5", "1", True, False, ""),
        ("6", "1", False, True, "1.0"),
    ]


def test_a_stop_inside_an_accumulation_window_writes_the_batch_under_its_own_step(tmp_path):
    # A window of 2: batches 0-1 are optimizer step 0; batch 2 begins step 1 and asks to
    # stop, so that window never steps. Its value goes under step 1, not over step 0's.
    result = trainer(
        tmp_path, logger=True, max_epochs=1, log_every_n_steps=1, accumulate_grad_batches=2
    ).fit(spec(step=_batch_logger(stop_at=2), val=None, n_train=64))
    assert result.global_step == 1
    rows = read_csv(result.log_dir / "metrics.csv")
    assert [(r["step"], r["v"], r["e"]) for r in rows] == [("0", "1.0", ""), ("1", "2.0", "1.0")]
    assert scalars(result.log_dir)["v"] == [(0, 1.0), (1, 2.0)]


@pytest.mark.parametrize("entry", ["validate", "test", "predict"])
def test_evaluation_without_loggers_writes_nothing(tmp_path, entry):
    # Checkpointing stays on (the default), but evaluation writes no checkpoints either.
    from torch.utils.data import DataLoader, TensorDataset

    reg = lk.Registry()
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))

    def loader():
        return DataLoader(data, batch_size=4)

    def pred(net, batch):
        return net(batch[0])

    reg.model(lambda: torch.nn.Linear(2, 1), name="net")
    for role in ("val_data", "test_data", "predict_data"):
        getattr(reg, role)(loader)
    reg.validation_step(mse_step)
    reg.test_step(mse_step)
    reg.predict_step(pred)
    t = trainer(tmp_path, logger=False)
    result = getattr(t, entry)(lk.collect(reg))
    if entry != "predict":  # predict returns the outputs
        assert result.log_dir is None
    assert not (tmp_path / "lightkit_logs").exists()


def test_logger_false_and_lists(tmp_path):
    result = trainer(tmp_path / "off", logger=False, enable_checkpointing=False).fit(spec())
    assert result.log_dir is None and not (tmp_path / "off").exists()
    both = [lk.CSVLogger(), lk.TensorBoardLogger()]
    result = trainer(tmp_path / "list", logger=both).fit(spec())
    assert (result.log_dir / "metrics.csv").is_file() and scalars(result.log_dir)
    only_tb = trainer(tmp_path / "tb", logger=lk.TensorBoardLogger()).fit(spec())
    assert not (only_tb.log_dir / "metrics.csv").exists() and scalars(only_tb.log_dir)


def test_own_save_dir_gets_its_own_versions(tmp_path):
    for expected in ("version_0", "version_1"):
        logger = lk.CSVLogger(save_dir=tmp_path / "mine", name="exp")
        trainer(tmp_path / "root", logger=logger).fit(spec())
        assert logger.log_dir == tmp_path / "mine" / "exp" / expected
        assert (logger.log_dir / "metrics.csv").is_file()
    fixed = lk.TensorBoardLogger(save_dir=tmp_path / "mine", name="exp", version="best")
    trainer(tmp_path / "root", logger=fixed).fit(spec())
    assert fixed.log_dir == tmp_path / "mine" / "exp" / "best" and scalars(fixed.log_dir)


def test_one_logger_used_for_several_runs_writes_each_in_full(tmp_path):
    # The same seeded run twice, then a validation: each version holds its own run, with no
    # row, column or event of the one before (a CSVLogger used to crash on the second fit; a
    # TensorBoardLogger wrote it empty, taking its points for repeats of the first run's).
    csv_logger = lk.CSVLogger(save_dir=tmp_path / "csv", name="exp")
    tb_logger = lk.TensorBoardLogger(save_dir=tmp_path / "tb", name="exp")
    first = trainer(tmp_path / "root", seed=0, logger=[csv_logger, tb_logger])
    first.fit(spec())
    trainer(tmp_path / "root", seed=0, logger=[csv_logger, tb_logger]).fit(spec())
    first.validate(spec())
    runs = [tmp_path / "csv" / "exp" / f"version_{n}" for n in range(3)]
    fits = [read_csv(run / "metrics.csv") for run in runs[:2]]
    assert fits[0] == fits[1] and fits[0]
    assert "train/loss" not in read_csv(runs[2] / "metrics.csv")[0]  # validation's own columns
    events = [scalars(tmp_path / "tb" / "exp" / f"version_{n}") for n in range(2)]
    assert events[0] == events[1] and events[0]
    assert "session_start_info" in hparams_data(tmp_path / "tb" / "exp" / "version_1")


def test_an_empty_name_puts_the_versions_in_save_dir_itself(tmp_path):
    # Lightning's CSVLogger(save_dir, name="") writes save_dir/version_0; no name means
    # lightkit's "default" folder.
    empty = lk.CSVLogger(save_dir=tmp_path / "mine", name="")
    trainer(tmp_path / "root", logger=empty).fit(spec())
    assert empty.log_dir == tmp_path / "mine" / "version_0"
    assert (empty.log_dir / "metrics.csv").is_file()
    unnamed = lk.TensorBoardLogger(save_dir=tmp_path / "tb")
    trainer(tmp_path / "root", logger=unnamed).fit(spec())
    assert unnamed.log_dir == tmp_path / "tb" / "default" / "version_0"


def test_graph_is_logged_on_request(tmp_path):
    def net_with_example():
        from tests.callbacks.cb_helpers import make_net

        net = make_net()
        net.example_input_array = torch.zeros(2, 4)
        return net

    import importlib.util

    logger = lk.TensorBoardLogger(log_graph=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(UserWarning, match="needs the tensorboard package"):
            result = trainer(tmp_path, logger=logger).fit(spec(net=net_with_example))
        assert not has_graph(result.log_dir)
    else:
        result = trainer(tmp_path, logger=logger).fit(spec(net=net_with_example))
        assert has_graph(result.log_dir)
    plain = trainer(tmp_path, logger=lk.TensorBoardLogger()).fit(spec(net=net_with_example))
    assert not has_graph(plain.log_dir)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorboard") is None,
    reason="tracing a graph needs the tensorboard package",
)
def test_the_graph_is_traced_on_an_input_cast_as_batches_are(tmp_path):
    def double_net():
        from tests.callbacks.cb_helpers import make_net

        net = make_net()
        net.example_input_array = torch.zeros(2, 4)  # float32, the model float64
        return net

    logger = lk.TensorBoardLogger(log_graph=True)
    result = trainer(tmp_path, logger=logger, precision="64-true").fit(spec(net=double_net))
    assert has_graph(result.log_dir)


def test_tensorboard_writes_without_a_background_thread(tmp_path):
    """Events are written by the training thread itself: no writer thread (nor a queue's
    feeder thread) runs while training, and the scalars are all in the file."""
    seen: list[set[str]] = []

    def counting_step(net, batch):
        seen.append({t.name for t in threading.enumerate()})
        loss = mse_step(net, batch)
        lk.log("train/loss", loss)
        return loss

    before = {t.name for t in threading.enumerate()}
    result = trainer(tmp_path, logger=lk.TensorBoardLogger(), log_every_n_steps=1).fit(
        spec(step=counting_step)
    )
    assert seen and all(names <= before for names in seen)
    assert [step for step, _ in scalars(result.log_dir)["train/loss"]] == list(
        range(result.global_step)
    )


def test_experiment_is_a_summary_writer_on_the_run_folder(tmp_path):
    logger = lk.TensorBoardLogger()

    def step_with_histogram(net, batch, ctx):
        loss = mse_step(net, batch)
        if ctx.global_step == 0:
            first = next(net.parameters()).detach()
            logger.experiment.add_histogram("w", first, 0)
        lk.log("train/loss", loss)
        return loss

    result = trainer(tmp_path, logger=logger).fit(spec(step=step_with_histogram))
    tags = {v.tag for e in all_events(result.log_dir) for v in e.summary.value}
    assert {"w", "train/loss"} <= tags
    assert len(list(result.log_dir.glob("events.out.tfevents.*"))) == 2


@pytest.fixture
def one_second(monkeypatch):
    """Every writer opened in one second: tensorboardX names event files by the second."""
    import time

    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)


def test_experiment_used_after_fit_keeps_what_the_run_wrote(tmp_path, one_second):
    logger = lk.TensorBoardLogger()

    def at_epoch_end(ctx):
        logger.experiment.add_scalar("during", 1.0, ctx.global_step)

    reg = spec(hooks={"train_epoch_end": at_epoch_end})
    result = trainer(tmp_path, logger=logger).fit(reg)
    logger.experiment.add_text("note", "after fit", 0)  # a new writer, the same second
    logger.finalize("success")
    values = {v.tag for e in all_events(result.log_dir) for v in e.summary.value}
    assert {"during", "note/text_summary"} <= values
    assert scalars(result.log_dir)["during"] == [(4, 1.0), (8, 1.0)]


def test_one_logger_in_fit_then_validate_keeps_both_runs_events(tmp_path, one_second):
    logger = lk.TensorBoardLogger(save_dir=str(tmp_path / "tb"), version=0)
    trainer(tmp_path, logger=logger).fit(spec())
    fitted = scalars(logger.log_dir)
    lk.Trainer(**{**QUIET, "logger": logger}).validate(spec())
    after = scalars(logger.log_dir)
    assert fitted and all(after[tag][: len(points)] == points for tag, points in fitted.items())


def test_hparams_are_on_disk_as_the_run_starts(tmp_path):
    seen = []

    def first_step(net, batch, ctx):
        if ctx.global_step == 0:
            seen.append(hparams_data(ctx.log_dir))
        return mse_step(net, batch)

    trainer(tmp_path, logger=lk.TensorBoardLogger()).fit(spec(step=first_step))
    assert "session_start_info" in seen[0]  # before any flush of a logging step


def both_step(net, batch, ctx):
    x, y = batch
    lk.log("t/both", float(ctx.batch_idx), on_epoch=True)  # steps 0, 1, 2, 3; epoch 1.5
    return torch.nn.functional.mse_loss(net(x), y)


def val_both_step(net, batch, batch_idx):
    lk.log("v/step", 10.0 + batch_idx, on_step=True)  # steps 10, 11; epoch 10.5


@pytest.mark.parametrize("flush", [1, 100])
@pytest.mark.parametrize("val_check_interval", [1.0, 0.5])
def test_csv_has_one_row_per_step_with_the_epoch_values(tmp_path, flush, val_check_interval):
    """A step's training row, the validation aggregates and the epoch aggregates written at
    that step make one row; a name logged per step and per epoch is written as Lightning
    writes it, ``name_step`` and ``name_epoch``, so no value replaces another (``flush=1``:
    the row was on disk before each later write)."""
    csv_logger = lk.CSVLogger(flush_every_n_steps=flush)
    result = trainer(
        tmp_path,
        logger=[csv_logger, lk.TensorBoardLogger()],
        log_every_n_steps=1,
        val_check_interval=val_check_interval,
    ).fit(spec(step=both_step, val=val_both_step))
    rows = read_csv(result.log_dir / "metrics.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(8))  # 2 epochs of 4 batches
    assert "t/both" not in rows[0] and "v/step" not in rows[0]
    val_steps = {3, 7} if val_check_interval == 1.0 else {1, 3, 5, 7}
    assert [(r["t/both_step"], r["t/both_epoch"], r["v/step_epoch"], r["epoch"]) for r in rows] == [
        (
            f"{s % 4:.1f}",  # every step value, the last one (3.0) included
            "1.5" if s % 4 == 3 else "",
            "10.5" if s in val_steps else "",  # the aggregate of 10.0 and 11.0
            str(s // 4),  # an integer, as Lightning's CSVLogger writes it
        )
        for s in steps
    ]  # fmt: skip
    # The plain name holds the epoch value once the epoch ends, as Lightning's
    # callback_metrics do; the suffixed names hold their own.
    m = result.metrics
    assert (m["t/both"], m["t/both_step"], m["t/both_epoch"]) == (1.5, 3.0, 1.5)
    assert (m["v/step"], m["v/step_step"], m["v/step_epoch"]) == (10.5, 11.0, 10.5)
    tb = scalars(result.log_dir)
    assert tb["t/both_step"][:5] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 0.0)]
    assert tb["t/both_epoch"] == [(3, 1.5), (7, 1.5)]


def step_logging_global_step(net, batch, ctx):
    lk.log("g", float(ctx.global_step))
    return mse_step(net, batch)


def raise_at_step_5(ctx):
    if ctx.global_step == 5:  # after the optimizer step of the batch that began at step 4
        raise RuntimeError("boom in train_batch_end")


def test_a_crash_in_train_batch_end_writes_the_batch_under_its_step(tmp_path):
    t = trainer(tmp_path, logger=lk.CSVLogger(), max_epochs=3, log_every_n_steps=1)
    with pytest.raises(RuntimeError, match=r"^boom in train_batch_end$"):
        t.fit(
            spec(
                step=step_logging_global_step, val=None, hooks={"train_batch_end": raise_at_step_5}
            )
        )
    (run,) = (tmp_path / "lightkit_logs").glob("*/version_0")
    rows = read_csv(run / "metrics.csv")
    # The batch that began at step 4 logged g=4.0 and never reached its own row before the
    # hook raised: the way out writes it under step 4, like every other row.
    assert [(r["step"], r["g"], r["epoch"]) for r in rows] == [
        (str(s), f"{s:.1f}", str(s // 4)) for s in range(5)
    ]


def test_a_none_hyperparameter_reaches_tensorboard_as_none(tmp_path):
    # TensorBoard's HParams would drop it; Lightning shows "None".
    def net(hidden: int = 8, dropout: float | None = None):
        return torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 1))

    result = trainer(tmp_path, max_epochs=1, logger=lk.TensorBoardLogger()).fit(spec(net=net))
    start = hparams_data(result.log_dir)["session_start_info"].session_start_info
    assert start.hparams["dropout"].string_value == "None"
    assert start.hparams["hidden"].number_value == 8
