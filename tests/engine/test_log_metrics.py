"""``lk.log``/``ctx.log``: defaults per stage, epoch aggregation, and where values show up."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.engine.engine_helpers import X_VAL, Y_VAL, ce, registry, trainer

# Training: 50 samples in batches of 8, so 7 batches sized 8, 8, 8, 8, 8, 8, 2.
# Validation: 20 samples in batches of 8, 8, 4.
TRAIN_SIZES = [8] * 6 + [2]
VAL_SIZES = [8, 8, 4]


def weighted_mean(values: list[float], sizes: list[int]) -> float:
    return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)


def fit_logging(log: Any, epochs: int = 1, **flags: Any) -> lk.Result:
    """Fit with a training step that calls ``log(batch_idx, ctx, loss)``."""

    def train(net, batch, batch_idx, ctx):
        loss = ce(net, batch)
        log(batch_idx, ctx, loss)
        return loss

    return trainer(max_epochs=epochs, **flags).fit(lk.collect(registry(step=train)))


def test_training_logs_on_step_by_default():
    losses: list[float] = []
    seen: list[dict[str, float]] = []

    def log(i, ctx, loss):
        seen.append(ctx.metrics)
        lk.log("train/loss", loss)
        losses.append(float(loss.detach()))

    result = fit_logging(log)
    assert result.metrics == {"train/loss": losses[-1]}
    assert seen[0] == {}
    assert [s["train/loss"] for s in seen[1:]] == losses[:-1]  # the latest step value


@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "number"])
def test_training_epoch_values_are_weighted_by_batch_size(as_tensor):
    def log(i, ctx, loss):
        value = torch.tensor(float(i)) if as_tensor else i
        lk.log("idx", value, on_step=False, on_epoch=True)

    result = fit_logging(log)
    assert result.metrics["idx"] == weighted_mean(list(range(7)), TRAIN_SIZES) == 132 / 50


def test_on_step_and_on_epoch_end_with_the_epoch_aggregate():
    seen: list[float] = []

    def log(i, ctx, loss):
        ctx.log("idx", float(i), on_step=True, on_epoch=True)
        seen.append(ctx.metrics["idx"])

    result = fit_logging(log)
    assert seen == [float(i) for i in range(7)]
    assert result.metrics["idx"] == 132 / 50


@pytest.mark.parametrize(("reduce", "expected"), [("sum", 21.0), ("max", 6.0), ("min", 0.0)])
def test_reductions(reduce, expected):
    def log(i, ctx, loss):
        lk.log("idx", torch.tensor(i), on_epoch=True, reduce=reduce)

    assert fit_logging(log).metrics["idx"] == expected


def test_explicit_batch_size():
    def log(i, ctx, loss):
        lk.log("idx", i, on_epoch=True, batch_size=1)

    assert fit_logging(log).metrics["idx"] == 3.0


def test_epoch_values_restart_each_epoch():
    per_epoch: list[float] = []

    def log(i, ctx, loss):
        lk.log("epoch_sum", ctx.epoch, on_epoch=True, on_step=False, reduce="sum")

    def train(net, batch, batch_idx, ctx):
        log(batch_idx, ctx, None)
        return ce(net, batch)

    reg = registry(step=train)

    @reg.on("train_epoch_end")
    def read(ctx):
        per_epoch.append(ctx.metrics["epoch_sum"])

    trainer(max_epochs=3).fit(lk.collect(reg))
    assert per_epoch == [0.0, 7.0, 14.0]


def test_validation_logs_epoch_aggregates_by_default():
    per_batch: list[float] = []
    seen_steps: list[dict[str, float]] = []

    def val(net, batch):
        loss = ce(net, batch)
        per_batch.append(float(loss))
        lk.log("val/loss", loss)

    reg = registry(val=val)

    @reg.on("validation_epoch_end")
    def read(ctx):
        seen_steps.append(ctx.metrics)

    result = trainer(max_epochs=2, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert len(per_batch) == 6
    first, second = per_batch[:3], per_batch[3:]
    assert seen_steps[0]["val/loss"] == pytest.approx(weighted_mean(first, VAL_SIZES), rel=1e-12)
    assert result.metrics["val/loss"] == pytest.approx(weighted_mean(second, VAL_SIZES), rel=1e-12)
    # ... and equals the loss of the final weights over the validation set.
    net = result.models["net"]
    with torch.no_grad():
        full = nn.functional.cross_entropy(net(X_VAL), Y_VAL)
    assert result.metrics["val/loss"] == pytest.approx(float(full), rel=1e-6)


def test_validation_on_step_values():
    def val(net, batch, batch_idx):
        lk.log("val/idx", batch_idx, on_step=True, on_epoch=False)

    result = trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(registry(val=val)))
    assert result.metrics["val/idx"] == 2.0


@pytest.mark.parametrize(
    "container", [list, lambda loaders: dict(zip("ab", loaders, strict=True))], ids=["list", "dict"]
)
def test_several_validation_loaders_get_a_suffix(container):
    # A dict of loaders is several too, in order (Lightning's CombinedLoader, "sequential").
    def vdata():
        shifted = TensorDataset(X_VAL[:12], Y_VAL[:12])
        return container(
            [DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8), DataLoader(shifted)]
        )

    def val(net, batch, dataloader_idx):
        lk.log("val/n", float(batch[0].shape[0]), reduce="sum")
        lk.log("val/which", dataloader_idx)

    reg = registry(val=val, val_data=vdata)
    result = trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert result.metrics == {
        "val/n/dataloader_idx_0": 20.0,
        "val/n/dataloader_idx_1": 12.0,
        "val/which/dataloader_idx_0": 0.0,
        "val/which/dataloader_idx_1": 1.0,
    }


def test_step_and_epoch_names_of_several_loaders_are_lightnings(tmp_path):
    # Lightning: `name_step/dataloader_idx_N` and `name_epoch/dataloader_idx_N`.
    def vdata():
        return [DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8)] * 2

    def val(net, batch):
        lk.log("val/n", float(batch[0].shape[0]), on_step=True, on_epoch=True)

    reg = registry(val=val, val_data=vdata)
    result = trainer(max_epochs=1, num_sanity_val_steps=0, logger=True).fit(lk.collect(reg))
    names = [f"val/n_{kind}/dataloader_idx_{i}" for kind in ("epoch", "step") for i in (0, 1)]
    plain = ["val/n/dataloader_idx_0", "val/n/dataloader_idx_1"]  # the epoch value, as Lightning
    assert {k for k in result.metrics if k.startswith("val/")} == {*names, *plain}
    assert result.metrics["val/n_epoch/dataloader_idx_1"] == pytest.approx(144 / 20)  # weighted
    header = (result.log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(names) <= set(header)


@dataclasses.dataclass
class _Pair:
    x: torch.Tensor
    y: torch.Tensor


class _Plain:  # a batch class of the user's: no container, no iteration
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y


@pytest.mark.parametrize(
    "form",
    ["tuples", "dicts", "tensors", "nested-dicts", "nested-tuples", "dataclasses", "objects"],
)
def test_a_list_of_ready_batches_is_one_evaluation_loader(form):
    # [(x, y), ...] is one loader of batches, as in training; only a list of loaders (or of
    # lists of batches) is several. A batch may hold its tensors at any depth.
    chunks = [(X_VAL[i : i + 8], Y_VAL[i : i + 8]) for i in range(0, 20, 8)]
    batches = {
        "tuples": chunks,
        "dicts": [{"x": x, "y": y} for x, y in chunks],
        "tensors": [x for x, _ in chunks],
        "nested-dicts": [{"inputs": (x, x > 0), "target": [y]} for x, y in chunks],
        "nested-tuples": [((x, x > 0), (y,)) for x, y in chunks],
        "dataclasses": [_Pair(x, y) for x, y in chunks],
        "objects": [_Plain(x, y) for x, y in chunks],
    }[form]

    def first(batch):
        if form == "tensors":
            return batch
        if form in ("dataclasses", "objects"):
            return batch.x
        if form == "nested-dicts":
            return batch["inputs"][0]
        if form == "nested-tuples":
            return batch[0][0]
        return batch["x"] if form == "dicts" else batch[0]

    def val(net, batch, dataloader_idx):
        x = first(batch)
        lk.log("val/n", float(x.shape[0]), reduce="sum")
        lk.log("val/which", dataloader_idx, batch_size=len(x))  # _Plain has no dim 0

    reg = registry(val=val, val_data=lambda: batches)
    result = trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert result.metrics == {"val/n": 20.0, "val/which": 0.0}

    none = registry(val=val, val_data=lambda: [])  # no loaders: no validation at all
    validations: list[int] = []
    none.on("validation_epoch_start")(lambda ctx: validations.append(ctx.epoch))
    assert trainer(max_epochs=1).fit(lk.collect(none)).metrics == {}
    assert validations == []
    if form == "tensors":
        return  # [[x0, x1, x2], [x0]] reads as two batches of two tensors (default_collate's)
    several = registry(val=val, val_data=lambda: [batches, batches[:1]])
    result = trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(several))
    assert result.metrics["val/n/dataloader_idx_0"] == 20.0
    assert result.metrics["val/n/dataloader_idx_1"] == 8.0


def test_logs_from_hooks_and_every_stage_reach_the_result():
    def val(net, batch):
        lk.log("val/x", 1.0)

    reg = registry(val=val)

    @reg.on("train_epoch_end")
    def epoch_end(ctx):
        lk.log("epoch_metric", ctx.epoch + 10)

    @reg.on("fit_start")
    def start(ctx):
        ctx.log("started", 1)

    result = trainer(max_epochs=2, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert result.metrics == {"val/x": 1.0, "epoch_metric": 11.0, "started": 1.0}


def test_log_dict():
    def log(i, ctx, loss):
        ctx.log_dict({"a": 1, "b": torch.tensor(2.0)})

    assert fit_logging(log).metrics == {"a": 1.0, "b": 2.0}


def test_test_and_validate_metrics():
    def tstep(net, batch, batch_idx):
        lk.log("test/idx", batch_idx)

    reg = registry(val=True)
    reg.test_step(tstep)
    reg.test_data(lambda: DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8))
    spec = lk.collect(reg)
    t = trainer(seed=0)
    assert t.test(spec).metrics == {"test/idx": weighted_mean([0, 1, 2], VAL_SIZES)}
    assert set(t.validate(spec).metrics) == {"val/loss"}


def test_a_step_called_directly_runs_and_its_log_calls_warn():
    # Decorated functions stay plain functions: a test may call the step that logs.
    @lk.training_step
    def train(net, batch):
        x, y = batch
        loss = torch.nn.functional.mse_loss(net(x), y)
        lk.log("train/loss", loss)
        lk.log_dict({"a": 1.0, "b": 2.0})
        return loss

    net = torch.nn.Linear(4, 1)
    with pytest.warns(
        lk.LightkitWarning, match=r"lk.log\('train/loss', ...\) outside a run"
    ) as seen:
        loss = train(net, (X_VAL[:8, :4], Y_VAL[:8].float().view(-1, 1)))
    assert torch.is_tensor(loss) and loss.ndim == 0
    assert [w.message.code for w in seen] == ["log-outside-run"] * 3
    assert {w.filename for w in seen} == {__file__}  # the test's own lk.log lines


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.ones(3), r"got a tensor of shape \(3,\); a metric is one number"),
        ("high", "a metric must be a number, a one-element tensor or a metric object, got str"),
        (None, "a metric must be a number, a one-element tensor or a metric object, got NoneType"),
    ],
)
def test_bad_metric_values(value, match):
    def log(i, ctx, loss):
        lk.log("m", value)

    with pytest.raises(lk.LightkitError, match=match) as info:
        fit_logging(log)
    assert info.value.code == "bad-metric"
    line = log.__code__.co_firstlineno + 1  # the lk.log line of the user's function
    assert str(info.value).endswith(
        f"(Logged by test_bad_metric_values.<locals>.log() at tests/engine/test_log_metrics.py:"
        f"{line}.)"
    )
    if isinstance(value, str):
        assert "Text is not a metric: write it through a logger's experiment" in str(info.value)


def test_bad_reduce():
    def log(i, ctx, loss):
        lk.log("m", 1.0, reduce="median")

    with pytest.raises(lk.LightkitError, match="reduce must be one of mean, sum, max, min"):
        fit_logging(log)


@pytest.mark.parametrize(
    ("options", "default"),
    [({"on_step": False}, "on_step=True"), ({"on_step": False, "on_epoch": False}, "on_step=True")],
)
def test_a_value_logged_neither_per_step_nor_per_epoch_is_refused(options, default):
    # Lightning refuses it too: the value would reach no logger, callback or result.
    def log(i, ctx, loss):
        lk.log("m", loss, **options)

    with pytest.raises(lk.LightkitError, match="records the value nowhere") as info:
        fit_logging(log)
    assert info.value.code == "bad-metric"
    assert f"in the training step the default is {default}" in str(info.value)
    assert "Pass on_epoch=True for the epoch's mean" in str(info.value)


def test_step_values_stay_on_device_tensors_until_read():
    """Logging a tensor keeps it a tensor: no host sync per step."""
    kept: list[Any] = []

    def log(i, ctx, loss):
        lk.log("train/loss", loss)
        kept.append(ctx._store.latest["train/loss"])

    fit_logging(log)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in kept)


def test_numbers_of_every_kind_are_logged_as_floats():
    # Lightning takes numpy scalars (an sklearn score) and bools too.
    np = pytest.importorskip("numpy")
    values = {
        "np_float32": np.float32(1.25),
        "np_int64": np.int64(3),
        "np_array": np.array([0.5]),
        "flag": True,
        "count": 7,
        "half": torch.tensor(2.5, dtype=torch.float16),
    }

    def log(i, ctx, loss):
        for name, value in values.items():
            lk.log(name, value)

    result = fit_logging(log)
    assert result.metrics == {
        "np_float32": 1.25,
        "np_int64": 3.0,
        "np_array": 0.5,
        "flag": 1.0,
        "count": 7.0,
        "half": 2.5,
    }
    assert all(type(v) is float for v in result.metrics.values())


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("step", "is a column every logger row has (the step, the epoch)"),
        ("epoch", "is a column every logger row has (the step, the epoch)"),
        ("", "must be a non-empty string"),
    ],
)
def test_names_the_loggers_cannot_take_are_refused(name, why):
    def log(i, ctx, loss):
        lk.log(name, 1.0)

    with pytest.raises(lk.LightkitError) as info:
        fit_logging(log)
    assert info.value.code == "bad-metric"
    assert str(info.value).startswith(f"lk.log({name!r}, ...): a metric's name {why}.")


def test_log_dict_logs_each_value_with_the_same_options():
    def log(i, ctx, loss):
        lk.log_dict({"a": float(i), "b": 2.0 * i}, on_step=False, on_epoch=True, reduce="max")

    result = fit_logging(log)
    assert result.metrics == {"a": 6.0, "b": 12.0}  # 7 batches: the max of 0..6


def test_sync_dist_reduces_numbers_as_it_reduces_tensors():
    from lightkit.engine.metrics import MetricStore

    calls: list[tuple[float, str]] = []

    def all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:  # two ranks: this one and a 3.0
        calls.append((float(t), op))
        return (t + 3.0) / 2 if op == "mean" else t + 3.0

    store = MetricStore(all_reduce)
    store.log("a", 1, None, None, False, True, "mean", None)
    store.log("b", 2.0, None, None, False, True, "sum", None)
    store.log("c", torch.tensor(1.0), None, None, False, True, "mean", None)
    store.log("d", 1.0, None, None, False, False, "mean", None)  # no sync_dist: as logged
    assert calls == [(1.0, "mean"), (2.0, "sum"), (1.0, "mean")]
    assert store.take_unwritten() == {"a": 2.0, "b": 5.0, "c": 2.0, "d": 1.0}


def test_rank_zero_is_told_once_when_an_evaluation_metric_is_not_synced():
    # As Lightning's "use sync_dist=True" warning: with several processes an epoch aggregate
    # without sync_dist is rank 0's share of the data.
    from lightkit.engine.metrics import MetricStore

    store = MetricStore(lambda t, op: t, warn_unsynced=True)
    store.stage = "train"
    store.log("train/loss", 1.0, None, None, False, False, "mean", 1)  # a step value: silent
    store.stage = "validate"
    with pytest.warns(UserWarning, match=r"lk.log\('val/loss'\) in validation is aggregated"):
        store.log("val/loss", 1.0, None, None, False, False, "mean", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.log("val/loss", 2.0, None, None, False, False, "mean", 1)  # once per metric
        store.log("val/acc", 1.0, None, None, False, True, "mean", 1)  # synced
        MetricStore(warn_unsynced=False).log("x", 1.0, None, True, False, False, "mean", 1)


def test_rank_zero_only_records_on_rank_zero_alone_and_is_never_reduced():
    from lightkit.engine.metrics import MetricStore

    def all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
        raise AssertionError("a rank_zero_only value must not wait for the other ranks")

    for rank in (0, 1):
        store = MetricStore(all_reduce, warn_unsynced=rank == 0, rank=rank)
        store.stage = "validate"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "use sync_dist" advice for it either
            store.log("val/x", 2.0, None, None, False, False, "mean", 1, True, True, True)
        assert store.latest == ({"val/x": 2.0} if rank == 0 else {})
    with pytest.raises(lk.LightkitError, match="rank 0 alone cannot be reduced"):
        store = MetricStore(all_reduce)
        store.log("x", 1.0, None, None, False, True, "mean", 1, True, True, True)


def test_rank_zero_only_in_one_process_logs_as_usual():
    reg = registry()

    @reg.on("train_batch_end")
    def note(ctx):
        lk.log("extra", float(ctx.global_step), rank_zero_only=True)

    result = trainer(max_epochs=1).fit(lk.collect(reg))
    assert result.metrics["extra"] == result.global_step


def test_one_name_in_training_and_validation_keeps_both_epoch_values(tmp_path):
    # Lightning keeps a training and a validation metric of one name apart; so does lightkit,
    # and it warns that the two share a column of metrics.csv.
    train_losses: list[float] = []
    val_losses: list[float] = []
    at_val_end: list[float] = []

    def train(net, batch):
        loss = ce(net, batch)
        lk.log("loss", loss, on_step=False, on_epoch=True)
        train_losses.append(float(loss.detach()))
        return loss

    def val(net, batch):
        loss = ce(net, batch)
        lk.log("loss", loss)
        val_losses.append(float(loss))

    reg = registry(step=train, val=val)

    @reg.on("validation_epoch_end")
    def read(ctx):
        at_val_end.append(ctx.metrics["loss"])

    with pytest.warns(UserWarning, match=r"lk.log\('loss'\) in validation: the same name is "):
        result = trainer(
            max_epochs=1, num_sanity_val_steps=0, logger=lk.CSVLogger(), default_root_dir=tmp_path
        ).fit(lk.collect(reg))
    train_mean = weighted_mean(train_losses, TRAIN_SIZES)
    val_mean = weighted_mean(val_losses, VAL_SIZES)
    assert at_val_end == [pytest.approx(val_mean, rel=1e-12)]  # what callbacks monitor then
    # The training epoch ends after its validation: its aggregate is the latest value.
    assert result.metrics == {"loss": pytest.approx(train_mean, rel=1e-12)}
    rows = (result.log_dir / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,epoch"
    assert float(rows[-1].split(",")[1]) == pytest.approx(train_mean, rel=1e-12)


def test_logger_false_keeps_a_metric_out_of_the_loggers_only(tmp_path):
    seen: list[float] = []

    def log(i, ctx, loss):
        lk.log("train/loss", loss)
        lk.log("train/idx", float(i), logger=False, prog_bar=True)
        seen.append(ctx.metrics["train/idx"])

    result = fit_logging(log, logger=lk.CSVLogger(), default_root_dir=tmp_path, log_every_n_steps=1)
    assert seen == [float(i) for i in range(7)]
    assert result.metrics["train/idx"] == 6.0  # still a metric
    header = (result.log_dir / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,train/loss,epoch"  # ... that no logger writes


def test_add_dataloader_idx_false_keeps_the_names_as_given():
    def vdata():
        shifted = TensorDataset(X_VAL[:12], Y_VAL[:12])
        return [DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8), DataLoader(shifted)]

    def val(net, batch, dataloader_idx):
        name = ["val/n_full", "val/n_part"][dataloader_idx]
        lk.log(name, float(batch[0].shape[0]), reduce="sum", add_dataloader_idx=False)
        lk.log("val/which", dataloader_idx)

    reg = registry(val=val, val_data=vdata)
    result = trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert result.metrics == {
        "val/n_full": 20.0,
        "val/n_part": 12.0,
        "val/which/dataloader_idx_0": 0.0,
        "val/which/dataloader_idx_1": 1.0,
    }


def test_one_name_from_two_loaders_without_their_suffix_is_refused():
    # Lightning refuses it too: the loaders' values would pool into one aggregate.
    def vdata():
        return [DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8)] * 2

    def val(net, batch):
        lk.log("val/n", float(batch[0].shape[0]), add_dataloader_idx=False)

    reg = registry(val=val, val_data=vdata)
    with pytest.raises(lk.LightkitError, match="from evaluation loaders 0 and 1") as info:
        trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert info.value.code == "bad-metric"
    assert "f'val/n/{dataloader_idx}'" in str(info.value)


def test_logger_false_in_one_stage_leaves_the_other_stages_metric_logged(tmp_path):
    def train(net, batch):
        loss = ce(net, batch)
        lk.log("loss", loss, logger=False)
        return loss

    def val(net, batch):
        lk.log("loss", ce(net, batch))

    reg = registry(step=train, val=val)
    with pytest.warns(UserWarning, match="the same name is logged in the training step"):
        result = trainer(
            max_epochs=1, num_sanity_val_steps=0, logger=lk.CSVLogger(), default_root_dir=tmp_path
        ).fit(lk.collect(reg))
    rows = (result.log_dir / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,epoch"
    assert len(rows) == 2  # validation's epoch value; no training step rows
    assert float(rows[1].split(",")[1]) == pytest.approx(result.metrics["loss"], rel=1e-12)


@pytest.mark.parametrize("where", ["step", "hook"])
def test_logging_in_prediction_is_refused(where):
    # Prediction keeps no metrics: a logged value would vanish, so it is refused (Lightning
    # raises too), whether from predict_step or from a predict hook.
    reg = registry()
    reg.predict_data(lambda: [(X_VAL[:4], Y_VAL[:4])])

    def predict(net, batch):
        if where == "step":
            lk.log("pred/mean", net(batch[0]).mean())
        return net(batch[0])

    reg.predict_step(predict)
    reg.on("predict_batch_end")(lambda: lk.log("pred/n", 4.0) if where == "hook" else None)
    with pytest.raises(lk.LightkitError) as info:
        trainer().predict(lk.collect(reg))
    assert info.value.code == "bad-metric"
    assert "in prediction: prediction records no metrics" in str(info.value)
    assert "Return it from predict_step" in str(info.value)


def test_a_batch_without_a_tensor_warns_once_that_each_batch_weighs_one():
    # Lightning refuses it; lightkit keeps the run and says how to weight it.
    batches = [_Plain(X_VAL[i : i + 8], Y_VAL[i : i + 8]) for i in range(0, 20, 8)]  # 8, 8, 4

    def val(net, batch, batch_idx):
        lk.log("val/idx", float(batch_idx + 1))
        lk.log("val/sum", float(batch_idx + 1), reduce="sum")  # no weights: no warning
        lk.log("val/weighted", float(batch_idx + 1), batch_size=len(batch.x))

    reg = registry(val=val, val_data=lambda: batches)
    with pytest.warns(lk.LightkitWarning) as record:
        result = trainer(max_epochs=2, num_sanity_val_steps=0).fit(lk.collect(reg))
    mine = [w for w in record if getattr(w.message, "code", "") == "unknown-batch-size"]
    assert len(mine) == 1
    assert "lk.log('val/idx', ...) is averaged over the epoch weighted by batch size" in str(
        mine[0].message
    )
    assert "Pass lk.log(..., batch_size=n)" in str(mine[0].message)
    assert mine[0].filename == __file__
    assert result.metrics["val/idx"] == 2.0
    assert result.metrics["val/weighted"] == pytest.approx((8 + 16 + 12) / 20)
