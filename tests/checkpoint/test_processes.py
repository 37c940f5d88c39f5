"""Runs killed or signalled from outside: SIGKILL mid-epoch and mid-save, SIGTERM. Every file
named ``*.ckpt`` is complete, ``"last"`` resolves, and the resumed run is exact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk
from lightkit.checkpoint import Preempted
from tests.checkpoint.ckpt_helpers import (
    SPEC,
    assert_same_run,
    every_step,
    flags,
    loss_rows,
    reference,
    snapshot,
)

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child_run.py")
RUN_DIR = "lightkit_logs/resumable/version_0"


def start(cfg: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def resume(root: Path, callbacks: list[lk.Callback] | None = None) -> dict[str, Any]:
    trainer = lk.Trainer(**flags(root, callbacks=callbacks or every_step()))
    result = trainer.fit(SPEC, ckpt_path="last")
    out = snapshot(trainer, result)
    out["rows"] = loss_rows(result.log_dir)
    return out


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    proc = start(
        {
            "root": str(tmp_path),
            "control": {"kill_at": [1, 6]},
            "checkpoint": {"every_n_train_steps": 1, "save_last": True, "save_top_k": 0},
        }
    )
    code, output = finish(proc)
    assert code == -signal.SIGKILL, output
    ref = reference()
    got = resume(tmp_path)
    assert_same_run(ref, got)
    assert got["rows"] == ref["rows"][-len(got["rows"]) :]
    assert len(got["rows"]) == 30 - 16  # resumed after batch 5 of epoch 1


def check_folder(folder: Path) -> None:
    """Every final-named file is a complete checkpoint."""
    for path in folder.glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["lightkit_checkpoint"] == 1 and "net" in ckpt["models"]


def test_kill_during_save_at_random_moments(tmp_path):
    rng = random.Random(1234)
    ref = reference()
    kills = [("outside", rng.uniform(0.0, 1.2)), ("outside", rng.uniform(0.0, 1.2))]
    kills.append(("inside", rng.randrange(3, 25)))  # the writer dies halfway through save n
    procs = []
    for i, (how, when) in enumerate(kills):
        root = tmp_path / f"run{i}"
        cfg: dict[str, Any] = {
            "root": str(root),
            "slow_write": 0.06,
            "checkpoint": {
                "dirpath": str(root / "ckpts"),
                "every_n_train_steps": 1,
                "save_last": True,
            },
        }
        if how == "inside":
            cfg["die_on_call"] = when
        procs.append((root, how, when, start(cfg)))
    for root, how, when, proc in procs:
        folder = root / "ckpts"
        if how == "outside":
            while not any(folder.glob("*.ckpt")) and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(when)
            proc.kill()
        code, output = finish(proc)
        assert code in (-signal.SIGKILL, 0), output
        check_folder(folder)
        temps = list(folder.glob(".*.tmp"))
        if how == "inside":
            assert code == -signal.SIGKILL and temps, output
        assert all(not t.name.endswith(".ckpt") for t in temps)
        got = resume(root, [lk.ModelCheckpoint(dirpath=folder, every_n_train_steps=1)])
        assert_same_run(ref, got)
        assert not list(folder.glob(".*.tmp"))  # cleaned when the resumed run started
        check_folder(folder)


def test_sigterm_saves_flushes_runs_the_users_handler_and_exits_143(tmp_path):
    marker = tmp_path / "handler-ran"
    proc = start(
        {"root": str(tmp_path), "control": {"signal_at": [1, 2]}, "handler_marker": str(marker)}
    )
    code, output = finish(proc)
    assert code == 143, output
    last = tmp_path / RUN_DIR / "checkpoints/last.ckpt"
    assert f"SIGTERM received; saved {last}; exiting with status 143" in output
    assert "finished" not in output
    assert marker.read_text() == str(int(signal.SIGTERM))
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["loop"]["epoch"], ckpt["loop"]["batches_done"]) == (1, 3)
    # The loggers flushed every step up to the signal (batch 2 of epoch 1 is step 12).
    rows = loss_rows(tmp_path / RUN_DIR)
    assert [s for s, _ in rows] == list(range(13))
    ref = reference()
    assert rows == ref["rows"][:13]
    got = resume(tmp_path, [])
    assert_same_run(ref, got)
    assert rows + got["rows"] == ref["rows"]
    assert os.path.exists(last)


def test_ddp_preemption_stops_every_rank_after_the_same_batch(tmp_path, monkeypatch):
    """Only rank 0 gets SIGTERM; both ranks stop after the same batch (they agree through a
    collective) and last.ckpt is written once, at that batch."""
    ddp = {"devices": 2, "strategy": "ddp", "accelerator": "cpu", "max_epochs": 2}
    monkeypatch.setenv("LK_TEST_SIGTERM_AT", "0,2,0")
    with pytest.raises(Preempted) as info:  # as one process raises it
        lk.Trainer(**flags(tmp_path, **ddp)).fit(SPEC)
    last = tmp_path / RUN_DIR / "checkpoints/last.ckpt"
    assert (info.value.code, info.value.checkpoint) == (143, last)
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["loop"]["epoch"], ckpt["loop"]["batches_done"]) == (0, 3)
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    # Each rank's metrics, gathered to rank 0: the ranks trained on different samples.
    losses = [rank["latest"]["train/loss"] for rank in ckpt["metrics"]]
    assert len(losses) == 2 and losses[0] != losses[1]
