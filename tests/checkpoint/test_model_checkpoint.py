"""``ModelCheckpoint``: which files exist after a run, what they hold, their names."""

from __future__ import annotations

import csv
import math
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import lightkit as lk
from tests.checkpoint.ckpt_helpers import SPEC, flags

CKPT_DIR = "lightkit_logs/resumable/version_0/checkpoints"


def val_losses(run_dir: Path) -> list[float]:
    """The epoch-level ``val/loss`` rows of a run's metrics.csv, in order."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]


@pytest.mark.parametrize(("k", "mode"), [(3, "min"), (1, "max")])
def test_top_k_over_ten_epochs_leaves_exactly_the_k_best(tmp_path, k, mode):
    cb = lk.ModelCheckpoint(
        monitor="val/loss",
        mode=mode,
        save_top_k=k,
        save_last=False,
        filename="{epoch}-{step}-{val/loss:.3f}",
    )
    result = lk.Trainer(**flags(tmp_path, max_epochs=10, callbacks=[cb])).fit(SPEC)
    losses = val_losses(result.log_dir)
    assert len(losses) == 10
    order = sorted(range(10), key=lambda e: losses[e], reverse=mode == "max")
    best = sorted(order[:k])
    names = sorted(p.name for p in (tmp_path / CKPT_DIR).iterdir())
    expected = sorted(f"epoch={e}-step={10 * (e + 1)}-val_loss={losses[e]:.3f}.ckpt" for e in best)
    assert names == expected
    assert Path(cb.best_model_path).name == (
        f"epoch={order[0]}-step={10 * (order[0] + 1)}-val_loss={losses[order[0]]:.3f}.ckpt"
    )
    assert result.best_checkpoint == Path(cb.best_model_path)
    assert cb.best_model_score == losses[order[0]]
    assert set(cb.best_k_models) == {str(tmp_path / CKPT_DIR / n) for n in names}


def test_default_keeps_the_newest_and_save_last_links_it(tmp_path):
    cb = lk.ModelCheckpoint(save_last=True)
    result = lk.Trainer(**flags(tmp_path, callbacks=[cb])).fit(SPEC)
    folder = tmp_path / CKPT_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=2-step=30.ckpt", "last.ckpt"]
    assert result.last_checkpoint == folder / "last.ckpt"
    assert result.best_checkpoint == folder / "epoch=2-step=30.ckpt"
    assert (folder / "last.ckpt").read_bytes() == (folder / "epoch=2-step=30.ckpt").read_bytes()
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)
    assert ckpt["loop"] == {
        "epoch": 3,
        "batches_done": 0,
        "global_step": 30,
        "batches_seen": 30,
        "epochs_done": 3,
        "num_batches": 10,
        "accumulate_grad_batches": 1,
    }
    assert ckpt["kind"] == "full" and ckpt["lightkit_checkpoint"] == 1
    assert ckpt["versions"] == {"lightkit": lk.__version__, "torch": str(torch.__version__)}
    assert (
        lk.TrainingSpec.model_validate_json(ckpt["spec"]).hparams.as_dict()
        == SPEC.hparams.as_dict()
    )
    assert '"max_epochs": 3' in ckpt["config"]
    state = ckpt["callbacks"][cb.state_key]
    assert state["best_model_path"] == str(folder / "epoch=2-step=30.ckpt")
    assert set(ckpt["random"]["rng"]) >= {"python", "torch"}


def test_every_checkpoint_holds_the_flags_config_json_holds(tmp_path):
    """The callback resolves its folder when the run starts (Lightning's ModelCheckpoint
    does too); the flags stored in each checkpoint are those the run was given, as in
    config.json, so a trainer rebuilt from either does not pin the old run's folder."""
    import json

    cb = lk.ModelCheckpoint(save_top_k=-1, filename="{epoch}")
    result = lk.Trainer(**flags(tmp_path, callbacks=[cb])).fit(SPEC)
    assert Path(cb.dirpath) == tmp_path / CKPT_DIR
    written = json.loads((result.log_dir / "config.json").read_text())
    (stored,) = written["callbacks"]
    assert "dirpath" not in stored["init_args"]
    for path in sorted((tmp_path / CKPT_DIR).iterdir()):
        ckpt = torch.load(path, weights_only=True)
        assert json.loads(ckpt["config"]) == written, path.name
    # A second fit of the same trainer and callback: its own folder, none of the first's.
    trainer = lk.Trainer(**flags(tmp_path, callbacks=[cb]))
    trainer.fit(SPEC)
    again = trainer.fit(SPEC)
    assert Path(cb.dirpath) == again.log_dir / "checkpoints" != tmp_path / CKPT_DIR
    assert json.loads((again.log_dir / "config.json").read_text()) == written
    ckpt = torch.load(again.last_checkpoint, weights_only=True)
    assert json.loads(ckpt["config"]) == written


