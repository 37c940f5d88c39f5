"""``trainer.fit`` ends with the weights a hand-written PyTorch loop reaches, bitwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.engine.engine_helpers import (
    N_IN,
    N_OUT,
    assert_same_weights,
    raw_fit,
    registry,
    train_loader,
    trainer,
    weights_differ,
)


@pytest.mark.parametrize(
    ("flags", "raw", "steps"),
    [
        ({}, {}, 14),
        ({"accumulate_grad_batches": 3}, {"accumulate": 3}, 6),  # windows 3, 3, 1 per epoch
        ({"gradient_clip_val": 0.05}, {"clip": ("norm", 0.05)}, 14),
        (
            {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
            {"clip": ("value", 0.01)},
            14,
        ),
        (
            {"accumulate_grad_batches": 3, "gradient_clip_val": 0.05},
            {"accumulate": 3, "clip": ("norm", 0.05)},
            6,
        ),
    ],
    ids=["plain", "accumulate-3", "clip-norm", "clip-value", "accumulate-and-clip"],
)
def test_fit_matches_a_hand_written_loop(flags, raw, steps):
    result = trainer(max_epochs=2, seed=0, **flags).fit(lk.collect(registry()))
    expected = raw_fit(epochs=2, **raw)
    assert_same_weights(result.models["net"], expected)
    assert result.global_step == steps
    assert result.epoch == 2


def test_clipping_changes_the_result():
    """The clip values above are small enough to bite: the parity tests test clipping."""
    plain = raw_fit(epochs=2)
    assert weights_differ(plain, raw_fit(epochs=2, clip=("norm", 0.05)))
    assert weights_differ(plain, raw_fit(epochs=2, clip=("value", 0.01)))


def test_the_last_partial_accumulation_window_steps():
    # 7 batches, k=4: one full window, then a window of 3 that must still step.
    result = trainer(max_epochs=1, seed=0, accumulate_grad_batches=4).fit(lk.collect(registry()))
    assert result.global_step == 2
    assert_same_weights(result.models["net"], raw_fit(epochs=1, accumulate=4))


def test_same_seed_same_run_other_seed_other_run():
    spec = lk.collect(registry())
    a = trainer(max_epochs=1, seed=3).fit(spec).models["net"]
    b = trainer(max_epochs=1, seed=3).fit(spec).models["net"]
    c = trainer(max_epochs=1, seed=4).fit(spec).models["net"]
    assert_same_weights(a, b)
    assert weights_differ(a, c)
    assert_same_weights(a, raw_fit(seed=3))


def adam_step_lr(net):
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def test_adam_with_a_per_step_scheduler_matches():
    def optim(net):
        opt, sched = adam_step_lr(net)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    result = trainer(max_epochs=2, seed=0).fit(lk.collect(registry(optim=optim)))
    expected = raw_fit(epochs=2, make_optimizer=adam_step_lr, scheduler_interval="step")
    assert_same_weights(result.models["net"], expected)


def test_sgd_with_a_per_epoch_scheduler_and_accumulation_matches():
    def make(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.3)

    def optim(net):
        opt, sched = make(net)
        return [opt], [sched]

    result = trainer(max_epochs=3, seed=0, accumulate_grad_batches=2).fit(
        lk.collect(registry(optim=optim))
    )
    expected = raw_fit(epochs=3, accumulate=2, make_optimizer=make, scheduler_interval="epoch")
    assert_same_weights(result.models["net"], expected)


def test_dropout_draws_match_the_hand_written_loop():
    """The engine draws nothing from the global generator itself: a model that draws
    (dropout) sees the same random numbers as in a plain loop."""

    def make_net():
        return nn.Sequential(nn.Linear(N_IN, 16), nn.Dropout(0.5), nn.Linear(16, N_OUT))

    def data():
        return train_loader()

    def train(net, batch):
        return nn.functional.cross_entropy(net(batch[0]), batch[1])

    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.1)

    reg = lk.Registry()
    reg.model(make_net, name="net")
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    result = trainer(max_epochs=2, seed=0).fit(lk.collect(reg))

    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = train_loader()
    for _ in range(2):
        for x, y in loader:
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert_same_weights(result.models["net"], net)
