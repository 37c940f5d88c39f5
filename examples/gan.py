"""A GAN with two models, two optimizers and manual optimization.

The data are points on a ring of eight Gaussians, the classic test of mode collapse. The
training step is ``@lk.training_step(manual=True)``: it receives both optimizers, calls
``ctx.backward(loss)`` and ``opt.step()`` itself, and lightkit still applies the precision
(loss scaling under ``16-mixed``) and the strategy (DDP gradient sync). The report counts the
modes the generator covers and the share of its samples that land on a mode.

    python examples/gan.py                         # about a minute on two CPU cores
    python examples/gan.py --precision bf16-mixed --hidden 256
    python examples/gan.py --plot gan.png          # the samples over the eight modes
"""

from __future__ import annotations

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

RADIUS, SPREAD, MODES = 2.0, 0.05, 8


def centers() -> torch.Tensor:
    angles = torch.arange(MODES) * 2 * math.pi / MODES
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


@functools.lru_cache(maxsize=2)
def ring(count: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    modes = torch.randint(0, MODES, (count,), generator=gen)
    return centers()[modes] + SPREAD * torch.randn(count, 2, generator=gen)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers[:-1])


@lk.model
def generator(latent_dim: int = 16, hidden: int = 128) -> nn.Module:
    return mlp([latent_dim, hidden, hidden, hidden, 2])


@lk.model
def discriminator(hidden: int = 128) -> nn.Module:
    return mlp([2, hidden, hidden, hidden, 1])


@lk.train_data
def points(count: int = 8192, batch_size: int = 256) -> DataLoader:
    return DataLoader(TensorDataset(ring(count)), batch_size=batch_size, shuffle=True)


@lk.configure_optimizers
def adam(generator, discriminator, lr: float = 1e-3):
    betas = (0.5, 0.999)
    return [
        torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas),
    ]


@lk.training_step(manual=True)
def train(generator, discriminator, batch, optimizers, ctx, latent_dim: int = 16):
    """One discriminator step, then one generator step (non-saturating loss)."""
    (real,) = batch
    opt_g, opt_d = optimizers
    z = torch.randn(real.shape[0], latent_dim, device=real.device, dtype=real.dtype)
    fake = generator(z)

    # Real and fake in one forward pass, so DDP sees one forward per backward.
    logits = discriminator(torch.cat([real, fake.detach()])).float()
    real_logits, fake_logits = logits.chunk(2)
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    opt_d.zero_grad()
    ctx.backward(d_loss)
    opt_d.step()

    g_loss = F.softplus(-discriminator(fake).float()).mean()
    opt_g.zero_grad()
    ctx.backward(g_loss)
    opt_g.step()

    lk.log("train/d_loss", d_loss, prog_bar=True)
    lk.log("train/g_loss", g_loss, prog_bar=True)


@torch.no_grad()
def draw(generator: nn.Module, n: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    generator.eval()
    p = next(generator.parameters())
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return generator(z.to(p.device, p.dtype)).float().cpu()


def coverage(samples: torch.Tensor) -> dict[str, float]:
    """Modes holding at least 1% of the samples, and the share of samples within three
    standard deviations of some mode ("on a mode")."""
    dist = torch.cdist(samples, centers())
    nearest, which = dist.min(dim=1)
    good = nearest <= 3 * SPREAD
    counts = torch.bincount(which[good], minlength=MODES)
    return {
        "modes_covered": int((counts >= 0.01 * len(samples)).sum()),
        "on_mode": float(good.float().mean()),
    }


def plot(samples: torch.Tensor, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    real = ring(1024, seed=3)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:gray", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.5, label="generator")
    ax.set_aspect("equal")
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the GAN, draw samples, report mode coverage."""
    from examples import _common

    spec, flags, args = _common.command_line(
        lk.collect(),
        argv,
        doc=__doc__,
        trainer={"max_steps": 3000, "max_epochs": -1, "seed": 0},
        smoke_hparams={"hidden": 16, "count": 512},
        smoke_trainer={"max_steps": 10, "log_every_n_steps": 1},
        extra=lambda p: p.add_argument("--plot", type=Path, help="scatter plot of samples"),
    )
    start = time.perf_counter()
    fitted = lk.Trainer(**flags).fit(spec)
    samples = draw(fitted.models["generator"], 2000, spec.hparams.latent_dim)
    results: dict[str, Any] = {
        "d_loss": fitted.metrics["train/d_loss"],
        "g_loss": fitted.metrics["train/g_loss"],
        "steps": fitted.global_step,
        **coverage(samples),
        "real_on_mode": coverage(ring(2000, seed=4))["on_mode"],
        "log_dir": str(fitted.log_dir),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if args.plot is not None:
        results["plot"] = str(plot(samples, args.plot))
    _common.report("gan: results", results)
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file so the spec records importable function names.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.gan import main

    main()
