"""The plain epoch (``loops.plain_epoch``) against the general batch loop of ``fit_loop``.

When nothing but the step runs per batch, ``fit_loop`` runs its epochs through
``plain_epoch``, a copy of its batch loop without the branches that cannot fire. A hook on
``train_batch_end`` that does nothing sends the same run through the general loop. Each case
here runs both ways and compares everything the user can see: the weights (bitwise), the step,
epoch and batch index each step saw, the result's counters, stop reason and metrics, the
warnings, and the error.
"""

from __future__ import annotations

import math
import signal
import warnings
from typing import Any

import pytest
import torch

import lightkit as lk
import lightkit.engine.loops as loops
from tests.engine.engine_helpers import ce, registry, train_loader, trainer

PLAIN_EPOCH = loops.plain_epoch


class Unsized:
    """The training batches without a length: validation then runs when the epoch ends."""

    def __iter__(self):
        return iter(train_loader())


def run(case: dict[str, Any], plain: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    epochs_through_plain = []

    def counted(*args: Any) -> Any:
        epochs_through_plain.append(args[3])
        return PLAIN_EPOCH(*args)

    monkeypatch.setattr(loops, "plain_epoch", counted)
    seen: list[tuple[int, int, int]] = []
    stop_at, bad_at, none_at = case.get("stop_at"), case.get("bad_at"), case.get("none_at")
    signal_at = case.get("signal_at")

    nets = []
    out: dict[str, Any] = {}

    def step(net, batch, ctx):
        nets[:] = [net]
        where = (ctx.epoch, ctx.batch_idx)
        seen.append((*where, ctx.global_step))
        loss = ce(net, batch)
        lk.log("train/loss", loss, on_epoch=True)
        if where == stop_at:
            ctx.should_stop = True
        if where == signal_at:
            signal.raise_signal(signal.SIGTERM)
        if where == none_at:
            return None
        if where == case.get("vector_at"):
            return loss.expand(2)
        if where == bad_at:
            loss = loss * math.nan
        return {"loss": loss} if case.get("dict") else loss

    reg = registry(
        step=step, val=case.get("val", False), train_data=Unsized if case.get("unsized") else None
    )
    if not plain:
        reg.on("train_batch_end")(lambda: None)

    def count(ctx):  # what a checkpoint would store as the loop's position
        out["batches_seen"] = ctx._engine.batches_seen

    reg.on("fit_end")(count)
    config = {"seed": 0, "max_epochs": 3, **case.get("config", {})}
    t = trainer(**config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = t.fit(lk.collect(reg), ckpt_path=case.get("ckpt_path"))
        except (lk.LightkitError, SystemExit) as exc:
            out["error"] = (type(exc).__name__, str(exc))
        else:
            # repr: a NaN metric equals itself there.
            out["result"] = repr(
                (result.global_step, result.epoch, result.stopped_by, result.metrics)
            )
    out["warnings"] = [str(w.message) for w in caught]
    out["weights"] = [p.detach().clone() for p in nets[0].parameters()]
    out["seen"] = seen
    out["plain_epochs"] = epochs_through_plain
    return out


CASES: dict[str, dict[str, Any]] = {
    # 50 samples in batches of 8: 7 batches per epoch.
    "three epochs": {},
    "max_steps inside an epoch": {"config": {"max_steps": 10}},
    "max_steps at an epoch's end": {"config": {"max_steps": 14}},
    "should_stop": {"stop_at": (0, 3)},
    "should_stop before min_epochs": {"stop_at": (0, 3), "config": {"min_epochs": 2}},
    "should_stop before min_steps": {"stop_at": (0, 3), "config": {"min_steps": 9}},
    "a step returning None": {"none_at": (1, 2)},
    "a step returning a dict": {"dict": True},
    "a step returning a vector": {"vector_at": (1, 3)},
    "a NaN loss skipped": {"bad_at": (1, 4), "config": {"nonfinite_loss": "skip"}},
    "a NaN loss raises": {"bad_at": (1, 4)},
    "a NaN loss ignored": {"bad_at": (1, 4), "config": {"nonfinite_loss": "ignore"}},
    "validation as an unsized epoch ends": {"val": True, "unsized": True},
    "an unsized epoch stopped by should_stop": {"unsized": True, "stop_at": (1, 2)},
    "limit_train_batches": {"config": {"limit_train_batches": 3}},
    "gradient clipping": {"config": {"gradient_clip_val": 0.01}},
    "SIGTERM": {"signal_at": (1, 2)},  # no run folder: Preempted, nothing saved
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_plain_epoch_runs_as_the_general_loop_does(name, monkeypatch, tmp_path):
    case = {**CASES[name]}
    case["config"] = {"default_root_dir": str(tmp_path), **case.get("config", {})}
    plain = run(case, plain=True, monkeypatch=monkeypatch)
    general = run(case, plain=False, monkeypatch=monkeypatch)
    assert plain["plain_epochs"], "the plain epoch did not run"
    assert general["plain_epochs"] == []
    for key in ("result", "error", "batches_seen", "warnings", "seen"):
        assert plain.get(key) == general.get(key), key
    for a, b in zip(plain["weights"], general["weights"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # NaN: "ignore"
    assert plain["seen"], "no step ran"


def test_a_resumed_run_continues_inside_the_epoch_through_the_plain_epoch(monkeypatch, tmp_path):
    """A mid-epoch checkpoint, resumed both ways; both equal the run never interrupted."""
    saver = lk.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    first = trainer(seed=0, max_steps=4, default_root_dir=str(tmp_path), callbacks=[saver])
    first.fit(lk.collect(registry()))
    (ckpt,) = tmp_path.glob("*.ckpt")
    case = {"ckpt_path": str(ckpt), "config": {"max_epochs": 2}}
    plain = run(case, plain=True, monkeypatch=monkeypatch)
    general = run(case, plain=False, monkeypatch=monkeypatch)
    whole = run({"config": {"max_epochs": 2}}, plain=True, monkeypatch=monkeypatch)
    assert plain["plain_epochs"] == [0, 1] and general["plain_epochs"] == []
    assert plain["seen"][0] == (0, 4, 4) and plain["seen"] == general["seen"]
    assert plain["seen"] == whole["seen"][4:]
    assert all(map(torch.equal, plain["weights"], general["weights"]))
    assert all(map(torch.equal, plain["weights"], whole["weights"]))


@pytest.mark.parametrize(
    "flags",
    [
        {"accumulate_grad_batches": 2},
        {"max_time": 3600},
        {"val_check_interval": 3},
        {"val_check_interval": 1.0},  # a sized epoch: validation is due at its last batch
        {"logger": True},
        {"enable_checkpointing": True},
    ],
)
def test_what_listens_per_batch_takes_the_general_loop(flags, monkeypatch, tmp_path):
    out = run(
        {"val": "val_check_interval" in flags, "config": {**flags, "max_epochs": 1}},
        plain=True,
        monkeypatch=monkeypatch,
    )
    assert out["plain_epochs"] == [] and len(out["seen"]) == 7
