"""A NaN or infinite loss stops training before the optimizer step, naming where; the last
good checkpoint stays; ``nonfinite_loss="skip"`` skips such steps instead."""

from __future__ import annotations

import math

import pytest
import torch

import lightkit as lk
from tests.checkpoint import resumable
from tests.checkpoint.ckpt_helpers import SPEC, assert_equal, every_step, flags

STEP = 13  # epoch 1, batch 3


def weights_after(tmp_path, steps: int) -> dict[str, torch.Tensor]:
    result = lk.Trainer(**flags(tmp_path / "ref", max_steps=steps, max_epochs=None)).fit(SPEC)
    return {k: v.clone() for k, v in result.models["net"].state_dict().items()}


@pytest.mark.parametrize("factor", [math.nan, math.inf])
def test_nonfinite_loss_raises_before_the_optimizer_step(tmp_path, factor):
    expected = weights_after(tmp_path, STEP)
    resumable.reset()
    resumable.CONTROL["nan_at"] = (STEP, factor)
    trainer = lk.Trainer(**flags(tmp_path / "run", callbacks=every_step()))
    with pytest.raises(lk.StepError) as info:
        trainer.fit(SPEC)
    text = str(info.value)
    assert info.value.code == "nonfinite-loss"
    value = "nan" if math.isnan(factor) else "inf"
    assert f"the loss is {value} at global step {STEP} (epoch 1, batch_idx 3)" in text
    assert "train(net, batch, ctx) at tests/checkpoint/resumable.py" in text
    assert f"'train/loss': {value}" in text
    assert f"the parameters are those after step {STEP - 1}" in text
    got = trainer.last_engine.models["net"].state_dict()
    assert_equal(expected, dict(got))
    # The last good checkpoint is the one written after step STEP - 1.
    last = trainer.last_engine.last_checkpoint
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == STEP
    assert_equal(expected, ckpt["models"]["net"])


def test_skip_drops_the_step_and_trains_on(tmp_path):
    resumable.CONTROL["nan_at"] = (STEP, math.nan)
    trainer = lk.Trainer(**flags(tmp_path, nonfinite_loss="skip", max_epochs=2))
    with pytest.warns(UserWarning, match=f"global step {STEP}.*Its optimizer step is skipped"):
        result = trainer.fit(SPEC)
    assert result.global_step == 20
    assert all(torch.isfinite(p).all() for p in result.models["net"].parameters())


def test_ignore_does_not_look(tmp_path):
    resumable.CONTROL["nan_at"] = (STEP, math.nan)
    result = lk.Trainer(**flags(tmp_path, nonfinite_loss="ignore", max_epochs=2)).fit(SPEC)
    assert not all(torch.isfinite(p).all() for p in result.models["net"].parameters())


def test_a_nonfinite_first_loss_says_the_parameters_are_the_initial_ones(tmp_path):
    resumable.CONTROL["nan_at"] = (0, math.nan)
    with pytest.raises(lk.StepError) as info:
        lk.Trainer(**flags(tmp_path)).fit(SPEC)
    assert "the loss is nan at global step 0 (epoch 0, batch_idx 0)" in str(info.value)
    assert "the parameters are the initial ones, and checkpoints" in str(info.value)
