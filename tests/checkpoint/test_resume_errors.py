"""Resuming and loading the wrong thing fails before any step, with an error naming the file
and what does not fit; ``"last"``/``"best"`` find the right file; weights load for
evaluation and into rebuilt models."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.checkpoint import resumable
from tests.checkpoint.ckpt_helpers import (
    SPEC,
    assert_equal,
    assert_same_run,
    every_step,
    flags,
    reference,
    snapshot,
)

CKPT_DIR = "lightkit_logs/resumable/version_0/checkpoints"


def fit_two_epochs(root: Path, **extra) -> lk.Result:
    return lk.Trainer(**flags(root, max_epochs=2, **extra)).fit(SPEC)


def test_weights_only_file_for_a_full_resume(tmp_path):
    cb = lk.ModelCheckpoint(save_weights_only=True)
    result = fit_two_epochs(tmp_path, callbacks=[cb])
    resumable.reset()
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path)).fit(SPEC, ckpt_path=result.last_checkpoint)
    assert info.value.code == "checkpoint-weights-only"
    assert str(result.last_checkpoint) in str(info.value)
    assert resumable.SEEN == []
    # ...but it evaluates.
    lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path=result.last_checkpoint)


def test_max_epochs_below_the_stored_epoch(tmp_path):
    result = fit_two_epochs(tmp_path)
    resumable.reset()
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC, ckpt_path=result.last_checkpoint)
    assert info.value.code == "checkpoint-mismatch"
    assert "max_epochs=1" in str(info.value) and "Set max_epochs above 2" in str(info.value)
    assert resumable.SEEN == []


@pytest.mark.parametrize("limit", ["max_epochs", "max_steps"])
def test_a_resume_exactly_at_the_limit_ends_at_once_saying_why(tmp_path, limit):
    result = fit_two_epochs(tmp_path)
    resumable.reset()
    value = 2 if limit == "max_epochs" else result.global_step
    extra = {"max_epochs": -1, "max_steps": value} if limit == "max_steps" else {}
    again = lk.Trainer(**{**flags(tmp_path), "max_epochs": 2, **extra}).fit(
        SPEC, ckpt_path=result.last_checkpoint
    )
    assert resumable.SEEN == []  # no step ran
    assert (again.global_step, again.stopped_by) == (result.global_step, limit)


def test_missing_path(tmp_path):
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path)).fit(SPEC, ckpt_path=tmp_path / "nope.ckpt")
    assert info.value.code == "checkpoint-not-found"
    assert str(tmp_path / "nope.ckpt") in str(info.value)
    assert resumable.SEEN == []
    with pytest.raises(lk.CheckpointError, match='ckpt_path="best": no readable checkpoint'):
        lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path="best")
    with pytest.raises(lk.CheckpointError) as info:  # a typo of "best"
        lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path="bestt")
    assert info.value.code == "checkpoint-not-found"
    assert str(info.value) == (
        f"ckpt_path='bestt': no checkpoint file at {Path('bestt').resolve()}. Did you mean "
        f'\'best\'? ckpt_path takes "last", "best" or the path of a .ckpt file.'
    )
    # Found missing before the run folder is made: no version_N is used up.
    assert not (tmp_path / "lightkit_logs").exists()


def test_last_without_any_checkpoint_starts_from_scratch(tmp_path):
    with pytest.warns(UserWarning, match="training starts from scratch"):
        trainer = lk.Trainer(**flags(tmp_path))
        result = trainer.fit(SPEC, ckpt_path="last")
    assert_same_run(reference(), snapshot(trainer, result))


def test_last_never_resumes_another_programs_run_but_evaluation_may_use_it(tmp_path):
    fit_two_epochs(tmp_path)
    logs = tmp_path / "lightkit_logs"
    (logs / "resumable").rename(logs / "another_program")  # its run, not this program's
    with pytest.warns(UserWarning, match="training starts from scratch"):
        trainer = lk.Trainer(**flags(tmp_path))
        result = trainer.fit(SPEC, ckpt_path="last")
    assert_same_run(reference(), snapshot(trainer, result))
    # An evaluation-only program evaluates what a training program wrote.
    (logs / "resumable").rename(logs / "this_one_moved_away")
    validated = lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path="last")
    assert validated.global_step > 0  # the other program's weights and counters


def test_different_model_shapes(tmp_path):
    result = fit_two_epochs(tmp_path)
    resumable.reset()
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path)).fit(
            SPEC.with_hparams(hidden=32), ckpt_path=result.last_checkpoint
        )
    text = str(info.value)
    assert info.value.code == "checkpoint-mismatch" and str(result.last_checkpoint) in text
    assert "model 'net': shapes differ: 0.weight: checkpoint (16, 6), model (32, 6)" in text
    assert "hidden=16 (now 32)" in text
    assert resumable.SEEN == []


def test_last_finds_a_checkpoint_callbacks_files_in_a_run_without_a_run_folder(tmp_path):
    # No logger and no default checkpointing: no run folder, and the callback writes into
    # <default_root_dir>/checkpoints, where "last" looks too.
    def run() -> lk.Trainer:
        quiet = {"logger": False, "enable_checkpointing": False}
        return lk.Trainer(**flags(tmp_path, **quiet, callbacks=every_step()))

    resumable.CONTROL["fail_at"] = (1, 3)
    with pytest.raises(RuntimeError):
        run().fit(SPEC)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.exists()
    resumable.reset()
    trainer = run()
    result = trainer.fit(SPEC, ckpt_path="last")
    assert trainer.last_engine.restored_from == last
    ref = reference()
    assert_equal(ref["weights"], dict(result.models["net"].state_dict()))


def test_resuming_with_other_hyperparameters_warns_naming_them(tmp_path):
    # The optimizer's state comes back with the checkpoint's learning rate: the new lr=0.5
    # would change nothing, silently (Lightning says nothing either).
    result = fit_two_epochs(tmp_path)
    resumable.reset()
    changed = SPEC.with_hparams(lr=0.5, dropout=0.0)
    trainer = lk.Trainer(**flags(tmp_path, max_epochs=3))
    with pytest.warns(
        UserWarning, match="written with dropout=0.2 \\(now 0.0\\), lr=0.05 \\(now 0.5\\)"
    ) as record:
        trainer.fit(changed, ckpt_path="last")
    assert trainer.last_engine.restored_from == result.last_checkpoint
    assert trainer.last_engine.optimizers[0].param_groups[0]["initial_lr"] == 0.05
    warning = next(w for w in record if "written with" in str(w.message))
    assert warning.filename == __file__  # it points at the fit call
    assert "fit without ckpt_path" in str(warning.message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same values: no warning
        lk.Trainer(**flags(tmp_path, max_epochs=4)).fit(SPEC, ckpt_path=result.last_checkpoint)


def test_an_epoch_scheduler_resumed_at_an_epochs_end_steps_without_torchs_warning(tmp_path):
    # The checkpoint of an epoch's last batch resumes into that epoch's end, whose scheduler
    # step comes before this process's first optimizer step: torch would warn that the
    # schedule skips a value. It does not: the learning rates are the uninterrupted run's.
    reg = lk.Registry()
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, generator=g), torch.randn(8, 1))

    @reg.model
    def net():
        return torch.nn.Linear(3, 1)

    @reg.train_data
    def loader():
        return torch.utils.data.DataLoader(data, batch_size=4)

    @reg.training_step
    def train(net, batch):
        return torch.nn.functional.mse_loss(net(batch[0]), batch[1])

    def optim(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    reg.configure_optimizers(optim)
    spec = lk.collect(reg)
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}

    def every() -> list[lk.Callback]:
        return [lk.ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, save_last=True)]

    reference = lk.Trainer(max_epochs=2, seed=0, **quiet).fit(spec)
    saved = lk.Trainer(
        max_epochs=1, seed=0, default_root_dir=tmp_path, callbacks=every(), **quiet
    ).fit(spec)
    assert torch.load(saved.last_checkpoint, weights_only=True)["loop"]["batches_done"] == 2
    trainer = lk.Trainer(max_epochs=2, seed=0, callbacks=every(), **quiet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = trainer.fit(spec, ckpt_path=saved.last_checkpoint)
    assert trainer.last_engine.optimizers[0].param_groups[0]["lr"] == 0.1 * 0.5**2
    assert_equal(
        dict(resumed.models["net"].state_dict()), dict(reference.models["net"].state_dict())
    )


def test_not_a_lightkit_checkpoint_and_a_newer_format(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 1}, path)
    with pytest.raises(lk.CheckpointError, match="is not a lightkit checkpoint") as info:
        lk.Trainer(**flags(tmp_path)).fit(SPEC, ckpt_path=path)
    assert info.value.code == "not-a-checkpoint"
    assert "A bare state_dict loads with module.load_state_dict" in str(info.value)
    lightning = {"state_dict": {"net.0.weight": torch.ones(1)}, "pytorch-lightning_version": "2.6"}
    torch.save(lightning, path)
    with pytest.raises(lk.CheckpointError, match="It is a Lightning checkpoint: load its weights"):
        lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path=path)
    result = fit_two_epochs(tmp_path)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    ckpt["lightkit_checkpoint"] = 99
    torch.save(ckpt, path)
    with pytest.raises(lk.CheckpointError, match="format 99") as info:
        lk.Trainer(**flags(tmp_path)).validate(SPEC, ckpt_path=path)
    assert info.value.code == "checkpoint-newer-format"


def test_last_skips_a_corrupt_newest_file_with_a_warning(tmp_path):
    fit_two_epochs(tmp_path, callbacks=[lk.ModelCheckpoint(save_top_k=-1)])
    folder = tmp_path / CKPT_DIR
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch=0-step=10.ckpt",
        "epoch=1-step=20.ckpt",
    ]
    newest = folder / "epoch=1-step=20.ckpt"
    newest.write_bytes(newest.read_bytes()[:-300])
    resumable.reset()
    trainer = lk.Trainer(**flags(tmp_path))
    with pytest.warns(UserWarning, match=f"skipping {newest}, which cannot be used"):
        result = trainer.fit(SPEC, ckpt_path="last")
    assert trainer.last_engine.restored_from == folder / "epoch=0-step=10.ckpt"
    assert_same_run(reference(), snapshot(trainer, result))


def test_best_finds_the_monitored_best(tmp_path):
    cb = lk.ModelCheckpoint(monitor="val/loss", save_top_k=2, save_last=True)
    trainer = lk.Trainer(**flags(tmp_path, max_epochs=4, callbacks=[cb]))
    result = trainer.fit(SPEC)
    assert result.best_checkpoint == Path(cb.best_model_path)
    assert cb.best_model_score == min(cb.best_k_models.values())
    # Same trainer, then a fresh one searching the run folders: the same file.
    trainer.validate(SPEC, ckpt_path="best")
    assert trainer.last_engine.restored_from == result.best_checkpoint
    fresh = lk.Trainer(**flags(tmp_path))
    out = fresh.validate(SPEC, ckpt_path="best")
    assert fresh.last_engine.restored_from == result.best_checkpoint
    stored = torch.load(result.best_checkpoint, weights_only=True)["models"]["net"]
    assert_equal(stored, dict(out.models["net"].state_dict()))


def test_best_after_a_fit_that_saved_nothing_says_it_is_an_earlier_runs(tmp_path):
    import warnings

    earlier = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC)
    unsaved = lk.Trainer(**flags(tmp_path, max_epochs=2, enable_checkpointing=False))
    unsaved.fit(SPEC)
    with pytest.warns(lk.LightkitWarning, match="this trainer's fit wrote no checkpoint") as info:
        unsaved.validate(SPEC, ckpt_path="best")
    assert "checkpoint-from-earlier-run" in [getattr(w.message, "code", None) for w in info]
    assert unsaved.last_engine.restored_from == earlier.best_checkpoint
    with pytest.warns(lk.LightkitWarning, match="this trainer's fit wrote no checkpoint"):
        unsaved.validate(SPEC, ckpt_path="best")  # still that fit's trainer: still said
    saved = lk.Trainer(**flags(tmp_path, max_epochs=1))  # its own fit saved: no word
    saved.fit(SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LightkitWarning)
        saved.validate(SPEC, ckpt_path="best")


@pytest.mark.parametrize("monitored_first", [True, False])
def test_with_several_checkpoint_callbacks_best_is_the_monitoring_ones(tmp_path, monitored_first):
    # Whichever saves last in an epoch and wherever it is listed, the best is the monitoring
    # callback's, whoever asks.
    def callbacks() -> list[lk.Callback]:
        every = lk.ModelCheckpoint(dirpath=tmp_path / "every", save_top_k=-1)
        best = lk.ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/loss", save_top_k=1)
        return [best, every] if monitored_first else [every, best]

    trainer = lk.Trainer(**flags(tmp_path, max_epochs=4, callbacks=callbacks()))
    result = trainer.fit(SPEC)
    (monitored,) = [
        cb for cb in trainer.last_engine.callbacks
        if isinstance(cb, lk.ModelCheckpoint) and cb.monitor == "val/loss"
    ]  # fmt: skip
    assert result.best_checkpoint == Path(monitored.best_model_path)
    assert result.best_checkpoint.parent == tmp_path / "best"
    trainer.validate(SPEC, ckpt_path="best")
    assert trainer.last_engine.restored_from == result.best_checkpoint
    fresh = lk.Trainer(**flags(tmp_path, callbacks=callbacks()))
    fresh.validate(SPEC, ckpt_path="best")
    assert fresh.last_engine.restored_from == result.best_checkpoint

    # A resume with nothing left to train writes nothing, yet knows its restored best.
    again = lk.Trainer(**flags(tmp_path, max_epochs=4, callbacks=callbacks()))
    resumed = again.fit(SPEC, ckpt_path=result.last_checkpoint)
    assert (resumed.stopped_by, resumed.last_checkpoint) == ("max_epochs", None)
    assert resumed.best_checkpoint == result.best_checkpoint


def test_evaluation_loads_weights_only_and_bare_state_dicts(tmp_path):
    result = fit_two_epochs(tmp_path)
    weights = {k: v.clone() for k, v in result.models["net"].state_dict().items()}
    out = lk.Trainer(**flags(tmp_path, seed=5)).validate(SPEC, ckpt_path=result.last_checkpoint)
    assert_equal(weights, dict(out.models["net"].state_dict()))
    bare = tmp_path / "bare.pt"
    torch.save(weights, bare)
    out = lk.Trainer(**flags(tmp_path, seed=5)).validate(SPEC, ckpt_path=bare)
    assert_equal(weights, dict(out.models["net"].state_dict()))


def test_load_models_rebuilds_from_the_stored_spec(tmp_path):
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC.with_hparams(hidden=8))
    models = lk.load_models(result.last_checkpoint)
    assert list(models) == ["net"]
    net = models["net"]
    assert not net.training and net[0].out_features == 8
    assert_equal(dict(result.models["net"].state_dict()), dict(net.state_dict()))
    # From another spec: the stored hyperparameters win, so shapes fit.
    again = lk.load_models(result.last_checkpoint, spec=SPEC)
    assert again["net"][0].out_features == 8


def test_load_models_keeps_the_dtype_the_model_was_trained_in(tmp_path):
    # A fresh build is float32; loading 64-true weights into it would round them silently.
    result = lk.Trainer(**flags(tmp_path, max_epochs=1, precision="64-true")).fit(SPEC)
    net = lk.load_models(result.last_checkpoint)["net"]
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    assert_equal(dict(result.models["net"].state_dict()), dict(net.state_dict()))


def test_load_models_says_what_to_do_when_the_stored_functions_moved(tmp_path):
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    ckpt["spec"] = ckpt["spec"].replace("tests.checkpoint.resumable", "tests.checkpoint.moved")
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    with pytest.raises(lk.SpecError) as info:
        lk.load_models(moved)
    assert "unimportable-function" in info.value.codes
    assert "lk.load_models(path, spec=lk.collect(<your module>))" in str(info.value)
    renamed = lk.Registry()
    renamed.model(resumable.net, name="network")
    with pytest.raises(
        lk.CheckpointError, match="no weights for model 'network' \\(it holds 'net'\\)"
    ):
        lk.load_models(moved, spec=lk.collect(renamed))
    assert list(lk.load_models(moved, spec=SPEC)) == ["net"]  # the fix the message gives


def test_load_models_needs_only_the_model_functions(tmp_path):
    # The data, step and optimizer of a script that is not importable do not matter.
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    for name in ("train_loader", "val_loader", "train", "val", "optim"):
        ckpt["spec"] = ckpt["spec"].replace(
            f'"tests.checkpoint.resumable:{name}"', f'"a_script_gone:{name}"'
        )
    assert "a_script_gone" in ckpt["spec"]
    ckpt["hparams"]["hidden"] = result.models["net"][0].out_features
    path = tmp_path / "script.ckpt"
    torch.save(ckpt, path)
    models = lk.load_models(path)
    assert list(models) == ["net"]
    for a, b in zip(models["net"].parameters(), result.models["net"].parameters(), strict=True):
        assert torch.equal(a, b)


class Activation:
    """Not a JSON value."""


def odd_net(act: object = Activation()) -> nn.Module:
    return nn.Linear(resumable.N_IN, resumable.N_OUT)


@pytest.mark.filterwarnings("ignore:spec.json not written")
def test_non_primitive_hyperparameters_are_refused_before_training(tmp_path):
    reg = lk.Registry()
    reg.model(odd_net, name="net")
    reg.train_data(resumable.train_loader)
    reg.training_step(resumable.train)
    reg.configure_optimizers(resumable.optim)
    spec = lk.collect(reg)
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path)).fit(spec)
    assert info.value.code == "hparams-not-serializable"
    assert "act=<" in str(info.value) and "(Activation)" in str(info.value)
    assert "enable_checkpointing=False" in str(info.value)
    assert resumable.SEEN == []
    result = lk.Trainer(**flags(tmp_path, enable_checkpointing=False, max_epochs=1)).fit(spec)
    assert result.global_step == 10 and not math.isnan(result.metrics["train/loss"])


def _other_program() -> lk.TrainingSpec:
    from tests.engine.engine_helpers import registry

    return lk.collect(registry())  # another module: another program (run name)


def test_a_resume_takes_a_full_file_over_a_newer_weights_only_export(tmp_path):
    def callbacks():
        return [
            lk.ModelCheckpoint(save_last=True),
            lk.ModelCheckpoint(
                save_weights_only=True, dirpath=tmp_path / "export", every_n_train_steps=5
            ),
        ]

    lk.Trainer(**flags(tmp_path, max_epochs=1, callbacks=callbacks())).fit(SPEC)
    for export in (tmp_path / "export").glob("*.ckpt"):  # the newest files there
        os.utime(export, (time.time() + 60, time.time() + 60))
    resumed = lk.Trainer(**flags(tmp_path, max_epochs=2, callbacks=callbacks())).fit(
        SPEC, ckpt_path="last"
    )
    assert resumed.global_step == 20 and resumed.epoch == 2


def test_last_and_best_never_take_another_programs_file(tmp_path):
    # A shared <root>/checkpoints folder, and a trainer reused for another program: the
    # files there are the first program's, which a resume of the second must not take.
    shared = {"logger": False, "enable_checkpointing": False, "max_epochs": 1}
    trainer = lk.Trainer(**flags(tmp_path, **shared, callbacks=[lk.ModelCheckpoint()]))
    trainer.fit(SPEC)
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))
    other = _other_program()
    for which in ("best", "last"):  # "last" trains, and then has a file of its own
        with (
            pytest.warns(lk.LightkitWarning, match="no checkpoint found")
            if which == "last"
            else (pytest.raises(lk.CheckpointError, match="no readable checkpoint found"))
        ):
            result = trainer.fit(other, ckpt_path=which)
        if which == "last":
            assert result.global_step == 7  # trained from scratch: 50 samples, batches of 8


def test_a_resume_with_another_optimizer_class_is_refused_before_any_step(tmp_path):
    # SGD's state into AdamW would fail at the first step with torch's KeyError: 'betas'.
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(SPEC)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["optimizer_types"] == [["AdamW", "Adam"]]
    ckpt["optimizer_types"] = [["Adam"]]  # AdamW over Adam: the state fits
    path = tmp_path / "adam.ckpt"
    torch.save(ckpt, path)
    lk.Trainer(**flags(tmp_path, max_epochs=2)).fit(SPEC, ckpt_path=path)
    ckpt["optimizer_types"] = [["SGD"]]
    path = tmp_path / "sgd.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path, max_epochs=2)).fit(SPEC, ckpt_path=path)
    assert info.value.code == "checkpoint-mismatch"
    assert "its optimizers are SGD; configure_optimizers returned AdamW" in str(info.value)
