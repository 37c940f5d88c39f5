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
from tests.distributed.support import ROOT, SCRIPTS


def _results(stdout: str) -> list[dict]:
    return [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]


def test_torchrun_runs_a_script(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "RUN_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            str(SCRIPTS / "fit_each_rank.py"),
            "3",  # three fits in each process: each joins a new group through torchrun's store
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(proc.stdout)
    assert sorted(r["rank"] for r in results) == [0, 0, 0, 1, 1, 1]
    assert all(r["global_step"] == N_TRAIN // 64 for r in results)  # 32 per rank per batch
    for run in range(3):  # the same metrics on every rank
        same_run = [r["metrics"] for r in results if r["run"] == run]
        assert same_run[0] == same_run[1]
    assert not any(r["world"] for r in results)  # the group is gone after fit
    assert all(r["threads_left"] == 0 for r in results)


@pytest.mark.skipif(os.environ.get("LIGHTKIT_SKIP_STRESS") == "1", reason="LIGHTKIT_SKIP_STRESS=1")
def test_twenty_fits_in_a_row_never_hang(tmp_path: Path) -> None:
    """Twenty 2-rank fits, each joining and destroying the group, then a normal interpreter
    exit (where a group outliving its destroy could deadlock); and twenty launches."""
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
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=150)
            assert p.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for p in procs:
            p.kill()
    results = [r for out in outs for r in _results(out)]
    assert len(results) == 40
    assert all(r["threads_left"] == 0 for r in results)  # no gloo thread outlives a fit


@pytest.mark.skipif(os.environ.get("LIGHTKIT_SKIP_STRESS") == "1", reason="LIGHTKIT_SKIP_STRESS=1")
def test_twenty_launches_in_a_row_never_hang(tmp_path: Path) -> None:
    code = (
        "import lightkit as lk, time\n"
        "from lightkit.strategies.ddp import DDPStrategy\n"
        "from tests.distributed import programs\n"
        "spec = lk.collect(programs)\n"
        "t = lk.Trainer(accelerator='cpu', devices=2, strategy=DDPStrategy(start_method='fork'),"
        " precision='64-true', max_epochs=1, num_sanity_val_steps=0, enable_progress_bar=False,"
        " enable_model_summary=False, enable_checkpointing=False, logger=False)\n"
        "for i in range(20):\n"
        "    start = time.monotonic()\n"
        "    r = t.fit(spec)\n"
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
