"""What the progress bar costs: a tiny MLP trained for ~1000 steps with the bar off, as tqdm
bars (written to /dev/null, so the terminal's own drawing is not counted) and as plain text
lines. Runs are interleaved (off, bar, text in a shuffled order, repeated) so drift in the
machine's speed hits every variant alike. The time is the training loop's, from ``fit_start``
to ``fit_end`` (function hooks, identical in every variant), in wall-clock and in the
process's CPU time. Last, the bar's ``on_train_batch_end`` alone, timed in a tight loop.

Usage::

    python bench/progress_overhead.py               # 1000 steps, 7 rounds
    python bench/progress_overhead.py --steps 2000 --rounds 11 --refresh-rate 1
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

BATCH, N_IN, HIDDEN, N_OUT = 32, 32, 64, 10


def build_spec(steps_per_epoch: int) -> tuple[lk.TrainingSpec, dict[str, float]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps_per_epoch * BATCH, N_IN, generator=g)
    y = torch.randint(0, N_OUT, (steps_per_epoch * BATCH,), generator=g)
    times: dict[str, float] = {}
    reg = lk.Registry()

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(N_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, N_OUT))

    def data() -> DataLoader:
        return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    def step(net: nn.Module, batch: Any) -> torch.Tensor:
        xb, yb = batch
        loss = nn.functional.cross_entropy(net(xb), yb)
        lk.log("train/loss", loss, prog_bar=True)
        return loss

    def optim(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=0.01)

    def start() -> None:
        times["start"], times["cpu_start"] = time.perf_counter(), time.process_time()

    def end() -> None:
        times["end"], times["cpu_end"] = time.perf_counter(), time.process_time()

    reg.model(net)
    reg.train_data(data)
    reg.training_step(step)
    reg.configure_optimizers(optim)
    reg.on("fit_start")(start)
    reg.on("fit_end")(end)
    return lk.collect(reg), times


def run(
    variant: str, spec: lk.TrainingSpec, times: dict[str, float], args: Any
) -> tuple[float, float]:
    flags: dict[str, Any] = {
        "max_epochs": args.epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "seed": 0,
        "accelerator": "cpu",
    }
    with open(os.devnull, "w") as sink:
        if variant == "off":
            flags["enable_progress_bar"] = False
        else:
            mode = "bar" if variant == "bar" else "text"
            flags["callbacks"] = [
                lk.ProgressBar(file=sink, mode=mode, refresh_rate=args.refresh_rate)
            ]
        lk.Trainer(**flags).fit(spec)
    return times["end"] - times["start"], times["cpu_end"] - times["cpu_start"]


def hook_cost(mode: str, refresh_rate: int, steps_per_epoch: int, epochs: int = 2000) -> float:
    """Seconds per training batch spent in the bar's hooks, timed directly in a tight loop of
    epochs (epoch start, every batch's end, epoch end: lines, redraws and metric reads
    included), without the training loop's noise. A generated binder adds one Python call
    per hook on top."""
    from types import SimpleNamespace

    from lightkit.engine.metrics import MetricStore

    store = MetricStore()
    store.log("train/loss", torch.tensor(1.0), None, None, True, False, "mean", None)
    engine = SimpleNamespace(
        train_iter=SimpleNamespace(num_batches=steps_per_epoch), skip_batches=0, store=store
    )
    ctx = SimpleNamespace(is_global_zero=True, _engine=engine, epoch=0, global_step=0)
    with open(os.devnull, "w") as sink:
        bar = lk.ProgressBar(file=sink, mode=mode, refresh_rate=refresh_rate)  # type: ignore[arg-type]
        bar.setup(ctx, "fit")
        start, batch_end, end = (
            bar.on_train_epoch_start,
            bar.on_train_batch_end,
            bar.on_train_epoch_end,
        )
        t0 = time.perf_counter()
        for epoch in range(epochs):
            ctx.epoch = epoch
            start(ctx)
            for i in range(steps_per_epoch):
                batch_end(ctx, i)
            end(ctx)
        elapsed = time.perf_counter() - t0
        bar.teardown(ctx, "fit")
    return elapsed / (epochs * steps_per_epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the steps spread over")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--refresh-rate", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec, times = build_spec(max(1, args.steps // args.epochs))
    variants = ["off", "bar", "text"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    run("off", spec, times, args)  # warm-up: first-call costs land nowhere
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = variants[:]
        rng.shuffle(order)
        for v in order:
            wall, used = run(v, spec, times, args)
            results[v].append(wall)
            cpu[v].append(used)
    off = statistics.median(results["off"])
    steps = args.epochs * max(1, args.steps // args.epochs)
    print(f"{steps} steps, {args.rounds} interleaved rounds, refresh_rate={args.refresh_rate}")
    for v in variants:
        med = statistics.median(results[v])
        # The ratio of medians, and the median of per-round ratios (each round's runs ran
        # back to back, so the latter cancels slow drift better).
        per_round = statistics.median(
            a / b for a, b in zip(results[v], results["off"], strict=True)
        )
        print(
            f"  {v:>4}: median {med * 1e3:8.1f} ms  ({med / steps * 1e6:6.1f} us/step)  "
            f"x{med / off:.3f} of off  (per-round median x{per_round:.3f})"
        )
    cpu_off = statistics.median(cpu["off"])
    print("  CPU time of the process (less sensitive to other load on the machine):")
    for v in variants:
        med = statistics.median(cpu[v])
        print(f"  {v:>4}: median {med * 1e3:8.1f} ms  x{med / cpu_off:.3f} of off")
    for mode in ("bar", "text"):
        cost = hook_cost(mode, args.refresh_rate, max(1, args.steps // args.epochs))
        print(
            f"  {mode} hooks alone: {cost * 1e6:.2f} us per batch = "
            f"{cost / (off / steps) * 100:.2f}% of an unbarred step"
        )


if __name__ == "__main__":
    main()
