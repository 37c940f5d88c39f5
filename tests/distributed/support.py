"""Helpers of the multi-process tests (imported by the tests and their conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
#: float64 runs: two ranks and one process agree to rounding.
ATOL = 1e-12


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == torch.float64
        torch.testing.assert_close(sa[key], sb[key], atol=ATOL, rtol=0, msg=key)


def reference_flags(root: Path) -> dict[str, Any]:
    """Quiet CPU float64 runs; other helpers own the callbacks and loggers."""
    return {
        "accelerator": "cpu",
        "precision": "64-true",
        "seed": 0,
        "max_epochs": 2,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
        "default_root_dir": str(root),
    }


def run_script(
    name: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` in a fresh interpreter with the repository importable."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **env}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        cwd=str(ROOT),
    )


def run_torchrun(
    name: str,
    *args: str,
    cwd: Path,
    torchrun_args: tuple[str, ...] = (),
    timeout: float = 180,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` as a 2-process torchrun job (``torchrun_args`` before the script;
    a free ``--master-port`` unless they say ``--standalone``)."""
    from lightkit.runtime.environment import free_port

    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **env}
    rendezvous = [] if "--standalone" in torchrun_args else ["--master-port", str(free_port())]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    return subprocess.run(
        [*command, *rendezvous, *torchrun_args, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        cwd=str(cwd),
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