def test_every_n_epochs_and_every_n_train_steps(tmp_path):
    cb = lk.ModelCheckpoint(every_n_epochs=2, save_top_k=-1)
    lk.Trainer(**flags(tmp_path / "a", max_epochs=5, callbacks=[cb])).fit(SPEC)
    names = sorted(p.name for p in (tmp_path / "a" / CKPT_DIR).iterdir())
    assert names == ["epoch=1-step=20.ckpt", "epoch=3-step=40.ckpt"]
    cb = lk.ModelCheckpoint(every_n_train_steps=7, save_top_k=-1, filename="{step}")
    lk.Trainer(**flags(tmp_path / "b", callbacks=[cb])).fit(SPEC)
    names = sorted(p.name for p in (tmp_path / "b" / CKPT_DIR).iterdir())
    assert names == [f"step={s}.ckpt" for s in (14, 21, 28, 7)]
    mid = torch.load(tmp_path / "b" / CKPT_DIR / "step=14.ckpt", weights_only=True)
    assert (mid["loop"]["epoch"], mid["loop"]["batches_done"]) == (1, 4)
    assert mid["epoch_start"] is not None


def test_a_files_epoch_is_the_one_in_its_name_and_evaluation_reports_the_epochs_done(tmp_path):
    # Lightning's `epoch`: the epoch the save happened in, end-of-epoch saves included (the
    # loop's position and `epochs_done` say where a resume continues).
    ends = lk.ModelCheckpoint(save_top_k=-1, filename="{epoch}")
    mids = lk.ModelCheckpoint(every_n_train_steps=7, save_top_k=-1, filename="mid-{epoch}-{step}")
    lk.Trainer(**flags(tmp_path, max_epochs=2, callbacks=[ends, mids])).fit(SPEC)
    seen = {}
    for path in (tmp_path / CKPT_DIR).glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        seen[path.stem] = (ckpt["epoch"], ckpt["epochs_done"], ckpt["global_step"])
    assert seen == {
        "epoch=0": (0, 1, 10),
        "epoch=1": (1, 2, 20),
        "mid-epoch=0-step=7": (0, 0, 7),
        "mid-epoch=1-step=14": (1, 1, 14),
    }
    result = lk.Trainer(**flags(tmp_path)).validate(
        SPEC, ckpt_path=tmp_path / CKPT_DIR / "epoch=0.ckpt"
    )
    assert (result.epoch, result.global_step) == (1, 10)


def test_train_time_interval_saves(tmp_path):
    cb = lk.ModelCheckpoint(train_time_interval=timedelta(microseconds=1), save_top_k=-1)
    lk.Trainer(**flags(tmp_path, max_epochs=1, callbacks=[cb])).fit(SPEC)
    assert len(list((tmp_path / CKPT_DIR).iterdir())) == 10


def test_weights_only_files(tmp_path):
    cb = lk.ModelCheckpoint(save_weights_only=True)
    result = lk.Trainer(**flags(tmp_path, max_epochs=1, callbacks=[cb])).fit(SPEC)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["kind"] == "weights"
    assert {"optimizers", "loop", "random", "callbacks"}.isdisjoint(ckpt)


