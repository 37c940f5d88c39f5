"""``lk.log(name, metric_object)``: a torchmetrics-style object (``update``/``compute``/
``reset``) logged as Lightning logs one: its batch value per step after a ``forward``, its
``compute()`` per epoch, reset when the epoch ends."""

from __future__ import annotations

import csv
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk
from tests.engine.engine_helpers import X_VAL, Y_TRAIN, Y_VAL, registry, trainer

# 50 training samples in batches of 8: 7 batches an epoch (the last has 2).


class Mean:
    """The torchmetrics interface in a few lines: the mean of what it was given."""

    def __init__(self) -> None:
        self.total, self.count, self.resets = 0.0, 0, 0
        self._forward_cache: Any = None

    def update(self, values: torch.Tensor) -> None:
        self.total += float(values.sum())
        self.count += values.numel()

    def __call__(self, values: torch.Tensor) -> torch.Tensor:  # torchmetrics' forward
        self.update(values)
        self._forward_cache = values.float().mean()
        return self._forward_cache

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.total / self.count)

    def reset(self) -> None:
        self.total, self.count = 0.0, 0
        self.resets += 1


def rows(result: lk.Result) -> list[dict[str, str]]:
    with open(Path(result.log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_called_per_batch_it_logs_the_batch_value_and_the_epochs_compute(tmp_path):
    metric = Mean()

    def step(net, batch, batch_idx, ctx):
        x, y = batch
        metric(torch.full((len(y),), 10.0 * ctx.epoch + batch_idx))  # a known value per batch
        lk.log("code", metric, on_step=True, on_epoch=True)
        return torch.nn.functional.cross_entropy(net(x), y)

    result = trainer(
        max_epochs=2, logger=True, default_root_dir=str(tmp_path), log_every_n_steps=1
    ).fit(lk.collect(registry(step=step)))
    table = rows(result)
    steps = [float(r["code_step"]) for r in table if r["code_step"]]
    assert steps == [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16]
    # compute() over each epoch alone (reset in between): batch values weighted by size.
    sizes = [8, 8, 8, 8, 8, 8, 2]
    first = sum(i * n for i, n in enumerate(sizes)) / 50
    epochs = [float(r["code_epoch"]) for r in table if r["code_epoch"]]
    assert epochs == pytest.approx([first, first + 10])
    assert result.metrics["code"] == result.metrics["code_epoch"] == pytest.approx(first + 10)
    assert metric.resets == 2  # once per epoch


def test_updated_only_it_logs_its_epoch_value_alone(tmp_path):
    metric = Mean()

    def step(net, batch):
        x, y = batch
        metric.update(y.float())
        lk.log("label", metric, on_step=True, on_epoch=True)
        return torch.nn.functional.cross_entropy(net(x), y)

    result = trainer(
        max_epochs=1, logger=True, default_root_dir=str(tmp_path), log_every_n_steps=1
    ).fit(lk.collect(registry(step=step)))
    assert result.metrics["label_epoch"] == pytest.approx(float(Y_TRAIN.float().mean()))
    assert "label_step" not in result.metrics
    assert "label_step" not in rows(result)[0]


@pytest.mark.parametrize("stage", ["train", "validation"])
@pytest.mark.parametrize("logger", [True, False])
def test_logged_per_step_only_it_logs_batch_values_and_resets_each_epoch(tmp_path, stage, logger):
    # Training's default (on_step only), or on_step=True, on_epoch=False in validation: the
    # batch values, no epoch value, and the object reset when the epoch ends (an epoch end
    # used to look for an epoch value and raise KeyError).
    metric = Mean()

    def log_code(batch_idx, ctx):
        metric(torch.full((4,), 10.0 * ctx.epoch + batch_idx))
        lk.log("code", metric, on_step=True, on_epoch=False, logger=logger)

    def step(net, batch, batch_idx, ctx):
        if stage == "train":
            log_code(batch_idx, ctx)
        x, y = batch
        return torch.nn.functional.cross_entropy(net(x), y)

    def val(net, batch, batch_idx, ctx):
        log_code(batch_idx, ctx)

    reg = registry(step=step, val=val if stage == "validation" else False)
    result = trainer(
        max_epochs=2, logger=True, default_root_dir=str(tmp_path), log_every_n_steps=1,
        num_sanity_val_steps=0,
    ).fit(lk.collect(reg))  # fmt: skip
    last = 16.0 if stage == "train" else 12.0  # epoch 1's last batch (7 train, 3 val)
    assert result.metrics["code"] == last
    assert "code_epoch" not in result.metrics
    assert metric.resets == 2
    written = (Path(result.log_dir) / "metrics.csv").exists() and rows(result)
    steps = [float(r["code"]) for r in written or [] if r.get("code")]
    if not logger:
        assert steps == []
    elif stage == "train":
        assert steps == [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16]


@pytest.mark.parametrize("sanity", [0, 2])
def test_a_validation_metric_object_covers_the_epoch_and_not_the_sanity_check(sanity):
    metric = Mean()

    def val(net, batch):
        x, y = batch
        metric.update((net(x).argmax(1) == y).float())
        lk.log("val/acc", metric)

    result = trainer(max_epochs=1, seed=0, num_sanity_val_steps=sanity).fit(
        lk.collect(registry(val=val))
    )
    with torch.no_grad():
        expected = (result.models["net"](X_VAL).argmax(1) == Y_VAL).float().mean()
    assert result.metrics["val/acc"] == pytest.approx(float(expected))


def test_an_epoch_value_that_is_not_one_number_is_a_bad_metric():
    class PerClass(Mean):
        def compute(self) -> torch.Tensor:
            return torch.zeros(3)

    metric = PerClass()

    def val(net, batch):
        metric.update(batch[1].float())
        lk.log("val/per_class", metric)

    line = inspect.getsourcelines(val)[1] + 2
    with pytest.raises(
        lk.LightkitError, match=r"compute\(\) returned Tensor of shape \(3,\)"
    ) as info:
        trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(registry(val=val)))
    assert info.value.code == "bad-metric"
    # compute() runs as the epoch ends, where no frame of the user's remains: the message
    # says which log call it was.
    where = f"{val.__qualname__}() at {os.path.relpath(__file__)}:{line}"
    assert str(info.value).endswith(f"(Logged by {where}.)")


def accuracy_spec() -> lk.TrainingSpec:
    """A spec whose validation logs a torchmetrics ``Accuracy`` (skipped without it)."""
    torchmetrics = pytest.importorskip("torchmetrics")
    accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=3)

    def val(net, batch):
        x, y = batch
        accuracy.update(net(x), y)
        lk.log("val/acc", accuracy, prog_bar=True)

    return lk.collect(registry(val=val))


