"""Build a spec in code from plain library functions, then sweep a hyperparameter grid.

Nothing in this file is decorated. The functions below could live in any library; ``build_spec``
wires them into an explicit ``lk.Registry`` (the decorators are its methods, used as plain
calls), and ``spec.with_hparams`` gives one validated spec per point of the grid. The task is
telling two interleaved spirals apart, data made in memory with torch.

    python examples/programmatic.py                        # six runs, under a minute
    python examples/programmatic.py --lr 0.003 0.01 --width 32 128 --max-epochs 100
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk


# -- a "library": plain functions, no lightkit in their signatures ------------------------------
@functools.lru_cache(maxsize=4)
def spirals(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points on two interleaved spirals with Gaussian noise, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=gen)
    t = 0.5 + 3 * math.pi * torch.rand(n, generator=gen)
    angle = t + math.pi * label
    points = torch.stack([t * angle.cos(), t * angle.sin()], dim=1) / (3 * math.pi)
    return points + noise * torch.randn(n, 2, generator=gen) / 3, label


def mlp(width: int = 64, depth: int = 3) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(2, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 2))


def spiral_train(points: int = 2000, noise: float = 0.2, batch_size: int = 100) -> DataLoader:
    return DataLoader(
        TensorDataset(*spirals(points, noise, seed=0)), batch_size=batch_size, shuffle=True
    )


def spiral_val(noise: float = 0.2, batch_size: int = 100) -> DataLoader:
    return DataLoader(TensorDataset(*spirals(1000, noise, seed=1)), batch_size=batch_size)


def classify(net: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    loss = F.cross_entropy(net(x), y)
    lk.log("train/loss", loss, on_epoch=True)
    return loss


def score(net: nn.Module, batch: Any) -> None:
    x, y = batch
    lk.log("val/acc", (net(x).argmax(1) == y).float().mean())


def adam(net: nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=lr)


# -- wiring ---------------------------------------------------------------------------------------
def build_spec() -> lk.TrainingSpec:
    """The library functions, each given its role; ``mlp`` is injected under the name "net"."""
    reg = lk.Registry("spirals")
    reg.model(mlp, name="net")
    reg.train_data(spiral_train)
    reg.val_data(spiral_val)
    reg.training_step(classify)
    reg.validation_step(score)
    reg.configure_optimizers(adam)
    return lk.collect(reg)


def sweep(
    spec: lk.TrainingSpec, grid: dict[str, Sequence[Any]], **trainer_flags: Any
) -> list[dict[str, Any]]:
    """Fit one run per point of ``grid``; return a row of hyperparameters and results each."""
    rows = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        start = time.perf_counter()
        result = lk.Trainer(**trainer_flags).fit(spec.with_hparams(**point))
        rows.append(
            {
                **point,
                "val_acc": result.metrics["val/acc"],
                "train_loss": result.metrics["train/loss"],
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from examples import _common

    smoke = _common.smoke()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--lr", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2], help="learning rates (floats)"
    )
    widths = [8, 64] if smoke else [16, 64]
    parser.add_argument("--width", type=int, nargs="+", default=widths, help="widths (ints)")
    epochs = 1 if smoke else 60
    parser.add_argument("--max-epochs", type=int, default=epochs, help="epochs per point (int)")
    points = 200 if smoke else 2000
    parser.add_argument("--points", type=int, default=points, help="spiral points (int)")
    parser.add_argument("--default-root-dir", default=None, help="where runs are written")
    parser.add_argument("--results", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    spec = build_spec().with_hparams(points=args.points)
    print(spec.describe())
    start = time.perf_counter()
    rows = sweep(
        spec,
        {"lr": args.lr, "width": args.width},
        max_epochs=args.max_epochs,
        seed=0,
        default_root_dir=args.default_root_dir,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    rows.sort(key=lambda r: -r["val_acc"])
    print("\nsweep (best first)\n" + table(rows))
    results = {"rows": rows, "best": rows[0], "wall_s": round(time.perf_counter() - start, 1)}
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file so the spec records importable function names.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.programmatic import main

    main()
