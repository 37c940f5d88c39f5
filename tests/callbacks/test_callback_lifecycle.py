"""Callback events where Lightning pins them: a mid-epoch resume does not start its epoch
again, set-up errors reach ``on_exception``, a stop asked for before an epoch's first batch
runs no batch, ``fit_end`` logs reach the files, and checkpoint state goes where it belongs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import lightkit as lk
from tests.callbacks.cb_helpers import spec, trainer
from tests.checkpoint import resumable
from tests.checkpoint.ckpt_helpers import SPEC, every_step, flags


@attrs.define
class PerEpoch(lk.Callback):
    """Counts the batches of each epoch; the count is its checkpoint state."""

    n: int = 0
    counts: list[int] = attrs.field(factory=list)
    starts: int = 0

    def on_train_epoch_start(self, ctx: Any) -> None:
        self.starts += 1
        self.n = 0

    def on_train_batch_end(self, ctx: Any) -> None:
        self.n += 1

    def on_train_epoch_end(self, ctx: Any) -> None:
        self.counts.append(self.n)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = state["n"]


def test_a_mid_epoch_resume_does_not_start_its_epoch_again(tmp_path):
    # 10 batches an epoch; the first run fails at epoch 1, batch 6 (after 6 batches of it).
    resumable.CONTROL["fail_at"] = (1, 6)
    with pytest.raises(RuntimeError):
        lk.Trainer(**flags(tmp_path, max_epochs=2), callbacks=[*every_step(), PerEpoch()]).fit(SPEC)
    resumable.reset()
    counter = PerEpoch()
    bar = lk.ProgressBar(mode="text", file=open(tmp_path / "bar.txt", "w"))
    result = lk.Trainer(
        **{**flags(tmp_path, max_epochs=2), "enable_progress_bar": True},
        callbacks=[*every_step(), counter, bar],
    ).fit(SPEC, ckpt_path="last")
    assert result.global_step == 20
    assert counter.counts == [10]  # the restored 6, plus the 4 batches run after the resume
    assert counter.starts == 0  # as Lightning: no on_train_epoch_start for a resumed epoch
    bar.file.close()
    assert "Epoch 1" in (tmp_path / "bar.txt").read_text()  # lightkit's own bar still set up


@pytest.mark.parametrize("where", ["model", "data", "configure_optimizers"])
def test_a_set_up_error_reaches_the_callbacks_on_exception(where):
    seen: list[str] = []

    class Watch(lk.Callback):
        def on_exception(self, ctx: Any, exception: BaseException) -> None:
            seen.append(str(exception))

    def boom() -> Any:
        raise RuntimeError(f"bad {where}")

    run = spec(**{{"model": "net", "data": "data", "configure_optimizers": "optim"}[where]: boom})
    with pytest.raises(RuntimeError, match=f"bad {where}"):
        trainer(callbacks=[Watch()]).fit(run)
    assert seen == [f"bad {where}"]


def test_teardown_only_for_the_callbacks_set_up():
    calls: list[str] = []

    @attrs.define
    class Track(lk.Callback):
        name: str
        fail: bool = False

        def setup(self, ctx: Any, stage: str) -> None:
            calls.append(f"setup {self.name}")
            if self.fail:
                raise RuntimeError(f"{self.name} cannot start")

        def teardown(self, ctx: Any, stage: str) -> None:
            calls.append(f"teardown {self.name}")

    callbacks = [Track("a"), Track("b", fail=True), Track("c")]
    with pytest.raises(RuntimeError, match=r"^b cannot start$"):
        trainer(callbacks=callbacks).fit(spec())
    assert calls == ["setup a", "setup b", "teardown a"]
    calls.clear()
    trainer(callbacks=[Track("a"), Track("c")]).fit(spec())
    assert calls == ["setup a", "setup c", "teardown a", "teardown c"]


@pytest.mark.parametrize("event", ["fit_start", "train_epoch_start"])
def test_should_stop_before_an_epochs_first_batch_runs_no_batch(event):
    ran: list[str] = []

    def stop(ctx):
        ctx.should_stop = True

    def batch_end(ctx):
        ran.append("batch")

    def validation_start(ctx):
        ran.append("validation")

    def epoch_end(ctx):
        ran.append("epoch_end")

    run = spec(
        hooks={
            event: stop,
            "train_batch_end": batch_end,
            "validation_epoch_start": validation_start,
            "train_epoch_end": epoch_end,
        }
    )
    result = trainer(max_epochs=3, num_sanity_val_steps=0).fit(run)
    assert (result.global_step, result.epoch, result.stopped_by) == (0, 0, "should_stop")
    # Lightning: set in fit_start, the epoch never starts; in train_epoch_start it ends at once.
    assert ran == ([] if event == "fit_start" else ["epoch_end"])


def test_min_epochs_still_holds_a_stop_asked_for_at_the_start():
    def stop(ctx):
        ctx.should_stop = True

    result = trainer(max_epochs=3, min_epochs=1).fit(spec(hooks={"fit_start": stop}))
    assert (result.epoch, result.stopped_by) == (1, "should_stop")


def test_fit_end_sees_the_epochs_completed_and_its_logs_reach_the_files(tmp_path):
    seen: list[int] = []

    class Final(lk.Callback):
        def on_fit_end(self, ctx: Any) -> None:
            seen.append(ctx.epoch)
            ctx.log("final", 7.0)

    result = trainer(
        tmp_path, max_epochs=2, logger=lk.CSVLogger(), callbacks=[Final()], log_every_n_steps=1
    ).fit(spec())
    assert seen == [2]  # Lightning's current_epoch there
    with open(Path(result.log_dir) / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("final")]
    assert [(r["step"], float(r["final"])) for r in rows] == [("7", 7.0)]
    assert result.metrics["final"] == 7.0


def test_resuming_without_a_callback_whose_state_the_checkpoint_holds_warns(tmp_path):
    lk.Trainer(**flags(tmp_path, max_epochs=1), callbacks=[*every_step(), PerEpoch()]).fit(SPEC)
    resumable.reset()
    with pytest.warns(
        UserWarning, match=r"holds the state of callbacks this run does not have: "
    ) as record:
        lk.Trainer(**flags(tmp_path, max_epochs=2), callbacks=every_step()).fit(
            SPEC, ckpt_path="last"
        )
    assert {w.filename for w in record if "holds the state" in str(w.message)} == {__file__}


def test_a_weights_only_file_calls_hooks_but_no_callbacks_on_save_checkpoint(tmp_path):
    calls: list[str] = []

    class Saver(lk.Callback):
        def on_save_checkpoint(self, ctx: Any, checkpoint: dict) -> None:
            calls.append(f"callback:{checkpoint['kind']}")

    def hook(checkpoint):
        calls.append(f"hook:{checkpoint['kind']}")

    checkpoint = lk.ModelCheckpoint(dirpath=str(tmp_path), save_weights_only=True)
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint, Saver()]).fit(
        spec(hooks={"save_checkpoint": hook})
    )
    assert calls == ["hook:weights"]


def test_an_on_exception_asking_for_an_unbuilt_model_does_not_hide_the_error():
    class Watch(lk.Callback):
        def on_exception(self, ctx: Any, net: Any, exception: BaseException) -> None:
            raise AssertionError("not called: net was never built")

    def boom() -> Any:
        raise RuntimeError("bad model")

    with pytest.warns(UserWarning, match="Watch.on_exception not called"):
        with pytest.raises(RuntimeError, match="bad model"):
            trainer(callbacks=[Watch()]).fit(spec(net=boom))


@pytest.mark.parametrize("base", [lk.ProgressBar, lk.Timer])
def test_a_subclass_of_the_bar_or_timer_still_starts_a_resumed_epoch(tmp_path, base):
    started: list[int] = []

    @attrs.define
    class Mine(base):  # type: ignore[misc, valid-type]
        def on_train_epoch_start(self, ctx: Any) -> None:
            started.append(ctx.epoch)
            super().on_train_epoch_start(ctx)

    extra = (
        {"mode": "bar", "file": open(tmp_path / "bar.txt", "w")} if base is lk.ProgressBar else {}
    )
    resumable.CONTROL["fail_at"] = (1, 2)
    run_flags = {**flags(tmp_path, max_epochs=2), "enable_progress_bar": True}
    with pytest.raises(RuntimeError):
        lk.Trainer(**run_flags, callbacks=[*every_step(), Mine(**extra)]).fit(SPEC)
    resumable.reset()
    started.clear()
    result = lk.Trainer(**run_flags, callbacks=[*every_step(), Mine(**extra)]).fit(
        SPEC, ckpt_path="last"
    )
    assert result.global_step == 20
    assert started == [1]  # the resumed epoch's set-up ran, through the subclass


def test_a_stop_asked_at_an_epochs_start_still_saves_the_last_step(tmp_path):
    def stop_second(ctx):
        if ctx.epoch == 1:
            ctx.should_stop = True

    checkpoint = lk.ModelCheckpoint(dirpath=str(tmp_path / "c"), save_last=True)
    result = trainer(
        tmp_path,
        max_epochs=3,
        check_val_every_n_epoch=2,  # epoch 0 ends without a validation, so without a save
        enable_checkpointing=True,
        callbacks=[checkpoint],
    ).fit(spec(hooks={"train_epoch_start": stop_second}))
    assert result.global_step == 4
    saved = torch.load(tmp_path / "c" / "last.ckpt", weights_only=True)
    assert (saved["global_step"], saved["loop"]["epoch"], saved["loop"]["batches_done"]) == (
        4,
        1,
        0,
    )


def test_rows_of_fit_end_and_of_an_epoch_stopped_at_its_start_keep_their_epochs(tmp_path):
    def stop_second(ctx):
        if ctx.epoch == 1:
            ctx.should_stop = True

    def epoch_metric(ctx):
        ctx.log("ep", float(ctx.epoch + 10))

    def final(ctx):
        ctx.log("final", 1.0)

    hooks = {"train_epoch_start": stop_second, "train_epoch_end": epoch_metric, "fit_end": final}
    result = trainer(
        tmp_path, max_epochs=3, logger=lk.CSVLogger(), num_sanity_val_steps=0, log_every_n_steps=1
    ).fit(spec(hooks=hooks))
    with open(Path(result.log_dir) / "metrics.csv", newline="") as f:
        rows = [(r["step"], r["epoch"], r["ep"], r["final"]) for r in csv.DictReader(f) if r["ep"]]
    # Epoch 0's row keeps its epoch and value; the empty epoch 1 has its own row at the step
    # its first batch would have begun at; fit_end's value joins the last row.
    assert rows == [("3", "0", "10.0", ""), ("4", "1", "11.0", "1.0")]


def test_a_hook_that_sets_up_each_epoch_runs_again_for_a_resumed_epoch(tmp_path):
    # The resume stays exact: what the hook sets (a layer frozen from epoch 1) is not in the
    # checkpoint, so it must run for the epoch the resume continues. (Lightning skips it.)
    hooks = lk.Registry()

    @hooks.on("train_epoch_start")
    def freeze_first_layer(net, ctx):
        net[0].requires_grad_(ctx.epoch < 1)

    spec_ = lk.collect(resumable, hooks)
    reference = lk.Trainer(**flags(tmp_path / "ref", max_epochs=2)).fit(spec_)
    resumable.reset()
    resumable.CONTROL["fail_at"] = (1, 6)
    with pytest.raises(RuntimeError):
        lk.Trainer(**flags(tmp_path, max_epochs=2), callbacks=every_step()).fit(spec_)
    resumable.reset()
    resumed = lk.Trainer(**flags(tmp_path, max_epochs=2), callbacks=every_step()).fit(
        spec_, ckpt_path="last"
    )
    for key, value in reference.models["net"].state_dict().items():
        assert torch.equal(resumed.models["net"].state_dict()[key], value), key
