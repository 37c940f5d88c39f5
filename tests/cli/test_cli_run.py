"""Runs through the command line, in-process: what a fit writes, reproducing a run from its
printed config, the other entry points, and ``explain`` against a recorded real fit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import lightkit as lk
from tests.cli.conftest import EVENTS_MODULE, QUIET, TINY
from tests.user_modules import cli_events, cli_tiny

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def last_row(run_dir: Path, column: str) -> float:
    with open(run_dir / "metrics.csv") as f:
        values = [row[column] for row in csv.DictReader(f) if row.get(column)]
    return float(values[-1])


def test_fit_with_overrides_writes_the_run_folder_and_matches_the_python_api(run_cli, tmp_path):
    flags = ["--max-epochs", "2", "--seed", "0", "--default-root-dir", str(tmp_path), *QUIET]
    code, out, err = run_cli(
        "fit", TINY, "--lr", "0.01", "--hidden", "8", "--init", "zeros", *flags
    )
    assert code == 0, err
    run_dir = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"
    assert f"run folder: {run_dir}" in out
    assert "stopped by max_epochs after 2 epoch(s), 12 step(s)" in out
    for name in ("metrics.csv", "spec.json", "config.json", "config.toml"):
        assert (run_dir / name).is_file(), name
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["hparams"]["lr"] == 0.01 and spec["hparams"]["hidden"] == 8
    assert spec["hparams"]["init"] == "zeros"
    written = tomllib.loads((run_dir / "config.toml").read_text())
    assert written["target"] == [TINY]
    assert written["hparams"]["lr"] == 0.01 and written["trainer"]["max_epochs"] == 2
    # The same run through the Python API gives the same numbers, bit for bit.
    api = lk.Trainer(
        max_epochs=2, seed=0, default_root_dir=tmp_path / "api", logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    ).fit(lk.collect(cli_tiny).with_hparams(lr=0.01, hidden=8, init="zeros"))  # fmt: skip
    assert last_row(run_dir, "val/loss") == pytest.approx(api.metrics["val/loss"], rel=1e-6)
    assert f"val/loss    {api.metrics['val/loss']:.6g}" in out


def test_the_run_folders_config_json_loads_back_with_its_objects(run_cli, tmp_path):
    code, _, err = run_cli(
        "fit", TINY, "--max-epochs", "1", "--default-root-dir", str(tmp_path), "--logger",
        "csv", "--callbacks", "EarlyStopping(monitor='val/loss', patience=5)", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    (run_dir,) = (tmp_path / "lightkit_logs" / "cli_tiny").iterdir()
    config = lk.TrainerConfig.model_validate_json((run_dir / "config.json").read_text())
    early = next(cb for cb in config.callbacks if isinstance(cb, lk.EarlyStopping))
    assert (early.monitor, early.patience) == ("val/loss", 5)
    assert type(config.logger) is lk.CSVLogger
    assert config.max_epochs == 1


def test_a_printed_config_reproduces_the_run(run_cli, tmp_path):
    args = [
        TINY, "--lr", "0.02", "--activation", "tanh", "--betas", "0.8", "0.9", "--max-epochs",
        "1", "--seed", "3", "--default-root-dir", str(tmp_path), "--logger", "csv", *QUIET,
    ]  # fmt: skip
    code, printed, err = run_cli("fit", *args, "--print-config")
    assert code == 0, err
    code, _, err = run_cli("fit", *args)
    assert code == 0, err
    config = tmp_path / "printed.toml"
    config.write_text(printed)
    code, _, err = run_cli("fit", "--config", str(config))
    assert code == 0, err
    first, again = (tmp_path / "lightkit_logs" / "cli_tiny" / f"version_{i}" for i in (0, 1))
    hparams = [json.loads((d / "spec.json").read_text())["hparams"] for d in (first, again)]
    assert hparams[0] == hparams[1]
    assert hparams[1]["lr"] == 0.02 and hparams[1]["activation"] == "tanh"
    assert last_row(first, "val/loss") == last_row(again, "val/loss")
    # The run folder's own config.toml reproduces it as well.
    code, _, err = run_cli("fit", "--config", str(first / "config.toml"))
    assert code == 0, err
    third = tmp_path / "lightkit_logs" / "cli_tiny" / "version_2"
    assert last_row(third, "val/loss") == last_row(first, "val/loss")


def test_validate_test_and_predict(run_cli, tmp_path):
    flags = ["--default-root-dir", str(tmp_path), "--logger", "false", *QUIET]
    code, out, err = run_cli("validate", TINY, *flags)
    assert code == 0, err
    assert "val/loss" in out
    code, out, err = run_cli("test", "tests/user_modules/cli_tiny.py", *flags)
    assert code == 0, err
    assert "test/loss" in out
    output = tmp_path / "predictions.pt"
    code, out, err = run_cli("predict", TINY, "--hidden", "6", *flags, "--output", str(output))
    assert code == 0, err
    predictions = torch.load(output)
    assert [p.shape for p in predictions] == [(4, 1), (4, 1)]


def test_an_error_in_a_step_exits_1_naming_where_without_a_traceback(run_cli, tmp_path):
    target = tmp_path / "broken_step.py"
    target.write_text(
        "import torch\nimport lightkit as lk\n\n\n@lk.model\ndef net():\n"
        "    return torch.nn.Linear(2, 1)\n\n\n@lk.train_data\ndef data():\n"
        "    return [torch.zeros(2, 2)]\n\n\n@lk.training_step\ndef train(net, batch):\n"
        "    raise ValueError('the step is broken')\n\n\n@lk.configure_optimizers\n"
        "def optim(net):\n    return torch.optim.SGD(net.parameters(), lr=0.1)\n"
    )
    flags = ["--max-epochs", "1", "--logger", "false", "--no-enable-checkpointing", *QUIET]
    code, _, err = run_cli("fit", str(target), *flags)
    assert code == 1
    assert "lightkit fit: error: ValueError: the step is broken (in train at" in err
    assert "broken_step.py:17)" in err and "--traceback" in err and "Traceback (most" not in err


# -- explain -------------------------------------------------------------------------------------

EXPLAINED = [
    "--max-epochs", "2", "--accumulate-grad-batches", "2", "--val-check-interval", "3",
    "--log-every-n-steps", "2", "--callbacks", f"{EVENTS_MODULE}:EveryEpochCheckpoint",
    "--no-enable-progress-bar",
]  # fmt: skip


def ours(schedule: dict) -> list[str]:
    """What the recording hooks, steps and callback of the test modules append, in order."""
    names = []
    for entry in schedule["entries"]:
        for x in entry["listeners"]:
            if x["kind"] in ("hook", "step") or x["name"].startswith("EveryEpochCheckpoint."):
                names.append(x["name"])
    return names


def test_explain_orders_events_as_a_real_fit_runs_them(run_cli, tmp_path):
    cli_tiny.EVENTS.clear()
    code, out, err = run_cli("explain", TINY, EVENTS_MODULE, *EXPLAINED, "--format", "json")
    assert code == 0, err
    assert cli_tiny.EVENTS == []  # a dry run calls no user function
    assert not list(tmp_path.iterdir())
    schedule = json.loads(out)
    code, _, err = run_cli("fit", TINY, EVENTS_MODULE, *EXPLAINED, "--default-root-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert ours(schedule) == cli_tiny.EVENTS
    # The parts a test can count: 2 epochs x 6 batches, a step per window of 2, validation
    # after batches 3 and 6, checkpoints where ModelCheckpoint decided to save.
    whats = [e["what"] for e in schedule["entries"]]
    assert whats.count("training_step") == 12
    assert whats.count("optimizer_step") == 6
    assert whats.count("validation_epoch_start") == 1 + 4  # the sanity check, then 2 per epoch
    saves = [e for e in schedule["entries"] if e["what"] == "save_checkpoint"]
    assert [(e["epoch"], e["batch_idx"]) for e in saves] == [(0, 2), (0, None), (1, 2), (1, None)]
    assert cli_tiny.EVENTS.count("on_save_checkpoint") == len(saves)
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert checkpoints == ["epoch=1-step=6.ckpt", "last.ckpt"]


def test_explain_text_shows_the_schedule_and_who_runs_where(run_cli):
    code, out, err = run_cli("explain", TINY, EVENTS_MODULE, *EXPLAINED)
    assert code == 0, err
    lines = [line.rstrip() for line in out.splitlines()]
    start = lines.index("  epoch 0 (6 batches)")
    assert lines[start : start + 9] == [
        "  epoch 0 (6 batches)",
        "    train_epoch_start",
        "    each batch:      train_batch_start → training_step → before_backward → backward (loss / 2) → after_backward",
        "    batches 1, 3, 5: before_optimizer_step → optimizer_step → zero_grad",
        "    each batch:      train_batch_end",
        "    batches 2, 5:    validation run (2 batches)",
        "    batch 2:         save_checkpoint (ModelCheckpoint)",
        "    batch 3:         write_logs",  # every 2nd optimizer step: global step 2
        "    train_epoch_end → write_logs → save_checkpoint (ModelCheckpoint)",
    ]  # fmt: skip
    # Global steps 4 and 6 end in epoch 1, at its batches 1 and 5.
    assert lines[start + 9] == "  epoch 1 (6 batches)"
    assert "    batches 1, 5:    write_logs" in lines[start + 10 : start + 19]
    assert "    step     train(net, batch, batch_idx)  at tests/user_modules/cli_tiny.py:" in out
    assert "    hook     on_before_backward(loss)  at tests/user_modules/cli_events.py:" in out
    assert "    callback EveryEpochCheckpoint.on_train_epoch_end(ctx, net)" in out
    assert "    hook     on_save_checkpoint(checkpoint)" in out
    assert "optim(net, lr=0.05" not in out  # configure_optimizers runs once, not in the loop


def test_explain_takes_each_rank_s_share_of_the_data(run_cli):
    code, out, err = run_cli(
        "explain", TINY, "--devices", "2", "--accelerator", "cpu", "--max-steps", "2",
        "--accumulate-grad-batches", "2", "--format", "json", "--no-enable-checkpointing",
    )  # fmt: skip
    assert code == 0, err
    schedule = json.loads(out)
    assert schedule["facts"]["world_size"] == 2
    assert schedule["facts"]["train_batches"] == 3  # 24 samples / 2 ranks / batches of 4
    backward = [e["detail"] for e in schedule["entries"] if e["what"] == "backward"]
    # Batches 0-1 are a window (no all-reduce inside it); batch 2 ends the epoch, so its
    # window of one steps, and that is max_steps.
    assert backward == ["loss / 2, no gradient sync", "loss / 2", "loss / 2"]
    assert sum(e["what"] == "optimizer_step" for e in schedule["entries"]) == 2


def test_explain_other_stages_and_manual_optimization(run_cli):
    code, out, err = run_cli("explain", TINY, "--stage", "test")
    assert code == 0, err
    assert "test run (2 batches)" in out and "test(net, batch)" in out
    code, out, err = run_cli(
        "explain", "tests.user_modules.realistic", "--max-epochs", "1", "--format", "json"
    )
    assert code == 0, err
    schedule = json.loads(out)
    assert schedule["facts"]["manual_optimization"] is True
    whats = {e["what"] for e in schedule["entries"]}
    assert "training_step" in whats and "backward" not in whats  # the step does it itself
    # Listeners of events a run reaches only when something happens are listed too.
    assert schedule["listening"]["exception"][0]["call"] == "on_crash(exception, ctx)"


def test_explain_is_the_same_as_its_python_function():
    from lightkit.engine.schedule import explain

    spec = lk.collect(cli_tiny, cli_events)
    config = lk.TrainerConfig(max_steps=3, enable_progress_bar=False)
    schedule = explain(spec, config)
    assert sum(e.what == "optimizer_step" for e in schedule.entries) == 3
    assert schedule.calls()[:3] == [
        "on_fit_start", "ModelSummary.on_fit_start", "on_sanity_check_start",
    ]  # fmt: skip
    assert "fit_end" in schedule.render()
    # A long run is recorded up to a budget, and the text says where it stopped.
    endless = explain(spec, lk.TrainerConfig(max_epochs=-1, max_steps=-1), max_entries=500)
    assert len(endless.entries) == endless.facts["truncated"] == 500
    assert "the dry run stopped after 500 entries" in endless.render()


def test_plot_draws_a_run_s_metrics(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    flags = ["--max-epochs", "2", "--default-root-dir", str(tmp_path), "--logger", "csv", *QUIET]
    code, _, err = run_cli("fit", TINY, *flags)
    assert code == 0, err
    run_dir = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"
    code, out, err = run_cli("plot", str(run_dir), "--output", str(tmp_path / "curves.png"))
    assert code == 0, err
    assert out.strip() == str(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli("plot", str(tmp_path / "empty"))
    assert code == 1
    assert err.startswith("lightkit plot: error:") and "Traceback" not in err


def test_a_registry_target_and_cli_objects_are_named_in_the_run_folder(
    run_cli, tmp_path, monkeypatch
):
    # The functions sit on an explicit lk.Registry: only the command line's target names them,
    # so the run folder's config.toml must carry it to run again.
    (tmp_path / "lk_run_regmod.py").write_text(
        "import lightkit as lk\n"
        "from tests.user_modules import cli_tiny as t\n\n"
        "reg = lk.Registry()\n"
        "reg.model(t.net)\n"
        "reg.train_data(t.train_loader)\n"
        "reg.training_step(t.train)\n"
        "reg.configure_optimizers(t.optim)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    flags = ["--max-epochs", "1", "--seed", "0", "--logger", "csv", *QUIET]
    code, _, err = run_cli("fit", "lk_run_regmod:reg", *flags)
    assert code == 0, err
    run_dir = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"  # the functions' module
    written = tomllib.loads((run_dir / "config.toml").read_text())
    assert written["target"] == ["lk_run_regmod:reg"]
    assert written["trainer"]["logger"] == "csv"  # the reference it came from, not a repr
    code, _, err = run_cli("fit", "--config", str(run_dir / "config.toml"))
    assert code == 0, err
    again = tmp_path / "lightkit_logs" / "cli_tiny" / "version_1"
    assert last_row(again, "train/loss") == last_row(run_dir, "train/loss")


def test_a_run_folders_config_reruns_from_any_folder_and_says_how(run_cli, tmp_path, monkeypatch):
    # The file target is recorded by its absolute path, a resume keeps its --ckpt-path, and
    # the header names the command that wrote it.
    from tests.cli.conftest import ROOT

    monkeypatch.chdir(ROOT)
    target = "tests/user_modules/cli_tiny.py"
    flags = ["--max-epochs", "1", "--seed", "0", "--default-root-dir", str(tmp_path), *QUIET]
    code, _, err = run_cli("fit", target, *flags)
    assert code == 0, err
    first = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"
    text = (first / "config.toml").read_text()
    assert text.startswith("# lightkit run configuration: `lightkit fit --config config.toml`")
    assert tomllib.loads(text)["target"] == [str(ROOT / target)]
    code, _, err = run_cli("fit", target, *flags, "--ckpt-path", "last", "--max-epochs", "2")
    assert code == 0, err
    resumed = tomllib.loads((first.parent / "version_1" / "config.toml").read_text())
    assert resumed["ckpt_path"] == "last"
    code, _, err = run_cli("validate", target, *flags)
    assert code == 0, err
    validated = (first.parent / "version_2" / "config.toml").read_text()
    assert validated.startswith("# lightkit run configuration: `lightkit validate --config")

    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded file still runs
    code, _, err = run_cli("fit", "--config", str(first / "config.toml"))
    assert code == 0, err
    again = first.parent / "version_3"
    assert last_row(again, "val/loss") == last_row(first, "val/loss")


def test_flags_before_the_target_are_told_where_the_target_goes(run_cli, tmp_path):
    code, _, err = run_cli("fit", "--max-epochs", "2", "examples/digits.py")
    assert code == 2
    assert (
        "'examples/digits.py' looks like a TARGET: TARGETs come first, right after the "
        "command (lightkit fit examples/digits.py [flags])."
    ) in err


def test_a_run_without_seed_draws_one_and_its_config_repeats_it(run_cli, tmp_path):
    # As LightningCLI's seed_everything=True: the drawn seed is said and recorded.
    flags = ["--max-epochs", "1", "--default-root-dir", str(tmp_path), *QUIET]
    code, _, err = run_cli("fit", TINY, *flags)
    assert code == 0, err
    first = tmp_path / "lightkit_logs" / "cli_tiny" / "version_0"
    seed = tomllib.loads((first / "config.toml").read_text())["trainer"]["seed"]
    assert f"seed {seed} (drawn; --seed {seed} repeats this run)" in err
    code, _, err = run_cli("fit", "--config", str(first / "config.toml"))
    assert code == 0, err
    again = first.parent / "version_1"
    assert last_row(again, "val/loss") == last_row(first, "val/loss")


def test_a_script_that_trains_at_its_top_level_is_refused_before_its_import(run_cli, tmp_path):
    # Importing it would train once before the command's run (and again in each rank).
    script = tmp_path / "train.py"
    script.write_text(
        "import lightkit as lk\n"
        "open(__file__ + '.imported', 'w').close()\n"
        "trainer = lk.Trainer(max_epochs=1)\n"
        "for _ in range(1):\n"
        "    trainer.fit(lk.collect())\n"
    )
    code, _, err = run_cli("fit", str(script))
    assert code == 1
    assert f"{script}:5 runs a Trainer at the file's top level" in err
    assert 'Put that call under `if __name__ == "__main__":`' in err
    assert not (tmp_path / "train.py.imported").exists()  # refused before importing


def test_a_run_folders_config_names_the_checkpoint_it_started_from_in_python_too(tmp_path):
    # From the Python API as from the command line: fit keeps "last" as given (a rerun
    # continues the newest run); an evaluation names the very file it judged, so a later
    # fit cannot change what "best" reruns.
    spec = lk.collect(cli_tiny)
    flags = {"default_root_dir": tmp_path, "enable_progress_bar": False, "max_epochs": 1}
    fitted = lk.Trainer(**flags).fit(spec)
    again = lk.Trainer(**{**flags, "max_epochs": 2}).fit(spec, ckpt_path="last")
    tested = lk.Trainer(**flags).test(spec, ckpt_path="best")
    assert tomllib.loads((again.log_dir / "config.toml").read_text())["ckpt_path"] == "last"
    recorded = tomllib.loads((tested.log_dir / "config.toml").read_text())["ckpt_path"]
    assert recorded == str(again.best_checkpoint.resolve())
    assert "ckpt_path" not in tomllib.loads((fitted.log_dir / "config.toml").read_text())


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("def main():\n    t = lk.Trainer()\n    t.fit(lk.collect())\nmain()\n", 4),
        ("t: lk.Trainer = lk.Trainer()\nif __name__ != '__main__':\n    t.fit(lk.collect())\n", 3),
        ("t = lk.Trainer()\nrun = lambda: t.fit(lk.collect())\n", None),
        ("def main():\n    lk.Trainer().fit(lk.collect())\nif __name__ == '__main__':\n    main()\n", None),
        ("from sklearn.linear_model import LinearRegression\nLinearRegression().fit([[1]], [1])\n", None),
    ],
    ids=["main-call", "annotated-and-not-guard", "lambda", "guarded-main", "not-a-trainer"],
)  # fmt: skip
def test_which_top_levels_train_on_import(tmp_path, source, line):
    from lightkit.cli.parse import _unguarded_run

    script = tmp_path / "train.py"
    script.write_text("import lightkit as lk\n" + source, encoding="utf-8")
    assert _unguarded_run(str(script)) == (None if line is None else line + 1)
