"""Manual optimization: the step calls ``ctx.backward`` and ``opt.step()`` itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.engine import manual_module
from tests.engine.engine_helpers import (
    X_TRAIN,
    assert_same_weights,
    ce,
    make_net,
    registry,
    trainer,
)
from tests.engine.engine_helpers import train_loader as make_loader


def test_manual_single_optimizer_matches_a_hand_written_loop():
    seen_steps: list[int] = []

    def train(net, batch, optimizer, ctx):
        seen_steps.append(ctx.global_step)
        optimizer.zero_grad()
        loss = ce(net, batch)
        ctx.backward(loss)
        optimizer.step()

    spec = lk.collect(registry(step=train, manual=True))
    assert spec.plan("training_step").manual
    result = trainer(max_epochs=2, seed=0).fit(spec)
    assert result.global_step == 14  # batches, in manual optimization
    assert seen_steps == list(range(14))
    decorated = trainer(max_epochs=2, seed=0).fit(lk.collect(manual_module))
    assert decorated.global_step == 14
    assert_same_weights(decorated.models["net"], result.models["net"])

    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = make_loader()
    for _ in range(2):
        for batch in loader:
            opt.zero_grad()
            ce(net, batch).backward()
            opt.step()
    assert_same_weights(result.models["net"], net)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_ctx_backward_passes_its_other_arguments_to_backward(precision):
    # Two backward passes through one graph need retain_graph=True, as with Lightning's
    # manual_backward(loss, retain_graph=True).
    def train(net, batch, optimizer, ctx):
        optimizer.zero_grad()
        loss = ce(net, batch)
        ctx.backward(loss, retain_graph=True)
        ctx.backward(loss)
        optimizer.step()

    result = trainer(max_epochs=1, seed=0, precision=precision).fit(
        lk.collect(registry(step=train, manual=True))
    )
    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for batch in make_loader():
        opt.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = ce(net, batch)
        loss.backward(retain_graph=True)
        loss.backward()
        opt.step()
    assert_same_weights(result.models["net"], net)


# -- two models, two optimizers ------------------------------------------------------------

Z, FEATURES = 4, 8


def gen():
    return nn.Sequential(nn.Linear(Z, 16), nn.ReLU(), nn.Linear(16, FEATURES))


def disc():
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))


def real_data():
    return DataLoader(TensorDataset(X_TRAIN), batch_size=8, shuffle=True)


def optimizers_of(gen, disc):
    return (
        torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        torch.optim.SGD(disc.parameters(), lr=0.05),
    )


def gan_step(gen, disc, batch, opt_g, opt_d, backward):
    """One GAN step; the same code runs inside lightkit and in the hand-written loop."""
    bce = nn.functional.binary_cross_entropy_with_logits
    (real,) = batch
    z = torch.randn(real.shape[0], Z)  # draws from the global generator
    fake = gen(z)
    ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)

    opt_d.zero_grad()
    d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
    backward(d_loss)
    opt_d.step()

    opt_g.zero_grad()
    g_loss = bce(disc(fake), ones)
    backward(g_loss)
    opt_g.step()
    return d_loss.detach(), g_loss.detach()


def gan_registry(record: list[int] | None = None) -> lk.Registry:
    reg = lk.Registry()
    reg.model(gen)
    reg.model(disc)
    reg.train_data(real_data)

    def configure(gen, disc):
        return list(optimizers_of(gen, disc))

    def train(gen, disc, batch, optimizers, ctx):
        if record is not None:
            record.append(ctx.global_step)
        opt_g, opt_d = optimizers
        d_loss, g_loss = gan_step(gen, disc, batch, opt_g, opt_d, ctx.backward)
        lk.log("d_loss", d_loss)
        lk.log("g_loss", g_loss)

    reg.configure_optimizers(configure)
    reg.training_step(train)  # two optimizers: manual without saying so
    return reg


def test_two_optimizers_gan_matches_a_hand_written_loop():
    steps: list[int] = []
    result = trainer(max_epochs=2, seed=0).fit(lk.collect(gan_registry(steps)))
    assert result.global_step == 14
    assert steps == list(range(14))
    assert set(result.metrics) == {"d_loss", "g_loss"}

    torch.manual_seed(0)
    g, d = gen(), disc()
    opt_g, opt_d = optimizers_of(g, d)
    loader = real_data()
    for _ in range(2):
        for batch in loader:
            gan_step(g, d, batch, opt_g, opt_d, lambda loss: loss.backward())
    assert_same_weights(result.models["gen"], g)
    assert_same_weights(result.models["disc"], d)


def test_before_optimizer_step_fires_at_each_step_a_manual_step_takes():
    # As Lightning's on_before_optimizer_step under manual optimization: before every
    # opt.step(), with that optimizer, for hooks and callbacks alike; nothing is left
    # registered on the optimizers after the run.
    seen: list[tuple[str, int, bool]] = []

    class Watch(lk.Callback):
        def on_before_optimizer_step(self, ctx, optimizer):
            seen.append(("callback", ctx.global_step, isinstance(optimizer, torch.optim.SGD)))

    reg = gan_registry()

    @reg.on("before_optimizer_step")
    def hook(ctx, optimizer, disc):
        grads = [p.grad for p in disc.parameters()]
        seen.append(("hook", ctx.global_step, isinstance(optimizer, torch.optim.SGD)))
        if isinstance(optimizer, torch.optim.SGD):  # the discriminator's: its grads are there
            assert all(g is not None for g in grads)

    trainer_ = trainer(max_epochs=1, seed=0, callbacks=[Watch()])
    result = trainer_.fit(lk.collect(reg))
    per_batch = [("hook", True), ("callback", True), ("hook", False), ("callback", False)]
    assert [(who, sgd) for who, _, sgd in seen] == per_batch * 7  # opt_d, then opt_g
    assert [step for _, step, _ in seen] == [i for i in range(7) for _ in range(4)]
    assert result.global_step == 7
    for optimizer in trainer_.last_engine.optimizers:
        assert not optimizer._optimizer_step_pre_hooks


def test_ctx_backward_fires_the_backward_events_in_manual_optimization():
    # As Lightning's manual_backward: before_backward (with the loss) and after_backward
    # around each ctx.backward, for hooks and callbacks, in the batch's order of events.
    seen: list[tuple[str, int]] = []
    losses: list[torch.Tensor] = []

    def train(net, batch, batch_idx, optimizer, ctx):
        loss = ce(net, batch)
        losses.append(loss.detach())
        ctx.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    reg = registry(step=train, manual=True)

    @reg.on("train_batch_start")
    def start(batch_idx):
        seen.append(("train_batch_start", batch_idx))

    @reg.on("before_optimizer_step")
    def before_step(ctx):
        seen.append(("before_optimizer_step", ctx.batch_idx))

    @reg.on("train_batch_end")
    def end(batch_idx):
        seen.append(("train_batch_end", batch_idx))

    @reg.on("before_backward")
    def before(batch, batch_idx, loss, net):
        assert all(p.grad is None for p in net.parameters())
        seen.append(("before_backward", batch_idx))
        assert loss is losses[-1] or torch.equal(loss.detach(), losses[-1])

    class AfterBackward(lk.Callback):
        def on_after_backward(self, batch_idx, net):
            assert all(p.grad is not None for p in net.parameters())
            seen.append(("after_backward", batch_idx))

    trainer(max_epochs=1, limit_train_batches=2, callbacks=[AfterBackward()]).fit(lk.collect(reg))
    order = [
        "train_batch_start", "before_backward", "after_backward", "before_optimizer_step",
        "train_batch_end",
    ]  # fmt: skip
    assert seen == [(e, i) for i in range(2) for e in order]


def test_manual_optimization_refuses_automatic_flags():
    with pytest.raises(lk.ConfigError, match="optimizes manually \\(2 optimizers\\)") as info:
        trainer(max_epochs=1, accumulate_grad_batches=2).fit(lk.collect(gan_registry()))
    assert info.value.code == "manual-optimization-flags"

    def train(net, batch):
        return None

    reg = registry(step=train, manual=True)
    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=1, gradient_clip_val=1.0).fit(lk.collect(reg))
    line = train.__code__.co_firstlineno
    assert str(info.value) == (
        f"{train.__qualname__}(net, batch) at tests/engine/test_manual.py:{line} optimizes "
        f"manually "
        f"(manual=True), so gradient_clip_val=1.0 cannot apply. Do it inside the step: clip "
        f"with ctx.runtime.clip_gradients(opt, value) before opt.step(); or drop the flag."
    )


def test_manual_schedulers_are_the_steps_to_step():
    """As in Lightning, schedulers are not stepped for a manual step."""
    made = []

    def configure(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        made.append(torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
        return [opt], [made[0]]

    def train(net, batch, optimizer, scheduler, ctx):
        optimizer.zero_grad()
        ctx.backward(ce(net, batch))
        optimizer.step()
        if ctx.batch_idx == 0:
            scheduler.step()

    reg = registry(optim=configure, step=train, manual=True)
    trainer(max_epochs=3).fit(lk.collect(reg))
    assert made[0].last_epoch == 3


def test_manual_step_may_return_anything():
    got: list[object] = []

    def train(net, batch, optimizer, ctx):
        return {"anything": 1}

    reg = registry(step=train, manual=True)

    @reg.on("train_batch_end")
    def end(outputs):
        got.append(outputs)

    result = trainer(max_epochs=1).fit(lk.collect(reg))
    assert result.global_step == 7
    assert got == [{"anything": 1}] * 7


@pytest.mark.parametrize("manual", [True, False])
def test_a_manual_step_that_steps_nothing_but_returns_a_loss_is_an_error(manual):
    # Written for automatic optimization (returns the loss), run manually (manual=True, or two
    # optimizers): it would train nothing, silently. The first batch tells.
    def two(net):
        return [
            torch.optim.SGD(net[0].parameters(), lr=0.1),
            torch.optim.SGD(net[2].parameters(), lr=0.1),
        ]

    reg = registry(manual=manual, optim=None if manual else two)
    with pytest.raises(lk.StepError) as info:
        trainer(max_epochs=1).fit(lk.collect(reg))
    why = "manual=True" if manual else "2 optimizers from configure_optimizers"
    message = str(info.value)
    assert info.value.code == "manual-step-stepped-nothing"
    assert message.startswith(
        "registry.<locals>.train(net, batch) at tests/engine/engine_helpers.py:"
    )
    assert f"no optimizer stepped in the first batch. With {why}, the step optimizes manually" in (
        message
    )
    assert "call ctx.backward(loss) and opt.step() in the step" in message


def test_manual_accumulation_returning_its_loss_is_fine():
    # Lightning's manual accumulation: backward every batch, step every second one, and
    # return the loss (for logging): not a step that trains nothing.
    steps: list[int] = []

    def train(net, batch, batch_idx, optimizer, ctx):
        loss = ce(net, batch)
        ctx.backward(loss / 2)
        if (batch_idx + 1) % 2 == 0:
            optimizer.step()
            optimizer.zero_grad()
            steps.append(batch_idx)
        return loss

    result = trainer(max_epochs=1).fit(lk.collect(registry(step=train, manual=True)))
    assert steps == [1, 3, 5] and result.global_step == 7


def test_under_16_mixed_before_optimizer_step_fires_also_for_a_step_the_scaler_skips():
    # As Lightning (its precision plugin calls the hook before scaler.step): every opt.step()
    # the step calls, taken or skipped for an overflow, with true (unscaled) gradients.
    seen: list[tuple[int, bool]] = []

    def train(net, batch, optimizer, ctx):
        optimizer.zero_grad()
        scale = 1e38 if ctx.batch_idx in (1, 2) else 1.0  # inf in fp16: a skipped step
        ctx.backward(ce(net, batch) * scale)
        optimizer.step()

    reg = registry(step=train, manual=True)

    @reg.on("before_optimizer_step")
    def hook(ctx, net):
        seen.append((ctx.global_step, all(p.grad is not None for p in net.parameters())))

    result = trainer(max_epochs=1, precision="16-mixed").fit(lk.collect(reg))
    assert seen == [(i, True) for i in range(7)] and result.global_step == 7


def test_under_16_mixed_a_manual_step_that_steps_nothing_is_still_an_error():
    with pytest.raises(lk.StepError) as info:
        trainer(max_epochs=1, precision="16-mixed").fit(lk.collect(registry(manual=True)))
    assert info.value.code == "manual-step-stepped-nothing"


def test_under_16_mixed_a_loss_backward_of_the_steps_own_is_named():
    def train(net, batch, optimizer):
        optimizer.zero_grad()
        ce(net, batch).backward()  # not ctx.backward: the loss is not scaled
        optimizer.step()

    with pytest.raises(lk.StepError) as info:
        trainer(max_epochs=1, precision="16-mixed").fit(
            lk.collect(registry(step=train, manual=True))
        )
    assert info.value.code == "manual-backward-unscaled"
    assert "Backpropagate with ctx.backward(loss)" in str(info.value)


def test_under_16_mixed_lbfgs_is_refused_with_the_precisions_that_work():
    def lbfgs(net):
        return torch.optim.LBFGS(net.parameters(), lr=0.1)

    def train(net, batch, optimizer, ctx):
        def closure():
            optimizer.zero_grad()
            loss = ce(net, batch)
            ctx.backward(loss)
            return loss

        optimizer.step(closure)

    reg = registry(step=train, optim=lbfgs, manual=True)
    with pytest.raises(lk.ConfigError, match="precision='32-true' or 'bf16-mixed'") as info:
        trainer(max_epochs=1, precision="16-mixed").fit(lk.collect(reg))
    assert info.value.code == "optimizer-needs-closure"


def test_manual_schedulers_take_no_monitor_and_say_which_keys_do_nothing():
    # The step steps its schedulers: a ReduceLROnPlateau needs no monitor (as Lightning), and
    # a dict's interval/frequency/monitor are ignored, with a warning (as Lightning's).
    def plateau(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]

    def train(net, batch, optimizer, scheduler, ctx):
        optimizer.zero_grad()
        loss = ce(net, batch)
        ctx.backward(loss)
        optimizer.step()
        scheduler.step(loss.item())

    trainer(max_epochs=1).fit(lk.collect(registry(step=train, optim=plateau, manual=True)))

    def keyed(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train/loss"}}

    with pytest.warns(
        lk.LightkitWarning, match="'monitor', which a manual-optimization fit ignores"
    ) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(step=train, optim=keyed, manual=True)))
    assert "scheduler-keys-ignored" in [getattr(w.message, "code", None) for w in info]
