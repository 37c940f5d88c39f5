"""What ``trainer.fit`` costs on top of the same training written as a plain PyTorch loop.

Both sides do the same work: seed, build the MLP and the optimizer, build a shuffled
``DataLoader`` over synthetic data, and iterate it with ``for batch in loader:`` for the same
number of steps (the final weights are checked to be bitwise equal). Runs are interleaved in
one process (raw, lightkit, lightkit, raw, raw, lightkit, ...), so drifting machine load hits
both alike; each ratio is one lightkit run over the raw run of the same pair, and min/median/max
are over the repetitions. The 95% interval of the median (a bootstrap over the pairs) says how
far the median can be trusted: a target inside it is neither met nor missed by that run.
``--control`` also runs the hand-written loop a second time in each repetition and prints its
ratio to the first: the noise floor of a pair. Times are given as CPU time
(``time.process_time``: what the process itself spent, robust to other processes on a shared
machine) and wall-clock time.

Variants:

- ``tiny``: 32→64→64→10, batch 64, 3072 steps, SGD; lightkit with every feature off
  (``logger=False, enable_progress_bar=False, enable_checkpointing=False,
  enable_model_summary=False``). Per-step overhead shows most here.
- ``tiny-log``: the same, the lightkit step also calls ``lk.log("train/loss", loss)``.
- ``compute``: 32→1024→1024→10, batch 256, 96 steps, Adam: a step long enough that the loop's
  own cost should vanish.
- ``no-loader``: ``tiny`` over a list of ready batches instead of a ``DataLoader``: the step is
  ~5x shorter, so the loop's own cost per step (the µs/step column) stands out.

Usage::

    python bench/overhead.py                     # all variants, 15 repetitions, 1 thread
    python bench/overhead.py --variant compute --reps 31 --control
    python bench/overhead.py --variant tiny --reps 15 --threads 2 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightkit as lk
from bench.common import median_interval

FEATURES_OFF: dict[str, Any] = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


@dataclass(frozen=True)
class Variant:
    name: str
    hidden: int
    batch_size: int
    steps: int
    optimizer: str  # "sgd" or "adam"
    log_loss: bool
    prebuilt: bool = False  # iterate a list of ready batches instead of a DataLoader

    def loader(self) -> Any:
        """What both sides iterate: a shuffled ``DataLoader``, or a list of batches."""
        data = dataset(self.samples)
        if self.prebuilt:
            x, y = data.tensors
            b = self.batch_size
            return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]
        return DataLoader(data, batch_size=self.batch_size, shuffle=True)

    @property
    def samples(self) -> int:
        return self.batch_size * self.steps // 2  # two epochs

    def make_net(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(32, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, 10),
        )

    def make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(net.parameters(), lr=1e-3)
        return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


VARIANTS = {
    "tiny": Variant("tiny", 64, 64, 3072, "sgd", log_loss=False),
    "tiny-log": Variant("tiny-log", 64, 64, 3072, "sgd", log_loss=True),
    "compute": Variant("compute", 1024, 256, 96, "adam", log_loss=False),
    "no-loader": Variant("no-loader", 64, 64, 1024, "sgd", log_loss=False, prebuilt=True),
}

_g = torch.Generator().manual_seed(0)
_DATA: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def dataset(n: int) -> TensorDataset:
    if n not in _DATA:
        _DATA[n] = (torch.randn(n, 32, generator=_g), torch.randint(0, 10, (n,), generator=_g))
    return TensorDataset(*_DATA[n])


def run_raw(v: Variant) -> nn.Module:
    """The hand-written loop."""
    torch.manual_seed(0)
    net = v.make_net()
    opt = v.make_optimizer(net)
    loader = v.loader()
    net.train()
    for _ in range(2):
        for x, y in loader:
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return net


def lightkit_spec(v: Variant) -> lk.TrainingSpec:
    reg = lk.Registry()

    def net():
        return v.make_net()

    def data():
        return v.loader()

    def train(net, batch):
        x, y = batch
        return nn.functional.cross_entropy(net(x), y)

    def train_logging(net, batch):
        x, y = batch
        loss = nn.functional.cross_entropy(net(x), y)
        lk.log("train/loss", loss)
        return loss

    def optim(net):
        return v.make_optimizer(net)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(train_logging if v.log_loss else train)
    reg.configure_optimizers(optim)
    return lk.collect(reg)


def run_lightkit(v: Variant, spec: lk.TrainingSpec) -> nn.Module:
    trainer = lk.Trainer(max_epochs=2, seed=0, num_sanity_val_steps=0, **FEATURES_OFF)
    result = trainer.fit(spec)
    assert result.global_step == v.steps, result.global_step
    return result.models["net"]


def timed(fn: Callable[[], nn.Module]) -> tuple[float, float, nn.Module]:
    """Wall-clock and CPU seconds of ``fn()`` (CPU time ignores time spent descheduled, which
    dominates the noise on a shared machine)."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def summary(raw: list[float], other: list[float], steps: int) -> dict[str, Any]:
    ratios = [b / a for a, b in zip(raw, other, strict=True)]
    return {
        "raw_median_s": statistics.median(raw),
        "lightkit_median_s": statistics.median(other),
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
        "ratio_median_ci95": median_interval(ratios),
        "us_per_step_median": statistics.median(
            (b - a) / steps * 1e6 for a, b in zip(raw, other, strict=True)
        ),
    }


