"""The training loop never reads a tensor's value on the host per step.

A read (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``, ...) of a GPU tensor waits for
every kernel queued before it: one per step keeps the CPU from running ahead of the GPU. On
CPU nothing waits, so the test counts the reads instead: every conversion method of
``torch.Tensor`` is wrapped, and calls made from lightkit's own files are counted by call
site. Values are allowed to become floats only at the logger's flush points (every
``log_every_n_steps`` batches) and at an epoch's end. Where CUDA exists, the same run on the
GPU counts synchronisations with ``torch.cuda.set_sync_debug_mode``.

The one documented exception: ``nonfinite_loss="raise"`` (what ``"auto"``, the default, means on
CPU) and ``"skip"`` read the loss once per step to stop before the optimizer step;
``"ignore"`` does not, and neither does ``"auto"`` on an accelerator.
"""

from __future__ import annotations

import collections
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.helpers import requires

LIGHTKIT = str(Path(lk.__file__).resolve().parent)
CONVERSIONS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
EPOCHS, BATCHES, LOG_EVERY = 2, 24, 8
STEPS = EPOCHS * BATCHES


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[tuple[str, int, str]]]:
    """Counts tensor-to-host conversions called from lightkit's files, by (file, line, method)."""
    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def wrap(name: str, original: Any) -> Any:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(LIGHTKIT):
                path = Path(caller.co_filename).relative_to(Path(LIGHTKIT).parent)
                counts[(str(path), sys._getframe(1).f_lineno, name)] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in CONVERSIONS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    yield counts


def spec() -> lk.TrainingSpec:
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(BATCHES * 4, 6, generator=g),
        torch.randint(0, 3, (BATCHES * 4,), generator=g),
    )
    reg = lk.Registry()

    def net():
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def data():
        return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)

    def train(net, batch, ctx):
        inputs, labels = batch
        logits = net(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        ctx.log("train/loss", loss)  # a step value: written every LOG_EVERY steps
        acc = (logits.argmax(1) == labels).float().mean()
        lk.log("train/acc", acc, on_step=True, on_epoch=True)  # and an epoch aggregate
        return loss

    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    return lk.collect(reg)


def fit(tmp_path: Path, **flags: Any) -> lk.Result:
    config: dict[str, Any] = {
        "max_epochs": EPOCHS,
        "seed": 0,
        "default_root_dir": tmp_path,
        "log_every_n_steps": LOG_EVERY,
        "enable_progress_bar": False,  # it converts when it redraws: time-based, not per step
        "logger": [lk.CSVLogger()],
        **flags,
    }
    return lk.Trainer(**config).fit(spec())


#: Flushes a run may convert at: one per LOG_EVERY steps, and per epoch its end (the epoch
#: aggregates, the leftover step values) and the checkpoint it saves (its name, the metrics it
#: stores); at each, every metric's value (three: train/loss, train/acc, and train/acc's epoch
#: aggregate). On a GPU a flush is one copy (`.tolist()` of the stacked values); on CPU each
#: value is read directly.
FLUSHES = STEPS // LOG_EVERY + 4 * EPOCHS
ALLOWED = 3 * FLUSHES


def test_logging_every_step_reads_nothing_per_step(tmp_path, reads):
    result = fit(tmp_path, nonfinite_loss="ignore")
    assert result.global_step == STEPS
    total = sum(reads.values())
    per_site = {site: n for site, n in reads.items() if n >= STEPS}  # a read per step
    assert per_site == {}, f"per-step reads: {per_site}"
    assert total <= ALLOWED, dict(reads)
    assert total >= STEPS // LOG_EVERY  # the wrapper does see the flushes
    rows = (Path(result.log_dir) / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) > STEPS // LOG_EVERY  # the values were written all the same


def test_the_nonfinite_check_is_the_only_read_per_step(tmp_path, reads):
    fit(tmp_path)  # nonfinite_loss="raise": reads the loss after its backward, every step
    per_site = {site: n for site, n in reads.items() if n >= STEPS}
    assert len(per_site) == 1, per_site
    ((path, _, method), count) = next(iter(per_site.items()))
    assert (path, method, count) == (str(Path("lightkit/engine/loops.py")), "item", STEPS)
    assert sum(reads.values()) - count <= ALLOWED


def cuda_syncs(tmp_path: Path, epochs: int) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(
                tmp_path,
                max_epochs=epochs,
                accelerator="cuda",
                devices=1,
                nonfinite_loss="ignore",
                enable_checkpointing=False,  # a save copies every tensor to the host
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@requires(cuda=True)
def test_no_device_sync_per_step_on_cuda(tmp_path):
    # Set-up synchronises (moving the model, the data's first batch); a second epoch adds only
    # its flushes, not one per step.
    one, two = cuda_syncs(tmp_path / "one", 1), cuda_syncs(tmp_path / "two", 2)
    assert two - one <= BATCHES // LOG_EVERY + 3, (one, two)  # one sync per flush
