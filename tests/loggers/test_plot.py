"""lk.plot_metrics: a PNG of the curves in metrics.csv, and clear errors."""

from __future__ import annotations

import sys

import pytest

import lightkit as lk
from lightkit.plot import read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "lightkit_logs" / "demo" / "version_0"
    run.mkdir(parents=True)
    log = lk.CSVLogger()
    log.setup(run)
    for step in range(30):
        log.log_metrics({"train/loss": 1 / (step + 1), "epoch": float(step // 10)}, step)
        if step % 10 == 9:
            log.log_metrics({"val/loss": 2 / (step + 1), "val/acc": step / 30}, step)
    log.finalize("success")
    return run


def test_reads_each_curve(run_dir):
    curves = read_metrics(run_dir / "metrics.csv")
    assert set(curves) == {"train/loss", "val/loss", "val/acc"}
    steps, values = curves["val/loss"]
    assert steps == [9.0, 19.0, 29.0] and values == [0.2, 0.1, 2 / 30]
    assert len(curves["train/loss"][0]) == 30


def test_writes_a_png(run_dir):
    out = lk.plot_metrics(run_dir)
    assert out == run_dir / "metrics.png"
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_finds_the_newest_run_below_a_folder_and_honours_options(run_dir, tmp_path):
    out = lk.plot_metrics(
        tmp_path / "lightkit_logs", output=tmp_path / "p" / "x.png", metrics=["val/acc"]
    )
    assert out == tmp_path / "p" / "x.png" and out.read_bytes().startswith(PNG)


def test_errors(run_dir, tmp_path, monkeypatch):
    with pytest.raises(lk.LightkitError, match="no such file") as info:
        lk.plot_metrics(tmp_path / "nope")
    assert info.value.code == "no-metrics-file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(lk.LightkitError, match=r"no metrics\.csv"):
        lk.plot_metrics(tmp_path / "empty")
    with pytest.raises(lk.LightkitError, match="val/f1 not in") as info:
        lk.plot_metrics(run_dir, metrics=["val/f1"])
    assert info.value.code == "unknown-metric"
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(lk.LightkitError, match=r"pip install \"lightkit\[plot\]\"") as info:
        lk.plot_metrics(run_dir)
    assert info.value.code == "missing-dependency"