def test_file_names(tmp_path):
    cb = lk.ModelCheckpoint(filename="{epoch}-{val/loss:.2f}-{val/loss_x}")
    metrics = {"epoch": 3, "val/loss": 0.12345, "val/loss_x": 7.0}
    assert cb.format_checkpoint_name(metrics) == "epoch=3-val_loss=0.12-val_loss_x=7.0.ckpt"
    cb = lk.ModelCheckpoint(filename="e{epoch:02d}-{val/loss:.3f}", auto_insert_metric_name=False)
    assert cb.format_checkpoint_name(metrics, ver=2) == "e03-0.123-v2.ckpt"
    with pytest.warns(UserWarning, match="'acc' was not logged"):
        assert lk.ModelCheckpoint(filename="{acc}").format_checkpoint_name({}) == "acc=0.ckpt"


def test_version_counter_and_temporaries_never_end_in_ckpt(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "epoch=0-step=10.ckpt").write_bytes(b"someone else's")
    cb = lk.ModelCheckpoint(dirpath=folder, save_top_k=-1)
    lk.Trainer(**flags(tmp_path, max_epochs=1, callbacks=[cb])).fit(SPEC)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["epoch=0-step=10-v1.ckpt", "epoch=0-step=10.ckpt"]
    assert (folder / "epoch=0-step=10.ckpt").read_bytes() == b"someone else's"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_top_k": 3}, "needs a monitor"),
        ({"every_n_epochs": 1, "every_n_train_steps": 5}, "exclusive"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(lk.ConfigError, match=match):
        lk.ModelCheckpoint(**kwargs)


def test_a_validation_monitor_in_a_fit_that_never_validates_is_named_as_such(tmp_path):
    cb = lk.ModelCheckpoint(monitor="val/loss")
    with pytest.warns(lk.LightkitWarning, match=r"never validates \(limit_val_batches=0\)"):
        lk.Trainer(**flags(tmp_path, callbacks=[cb], limit_val_batches=0)).fit(SPEC)


def test_monitor_never_logged_is_an_error_once_validation_ran(tmp_path):
    cb = lk.ModelCheckpoint(monitor="val/acc")
    with pytest.raises(lk.ConfigError, match=r"could not find 'val/acc'.*val/loss") as info:
        lk.Trainer(**flags(tmp_path, callbacks=[cb])).fit(SPEC)
    assert info.value.code == "monitor-not-logged"
    # The file name's own fields are no logged metrics; a near miss is named.
    cb = lk.ModelCheckpoint(monitor="val/los")
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(**flags(tmp_path, callbacks=[cb])).fit(SPEC)
    message = str(info.value)
    assert "Did you mean 'val/loss'?" in message
    assert "epoch" not in message.split("logged metrics:")[1].split(".")[0]


def test_state_key_and_state_round_trip():
    cb = lk.ModelCheckpoint(monitor="val/loss", dirpath="/x")
    assert cb.state_key.startswith("ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'")
    cb.best_model_path, cb.best_model_score = "/x/a.ckpt", 0.5
    other = lk.ModelCheckpoint(monitor="val/loss", dirpath="/x")
    other.load_state_dict(cb.state_dict())
    assert (other.best_model_path, other.best_model_score) == ("/x/a.ckpt", 0.5)
    assert math.isinf(other.kth_value)


def test_validation_in_the_middle_of_an_epoch_saves_there(tmp_path):
    # Validation every 4 of 10 batches: Lightning saves after each validation, not at the
    # epoch's end (save_on_train_epoch_end=None decides so).
    cb = lk.ModelCheckpoint(monitor="val/loss", save_top_k=-1, filename="{step}")
    lk.Trainer(**flags(tmp_path, max_epochs=1, val_check_interval=4, callbacks=[cb])).fit(SPEC)
    folder = tmp_path / CKPT_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["step=4.ckpt", "step=8.ckpt"]
    mid = torch.load(folder / "step=4.ckpt", weights_only=True)
    assert (mid["loop"]["epoch"], mid["loop"]["batches_done"]) == (0, 4)

    cb = lk.ModelCheckpoint(save_top_k=-1, filename="{step}", save_on_train_epoch_end=True)
    root = tmp_path / "at_end"
    lk.Trainer(**flags(root, max_epochs=1, val_check_interval=4, callbacks=[cb])).fit(SPEC)
    assert sorted(p.name for p in (root / CKPT_DIR).iterdir()) == ["step=10.ckpt"]
    end = torch.load(root / CKPT_DIR / "step=10.ckpt", weights_only=True)
    assert (end["loop"]["epoch"], end["loop"]["batches_done"]) == (1, 0)


@pytest.mark.parametrize(
    ("on_epoch_end", "expected"),
    [
        (None, [1, 3]),  # after each validation: epochs 2 and 4 (Lightning's default)
        (False, [1, 3]),
        (True, [0, 1, 2, 3, 4]),
    ],
)
def test_validation_every_other_epoch_saves_after_it(tmp_path, on_epoch_end, expected):
    cb = lk.ModelCheckpoint(save_top_k=-1, save_on_train_epoch_end=on_epoch_end)
    run = flags(tmp_path, max_epochs=5, check_val_every_n_epoch=2, callbacks=[cb])
    lk.Trainer(**run).fit(SPEC)
    names = sorted(p.name for p in (tmp_path / CKPT_DIR).iterdir())
    assert names == [f"epoch={e}-step={10 * (e + 1)}.ckpt" for e in expected]


@pytest.mark.parametrize("check_n", [1, 2])
def test_without_validation_every_epoch_saves(tmp_path, check_n):
    cb = lk.ModelCheckpoint(save_top_k=-1)
    run = flags(tmp_path, limit_val_batches=0, check_val_every_n_epoch=check_n, callbacks=[cb])
    lk.Trainer(**run).fit(SPEC)
    names = sorted(p.name for p in (tmp_path / CKPT_DIR).iterdir())
    assert names == [f"epoch={e}-step={10 * (e + 1)}.ckpt" for e in range(3)]


def test_a_run_max_time_stops_mid_epoch_saves_its_last_steps(tmp_path):
    # Saving after validations (twice an epoch): a max_time stop validates nothing first, and
    # its steps since the last validation must still reach a checkpoint.
    cb = lk.ModelCheckpoint(save_top_k=-1, filename="{step}")
    run = flags(tmp_path, val_check_interval=0.5, max_time=1e-6, callbacks=[cb])
    result = lk.Trainer(**run).fit(SPEC)
    assert (result.stopped_by, result.global_step) == ("max_time", 1)
    assert sorted(p.name for p in (tmp_path / CKPT_DIR).iterdir()) == ["step=1.ckpt"]


def test_lightnings_name_attributes_are_there_and_a_change_is_refused(tmp_path):
    assert (lk.ModelCheckpoint.CHECKPOINT_NAME_LAST, lk.ModelCheckpoint.FILE_EXTENSION) == (
        "last",
        ".ckpt",
    )

    class Renamed(lk.ModelCheckpoint):
        CHECKPOINT_NAME_LAST = "{epoch}-last"

    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(**flags(tmp_path, callbacks=[Renamed()])).fit(SPEC)
    assert info.value.code == "fixed-checkpoint-names"
    assert "Renamed.CHECKPOINT_NAME_LAST = '{epoch}-last'" in str(info.value)
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any step
    # Lightning's documented spelling sets it on the instance: refused there and then.
    cb = lk.ModelCheckpoint()
    with pytest.raises(lk.ConfigError) as info:
        cb.CHECKPOINT_NAME_LAST = "{epoch}-last"
    assert info.value.code == "fixed-checkpoint-names"
    assert cb.CHECKPOINT_NAME_LAST == "last"
    cb.CHECKPOINT_NAME_LAST = "last"  # the same value: nothing changes, nothing to refuse
