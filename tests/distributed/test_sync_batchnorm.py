"""``sync_batchnorm=True``: BatchNorm layers become ``SyncBatchNorm`` when a run has several
processes, are left alone in one, and several CPU processes are refused before any starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from lightkit.engine import trainer as trainer_module
from lightkit.utils.modules import sync_batchnorm
from tests.distributed.support import reference_flags

reg = lk.Registry()


@reg.model
def net(frozen_norm: bool = False) -> nn.Module:
    module = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1))
    if frozen_norm:  # running statistics only: SyncBatchNorm then synchronizes nothing
        module[1].eval()
    return module


@reg.train_data
def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16, shuffle=True)


@reg.training_step
def train(net, batch, ctx):
    x, y = batch
    lk.log("sync", float(isinstance(net.module[1], nn.SyncBatchNorm)) if ctx.world_size > 1 else 0)
    return nn.functional.mse_loss(net(x), y)


@reg.configure_optimizers
def optim(net):
    return torch.optim.SGD(net.parameters(), lr=0.05)


SPEC = lk.collect(reg)


def test_one_process_keeps_its_batchnorm_and_trains_as_without(tmp_path: Path) -> None:
    flags = reference_flags(tmp_path)
    plain = lk.Trainer(**flags).fit(SPEC)
    synced = lk.Trainer(**flags, sync_batchnorm=True).fit(SPEC)
    assert type(synced.models["net"][1]) is nn.BatchNorm1d  # nothing to synchronize
    for key, value in plain.models["net"].state_dict().items():
        assert torch.equal(value, synced.models["net"].state_dict()[key]), key


def test_several_cpu_processes_are_refused_before_any_starts(tmp_path: Path) -> None:
    trainer = lk.Trainer(**reference_flags(tmp_path), devices=2, sync_batchnorm=True)
    started = time.monotonic()
    with pytest.raises(lk.ConfigError, match="CUDA devices only") as info:
        trainer.fit(SPEC)
    assert info.value.code == "sync-batchnorm-device"
    assert "2 processes run on cpu" in str(info.value)
    assert "leave sync_batchnorm off" in str(info.value)
    assert time.monotonic() - started < 5  # no process was started
    assert list(tmp_path.iterdir()) == []


def test_explain_refuses_what_fit_would_and_explains_a_gpu_run() -> None:
    from lightkit.engine.schedule import explain

    with pytest.raises(lk.ConfigError, match="2 processes run on cpu") as info:
        explain(SPEC, lk.TrainerConfig(accelerator="cpu", devices=2, sync_batchnorm=True))
    assert info.value.code == "sync-batchnorm-device"
    # A GPU run explained on a machine without GPUs: explained as it would run there.
    gpus = lk.TrainerConfig(accelerator="cuda", devices=2, sync_batchnorm=True)
    assert "2 processes" in explain(SPEC, gpus).render()


def test_the_conversion_keeps_every_weight_and_buffer() -> None:
    torch.manual_seed(0)
    module = net()
    module[1].running_mean.add_(0.5)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    (converted,) = sync_batchnorm({"net": module}).values()
    assert type(converted[1]) is nn.SyncBatchNorm
    assert converted[0] is module[0] and converted[3] is module[3]
    after = converted.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key
    nn.Sequential(
        *[nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1)]
    ).load_state_dict(after)


def test_each_rank_converts_its_model_before_ddp_wraps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lift the up-front device check (forked ranks inherit the patch): DDP then meets the
    # converted layers on the CPU and refuses them itself, which shows the conversion ran
    # in every rank before the wrap. Training with them needs GPUs (the CUDA test below).
    monkeypatch.setattr(trainer_module, "check_sync_batchnorm", lambda *args: None)
    strategy = lk.DDPStrategy(start_method="fork")
    trainer = lk.Trainer(
        **reference_flags(tmp_path), devices=2, strategy=strategy, sync_batchnorm=True
    )
    with pytest.raises(lk.DistributedError, match="SyncBatchNorm layers only work with GPU"):
        trainer.fit(SPEC)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_normalize_with_the_statistics_of_both_batches(tmp_path: Path) -> None:
    flags: dict[str, Any] = {**reference_flags(tmp_path), "accelerator": "cuda", "max_steps": 1}
    synced = lk.Trainer(**flags, devices=2, sync_batchnorm=True).fit(SPEC)
    alone = lk.Trainer(**flags, devices=2).fit(SPEC)
    # One step: rank r's batch is DistributedSampler's permutation [r::2][:16], so both
    # batches together are its first 32 samples. The running mean after one step (momentum
    # 0.1 from zero) is 0.1 x the mean of the first layer's output over those 32 with sync,
    # over rank 0's 16 without.
    torch.manual_seed(0)
    first = net()[0].double()
    (x, _) = data().dataset.tensors
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = 0.1 * first(x[order[:32]]).mean(0)
        own = 0.1 * first(x[order[0:32:2]]).mean(0)
    torch.testing.assert_close(synced.models["net"][1].running_mean.cpu(), both)
    torch.testing.assert_close(alone.models["net"][1].running_mean.cpu(), own)
