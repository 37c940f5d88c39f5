"""ModelCheckpoint's file names on disk: a fixed ``filename`` keeps its name (the file leaving
the top k is replaced in place, as in Lightning), ``.ckpt`` is never doubled, and replacing in
place stays atomic: a failed write leaves the previous file whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import lightkit as lk
import lightkit.checkpoint.io as ckpt_io
from tests.callbacks.cb_helpers import spec, trainer


@attrs.define
class Listing(lk.Callback):
    """The checkpoint folder's files at the start of every epoch after the first (what the
    previous epoch's save left)."""

    folder: Path
    seen: list[list[str]] = attrs.field(factory=list)

    def on_train_epoch_start(self, ctx: Any) -> None:
        if ctx.epoch > 0:
            self.seen.append(files(self.folder))


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def saved_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


def fit(folder: Path, epochs: int, **ckpt_args: Any) -> tuple[lk.ModelCheckpoint, Listing]:
    cb = lk.ModelCheckpoint(dirpath=folder, **ckpt_args)
    listing = Listing(folder)
    trainer(max_epochs=epochs, callbacks=[cb, listing]).fit(spec())
    return cb, listing


@pytest.mark.parametrize("filename", ["model", "model.ckpt"])
def test_a_fixed_name_is_replaced_in_place_epoch_after_epoch(tmp_path, filename):
    cb, listing = fit(tmp_path, 4, filename=filename)
    assert listing.seen == [["model.ckpt"]] * 3
    assert files(tmp_path) == ["model.ckpt"]
    assert cb.best_model_path == str(tmp_path / "model.ckpt")
    assert saved_step(tmp_path / "model.ckpt") == 16  # 4 batches x 4 epochs: the newest


def test_a_fixed_name_with_save_last(tmp_path):
    _, listing = fit(tmp_path, 3, filename="model", save_last=True)
    assert listing.seen == [["last.ckpt", "model.ckpt"]] * 2
    assert files(tmp_path) == ["last.ckpt", "model.ckpt"]
    assert saved_step(tmp_path / "model.ckpt") == saved_step(tmp_path / "last.ckpt") == 12


def test_a_monitored_top_1_replaces_its_file_when_a_better_one_comes(tmp_path):
    values = iter([3.0, 2.0, 5.0, 1.0])

    def val(batch: Any) -> None:
        lk.log("score", values_at_epoch[-1])

    values_at_epoch: list[float] = []

    def next_value(ctx: Any) -> None:
        values_at_epoch.append(next(values))

    cb = lk.ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="score")
    listing = Listing(tmp_path)
    trainer(max_epochs=4, callbacks=[cb, listing]).fit(
        spec(val=val, hooks={"validation_epoch_start": next_value})
    )
    assert listing.seen == [["best.ckpt"]] * 3
    assert files(tmp_path) == ["best.ckpt"]
    assert cb.best_model_score == 1.0
    assert saved_step(tmp_path / "best.ckpt") == 16  # epoch 3, the best


def test_a_monitored_top_2_versions_the_second_and_replaces_the_one_leaving(tmp_path):
    scores = [3.0, 2.0, 1.0, 0.5]
    seen_scores: list[float] = []

    def next_value(ctx: Any) -> None:
        seen_scores.append(scores[len(seen_scores)])

    def val(batch: Any) -> None:
        lk.log("score", seen_scores[-1])

    cb = lk.ModelCheckpoint(dirpath=tmp_path, filename="top", monitor="score", save_top_k=2)
    trainer(max_epochs=4, callbacks=[cb]).fit(
        spec(val=val, hooks={"validation_epoch_start": next_value})
    )
    # epoch 0 -> top.ckpt (3.0); epoch 1 -> top-v1.ckpt (2.0), top.ckpt is still in the top 2;
    # epoch 2 replaces top.ckpt (3.0 leaves) in place; epoch 3 replaces top-v1.ckpt (2.0).
    assert files(tmp_path) == ["top-v1.ckpt", "top.ckpt"]
    assert cb.best_k_models == {str(tmp_path / "top.ckpt"): 1.0, str(tmp_path / "top-v1.ckpt"): 0.5}
    assert saved_step(tmp_path / "top.ckpt") == 12
    assert saved_step(tmp_path / "top-v1.ckpt") == 16