def val_accuracy(result: lk.Result) -> float:
    """The fitted model's accuracy over the whole validation set, by hand."""
    with torch.no_grad():
        return float((result.models["net"](X_VAL).argmax(1) == Y_VAL).float().mean())


def test_torchmetrics_accuracy_is_the_accuracy_over_the_validation_set():
    result = trainer(max_epochs=2, seed=0).fit(accuracy_spec())
    assert result.metrics["val/acc"] == pytest.approx(val_accuracy(result))


def test_two_ranks_compute_over_both_shares():
    strategy = lk.DDPStrategy(start_method="fork")
    result = trainer(max_epochs=1, seed=0, accelerator="cpu", devices=2, strategy=strategy).fit(
        accuracy_spec()
    )
    assert result.metrics["val/acc"] == pytest.approx(val_accuracy(result))  # both ranks' data


def test_rank_zero_warns_of_an_unsynced_tensor_but_not_of_a_metric_object():
    from lightkit.engine.metrics import MetricStore

    store = MetricStore(lambda t, op: t, warn_unsynced=True)
    store.stage = "validate"
    with pytest.warns(UserWarning, match="sync_dist=True"):
        store.log("val/loss", torch.tensor(1.0), None, None, False, False, "mean", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.log("val/acc", Mean(), None, None, False, False, "mean", 1)  # reduces itself
