"""Joining a job started outside: torchrun, and processes given torchrun's variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightkit.runtime.environment import free_port, local_rank_env
from tests.distributed.programs import N_TRAIN
from tests.distributed.support import ROOT, SCRIPTS, run_torchrun


def _results(run_dir: Path) -> list[dict]:
    files = sorted(run_dir.glob("results-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_torchrun_runs_a_script(tmp_path: Path) -> None:
    proc = run_torchrun(
        "fit_each_rank.py",
        "3",  # three fits in each process: each joins a new group through torchrun's store
        cwd=tmp_path,
        RUN_DIR=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert sorted(r["rank"] for r in results) == [0, 0, 0, 1, 1, 1]
    assert all(r["global_step"] == N_TRAIN // 64 for r in results)  # 32 per rank per batch
    for run in range(3):  # the same metrics on every rank
        same_run = [r["metrics"] for r in results if r["run"] == run]
        assert same_run[0] == same_run[1]
    assert not any(r["world"] for r in results)  # the group is gone after fit
    assert all(r["threads_left"] == 0 for r in results)


@pytest.mark.skipif(os.environ.get("LIGHTKIT_SKIP_STRESS") == "1", reason="LIGHTKIT_SKIP_STRESS=1")
def test_twenty_fits_in_a_row_never_hang(tmp_path: Path) -> None:
    """Twenty 2-rank fits in the same two processes, each joining and destroying its group
    (30 s per fit at most), then a normal interpreter exit (where a group that outlived its
    destroy could deadlock)."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPTS / "fit_each_rank.py"), "20"],
            env={
                **os.environ,
                **local_rank_env(rank, 2, port, launched=False),
                "PYTHONPATH": str(ROOT),
                "PYTHONWARNINGS": "ignore",
                "RUN_DIR": str(tmp_path),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
        )
        for rank in range(2)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=150)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            p.kill()
    results = _results(tmp_path)
    assert len(results) == 40
    assert all(r["threads_left"] == 0 for r in results)  # no gloo thread outlives a fit


@pytest.mark.skipif(os.environ.get("LIGHTKIT_SKIP_STRESS") == "1", reason="LIGHTKIT_SKIP_STRESS=1")
def test_twenty_launches_in_a_row_never_hang(tmp_path: Path) -> None:
    code = (
        "import lightkit as lk, signal, time\n"
        "from lightkit.strategies.ddp import DDPStrategy\n"
        "from tests.distributed import programs\n"
        "spec = lk.collect(programs)\n"
        "t = lk.Trainer(accelerator='cpu', devices=2, strategy=DDPStrategy(start_method='fork'),"
        " precision='64-true', max_epochs=1, num_sanity_val_steps=0, enable_progress_bar=False,"
        " enable_model_summary=False, enable_checkpointing=False, logger=False)\n"
        "for i in range(20):\n"
        "    start = time.monotonic()\n"
        "    signal.alarm(30)\n"  # per run: a hang ends the process with SIGALRM
        "    r = t.fit(spec)\n"
        "    signal.alarm(0)\n"
        "    assert r.global_step == 4, r\n"
        "    print('RUN', i, round(time.monotonic() - start, 2), flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RUN ") == 20


def test_lightkit_ddp_is_bitwise_a_hand_written_ddp_loop() -> None:
    """bench/ddp_overhead.py's check, once: two joined ranks, float32, the same weights."""
    bench = str(ROOT / "bench" / "ddp_overhead.py")
    proc = subprocess.run(
        [sys.executable, bench, "--variant", "fixed", "--reps", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["weights_equal"] is True