def measure(v: Variant, reps: int, control: bool = False) -> dict[str, Any]:
    spec = lightkit_spec(v)
    # Warm-up (allocator, first-call paths), and a check that both sides compute the same.
    *_, raw_net = timed(lambda: run_raw(v))
    *_, lk_net = timed(lambda: run_lightkit(v, spec))
    same = all(
        torch.equal(a, b) for a, b in zip(raw_net.parameters(), lk_net.parameters(), strict=True)
    )
    runs = [lambda: run_raw(v), lambda: run_lightkit(v, spec)]
    if control:  # the hand-written loop again: raw over raw shows the noise of a pair
        runs.append(lambda: run_raw(v))
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for rep in range(reps):
        # Reverse the order every other repetition (raw, lightkit, lightkit, raw, ...) so that
        # whatever the first run of a pair leaves behind (allocator state, caches) favours
        # neither.
        for side in order if rep % 2 == 0 else order[::-1]:
            w, c, _ = timed(runs[side])
            wall[side].append(w)
            cpu[side].append(c)
    result = {
        "variant": v.name,
        "steps": v.steps,
        "bitwise_equal": same,
        "cpu": summary(cpu[0], cpu[1], v.steps),
        "wall": summary(wall[0], wall[1], v.steps),
    }
    if control:
        result["control"] = {
            "cpu": summary(cpu[0], cpu[2], v.steps),
            "wall": summary(wall[0], wall[2], v.steps),
        }
    return result


def print_rows(r: dict[str, Any], which: str, figures: dict[str, Any]) -> None:
    for clock in ("cpu", "wall"):
        m = figures[clock]
        ci = m["ratio_median_ci95"]
        interval = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"
        print(
            f"{r['variant']:<10}{which:<10}{clock:<6}{r['steps']:>6}{m['raw_median_s']:>9.3f}"
            f"{m['lightkit_median_s']:>9.3f}{m['ratio_min']:>10.3f}{m['ratio_median']:>8.3f}"
            f"{m['ratio_max']:>7.3f}{interval:>15}{m['us_per_step_median']:>9.1f}  "
            f"{'yes' if r['bitwise_equal'] else 'NO'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--control", action="store_true", help="also run the hand-written loop a second time"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per variant")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = list(VARIANTS) if args.variant == "all" else [args.variant]
    if not args.json:
        print(f"torch {torch.__version__}, {args.threads} thread(s), {args.reps} repetitions")
        print(
            f"{'variant':<10}{'run':<10}{'clock':<6}{'steps':>6}{'raw (s)':>9}{'run (s)':>9}"
            f"{'ratio min':>10}{'median':>8}{'max':>7}{'median 95% CI':>15}{'µs/step':>9}  bitwise"
        )
    for name in names:
        r = measure(VARIANTS[name], args.reps, args.control)
        if args.json:
            print(json.dumps(r))
            continue
        print_rows(r, "lightkit", r)
        if "control" in r:
            print_rows(r, "raw again", r["control"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
