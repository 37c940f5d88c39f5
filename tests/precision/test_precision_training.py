"""Each precision through ``lk.Trainer``: the loss falls, dtypes are what the mode promises,
and 16-mixed matches hand-written ``GradScaler`` loops bitwise (skips, clipping, manual)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.precision.precision_helpers import (
    EXPECTED,
    assert_same_weights,
    build_spec,
    ce,
    loader,
    make_net,
    reference_amp,
    sgd,
    trainer,
)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_precision_trains_with_the_dtypes_it_promises(name):
    x_dtype, act_dtype, param_dtype, default_dtype = EXPECTED[name]
    losses: list[float] = []
    inside: dict[str, object] = {}
    at_step: dict[str, object] = {}

    def train(net, batch, ctx):
        x, y = batch
        hidden = net[0](x)
        out = net[2](net[1](hidden))
        loss = nn.functional.cross_entropy(out, y)
        inside.update(
            x=x.dtype,
            act=(hidden.dtype, out.dtype),
            params={p.dtype for p in net.parameters()},
            default=torch.get_default_dtype(),
            made=torch.zeros(1).dtype,
            precision=ctx.precision,
        )
        losses.append(loss.item())
        return loss

    def grads(net, optimizer):
        at_step.update(
            grads={p.grad.dtype for p in net.parameters()},
            params={p.dtype for g in optimizer.param_groups for p in g["params"]},
            finite=all(bool(torch.isfinite(p.grad).all()) for p in net.parameters()),
        )

    spec = build_spec(step=train, hooks={"before_optimizer_step": grads})
    result = trainer(max_epochs=15, precision=name).fit(spec)

    assert inside == {
        "x": x_dtype,
        "act": (act_dtype, act_dtype),
        "params": {param_dtype},
        "default": default_dtype,
        "made": default_dtype,
        "precision": name,
    }
    assert at_step["grads"] == {param_dtype}
    assert at_step["params"] == {param_dtype}  # the optimizer holds the converted parameters
    assert at_step["finite"]  # 16-mixed: the hook sees unscaled gradients
    assert {p.dtype for p in result.models["net"].parameters()} == {param_dtype}
    assert torch.get_default_dtype() == torch.float32  # restored after the run
    assert result.global_step == 15 * 4
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_validate_and_predict_run_under_the_same_precision(name):
    x_dtype, act_dtype, _, default_dtype = EXPECTED[name]
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def evaluate(net, batch):
        x, _ = batch
        seen.append((x.dtype, torch.get_default_dtype()))
        return net(x)

    spec = build_spec(eval_step=evaluate)
    t = trainer(precision=name)
    t.validate(spec)
    predictions = t.predict(spec)
    assert seen == [(x_dtype, default_dtype)] * 8
    assert len(predictions) == 4
    assert {p.dtype for p in predictions} == {act_dtype}  # returned as produced


def test_16_mixed_skips_a_step_with_inf_gradients_and_halves_the_scale():
    plugin = lk.MixedPrecision(torch.float16)
    weights: list[torch.Tensor] = []
    scales: list[float] = []

    def inject(net, batch_idx, ctx):
        if ctx.global_step == 2:
            net[0].weight.grad[0, 0] = float("inf")

    def record(net):
        weights.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
        scales.append(plugin.scale)

    spec = build_spec(hooks={"after_backward": inject, "train_batch_end": record})
    initial = torch.cat([p.detach().flatten() for p in make_net().parameters()])
    result = trainer(max_steps=5, precision=plugin).fit(spec)

    assert scales == [65536.0, 65536.0, 32768.0, 32768.0, 32768.0]
    before = [initial, *weights[:-1]]
    changed = [not torch.equal(a, b) for a, b in zip(before, weights, strict=True)]
    assert changed == [True, True, False, True, True]  # step 2 was skipped
    assert result.global_step == 5  # a skipped step still counts, as in Lightning

    net, scaler = reference_amp(2, inject_at=2, max_batches=5)
    assert_same_weights(result.models["net"], net)
    assert plugin.scaler.state_dict() == scaler.state_dict()


@pytest.mark.parametrize("clip", [None, 0.05])
def test_16_mixed_matches_the_hand_written_grad_scaler_loop(clip):
    plugin = lk.MixedPrecision(torch.float16)
    seen: list[torch.Tensor] = []

    def record(net):  # Lightning's order: the hook sees unscaled, not yet clipped gradients
        seen.append(net[0].weight.grad.clone())

    spec = build_spec(hooks={"before_optimizer_step": record})
    result = trainer(max_epochs=3, precision=plugin, gradient_clip_val=clip).fit(spec)
    expected: list[torch.Tensor] = []
    net, scaler = reference_amp(3, clip=clip, grads=expected)
    assert_same_weights(result.models["net"], net)
    assert plugin.scaler.state_dict() == scaler.state_dict()
    assert len(seen) == len(expected) == 12
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_16_mixed_clips_the_unscaled_gradient():
    clipped = trainer(max_epochs=2, precision="16-mixed", gradient_clip_val=0.05)
    net = clipped.fit(build_spec()).models["net"]
    # clipping must bite here, and clipping the scaled gradient would be a different run
    unclipped, _ = reference_amp(2)
    assert not torch.equal(net[0].weight, unclipped[0].weight)
    wrong, _ = reference_amp(2, clip=0.05, unscale=False)
    assert not torch.equal(net[0].weight, wrong[0].weight)
    assert_same_weights(net, reference_amp(2, clip=0.05)[0])


def test_16_mixed_accumulation_matches_the_hand_written_loop():
    plugin = lk.MixedPrecision(torch.float16)
    flags = {"max_epochs": 2, "precision": plugin, "accumulate_grad_batches": 3}
    result = trainer(**flags, gradient_clip_val=0.05).fit(build_spec())
    net, scaler = reference_amp(2, clip=0.05, accumulate=3)
    assert_same_weights(result.models["net"], net)
    assert plugin.scaler.state_dict() == scaler.state_dict()


def test_manual_optimization_with_16_mixed_matches_the_hand_written_loop():
    plugin = lk.MixedPrecision(torch.float16)

    def train(net, batch, batch_idx, optimizer, ctx):
        loss = ce(net, batch)
        ctx.backward(loss)
        if ctx.global_step == 2:
            net[0].weight.grad[0, 0] = float("inf")
        ctx.runtime.clip_gradients(optimizer, 0.05)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = trainer(max_epochs=2, precision=plugin).fit(build_spec(step=train, manual=True))
    net, scaler = reference_amp(2, clip=0.05, inject_at=2)
    assert_same_weights(result.models["net"], net)
    assert plugin.scaler.state_dict() == scaler.state_dict()
    assert scaler.get_scale() == 32768.0


def _two_parts() -> tuple[nn.Module, nn.Module]:
    net = make_net()
    return net[0], nn.Sequential(net[1], net[2])


@pytest.mark.parametrize("interleaved", [False, True])
def test_manual_two_optimizers_with_16_mixed_match_the_hand_written_loop(interleaved):
    """PyTorch's recipe (all backwards, all steps, one update) and the GAN pattern (backward
    and step per optimizer, the update before the next backward) both match by hand."""
    plugin = lk.MixedPrecision(torch.float16)
    reg = lk.Registry()

    def enc():
        return _two_parts()[0]

    def head():
        return _two_parts()[1]

    def data():
        return loader()

    def train(enc, head, batch, optimizers, ctx):
        x, y = batch
        opt_enc, opt_head = optimizers
        loss_a = nn.functional.cross_entropy(head(enc(x)), y)
        loss_b = head(enc(x)).float().pow(2).mean()
        ctx.backward(loss_a)
        if ctx.global_step == 1:
            enc.weight.grad[0, 0] = float("inf")
        if interleaved:
            opt_enc.step()
            opt_enc.zero_grad()
            ctx.backward(loss_b)
            opt_head.step()
            opt_head.zero_grad()
        else:
            ctx.backward(loss_b)
            opt_enc.step()
            opt_head.step()
            opt_enc.zero_grad()
            opt_head.zero_grad()

    def optim(enc, head):
        return [sgd(enc.parameters()), sgd(head.parameters())]

    reg.model(enc)
    reg.model(head)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    result = trainer(max_epochs=1, precision=plugin).fit(lk.collect(reg))

    r_enc, r_head = _two_parts()
    o_enc, o_head = sgd(r_enc.parameters()), sgd(r_head.parameters())
    scaler = torch.amp.GradScaler("cpu")
    for i, (x, y) in enumerate(loader()):
        with torch.autocast("cpu", dtype=torch.float16):
            loss_a = nn.functional.cross_entropy(r_head(r_enc(x)), y)
            loss_b = r_head(r_enc(x)).float().pow(2).mean()
        scaler.scale(loss_a).backward(retain_graph=False)
        if i == 1:
            r_enc.weight.grad[0, 0] = float("inf")
        if interleaved:
            scaler.step(o_enc)
            scaler.update()
            o_enc.zero_grad()
            scaler.scale(loss_b).backward()
            scaler.step(o_head)
        else:
            scaler.scale(loss_b).backward()
            scaler.step(o_enc)
            scaler.step(o_head)
            o_enc.zero_grad()
        scaler.update()
        o_head.zero_grad()
    assert_same_weights(result.models["enc"], r_enc)
    assert_same_weights(result.models["head"], r_head)
    assert plugin.scaler.state_dict() == scaler.state_dict()
    assert scaler.get_scale() < 65536.0  # the injected inf lowered it


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_forward_after_a_manual_step_sees_the_stepped_weights(dtype):
    # The GAN pattern: step, then forward again in the same training step. With autocast's
    # weight-cast cache on, the second forward reused the casts of the weights before the
    # step (the same loss twice). As Lightning, no cache: it matches the hand-written loop.
    seen: list[float] = []

    def train(net, batch, optimizer, ctx):
        for _ in range(2):
            loss = ce(net, batch)
            seen.append(loss.item())
            optimizer.zero_grad()
            ctx.backward(loss)
            optimizer.step()

    name = "bf16-mixed" if dtype is torch.bfloat16 else "16-mixed"
    result = trainer(max_epochs=1, precision=name).fit(build_spec(step=train, manual=True))
    net = make_net()
    opt = sgd(net.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=dtype is torch.float16)
    expected: list[float] = []
    for batch in loader():
        for _ in range(2):
            with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
                loss = ce(net, batch)
            expected.append(loss.item())
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert seen == expected
    assert seen[0] != seen[1]
    assert_same_weights(result.models["net"], net)
