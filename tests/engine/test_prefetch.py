"""Reading the next batch ahead (CUDA with loader workers only) and what it must not change."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from lightkit.runtime.prefetch import one_ahead, reads_ahead_safely
from tests.helpers import requires


def test_one_ahead_starts_the_next_item_before_yielding_the_current():
    events: list[str] = []

    def start(x: int) -> int:
        events.append(f"start {x}")
        return x

    def finish(x: int) -> int:
        events.append(f"yield {x}")
        return x

    got = []
    for x in one_ahead(iter(range(3)), start, finish):
        events.append(f"use {x}")
        got.append(x)
    assert got == [0, 1, 2]
    assert events == [
        "start 0", "start 1", "yield 0", "use 0", "start 2", "yield 1", "use 1", "yield 2",
        "use 2",
    ]  # fmt: skip
    assert list(one_ahead(iter([]), start, finish)) == []


def test_an_error_reading_ahead_comes_after_the_current_item():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in one_ahead(items(), lambda v: v, lambda v: v):
            got.append(x)
    assert got == [1, 2]  # as `for x in items():` would have used them


def test_reading_ahead_only_from_loader_workers():
    ds = TensorDataset(torch.arange(8.0))
    assert not reads_ahead_safely(DataLoader(ds, batch_size=2))
    assert reads_ahead_safely(DataLoader(ds, batch_size=2, num_workers=1))
    assert not reads_ahead_safely([torch.zeros(2)])


def test_cpu_batches_pass_through_untouched():
    rt = lk.Runtime(accelerator="cpu")
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, num_workers=1)
    pairs = iter([(0, "batch")])
    assert rt.prefetch(pairs, loader) is pairs


@requires(cuda=True)
def test_cuda_prefetch_gives_the_batches_in_order_on_the_device():
    rt = lk.Runtime(accelerator="cuda", devices=1)
    x = torch.arange(64.0).reshape(32, 2)
    loader = DataLoader(TensorDataset(x), batch_size=4, num_workers=2)
    got = [
        (i, rt.to_device(b)[0]) for i, b in rt.prefetch(enumerate(loader), loader)
    ]  # fmt: skip
    assert [i for i, _ in got] == list(range(8))
    assert all(t.device.type == "cuda" for _, t in got)
    assert torch.equal(torch.cat([t for _, t in got]).cpu(), x)


@requires(cuda=True)
def test_cuda_prefetch_leaves_a_packed_sequence_to_its_own_to():
    from torch.nn.utils.rnn import pack_sequence

    rt = lk.Runtime(accelerator="cuda", devices=1)
    packed = pack_sequence([torch.randn(3, 2), torch.randn(2, 2)])
    loader = DataLoader([0, 1], batch_size=1, num_workers=1, collate_fn=lambda _: packed)
    (_, batch), (_, _) = list(rt.prefetch(enumerate(loader), loader))
    moved = rt.to_device(batch)
    assert moved.data.device.type == "cuda" and moved.batch_sizes.device.type == "cpu"


@requires(cuda=True)
def test_predictions_come_back_in_host_memory(tmp_path):
    from torch import nn

    reg = lk.Registry()
    reg.model(lambda: nn.Linear(2, 1), name="net")
    reg.predict_data(lambda: [(torch.ones(3, 2),)] * 2)

    seen: list[str] = []

    @reg.predict_step
    def predict(net, batch):
        out = net(batch[0])
        seen.append(out.device.type)
        return {"y": out, "n": 3}

    preds = lk.Trainer(accelerator="cuda", devices=1, logger=False).predict(lk.collect(reg))
    assert seen == ["cuda", "cuda"]
    assert [p["y"].device.type for p in preds] == ["cpu", "cpu"] and preds[0]["n"] == 3
