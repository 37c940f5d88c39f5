"""The loggers on their own: CSV columns growing without losing rows, one row per step (a
later write for the newest row's step merges into it, also after it reached the file),
race-free version folders across processes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lightkit as lk
from lightkit.loggers.base import flatten_params, make_version_dir

ROOT = Path(__file__).resolve().parents[2]


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def csv_logger(tmp_path: Path, every: int = 1) -> lk.CSVLogger:
    logger = lk.CSVLogger(flush_every_n_steps=every)
    logger.setup(tmp_path)
    return logger


def test_columns_grow_and_no_row_is_lost(tmp_path):
    log = csv_logger(tmp_path)
    log.log_metrics({"a": 1.0}, 0)
    log.log_metrics({"a": 2.0}, 1)
    log.log_metrics({"b": 0.1, "a": 3.0}, 2)
    log.log_metrics({"c": 7.0}, 3)
    log.finalize("success")
    header, rows = read(tmp_path / "metrics.csv")
    assert header == ["step", "a", "b", "c"]
    assert rows == [
        {"step": "0", "a": "1.0", "b": "", "c": ""},
        {"step": "1", "a": "2.0", "b": "", "c": ""},
        {"step": "2", "a": "3.0", "b": "0.1", "c": ""},
        {"step": "3", "a": "", "b": "", "c": "7.0"},
    ]


@pytest.mark.parametrize("every", [1, 2, 100])
def test_one_row_per_step_the_later_value_wins(tmp_path, every):
    """Writes for the step of the newest row merge into it, whether it is still buffered or
    already on disk (``every=1``: each write reached the file before the next came)."""
    log = csv_logger(tmp_path, every)
    log.log_metrics({"loss": 0.5, "epoch": 0.0}, 3)
    log.log_metrics({"val": 0.25, "epoch": 0.0}, 3)  # same step: joins the row
    log.log_metrics({"loss": 0.4, "epoch": 0.0}, 3)  # same step, another loss: replaces it
    log.log_metrics({"loss": 0.3, "epoch": 1.0}, 4)
    log.log_metrics({"loss": 0.2, "new": 9.0}, 4)  # a new column at a merge
    log.log_metrics({"loss": 0.1, "epoch": 1.0}, 5)
    log.finalize("success")
    header, rows = read(tmp_path / "metrics.csv")
    assert header == ["step", "loss", "epoch", "val", "new"]
    assert [tuple(r.values()) for r in rows] == [
        ("3", "0.4", "0.0", "0.25", ""),
        ("4", "0.2", "1.0", "", "9.0"),
        ("5", "0.1", "1.0", "", ""),
    ]


@pytest.mark.parametrize("every", [1, 100])
def test_the_same_step_in_another_epoch_is_a_row_of_its_own(tmp_path, every):
    # A last batch whose step returned None shares its step with the next epoch's first.
    log = csv_logger(tmp_path, every)
    log.log_metrics({"v": 5.0, "epoch": 0}, 5)
    log.log_metrics({"v": 0.0, "epoch": 1}, 5)
    log.finalize("success")
    assert [tuple(r.values()) for r in read(tmp_path / "metrics.csv")[1]] == [
        ("5", "5.0", "0"),
        ("5", "0.0", "1"),
    ]


@pytest.mark.parametrize("every", [1, 2, 100])
def test_a_merge_pending_when_the_run_fails_reaches_the_file(tmp_path, every):
    """The row taken back from the file for a merge is written again by ``finalize``."""
    log = csv_logger(tmp_path, every)
    for step in range(3):
        log.log_metrics({"loss": float(step)}, step)
    log.log_metrics({"loss": 7.0, "val": 8.0}, 2)  # takes step 2's row back (from disk if written)
    log.finalize("failed")
    _, rows = read(tmp_path / "metrics.csv")
    assert [tuple(r.values()) for r in rows] == [
        ("0", "0.0", ""),
        ("1", "1.0", ""),
        ("2", "7.0", "8.0"),
    ]


def test_a_merge_after_a_flush_appends_after_it(tmp_path):
    """A row taken back and merged is followed by the rows after it, in order."""
    log = csv_logger(tmp_path, 3)
    for step in range(3):  # flushed: three rows on disk
        log.log_metrics({"a": float(step)}, step)
    assert len(read(tmp_path / "metrics.csv")[1]) == 3
    log.log_metrics({"a": 20.0}, 2)
    assert len(read(tmp_path / "metrics.csv")[1]) == 2  # step 2's row is back in the buffer
    for step in range(3, 6):
        log.log_metrics({"a": float(step)}, step)
    log.finalize("success")
    _, rows = read(tmp_path / "metrics.csv")
    assert [(r["step"], r["a"]) for r in rows] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "20.0"),
        ("3", "3.0"),
        ("4", "4.0"),
        ("5", "5.0"),
    ]


def test_floats_round_trip_exactly(tmp_path):
    log = csv_logger(tmp_path)
    values = [0.1, 1 / 3, 1e-300, 123456789.123456789, float("nan"), float("inf")]
    for i, v in enumerate(values):
        log.log_metrics({"x": v}, i)
    log.finalize("success")
    _, rows = read(tmp_path / "metrics.csv")
    got = [float(r["x"]) for r in rows]
    assert got[:4] == values[:4] and got[4] != got[4] and got[5] == float("inf")


def test_tensorboard_buffers_rows_until_a_flush_and_names_tags_as_tensorboardx(tmp_path):
    from tensorboardX.summary import scalar

    from tests.loggers.tb_events import all_events, scalars

    names = ["train/loss", "a b", "/lead/x", "ok/x.y-z", "acc@1", "ünï"]
    log = lk.TensorBoardLogger(flush_every_n_steps=2)
    log.setup(tmp_path)
    log.log_hparams({"lr": 0.1})  # the session start: written at once
    log.log_metrics({name: 1.0 for name in names}, 0)
    assert scalars(tmp_path) == {}  # buffered
    log.log_metrics({"train/loss": 0.5, "epoch": 0}, 1)
    expected = {scalar(name, 1.0).value[0].tag: [(0, 1.0)] for name in names}
    expected["train/loss"].append((1, 0.5))
    assert scalars(tmp_path) == {**expected, "epoch": [(1, 0.0)]}
    log.log_metrics({"train/loss": float("nan")}, 2)
    log.finalize("success")  # writes what is buffered, before the session's end
    (step, value) = scalars(tmp_path)["train/loss"][2]
    assert step == 2 and math.isnan(value)
    tags = [value.tag for event in all_events(tmp_path) for value in event.summary.value]
    assert tags.index("train/loss") < tags.index("_hparams_/session_end_info") == len(tags) - 1


def test_hparams_json(tmp_path):
    log = csv_logger(tmp_path)
    log.log_hparams(
        {
            "lr": 0.1,
            "name": "x",
            "dims": (1, 2),
            "flag": True,
            "none": None,
            "opts": {"a": [1, 2]},
            "act": torch.nn.ReLU,
        }
    )
    data = json.loads((tmp_path / "hparams.json").read_text())
    assert data == {
        "hparams": {
            "lr": 0.1,
            "name": "x",
            "dims": [1, 2],
            "flag": True,
            "none": None,
            "opts": {"a": [1, 2]},
            "act": "<class 'torch.nn.modules.activation.ReLU'>",
        }
    }
    log.log_hparams({"lr": 0.1}, {"val/loss": 0.5})
    assert json.loads((tmp_path / "hparams.json").read_text())["metrics"] == {"val/loss": 0.5}
    assert flatten_params({"k": 3}) == {"k": 3}
    # Nested dicts become one hyperparameter per item, as Lightning shows them.
    assert flatten_params({"opts": {"a": [1, 2], "b": {"c": 0.5}}, "empty": {}}) == {
        "opts/a": "[1, 2]",
        "opts/b/c": 0.5,
        "empty": "{}",
    }


def test_nothing_written_without_a_folder():
    log = lk.CSVLogger()
    log.log_metrics({"a": 1.0}, 0)
    log.finalize("failed")  # no setup: nothing to write, no error
    with pytest.raises(RuntimeError, match="setup"):
        _ = log.metrics_file


def test_version_folders(tmp_path):
    assert make_version_dir(tmp_path / "x").name == "version_0"
    (tmp_path / "x" / "version_7").mkdir()
    (tmp_path / "x" / "version_notes").mkdir()
    assert make_version_dir(tmp_path / "x").name == "version_8"
    assert make_version_dir(tmp_path / "x", 3).name == "version_3"
    assert make_version_dir(tmp_path / "x", "final").name == "final"


@pytest.mark.parametrize(
    ("cls", "option", "value", "expected"),
    [
        (lk.CSVLogger, "version", 1.5, "an int (version_<int>), a folder name or None"),
        (lk.CSVLogger, "version", True, "an int (version_<int>), a folder name or None"),
        (lk.TensorBoardLogger, "name", 3, "a folder name or None"),
        (lk.CSVLogger, "save_dir", 5, "a folder path or None"),
        (lk.TensorBoardLogger, "log_graph", "yes", "True or False"),
    ],
)
def test_bad_options_are_refused_by_name(cls, option, value, expected):
    with pytest.raises(lk.ConfigError) as err:
        cls(**{option: value})
    assert err.value.code == "bad-plugin-argument"
    assert str(err.value) == f"{cls.__name__}({option}={value!r}): {option} must be {expected}."


@pytest.mark.parametrize("option", [{"name": "baseline"}, {"version": 7}])
def test_name_and_version_need_a_save_dir(option):
    # Without save_dir the logger writes into the run folder, which the trainer numbers:
    # a pinned name or version would be dropped without a word.
    ((key, value),) = option.items()
    with pytest.raises(
        lk.ConfigError, match=rf"^CSVLogger\({key}={value!r}\): {key} picks a folder "
    ):
        lk.CSVLogger(**option)


def test_good_options_are_kept(tmp_path):
    log = lk.CSVLogger(save_dir=tmp_path, name="", version=3)
    assert (log.save_dir, log.name, log.version) == (tmp_path, "", 3)
    assert lk.TensorBoardLogger(save_dir=str(tmp_path), version="final", log_graph=True)


# Each process gets ready (imports done), says so with a file, and spins until the "go" file
# appears, so both reach the critical part within microseconds of each other.
GATE = """
import os, sys
from pathlib import Path
gate = Path(sys.argv[2])
(gate / f"ready-{os.getpid()}").touch()
while not (gate / "go").exists():
    pass
