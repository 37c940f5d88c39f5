"""The benchmark suite runs (``bench/run.py``), at a tiny size. No timed assertions: speed is
what the suite reports, not what tests check. What is checked: every implementation trains
the same weights as the hand-written loop, the measurements come back complete, and the
suite writes its JSON, Markdown and chart."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import common, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize(
    "case",
    [
        replace(common.CASES["tiny-defaults"], steps=8),
        replace(common.CASES["compute"], hidden=64, steps=4),
    ],
    ids=["defaults", "compute"],
)
def test_raw_and_lightkit_measure_the_same_training(case):
    got = {
        impl: common.measure_train(common.job_for("train", impl, case))
        for impl in ("raw", "lightkit")
    }
    assert got["raw"]["digest"] == got["lightkit"]["digest"]  # bitwise-equal weights
    for r in got.values():
        assert r["timed_steps"] == case.steps - case.warmup > 0
        assert r["us_per_step_cpu"] > 0 and r["us_per_step_wall"] > 0
        assert r["peak_rss_mb"] > 0


def test_checkpoint_measure_round_trips(tmp_path):
    for impl in ("raw", "lightkit"):
        job = common.job_for("checkpoint", impl, params_m=0.5, repeats=1, dir=str(tmp_path))
        r = common.measure_checkpoint(job)
        assert r["loaded_equal"] and r["save_s"] > 0 and r["load_s"] > 0
        assert 4 * 0.4e6 < r["file_mb"] * 1e6 < 4 * 0.6e6 + 1e5  # fp32 weights and a header
    assert not any(tmp_path.iterdir())


def test_the_suite_writes_its_results(tmp_path):
    """Figures a (every implementation installed, fresh processes) and d (two ranks) end to
    end, each measured once."""
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--only", "a,d"]
    cmd += ["--out-dir", str(tmp_path), "--quiet", "--timeout", "120"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    impls = result["meta"]["impls"]
    assert impls[:2] == ["raw", "lightkit"]
    assert ("lightning" in impls) == (common.lightning_name() is not None)
    for key in ("a", "d"):
        measured = [*impls, common.RAW_AFTER_LIGHTKIT]
        rows = result["figures"][key]["rows"]
        assert set(rows) == set(measured)
        for impl in measured:
            assert rows[impl]["runs"] == 1, result["records"]
            if impl != "raw":
                assert rows[impl]["same_weights_as_raw"] is True
                assert rows[impl]["x_raw_cpu"]["n"] == 1
        assert result["figures"][key]["rows"]["lightkit"]["x_raw_after_lightkit"]["n"] == 1
    text = (tmp_path / "results.md").read_text()
    assert f"{common.RAW_AFTER_LIGHTKIT}: the hand-written loop in a process" in text
    assert "## (a) Per-step time, tiny MLP, features off" in text
    assert "## (d) Per-step time, 2-rank DDP on gloo" in text
    assert (tmp_path / "results.png").exists() == _has_matplotlib()


def test_heap_state_reports_every_mode():
    """``bench/heap_state.py`` at a tiny size: every child runs and the summary is printed."""
    cmd = [sys.executable, str(ROOT / "bench" / "heap_state.py"), "--reps", "1", "--steps", "16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["nothing", "lightkit", "fragmented"]
    assert "a short lightkit fit in between costs the raw loop" in lines[4]
    assert "a heap fragmented on purpose (no lightkit) costs it" in lines[5]


def test_figures_and_groups_are_consistent():
    groups = run.make_groups(quick=False, size="full")
    for fig in run.FIGURES:
        assert fig.group in groups
    assert run.groups_for(["e"]) == ["import", "tiny"]
    assert common.CASES["tiny"].samples == 64 * 1024 // 2


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_median_interval_brackets_the_median():
    values = [1.0, 1.04, 0.97, 1.01, 1.2, 0.99, 1.02, 1.03, 0.98]
    low, high = common.median_interval(values)
    assert min(values) <= low <= 1.01 <= high <= max(values)
    assert high - low < max(values) - min(values)  # one outlier does not stretch it
    assert common.median_interval(values) == (low, high)  # reruns agree
    assert common.median_interval([1.0, 1.1, 0.9, 1.0]) is None  # too few pairs to say


def test_overhead_reports_lightkit_and_the_control_against_raw(capsys):
    from bench import overhead

    small = overhead.Variant(
        "small", hidden=8, batch_size=8, steps=16, optimizer="sgd", log_loss=True
    )
    r = overhead.measure(small, reps=5, control=True)
    assert r["bitwise_equal"] and r["steps"] == 16
    for figures in (r["cpu"], r["control"]["cpu"]):
        low, high = figures["ratio_median_ci95"]
        assert figures["ratio_min"] <= low <= figures["ratio_median"] <= high
        assert high <= figures["ratio_max"]
    overhead.print_rows(r, "raw again", r["control"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line.startswith("small     raw again") for line in printed)


def test_the_verdict_says_when_the_target_is_inside_the_noise():
    def entry(ci):
        ratio = {"median": 1.01, "median_ci95": ci}
        return {"target": 1.02, "rows": {"lightkit": {"x_raw_cpu": ratio}}}

    assert "cannot tell" in run._noise(entry((0.99, 1.04)), "cpu")
    assert "outside it" in run._noise(entry((1.00, 1.015)), "cpu")
    assert run._noise(entry(None), "cpu") == ""  # one repetition: nothing to say


def test_the_gpu_check_tries_every_path_on_the_cpu():
    """``bench/gpu_check.py --cpu-dry-run``: the GPU check's code at a tiny size on the CPU
    (its two-rank DDP and FSDP children on gloo), so a script that only a GPU machine runs
    cannot rot unseen. Its figures are not checked, only that every check ran and passed."""
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu-dry-run"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1].removeprefix("SUMMARY "))
    assert summary["failed"] == [] and summary["cuda"] is False
    precisions = summary["precisions"]
    assert list(precisions) == [
        "32-true",
        "64-true",
        "16-mixed",
        "bf16-mixed",
        "16-true",
        "bf16-true",
    ]
    dtypes = {name: row["param_dtype"] for name, row in precisions.items()}
    assert dtypes == {
        "32-true": "float32",
        "64-true": "float64",
        "16-mixed": "float32",
        "bf16-mixed": "float32",
        "16-true": "float16",
        "bf16-true": "bfloat16",
    }
    assert all(row["last_loss"] < row["first_loss"] for row in precisions.values())
    for strategy in ("ddp", "fsdp"):
        assert summary["distributed"][strategy]["global_step"] == 6
    assert summary["throughput"]["ok"] and summary["throughput"]["raw_tokens_per_s"] > 0


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="the no-GPU answer needs a machine without one"
)
def test_the_gpu_check_says_it_has_nothing_to_do_without_a_gpu():
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to check" in proc.stdout
    assert json.loads(proc.stdout.splitlines()[-1].removeprefix("SUMMARY "))["cuda"] is False
