"""Fixtures for the command line's tests: run ``lightkit`` in-process and read what it said."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lightkit import cli

ROOT = Path(__file__).resolve().parents[2]

#: The tiny program the tests train (a model, data for every stage, hyperparameters of every
#: kind) and the module of hooks that record the order things run in.
TINY = "tests.user_modules.cli_tiny"
EVENTS_MODULE = "tests.user_modules.cli_events"

#: Flags that keep a test's run quiet.
QUIET = ["--no-enable-progress-bar", "--no-enable-model-summary"]


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets are module names and paths relative to the repository root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``run_cli("fit", TINY, "--lr", "0.1")`` -> ``(exit code, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a run starts: bad input must be refused before anything is built."""
    import lightkit as lk

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run started although the input was bad")

    monkeypatch.setattr(lk.Trainer, "_run", refuse)