"""

# Loads loggers/base.py alone (it needs no torch), so the processes start in a blink.
RACE = (
    textwrap.dedent(
        f"""
    import importlib.util, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("base", {str(ROOT / "lightkit/loggers/base.py")!r})
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    make_version_dir = base.make_version_dir
    parent = Path(sys.argv[1])
    """
    )
    + GATE
    + 'print(" ".join(make_version_dir(parent).name for _ in range(25)))\n'
)

FIT = (
    textwrap.dedent(
        """
    import sys
    from tests.callbacks.cb_helpers import spec, trainer
    s = spec()
    t = trainer(sys.argv[1], logger=True, max_epochs=1)
    """
    )
    + GATE
    + "print(t.fit(s).log_dir.name)\n"
)


def run_together(script: str, arg: Path, gate: Path, n: int = 2) -> list[str]:
    import time

    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(arg), str(gate)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < n and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    (gate / "go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip().splitlines()[-1])
    return outs


def test_two_processes_never_share_a_version(tmp_path):
    a, b = (set(out.split()) for out in run_together(RACE, tmp_path / "runs", tmp_path / "gate"))
    assert len(a) == len(b) == 25 and not (a & b)
    assert a | b == {f"version_{i}" for i in range(50)}


def test_two_trainers_started_at_once_get_their_own_folders(tmp_path):
    names = run_together(FIT, tmp_path, tmp_path / "gate")
    assert sorted(names) == ["version_0", "version_1"]
    for name in names:
        run = tmp_path / "lightkit_logs" / "cb_helpers" / name
        header, rows = read(run / "metrics.csv")
        assert header[0] == "step" and "train/loss" in header and len(rows) == 1
