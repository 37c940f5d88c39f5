"""``lk.Runtime`` on its own: moving batches, and a user's own loop on it."""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.engine.engine_helpers import assert_same_weights, ce, make_net, raw_fit, train_loader

Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Sample:
    image: torch.Tensor
    label: torch.Tensor
    name: str = "s"
    extra: Any = None


def nested_batch() -> dict[str, Any]:
    return {
        "pair": Pair(torch.ones(2, dtype=torch.float32), torch.tensor([1, 2])),
        "list": [torch.zeros(3), (torch.ones(1, dtype=torch.float16), "text")],
        "sample": Sample(torch.rand(2, 2), torch.tensor(3), extra={"deep": [torch.ones(1)]}),
        "plain": 5,
    }


def test_to_device_converts_every_floating_tensor_for_true_precisions():
    rt = lk.Runtime(accelerator="cpu", precision="64-true")
    batch = nested_batch()
    moved = rt.to_device(batch)
    assert type(moved["pair"]) is Pair
    assert moved["pair"].x.dtype == torch.float64
    assert moved["pair"].y.dtype == torch.int64  # integers untouched
    assert isinstance(moved["list"], list) and isinstance(moved["list"][1], tuple)
    assert moved["list"][0].dtype == torch.float64
    assert moved["list"][1][0].dtype == torch.float64
    assert moved["list"][1][1] == "text"
    assert type(moved["sample"]) is Sample
    assert moved["sample"].image.dtype == torch.float64
    assert moved["sample"].label.dtype == torch.int64
    assert moved["sample"].name == "s"
    assert moved["sample"].extra["deep"][0].dtype == torch.float64
    assert moved["plain"] == 5
    assert torch.equal(moved["sample"].image, batch["sample"].image.double())
    # The original batch is not mutated.
    assert batch["pair"].x.dtype == torch.float32


def test_to_device_on_cpu_in_fp32_is_free():
    rt = lk.Runtime(accelerator="cpu")
    batch = nested_batch()
    assert rt.to_device(batch) is batch


def test_apply_to_tensors_moves_nested_containers():
    from lightkit.utils.apply import apply_to_tensors, first_tensor

    batch = nested_batch()
    doubled = apply_to_tensors(batch, lambda t: t * 2)
    assert torch.equal(doubled["pair"].y, torch.tensor([2, 4]))
    assert torch.equal(doubled["sample"].extra["deep"][0], torch.tensor([2.0]))
    assert first_tensor(batch) is batch["pair"].x
    assert first_tensor({"a": "no", "b": [3, Sample(torch.ones(1), torch.ones(1))]}) is not None
    assert first_tensor(("x", 1)) is None


def test_runtime_topology_on_one_process():
    rt = lk.Runtime(accelerator="cpu")
    assert (rt.rank, rt.local_rank, rt.world_size, rt.is_global_zero) == (0, 0, 1, True)
    assert rt.device == torch.device("cpu")
    assert rt.all_reduce(torch.tensor(3.0)).item() == 3.0
    assert rt.broadcast({"a": 1}) == {"a": 1}
    rt.barrier()
    assert "single_device" in repr(rt) and "32-true" in repr(rt)


def test_a_user_loop_on_the_runtime_matches_plain_pytorch():
    """The docstring's loop, with accumulation and clipping done by hand."""
    rt = lk.Runtime(accelerator="cpu", precision="32-true")
    torch.manual_seed(0)
    model = rt.setup(make_net())
    opt = rt.setup_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    loader = rt.setup_dataloader(train_loader())
    for _ in range(2):
        n = len(loader)
        for i, batch in enumerate(loader):
            batch = rt.to_device(batch)
            with rt.autocast():
                loss = ce(model, batch) / 3
            rt.backward(loss)
            if (i + 1) % 3 == 0 or i == n - 1:
                rt.clip_gradients(opt, 0.05)
                assert rt.optimizer_step(opt) is True
                opt.zero_grad()
    assert_same_weights(rt.unwrap(model), raw_fit(epochs=2, accumulate=3, clip=("norm", 0.05)))


def test_a_user_loop_in_double_precision():
    rt = lk.Runtime(accelerator="cpu", precision="64-true")
    model = rt.setup(make_net())
    assert next(model.parameters()).dtype == torch.float64
    opt = rt.setup_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    for batch in rt.setup_dataloader(train_loader()):
        x, y = rt.to_device(batch)
        assert x.dtype == torch.float64 and y.dtype == torch.int64
        rt.backward(nn.functional.cross_entropy(model(x), y))
        rt.optimizer_step(opt)
        opt.zero_grad()


def test_save_and_load_through_the_runtime(tmp_path):
    rt = lk.Runtime(accelerator="cpu")
    net = make_net()
    opt = torch.optim.Adam(net.parameters())
    ce(net, next(iter(train_loader()))).backward()
    opt.step()
    path = tmp_path / "state.ckpt"
    rt.save({"net": net, "opt": opt, "step": 3}, path)

    other = make_net()
    other_opt = torch.optim.Adam(other.parameters())
    rest = rt.load(path, {"net": other, "opt": other_opt})
    assert rest == {"step": 3}
    assert_same_weights(other, net)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_unknown_precision_lists_the_available_ones():
    with pytest.raises(lk.LightkitError, match="32-true"):
        lk.Runtime(precision="float8")
