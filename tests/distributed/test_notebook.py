"""devices=2 from a notebook: functions defined in cells, both start methods, a failing run
that leaves the kernel usable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.distributed.support import ROOT

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nbclient", "nbformat", "ipykernel")),
    reason="needs nbclient, nbformat and ipykernel (the dev extra)",
)

CELLS = [
    """
import torch, lightkit as lk
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightkit.strategies.ddp import DDPStrategy

X = torch.randn(128, 4)          # a notebook global the data function uses
Y = X.sum(1, keepdim=True)
(X @ X.T).sum()                  # the kernel computed: its OpenMP threads exist now

class Scale(nn.Module):          # a class defined in a cell
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
    def forward(self, x):
        return self.lin(x)

@lk.model
def net():
    return Scale()

@lk.train_data
def data(batch_size: int = 16):
    return DataLoader(TensorDataset(X, Y), batch_size=batch_size, shuffle=True)

@lk.training_step
def train(net, batch, ctx, fail: bool = False):
    if fail and ctx.rank == 1:
        raise RuntimeError("failing on purpose in a notebook")
    x, y = batch
    loss = nn.functional.mse_loss(net(x), y)
    lk.log("loss", loss, sync_dist=True)
    return loss

@lk.configure_optimizers
def optim(net, lr: float = 0.1):
    return torch.optim.SGD(net.parameters(), lr=lr)

flags = dict(accelerator="cpu", devices=2, max_epochs=1, enable_progress_bar=False,
             enable_model_summary=False, enable_checkpointing=False, logger=False)
""",
    """
spawned = lk.Trainer(**flags, strategy="ddp").fit(lk.collect())
print("SPAWN", spawned.global_step, type(spawned.models["net"]).__name__,
      isinstance(spawned.models["net"], Scale))
""",
    """
forked = lk.Trainer(**flags, strategy=DDPStrategy(start_method="fork")).fit(lk.collect())
print("FORK", forked.global_step)
""",
    """
try:
    lk.Trainer(**flags, strategy=DDPStrategy(start_method="fork")).fit(
        lk.collect().with_hparams(fail=True))
except lk.DistributedError as exc:
    print("CAUGHT", "failing on purpose in a notebook" in str(exc))
again = lk.Trainer(**flags, strategy=DDPStrategy(start_method="fork")).fit(lk.collect())
print("STILL ALIVE", again.global_step)
""",
]


def test_devices_2_in_a_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in CELLS])
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    # A print can reach the notebook in pieces (the kernel flushes stdout as it pleases):
    # the stdout chunks, concatenated, are what was printed.
    text = "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.outputs
        if out.output_type == "stream" and out.get("name") == "stdout"
    )
    assert "SPAWN 4 Scale True" in text  # 128 samples, 16 per rank per batch: 4 steps
    assert "FORK 4" in text
    assert "CAUGHT True" in text
    assert "STILL ALIVE 4" in text
