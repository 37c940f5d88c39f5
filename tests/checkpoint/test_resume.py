"""Exact resume: a run interrupted mid-epoch and resumed from its checkpoint ends with weights,
optimizer and scheduler states and per-step logged losses identical to the run that never
stopped, and sees every sample of every epoch exactly once."""

from __future__ import annotations

import collections
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk
from tests.checkpoint import resumable
from tests.checkpoint.ckpt_helpers import (
    BATCHES,
    EPOCHS,
    SPEC,
    assert_same_run,
    every_step,
    flags,
    loss_rows,
    reference,
    snapshot,
    stored_position,
)

CASES = {
    # name: (hyperparameters, trainer flags, how the first run stops)
    "shuffle-global-rng": ((), {}, {"fail_at": (1, 6)}),
    "shuffle-own-generator": ((("generator", True),), {}, {"fail_at": (1, 3)}),
    "accumulate-stop-inside-window": ((), {"accumulate_grad_batches": 2}, {"signal_at": (1, 4)}),
    "16-mixed": ((), {"precision": "16-mixed"}, {"fail_at": (2, 5)}),
    "two-workers": ((("num_workers", 2),), {}, {"fail_at": (1, 7)}),
}


def interrupted_then_resumed(
    tmp_path: Path, hparams: tuple[tuple[str, Any], ...], extra: dict[str, Any], stop: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = SPEC.with_hparams(**dict(hparams))
    resumable.CONTROL.update(stop)
    with pytest.raises((RuntimeError, SystemExit)) as info:
        lk.Trainer(**flags(tmp_path, **extra), callbacks=every_step()).fit(spec)
    if stop.get("signal_at"):
        assert isinstance(info.value, SystemExit) and info.value.code == 143
    first = {
        "rows": loss_rows(tmp_path / "lightkit_logs/resumable/version_0"),
        "seen": list(resumable.SEEN),
        "last": tmp_path / "lightkit_logs/resumable/version_0/checkpoints/last.ckpt",
    }
    resumable.reset()
    trainer = lk.Trainer(**flags(tmp_path, **extra), callbacks=every_step())
    result = trainer.fit(spec, ckpt_path="last")
    second = snapshot(trainer, result)
    second["rows"] = loss_rows(result.log_dir)
    second["seen"] = list(resumable.SEEN)
    second["val"] = result.metrics["val/loss"]
    return first, second


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_exact(tmp_path, case):
    hparams, extra, stop = CASES[case]
    ref = reference(hparams, **extra)
    first, second = interrupted_then_resumed(tmp_path, hparams, extra, stop)
    assert_same_run(ref, second)
    assert second["val"] == ref["val"]
    # The first run logged up to its failure; the resumed run logs from the checkpoint on.
    done = stored_position(first["last"])
    assert 0 < done < EPOCHS * BATCHES
    n_rows = len(ref["rows"]) - len(second["rows"])
    assert first["rows"][:n_rows] + second["rows"] == ref["rows"]
    # Samples: the first run's consumed batches, then the resumed run's, equal the reference.
    batch = 4
    assert first["seen"][: done * batch] + second["seen"] == ref["seen"]


def test_every_sample_of_every_epoch_seen_once(tmp_path):
    _, second = interrupted_then_resumed(tmp_path, (), {}, {"fail_at": (1, 6)})
    # Checkpoint after 15 batches (epoch 1, batch 5), failure at batch 6 of epoch 1.
    first_seen = resumable_seen_before(tmp_path)
    counts = collections.Counter(first_seen + second["seen"])
    assert set(counts) == {(e, i) for e in range(EPOCHS) for i in range(40)}
    assert set(counts.values()) == {1}


def resumable_seen_before(tmp_path: Path) -> list[tuple[int, int]]:
    """What the first run saw up to its checkpoint, from a fresh reference of the same run."""
    done = stored_position(tmp_path / "lightkit_logs/resumable/version_0/checkpoints/last.ckpt")
    return reference()["seen"][: done * 4]


def test_a_run_stopped_by_should_stop_resumes_exactly(tmp_path):
    # Stopping mid-epoch validates first, as Lightning does. The run that never stopped draws
    # no such validation, so it must not shift the random stream the checkpoint holds.
    ref = reference()
    resumable.CONTROL["stop_at"] = (1, 4)
    first = lk.Trainer(**flags(tmp_path), callbacks=every_step()).fit(SPEC)
    assert (first.stopped_by, first.global_step) == ("should_stop", BATCHES + 5)
    resumable.reset()
    trainer = lk.Trainer(**flags(tmp_path), callbacks=every_step())
    result = trainer.fit(SPEC, ckpt_path="last")
    assert_same_run(ref, snapshot(trainer, result))


def test_resume_from_epoch_end_checkpoint(tmp_path):
    ref = reference()
    resumable.CONTROL["fail_at"] = (2, 3)
    with pytest.raises(RuntimeError):
        lk.Trainer(**flags(tmp_path)).fit(SPEC)  # default ModelCheckpoint: once per epoch
    ckpts = sorted((tmp_path / "lightkit_logs/resumable/version_0/checkpoints").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["epoch=1-step=20.ckpt", "last.ckpt"]
    assert stored_position(ckpts[0]) == 2 * BATCHES
    resumable.reset()
    trainer = lk.Trainer(**flags(tmp_path))
    result = trainer.fit(SPEC, ckpt_path="last")
    assert_same_run(ref, snapshot(trainer, result))
    # The resumed run writes into its own folder and never deletes the first run's file.
    assert ckpts[0].exists()
    assert result.best_checkpoint == result.log_dir / "checkpoints" / "epoch=2-step=30.ckpt"


def test_stop_inside_window_saves_accumulated_gradients(tmp_path):
    resumable.CONTROL["signal_at"] = (0, 2)
    extra = {"accumulate_grad_batches": 2}
    with pytest.raises(SystemExit) as info:
        lk.Trainer(**flags(tmp_path, **extra)).fit(SPEC)
    assert info.value.code == 128 + signal.SIGTERM
    last = tmp_path / "lightkit_logs/resumable/version_0/checkpoints/last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["loop"]["batches_done"] == 3 and ckpt["global_step"] == 1
    assert set(ckpt["grads"]["net"]) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    # The handler was restored when fit ended.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_preemption_runs_the_users_handler_and_restores_it(tmp_path):
    calls = []

    def mine(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        resumable.CONTROL["signal_at"] = (0, 4)
        with pytest.raises(SystemExit) as info:
            lk.Trainer(**flags(tmp_path)).fit(SPEC)
        assert info.value.code == 143
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is mine
        # Logged steps reached metrics.csv before the exit: batches 0..4 of epoch 0.
        rows = loss_rows(tmp_path / "lightkit_logs/resumable/version_0")
        assert [s for s, _ in rows] == [0, 1, 2, 3, 4]
    finally:
        signal.signal(signal.SIGTERM, previous)
    resumable.reset()
    trainer = lk.Trainer(**flags(tmp_path))
    assert_same_run(reference(), snapshot(trainer, trainer.fit(SPEC, ckpt_path="last")))


def test_save_and_load_hooks_receive_the_checkpoint(tmp_path):
    seen: dict[str, Any] = {}

    def add(checkpoint, ctx):
        checkpoint["mine"] = {"step": ctx.global_step}

    def read(checkpoint):
        seen["mine"] = checkpoint["mine"]

    reg = lk.Registry()
    reg.on("save_checkpoint", add)
    reg.on("load_checkpoint", read)
    spec = lk.collect(resumable, reg)
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(spec)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["mine"] == {"step": BATCHES}
    lk.Trainer(**flags(tmp_path, max_epochs=2)).fit(spec, ckpt_path=result.last_checkpoint)
    assert seen["mine"] == {"step": BATCHES}
    # validate (and test, predict) fire it too when they load a checkpoint, as Lightning does.
    seen.clear()
    lk.Trainer(**flags(tmp_path)).validate(spec, ckpt_path=result.last_checkpoint)
    assert seen["mine"] == {"step": BATCHES}


def test_a_load_checkpoint_hook_asking_for_optimizers_gets_none_outside_fit(tmp_path):
    seen: list[Any] = []
    reg = lk.Registry()
    reg.on(
        "load_checkpoint",
        lambda checkpoint, optimizers, optimizer: seen.append((optimizers, optimizer)),
    )
    spec = lk.collect(resumable, reg)
    result = lk.Trainer(**flags(tmp_path, max_epochs=1)).fit(spec)
    lk.Trainer(**flags(tmp_path)).validate(spec, ckpt_path=result.last_checkpoint)
    assert seen == [([], None)]


def test_configured_signals(tmp_path):
    resumable.CONTROL.update(signal_at=(0, 1), signal="SIGUSR1")
    with pytest.raises(SystemExit) as info:
        lk.Trainer(**flags(tmp_path, preemption_signals=["SIGTERM", "usr1"])).fit(SPEC)
    assert info.value.code == 128 + signal.SIGUSR1
    assert info.value.checkpoint.name == "last.ckpt"
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    with pytest.raises(ValueError, match="'SIGKILL' is not a signal that can be caught"):
        lk.TrainerConfig(preemption_signals=["SIGKILL"])


def test_random_states_round_trip_in_both_stored_forms():
    """Python's generator state is stored as one int64 tensor; checkpoints written before
    that hold the tuple of ints itself. Both restore the same stream."""
    import random

    from lightkit.checkpoint.resume import capture_random, restore_random

    random.seed(123)
    saved = capture_random(None)
    version, internal, gauss = saved["rng"]["python"]
    assert isinstance(internal, torch.Tensor) and internal.dtype == torch.int64
    expected = [random.random() for _ in range(5)]

    restore_random(saved, None)
    assert [random.random() for _ in range(5)] == expected
    old = {**saved, "rng": {**saved["rng"], "python": (version, tuple(internal.tolist()), gauss)}}
    restore_random(old, None)
    assert [random.random() for _ in range(5)] == expected


def test_a_run_that_gained_a_parameter_group_resumes_when_a_load_hook_adds_it_back(tmp_path):
    """A backbone unfrozen at epoch 1 adds a group to the optimizer. The load_checkpoint hook
    runs before the checkpoint is checked (as Lightning's on_load_checkpoint), so it can add
    the group back; the resumed run then ends bitwise where the uninterrupted one does.
    Without the hook the resume is refused, and the message says how to write it."""
    from tests.callbacks import cb_helpers

    def optim(net):
        return torch.optim.SGD(net[2].parameters(), lr=0.05, momentum=0.9)

    def unfreeze(net, optimizer, ctx):
        if ctx.epoch >= 1 and len(optimizer.param_groups) == 1:
            optimizer.add_param_group({"params": net[0].parameters(), "lr": 0.01})

    def add_back(checkpoint, net, optimizer):
        if len(checkpoint["optimizers"][0]["param_groups"]) > len(optimizer.param_groups):
            optimizer.add_param_group({"params": net[0].parameters(), "lr": 0.01})

    def spec(*load_hook):
        hooks = {"train_epoch_start": unfreeze}
        if load_hook:
            hooks["load_checkpoint"] = load_hook[0]
        return cb_helpers.spec(optim=optim, val=None, hooks=hooks)

    def run(root, epochs, **kw):
        return lk.Trainer(**flags(root, max_epochs=epochs)).fit(kw.pop("spec", spec()), **kw)

    whole = run(tmp_path / "whole", 4)
    first = run(tmp_path / "parts", 2)
    with pytest.raises(lk.CheckpointError, match="parameter groups of sizes") as info:
        run(tmp_path / "parts", 4, ckpt_path=first.last_checkpoint)
    assert "add them back in a load_checkpoint hook" in str(info.value)
    resumed = run(tmp_path / "parts", 4, spec=spec(add_back), ckpt_path=first.last_checkpoint)
    pairs = zip(whole.models["net"].parameters(), resumed.models["net"].parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_load_hook_never_sees_a_file_the_resume_refuses(tmp_path):
    """The file's kind is checked before the hooks: a weights-only file is refused with its
    own error, not with whatever a hook reading the optimizers would raise."""
    seen: list[Any] = []
    reg = lk.Registry()
    reg.on("load_checkpoint", lambda checkpoint: seen.append(checkpoint["optimizers"]))
    spec = lk.collect(resumable, reg)
    weights = lk.ModelCheckpoint(dirpath=tmp_path / "w", save_weights_only=True, filename="w")
    result = lk.Trainer(**flags(tmp_path, max_epochs=1, callbacks=[weights])).fit(spec)
    with pytest.raises(lk.CheckpointError) as info:
        lk.Trainer(**flags(tmp_path, max_epochs=2)).fit(spec, ckpt_path=tmp_path / "w" / "w.ckpt")
    assert info.value.code == "checkpoint-weights-only" and seen == []
    assert result.global_step == BATCHES
