"""A rank that raises or dies ends the whole run promptly, non-zero, with its traceback.

Timeouts here are hang detectors, not speed assertions: the requirement is "within 30 s of
the failure" (a raise) and "within the failure timeout + 10 s" (a death).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk
from tests.distributed.support import ROOT, SCRIPTS, alive, run_script


def _pids(marker_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(marker_dir.glob("pid-*"))]


def _start_script(name: str, folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), str(folder), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _training_pids(proc: subprocess.Popen[str], folder: Path) -> list[int]:
    """The two ranks' pids, once both are training (they write them into ``folder``)."""
    deadline = time.monotonic() + 120
    while len(_pids(folder)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    pids = _pids(folder)
    assert len(pids) == 2, proc.stderr.read() if proc.poll() is not None else "no ranks"  # type: ignore[union-attr]
    return pids


def test_a_rank_raising_ends_the_script_non_zero_with_its_traceback(tmp_path: Path) -> None:
    proc = run_script("fit_fails.py", str(tmp_path), timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    raised_at = float((tmp_path / "failed-1").read_text())
    ended_at = float(re.search(r"RAISED-AT (\S+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert ended_at - raised_at < 30
    codes = ast.literal_eval(re.search(r"EXITCODES (.*)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert codes[0] != 0 and codes[1] != 0  # both ranks ended non-zero
    err = proc.stderr
    # The root cause, once, with its traceback (the user's frame and message).
    assert "lightkit.errors.DistributedError: rank 1 of 2 failed first" in err
    assert err.count("ValueError: boom on rank 1 at step 3") == 1
    assert "Traceback of rank 1" in err and 'programs.py", line' in err and "in train" in err
    assert "rank 0: RuntimeError" in err  # rank 0 stopped because rank 1's group went away
    assert not any(alive(pid) for pid in _pids(tmp_path))
    # Both ranks ran their exception hooks; rank 0 (the survivor) flushed its logger.
    assert (tmp_path / "exception-1").read_text() == "ValueError"
    assert (tmp_path / "exception-0").read_text() == "RuntimeError"
    (csv,) = tmp_path.glob("lightkit_logs/*/version_0/metrics.csv")
    steps = [line.split(",")[0] for line in csv.read_text().splitlines()[1:]]
    assert steps[:3] == ["0", "1", "2"]  # what was logged before the failure at step 3


@pytest.mark.parametrize("mode", ["sigkill", "exit", "raise"])
def test_a_rank_dying_or_raising_stops_every_rank(
    mode: str, spec: lk.TrainingSpec, flags: dict[str, Any], tmp_path: Path
) -> None:
    strategy = lk.DDPStrategy(start_method="fork", failure_timeout=5)
    trainer = lk.Trainer(**flags, devices=2, strategy=strategy)
    run = spec.with_hparams(fail_rank=1, fail_step=3, fail_mode=mode, marker_dir=str(tmp_path))
    with pytest.raises(lk.DistributedError, match="rank 1 of 2 failed first") as info:
        trainer.fit(run)
    ended = time.time()
    failed_at = float((tmp_path / "failed-1").read_text())
    assert ended - failed_at < strategy.failure_timeout + 10
    message = str(info.value)
    expected = {
        "sigkill": "died (killed by SIGKILL) without raising",
        "exit": "died (exit code 3) without raising",
        "raise": "ValueError: boom on rank 1 at step 3",
    }[mode]
    assert expected in message
    assert info.value.code == "rank-failed"
    assert all(code != 0 for code in info.value.exitcodes.values())
    assert info.value.rank == 1
    assert info.value.exception_type == ("builtins.ValueError" if mode == "raise" else None)
    assert not any(alive(pid) for pid in _pids(tmp_path))
    assert (tmp_path / "exception-0").exists()  # the survivor ran its exception hooks


def test_a_rank_that_hangs_after_a_failure_is_stopped(
    spec: lk.TrainingSpec, flags: dict[str, Any], tmp_path: Path
) -> None:
    """Rank 0 raises while rank 1 sleeps outside any collective: rank 1 cannot notice the
    broken group, so the launcher stops it after failure_timeout."""
    strategy = lk.DDPStrategy(start_method="fork", failure_timeout=2)
    run = spec.with_hparams(fail_rank=0, fail_step=1, marker_dir=str(tmp_path), hang_rank=1)
    with pytest.raises(lk.DistributedError, match="rank 0 of 2 failed first") as info:
        lk.Trainer(**flags, devices=2, strategy=strategy).fit(run)
    assert "rank 1: stopped (no exit after the failure)" in str(info.value)
    assert str(info.value).count("  rank 1:") == 1  # not also as a rank that died
    assert not any(alive(pid) for pid in _pids(tmp_path))


@pytest.mark.parametrize(
    ("sig", "start_method"), [(signal.SIGINT, "fork"), (signal.SIGKILL, "spawn")]
)
def test_no_rank_outlives_the_calling_process(
    sig: signal.Signals, start_method: str, tmp_path: Path
) -> None:
    """Ctrl-C in the calling process stops the ranks; killing it outright kills them too."""
    proc = _start_script("fit_hangs.py", tmp_path, start_method)
    try:
        pids = _training_pids(proc, tmp_path)
        time.sleep(0.5)  # both ranks are training; rank 1 sleeps
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in err
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in pids)
    finally:
        proc.kill()


def test_sigterm_to_the_calling_process_saves_and_exits_143_as_one_process_does(
    tmp_path: Path,
) -> None:
    """`kill`/`docker stop` signal the process the user started: the ranks get it too, agree,
    write last.ckpt once and stop; the script exits 143 like a one-process run."""
    proc = _start_script("fit_preempted.py", tmp_path)
    try:
        pids = _training_pids(proc, tmp_path)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        last = tmp_path / "lightkit_logs/fit_preempted/version_0/checkpoints/last.ckpt"
        assert f"SIGTERM received; saved {last}; exiting with status 143" in err
        assert "finished" not in out and "DistributedError" not in err
        ckpt = torch.load(last, weights_only=True)
        assert 0 < ckpt["loop"]["batches_done"] < 100  # stopped mid-epoch, where agreed
        assert not any(alive(pid) for pid in pids)
    finally:
        proc.kill()
