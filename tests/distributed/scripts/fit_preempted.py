"""A plain script whose fit(devices=2) is slow enough to be stopped by a signal sent to it,
the calling process (``docker stop``, ``kill``): each step sleeps 0.2 s.

Argument: the run folder (ranks write their pids there once training).
"""

import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

root = sys.argv[1]


@lk.model
def net():
    return nn.Linear(3, 1)


@lk.train_data
def data():
    return DataLoader(TensorDataset(torch.randn(400, 3), torch.randn(400, 1)), batch_size=2)


@lk.training_step
def train(net, batch, ctx):
    Path(root, f"pid-{ctx.rank}").write_text(str(os.getpid()))
    time.sleep(0.2)
    x, y = batch
    return nn.functional.mse_loss(net(x), y)


@lk.configure_optimizers
def optim(net):
    return torch.optim.SGD(net.parameters(), lr=0.01)


lk.Trainer(
    accelerator="cpu",
    devices=2,
    strategy=lk.DDPStrategy(start_method="fork"),
    max_epochs=1,
    log_every_n_steps=1,
    enable_progress_bar=False,
    enable_model_summary=False,
    default_root_dir=root,
).fit(lk.collect())
print("finished", flush=True)