def test_keep_all_without_monitor_versions_a_fixed_name(tmp_path):
    # save_top_k=-1 keeps every file: none leaves, so a taken name gets -v1, -v2.
    fit(tmp_path, 3, filename="model.ckpt", save_top_k=-1)
    assert files(tmp_path) == ["model-v1.ckpt", "model-v2.ckpt", "model.ckpt"]


def test_ckpt_is_never_doubled():
    cb = lk.ModelCheckpoint(filename="model.ckpt")
    assert cb.format_checkpoint_name({}) == "model.ckpt"
    assert cb.format_checkpoint_name({}, ver=1) == "model-v1.ckpt"
    cb = lk.ModelCheckpoint(filename="{epoch}.ckpt")
    assert cb.format_checkpoint_name({"epoch": 2}) == "epoch=2.ckpt"
    assert lk.ModelCheckpoint(filename=".ckpt").format_checkpoint_name({"epoch": 1, "step": 4}) == (
        "epoch=1-step=4.ckpt"
    )
    assert lk.ModelCheckpoint(filename="model.ckpt.bak").format_checkpoint_name({}) == (
        "model.ckpt.bak.ckpt"
    )


def test_replacing_in_place_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    real_write = ckpt_io._write
    during: list[list[str]] = []
    calls = 0

    def write(state: dict[str, Any], f: Any) -> None:
        nonlocal calls
        calls += 1
        during.append(files(tmp_path))
        if calls == 3:
            raise OSError(28, "No space left on device")
        real_write(state, f)

    monkeypatch.setattr(ckpt_io, "_write", write)
    cb = lk.ModelCheckpoint(dirpath=tmp_path, filename="model")
    with pytest.raises(lk.CheckpointError) as info:
        trainer(max_epochs=4, callbacks=[cb]).fit(spec())
    assert info.value.code == "checkpoint-write-failed"
    assert "No space left on device" in str(info.value)
    # While writing, the new file is a temporary beside the old one, never named *.ckpt.
    assert len(during) == 3
    for names in during[1:]:
        assert "model.ckpt" in names
        (tmp,) = [n for n in names if n != "model.ckpt"]
        assert tmp.startswith(".model.ckpt.") and not tmp.endswith(".ckpt")
    # The failed third save left the second one whole, and nothing else.
    assert files(tmp_path) == ["model.ckpt"]
    assert saved_step(tmp_path / "model.ckpt") == 8
    assert cb.best_model_path == str(tmp_path / "model.ckpt")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_relative_dirpath_is_the_working_directorys_and_its_paths_are_absolute(
    tmp_path, monkeypatch
):
    # As Lightning: resolved when the callback is made. A run resumed from another working
    # directory then keeps to the first folder, and never deletes the second folder's files.
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (second / "ck").mkdir(parents=True)
    monkeypatch.chdir(first)
    cb = lk.ModelCheckpoint(dirpath="ck", monitor="val/loss", save_last=True)
    assert cb.dirpath == first / "ck"
    result = trainer(tmp_path, max_epochs=2, callbacks=[cb]).fit(spec())
    assert Path(cb.best_model_path).is_absolute() and Path(cb.last_model_path).is_absolute()
    assert all(Path(p).is_absolute() for p in cb.best_k_models)
    assert result.best_checkpoint == Path(cb.best_model_path)
    bystander = second / "ck" / Path(cb.best_model_path).name  # same name, another folder
    bystander.write_text("someone else's file")

    monkeypatch.chdir(second)
    again = lk.ModelCheckpoint(dirpath="ck", monitor="val/loss", save_top_k=1, save_last=True)
    trainer(tmp_path, max_epochs=4, callbacks=[again]).fit(
        spec(), ckpt_path=first / "ck" / "last.ckpt"
    )
    assert bystander.read_text() == "someone else's file"
    assert Path(again.best_model_path).parent == second / "ck"


def test_save_last_link_is_lightnings_spelling_of_a_linked_last(tmp_path):
    cb, _ = fit(tmp_path / "ck", 2, save_last="link")
    last = tmp_path / "ck" / "last.ckpt"
    assert cb.last_model_path == str(last)
    assert saved_step(last) == saved_step(Path(cb.best_model_path))
