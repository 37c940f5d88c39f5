"""The tiny training program the distributed tests run, with knobs as hyperparameters.

A float64 regression (``precision="64-true"``), so that a 2-rank run and a single process agree
to rounding. Importable (``tests.distributed.programs``) so spawned ranks load it by reference.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, TensorDataset

import lightkit as lk

N_TRAIN = 256
N_VAL = 120  # not a multiple of the batch: the last batches are smaller (weighting matters)


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = x @ torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None]
    y = y + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return TensorDataset(x, y)


class RankCounted(IterableDataset):  # type: ignore[type-arg]
    """Rank r yields ``4 + r`` batches: uneven on purpose."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        g = torch.Generator().manual_seed(rank)
        for _ in range(4 + rank):
            x = torch.randn(8, 8, generator=g, dtype=torch.float64)
            yield x, x.sum(1, keepdim=True)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


class Deep(nn.Module):
    """Repeated blocks in a ModuleList: what FSDP's default policy shards one by one."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.blocks = nn.ModuleList(Block(16) for _ in range(blocks))
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


@lk.model
def net(blocks: int = 0) -> nn.Module:
    if blocks:
        return Deep(blocks)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


@lk.train_data
def train_loader(batch_size: int = 32, reference: bool = False, uneven: bool = False):
    if uneven:
        return DataLoader(RankCounted(), batch_size=None)
    ds = dataset(N_TRAIN, 0)
    if reference:  # one process, the permutation DistributedSampler(seed=0) draws
        sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler)
    return DataLoader(ds, batch_size=batch_size, shuffle=True)


@lk.val_data
def val_loader(val_batch_size: int = 32):
    return DataLoader(dataset(N_VAL, 1), batch_size=val_batch_size)


@lk.training_step
def train(
    net,
    batch,
    ctx,
    fail_rank: int = -1,
    fail_step: int = 3,
    fail_mode: str = "raise",
    marker_dir: str = "",
    hang_rank: int = -1,
    sigterm_batch: int = -1,
):
    if ctx.rank == 0 and ctx.epoch == 1 and ctx.batch_idx == sigterm_batch:
        signal.raise_signal(signal.SIGTERM)  # rank 0 only: the ranks agree to stop
    if ctx.rank == hang_rank and ctx.global_step == fail_step:
        time.sleep(120)  # outside any collective: only the launcher can stop it
    if ctx.rank == fail_rank and ctx.global_step == fail_step:
        if marker_dir:
            Path(marker_dir, f"failed-{ctx.rank}").write_text(repr(time.time()))
        if fail_mode == "raise":
            raise ValueError(f"boom on rank {ctx.rank} at step {ctx.global_step}")
        if fail_mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fail_mode == "exit":
            os._exit(3)
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    lk.log("train/loss", loss, sync_dist=True, on_epoch=True)
    lk.log("train/seen", float(len(x)), on_step=False, on_epoch=True, reduce="sum", sync_dist=True)
    lk.log("train/rank", ctx.rank, sync_dist=True)  # a number, reduced like a tensor
    if ctx.rank == 0:  # a call on one rank only: nothing waits for the others
        lk.log("train/rank0", ctx.global_step + 7.0, rank_zero_only=True)
    return loss


@lk.validation_step
def val(net, batch):
    x, y = batch
    err = (net(x) - y).pow(2)
    lk.log("val/mse", err.mean(), sync_dist=True)
    lk.log("val/max", err.max(), reduce="max", sync_dist=True)
    lk.log("val/n", float(len(x)), reduce="sum", sync_dist=True)


@lk.configure_optimizers
def optim(net, lr: float = 0.05, momentum: float = 0.9):
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)


_ALLREDUCES = [0]


def counting_comm_hook(state, bucket):  # type: ignore[no-untyped-def]
    """DDP's default all-reduce, counted (one call per bucket per sync): for
    ``DDPStrategy(comm_hook=...)``."""
    _ALLREDUCES[0] += 1
    tensor = bucket.buffer() / torch.distributed.get_world_size()
    work = torch.distributed.all_reduce(tensor, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


@lk.on("fit_start")
def count_allreduces(ctx, count_comm: bool = False, marker_dir: str = ""):
    """Start counting the comm hook's all-reduces."""
    if marker_dir:
        Path(marker_dir, f"pid-{ctx.rank}").write_text(str(os.getpid()))
    _ALLREDUCES[0] = 0


@lk.on("train_epoch_end")
def report_allreduces(net, count_comm: bool = False):
    if count_comm:
        lk.log("allreduces", float(_ALLREDUCES[0]))
    from torch.distributed.fsdp import FSDPModule

    units = sum(isinstance(m, FSDPModule) for m in net.modules())
    if units:
        lk.log("fsdp_units", float(units))
        lk.log("param_dtype_bits", float(next(net.parameters()).dtype.itemsize * 8))


@lk.on("exception")
def note_exception(exception, ctx, marker_dir: str = ""):
    """Every rank that sees the run fail says what it saw (survivors included)."""
    if marker_dir:
        Path(marker_dir, f"exception-{ctx.rank}").write_text(type(exception).__name__)
