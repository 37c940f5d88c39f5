"""The precisions on a CUDA GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.helpers import requires
from tests.precision.precision_helpers import (
    EXPECTED,
    assert_same_weights,
    build_spec,
    ce,
    loader,
    make_net,
    sgd,
    trainer,
)


@requires(cuda=True)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_precision_trains_on_cuda(name):
    x_dtype, act_dtype, param_dtype, _ = EXPECTED[name]
    losses: list[torch.Tensor] = []
    inside: dict[str, object] = {}

    def train(net, batch):
        x, y = batch
        out = net(x)
        inside.update(device=x.device.type, x=x.dtype, act=out.dtype)
        loss = nn.functional.cross_entropy(out, y)
        losses.append(loss.detach())
        return loss

    result = trainer(max_epochs=15, accelerator="cuda", devices=1, precision=name).fit(
        build_spec(step=train)
    )
    assert inside == {"device": "cuda", "x": x_dtype, "act": act_dtype}
    assert {p.dtype for p in result.models["net"].parameters()} == {param_dtype}
    first, last = torch.stack(losses[:4]).mean().item(), torch.stack(losses[-4:]).mean().item()
    assert last < 0.6 * first, (first, last)


@requires(cuda=True)
def test_16_mixed_on_cuda_matches_the_hand_written_grad_scaler_loop():
    plugin = lk.MixedPrecision(torch.float16)
    flags = {"max_epochs": 2, "accelerator": "cuda", "devices": 1, "precision": plugin}
    result = trainer(**flags, gradient_clip_val=0.05).fit(build_spec())

    net = make_net().cuda()
    opt = sgd(net.parameters())
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(2):
        for x, y in loader():
            x, y = x.cuda(), y.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                loss = ce(net, (x, y))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.05)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    assert_same_weights(result.models["net"], net)
    assert plugin.scale == scaler.get_scale()
