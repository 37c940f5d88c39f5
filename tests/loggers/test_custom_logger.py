"""Users' own loggers: a subclass of ``lk.Logger`` works whether it has no ``__init__``, its own
``__init__`` without ``super().__init__()``, or is an attrs class; what it sets survives
pickling (``devices=N`` sends loggers to the processes it starts). And the CSV logger's
``step`` column is always the real step, whatever the metrics are called."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import attrs
import pytest

import lightkit as lk
from tests.callbacks.cb_helpers import spec, trainer

#: The steps a 2-epoch run of 4 batches logs at with log_every_n_steps=2: every 2nd batch, then
#: each epoch's validation aggregate at the epoch's last step.
STEPS = [1, 3, 3, 5, 7, 7]


class Mini(lk.Logger):
    """The reviewer's logger: its own ``__init__``, no ``super().__init__()``."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.rows.append((step, dict(metrics)))


class WithSuper(lk.Logger):
    """Its own ``__init__`` calling ``super().__init__()``."""

    def __init__(self, tag: str) -> None:
        super().__init__(flush_every_n_steps=7)
        self.tag = tag


class NoInit(lk.Logger):
    """No ``__init__`` at all: the base's arguments."""

    seen: list[int]

    def log_metrics(self, metrics: Any, step: int) -> None:
        if not hasattr(self, "seen"):
            self.seen = []
        self.seen.append(step)


@attrs.define
class WithField(lk.Logger):
    prefix: str = "x"
    rows: list[int] = attrs.field(factory=list)

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.rows.append(step)


def test_own_init_without_super_gets_the_defaults_and_runs(tmp_path):
    logger = Mini()
    assert (logger.save_dir, logger.name, logger.version) == (None, None, None)
    assert (logger.flush_every_n_steps, logger.log_dir) == (100, None)
    result = trainer(tmp_path, logger=logger, log_every_n_steps=2).fit(spec())
    assert logger.log_dir == result.log_dir  # setup chose the run folder
    assert [step for step, _ in logger.rows] == STEPS
    assert logger.rows[0][1]["train/loss"] > 0 and "val/loss" in logger.rows[2][1]


def test_no_init_takes_the_base_arguments(tmp_path):
    logger = NoInit(save_dir=tmp_path / "mine", name="exp")
    trainer(tmp_path, logger=logger, log_every_n_steps=2).fit(spec())
    assert logger.log_dir == tmp_path / "mine" / "exp" / "version_0"
    assert logger.log_dir.is_dir()
    assert logger.seen == STEPS


def test_an_attrs_subclass_keeps_its_fields(tmp_path):
    logger = WithField(prefix="p", flush_every_n_steps=5)
    result = trainer(tmp_path, logger=logger, log_every_n_steps=2).fit(spec())
    assert (logger.prefix, logger.flush_every_n_steps) == ("p", 5)
    assert logger.log_dir == result.log_dir and logger.rows == STEPS


@pytest.mark.parametrize(
    "make", [Mini, lambda: WithSuper("t"), lambda: WithField(prefix="p"), lk.CSVLogger]
)
def test_a_subclass_survives_pickling(make, tmp_path):
    logger = make()
    logger.setup(tmp_path)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.log_dir == tmp_path
    if isinstance(logger, Mini):
        assert copy.rows == [] and copy.save_dir is None
    if isinstance(logger, WithSuper):  # its own attribute was lost before
        assert (copy.tag, copy.flush_every_n_steps) == ("t", 7)
    if isinstance(logger, WithField):
        assert copy.prefix == "p"


def test_a_bad_flush_value_set_by_a_subclass_is_refused():
    logger = Mini()
    with pytest.raises(lk.ConfigError, match=r"^Mini\(flush_every_n_steps=0\): "):
        logger.flush_every_n_steps = 0


# -- the CSV logger's step column ------------------------------------------------------------


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.mark.parametrize("every", [1, 100])
def test_a_metric_named_step_never_replaces_the_step_column(tmp_path, every):
    log = lk.CSVLogger(flush_every_n_steps=every)
    log.setup(tmp_path)
    with pytest.warns(UserWarning) as warned:
        log.log_metrics({"step": 5.0, "a": 1.0}, 3)  # a new row
        log.log_metrics({"step": 6.0, "b": 2.0}, 3)  # merged into it (from disk with every=1)
        log.log_metrics({"a": 3.0, "step": 7.0}, 4)
    log.finalize("success")
    assert [str(w.message) for w in warned] == [
        "CSVLogger: a metric named 'step' is not written to metrics.csv, whose 'step' column "
        "is the step each row was logged at. Log it under another name."
    ]
    header, rows = read(tmp_path / "metrics.csv")
    assert header == ["step", "a", "b"]
    assert rows == [{"step": "3", "a": "1.0", "b": "2.0"}, {"step": "4", "a": "3.0", "b": ""}]


def test_metrics_csv_steps_are_the_real_steps_in_a_run(tmp_path):
    result = trainer(tmp_path, logger=lk.CSVLogger(), log_every_n_steps=1).fit(spec())
    header, rows = read(result.log_dir / "metrics.csv")
    assert header.count("step") == 1
    assert [int(r["step"]) for r in rows] == list(range(8))  # 4 batches x 2 epochs


@pytest.mark.parametrize(
    ("accumulate", "manual", "steps"),
    [(2, False, [0, 0, 1, 1]), (1, False, [0, 1, 2, 3]), (2, True, [0, 1, 2, 3])],
)
def test_a_validation_inside_fit_logs_at_the_steps_taken_before_its_batch(
    accumulate, manual, steps
):
    # Lightning's rule: the batch's row is keyed by the optimizer steps taken before it, so a
    # batch inside an accumulation window (which steps nothing) shares its window's step.
    # (Manual optimization counts batches.)
    import torch
    from torch import nn

    x = torch.randn(32, 3)
    reg = lk.Registry()
    reg.model(lambda: nn.Linear(3, 1), name="net")
    reg.train_data(lambda: [(x[i : i + 8],) for i in range(0, 32, 8)])
    reg.val_data(lambda: [(x[:8],)])
    if manual:

        @reg.training_step(manual=True)
        def step(net, batch, optimizer, ctx):
            ctx.backward(net(batch[0]).pow(2).mean())
            optimizer.step()
            optimizer.zero_grad()
    else:
        reg.training_step(lambda net, batch: net(batch[0]).pow(2).mean())
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    reg.validation_step(lambda net, batch: lk.log("val/m", net(batch[0]).mean()))
    logger = Mini()
    lk.Trainer(
        max_epochs=1, accumulate_grad_batches=1 if manual else accumulate, val_check_interval=1,
        logger=logger, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    ).fit(lk.collect(reg))  # fmt: skip
    assert [step for step, row in logger.rows if "val/m" in row] == steps
