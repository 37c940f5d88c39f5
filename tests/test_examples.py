"""Every example runs end to end at smoke size (``LIGHTKIT_SMOKE=1``) as a script, the way a
user runs it, and writes what it promises: results, logs, checkpoints, images, audio."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk

ROOT = Path(__file__).resolve().parent.parent
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_sklearn = pytest.mark.skipif(
    not HAS_SKLEARN, reason="needs scikit-learn (the examples extra)"
)


def run_example(name: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run ``examples/<name>.py`` in ``tmp_path`` at smoke size; return its ``--results``."""
    results = tmp_path / "results.json"
    # One thread: smoke-size tensors gain nothing from more, and the suite runs beside others.
    env = {**os.environ, "LIGHTKIT_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), *args, "--results", str(results)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(results.read_text())


def csv_series(log_dir: str | Path, name: str) -> list[float]:
    from examples._common import read_metrics_csv

    return [v for _, v in read_metrics_csv(Path(log_dir) / "metrics.csv")[name]]


def assert_finite(*values: float) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v), values


def assert_improves(values: list[float]) -> None:
    """The last logged value is below the first (a loss that went down)."""
    assert len(values) >= 2, values
    assert_finite(*values)
    assert values[-1] < values[0], values


@needs_sklearn
def test_digits(tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    r = run_example("digits", tmp_path, "--plot", str(plot))
    assert_finite(r["test_acc"], r["test_loss"], r["val_acc"], r["train_loss"])
    assert 0.0 <= r["test_acc"] <= 1.0 and r["epochs"] == 2
    assert_improves(csv_series(r["log_dir"], "train/loss"))
    # The best checkpoint loads (weights only) and holds the model and the spec, whose
    # functions are recorded under the package's importable names.
    ckpt = Path(r["checkpoint"])
    assert ckpt.suffix == ".ckpt" and ckpt.is_relative_to(tmp_path)
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert "examples.digits:train" in state["spec"]
    assert (ckpt.parent / "last.ckpt").is_file()
    models = lk.load_models(ckpt)
    assert set(models) == {"cnn"}
    spec = json.loads((Path(r["log_dir"]) / "spec.json").read_text())
    assert {f["fn"] for f in spec["functions"]} >= {"examples.digits:cnn", "examples.digits:train"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_sklearn
@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_digits_scales_by_flags_to_two_processes(tmp_path: Path) -> None:
    # Fit only (no checkpoint, so no test stage): one launch of two processes.
    r = run_example(
        "digits", tmp_path, "--strategy", "ddp", "--devices", "2", "--no-enable-checkpointing"
    )
    # 256 samples in batches of 64, split over two ranks: 2 steps per epoch instead of 4.
    assert r["steps"] == 4 and r["epochs"] == 2
    assert_finite(r["val_acc"], r["train_loss"])
    assert_improves(csv_series(r["log_dir"], "train/loss"))  # rank 0 wrote the logs


def test_finetune_llm(tmp_path: Path) -> None:
    r = run_example("finetune_llm", tmp_path)
    assert_finite(r["pretrain_code_val_ppl"], r["docs_ppl_before"], r["docs_ppl_after"])
    assert 1.0 < r["docs_ppl_after"] < r["docs_ppl_before"] < 256 * 2
    assert 0 < r["trainable_params"] < r["total_params"]
    assert_improves(csv_series(r["pretrain_log_dir"], "train/loss"))
    # Exported by the fit_end hook, loaded by the model function for fine-tuning.
    assert (tmp_path / "lightkit_logs" / "finetune_llm" / "gpt_base.pt").is_file()
    assert r["base_weights_unchanged"] is True  # LoRA trained the adapters only
    assert r["sample_after"].startswith("The ") and len(r["sample_after"]) > 4


@needs_sklearn
def test_diffusion(tmp_path: Path) -> None:
    r = run_example("diffusion", tmp_path)
    assert_finite(r["train_loss"], r["samples_confidence"], r["real_confidence"])
    assert_improves(csv_series(r["log_dir"], "train/loss_step"))  # logged per epoch too
    grid = Path(r["grid"])
    if grid.suffix == ".png":
        assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert grid.read_bytes().startswith(b"P5 ")
    assert 0.1 <= r["samples_confidence"] <= 1.0
    assert 0.0 <= r["samples_class_entropy"] <= math.log2(10) + 1e-6
    assert_finite(r["samples_nearest_train"], r["real_nearest_train"], r["noise_nearest_train"])


def test_audio(tmp_path: Path) -> None:
    r = run_example("audio", tmp_path)
    assert_finite(r["train_loss_nats"], r["val_loss_nats"], r["energy_at_notes"])
    assert_improves(csv_series(r["log_dir"], "train/loss"))
    with wave.open(r["wav"], "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 8000)
        assert f.getnframes() == 160  # 0.02 s at smoke size


def test_gan_manual_optimization_bf16(tmp_path: Path) -> None:
    args = ["--precision", "bf16-mixed"]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(tmp_path / "gan.png")]
    r = run_example("gan", tmp_path, *args)
    assert_finite(r["d_loss"], r["g_loss"])
    assert r["steps"] == 10  # manual optimization: one global step per training batch
    assert 0 <= r["modes_covered"] <= 8 and r["real_on_mode"] > 0.95
    d_loss = csv_series(r["log_dir"], "train/d_loss")
    assert len(d_loss) == 10
    if HAS_MATPLOTLIB:
        assert (tmp_path / "gan.png").read_bytes()[:4] == b"\x89PNG"


@needs_sklearn
def test_own_loop(tmp_path: Path) -> None:
    r = run_example("own_loop", tmp_path, "--checkpoint", str(tmp_path / "own.ckpt"))
    assert_finite(r["train_loss_first"], r["train_loss_last"], r["test_acc"])
    assert r["train_loss_last"] < r["train_loss_first"]
    assert r["reloaded_test_acc"] == r["test_acc"]  # the saved weights, exactly
    assert r["checkpoint_epoch"] == 2
    state = torch.load(tmp_path / "own.ckpt", weights_only=True)
    assert set(state) == {"model", "optimizer", "epoch"}


def test_programmatic(tmp_path: Path) -> None:
    r = run_example("programmatic", tmp_path)
    rows = r["rows"]
    assert len(rows) == 6 and {row["width"] for row in rows} == {8, 64}
    for row in rows:
        assert_finite(row["val_acc"], row["train_loss"])
        assert 0.0 <= row["val_acc"] <= 1.0
    assert r["best"]["val_acc"] == max(row["val_acc"] for row in rows)


def test_example_specs_are_data() -> None:
    """Each decorated example collects, dumps functions by import path, and loads back."""
    from examples import audio, diffusion, finetune_llm, gan, programmatic

    modules = [audio, diffusion, finetune_llm, gan]
    if HAS_SKLEARN:
        from examples import digits

        modules.append(digits)
    for module in modules:
        spec = lk.collect(module)
        text = spec.model_dump_json()
        assert f'"{module.__name__}:' in text
        again = lk.TrainingSpec.model_validate_json(text)
        assert again.hparams.model_dump() == spec.hparams.model_dump()
    built = programmatic.build_spec()
    assert built.get("training_step").fn is programmatic.classify
    again = lk.TrainingSpec.model_validate_json(built.model_dump_json())
    assert again.hparams.model_dump() == built.hparams.model_dump()


def test_audio_fast_generation_matches_the_full_forward() -> None:
    """The cached sample-by-sample generator draws what ``WaveNet.forward``'s logits give."""
    from examples import audio

    torch.manual_seed(0)
    model = audio.WaveNet(channels=8, layers=4, n_cond=len(audio.CHORDS)).eval()
    out = audio.generate(model, chord=3, n=50, seed=5)
    q = audio.quantize(audio.mu_law(out))
    seq = torch.cat([torch.tensor([audio.LEVELS // 2]), q])  # generation starts from silence
    with torch.no_grad():
        logits = model(seq[None, :-1], torch.tensor([3]))[0]
    gen = torch.Generator().manual_seed(5)
    draws = [
        torch.multinomial(torch.softmax(logits[:, i] / 0.9, 0), 1, generator=gen)[0]
        for i in range(50)
    ]
    assert torch.equal(torch.stack(draws), q)
