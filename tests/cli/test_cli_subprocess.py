"""The command line as users start it: the ``lightkit`` script, ``python -m lightkit``, and
``torchrun -m lightkit``. Each start costs an interpreter and torch, so these are few."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--no-enable-progress-bar", "--no-enable-model-summary"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_python_m_lightkit_fit_writes_a_run(tmp_path):
    result = run(
        sys.executable, "-m", "lightkit", "fit", "tests/user_modules/cli_tiny.py",
        "--lr", "0.01", "--hidden", "6", "--max-epochs", "1", "--default-root-dir", str(tmp_path),
        "--logger", "csv", *QUIET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"
    assert f"run folder: {run_dir}" in result.stdout
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["hparams"]["lr"] == 0.01 and spec["hparams"]["hidden"] == 6
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "train/loss", "val/loss"} <= set(rows[0])


def test_the_lightkit_script_reports_bad_input_without_a_traceback(tmp_path):
    script = shutil.which("lightkit")
    command = [script] if script else [sys.executable, "-m", "lightkit"]
    bad = tmp_path / "syntax_error_target.py"
    bad.write_text("import lightkit as lk\n\ndef broken(:\n")
    result = run(*command, "fit", str(bad), "--max-epochs", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("lightkit fit: error: cannot import")
    assert f"syntax error at {bad}:3" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.skipif(shutil.which("lightkit") is None, reason="the lightkit script is not installed")
def test_the_lightkit_script_finds_modules_and_files_as_python_m_does(tmp_path):
    # The script starts with its own folder on sys.path, not the working directory as
    # `python -m lightkit` does; module targets must be found there all the same.
    (tmp_path / "lk_sub_pkg").mkdir()
    (tmp_path / "lk_sub_pkg" / "__init__.py").touch()
    (tmp_path / "lk_sub_pkg" / "model.py").write_text(
        "import lightkit as lk\n\n@lk.model\ndef net(width: int = 3):\n    return width\n"
    )
    (tmp_path / "lk_sub_regmod.py").write_text(
        "import lightkit as lk\n\nreg = lk.Registry()\n\n@reg.training_step\n"
        "def train(net, batch, lr: float = 0.1):\n    return batch\n"
    )
    (tmp_path / "sub").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def lightkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        command = [str(shutil.which("lightkit")), *args]
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    result = lightkit(
        "hparams", "lk_sub_pkg.model", "lk_sub_regmod:reg", "--format", "json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["width", "lr"]
    # A file's import path does not depend on the folder the command runs in.
    result = lightkit(
        "spec", "../lk_sub_pkg/model.py", "../lk_sub_regmod.py:reg", cwd=tmp_path / "sub"
    )
    assert result.returncode == 0, result.stderr
    refs = [f["fn"] for f in json.loads(result.stdout)["functions"]]
    assert refs == ["lk_sub_pkg.model:net", "lk_sub_regmod:train"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_torchrun_runs_the_command_line_on_two_ranks(tmp_path):
    result = run(
        "torchrun", "--nproc-per-node", "2", "--master-port", "29517", "-m", "lightkit", "fit",
        "tests.user_modules.cli_tiny", "--max-epochs", "1", "--accelerator", "cpu",
        "--default-root-dir", str(tmp_path), "--logger", "csv", "--no-enable-checkpointing",
        *QUIET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # 24 samples over 2 ranks in batches of 4: 3 steps each; only rank 0 prints and writes.
    assert result.stdout.count("stopped by max_epochs after 1 epoch(s), 3 step(s)") == 1
    assert [p.name for p in (tmp_path / "lightkit_logs" / "cli_tiny").iterdir()] == ["version_0"]


SCRIPT = """\
import torch, lightkit as lk
from torch import nn

@lk.model
def net():
    return nn.Linear(2, 1)

@lk.train_data
def data():
    return [(torch.ones(2, 2), torch.ones(2, 1))]

@lk.training_step
def step(net, batch):
    return ((net(batch[0]) - batch[1]) ** 2).mean()

@lk.configure_optimizers
def optim(net, lr: float = 0.1):
    return torch.optim.SGD(net.parameters(), lr=lr)

if __name__ == "__main__":
    lk.Trainer(max_epochs=1, seed=0, default_root_dir=ROOT, logger=False,
               enable_progress_bar=False, enable_model_summary=False).fit(lk.collect())
"""


def test_a_scripts_run_folder_says_which_target_reruns_it(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("ROOT", repr(str(tmp_path))))
    assert run(sys.executable, str(script)).returncode == 0
    config = tmp_path / "lightkit_logs" / "train" / "version_0" / "config.toml"  # the script's name
    text = config.read_text()
    assert f'target = ["{script}"] reruns it' in text  # in the file's header comment
    refused = run(sys.executable, "-m", "lightkit", "fit", "--config", str(config))
    assert refused.returncode == 2
    assert "names no target: its run's functions came from a script" in refused.stderr
    assert f'Add target = ["{script}"] at its top' in refused.stderr  # the script it names
    config.write_text(f'target = ["{script}"]\n' + text)  # what the comment says to do
    rerun = run(sys.executable, "-m", "lightkit", "fit", "--config", str(config), *QUIET)
    assert rerun.returncode == 0, rerun.stderr
    assert (
        tmp_path / "lightkit_logs" / "train" / "version_1"
    ).is_dir()  # beside the script's own run


def test_two_scripts_in_one_folder_keep_their_runs_apart(tmp_path):
    # Each script's run folder is named after its file, so `ckpt_path="last"` in one never
    # resumes the other's training, as a module's runs never mix with another module's.
    fit_last = (
        SCRIPT.replace("ROOT", repr(str(tmp_path)))
        .replace("fit(lk.collect())", 'fit(lk.collect(), ckpt_path="last"); print(r.global_step)')
        .replace("lk.Trainer(", "r = lk.Trainer(")
    )
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(fit_last)
    first = run(sys.executable, str(tmp_path / "a.py"))
    again = run(sys.executable, str(tmp_path / "a.py"))
    other = run(sys.executable, str(tmp_path / "b.py"))
    assert [p.stdout.split()[-1] for p in (first, again, other)] == ["1", "1", "1"]
    assert "no checkpoint found" in other.stderr  # b starts from scratch, and says where a's are
    assert (
        "/b/version_*/checkpoints); training starts from scratch. Runs of other programs (a)"
        in (other.stderr)
    )
    assert "no checkpoint found" not in again.stderr  # a resumed its own: nothing left
    runs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("lightkit_logs/*/*"))
    assert runs == [
        "lightkit_logs/a/version_0",
        "lightkit_logs/a/version_1",
        "lightkit_logs/b/version_0",
    ]
