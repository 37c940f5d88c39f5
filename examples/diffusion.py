"""A denoising diffusion model (DDPM) that learns to draw scikit-learn's 8x8 digits.

The denoiser is a small U-Net (8x8 -> 4x4 -> 8x8, written below) that predicts the noise added
to a training digit (``examples/digits.py``'s training split) at a random step of a cosine
noise schedule. After training, ancestral sampling turns pure noise into 64 digits, saved as a
PNG grid (Pillow or matplotlib; a PGM file if neither is installed). The samples are judged
three ways, next to held-out real digits and to uniform noise: a digits classifier's
confidence, the spread of the classes it sees, and the distance to the nearest training
image. The classifier is ``examples/digits.py``'s newest checkpoint under
``--default-root-dir`` when there is one; otherwise a small one is trained first.

    python examples/digits.py && python examples/diffusion.py    # about two minutes here
    python examples/diffusion.py --samples docs/diffusion_samples.png
    python examples/diffusion.py --channels 64 --batch-size 256 --max-steps 20000 \
        --precision bf16-mixed --strategy ddp --devices 4
"""

from __future__ import annotations

import functools
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


def digit_images(split: str = "train") -> torch.Tensor:
    """The digits example's split as ``(N, 1, 8, 8)`` floats in [-1, 1]."""
    from examples.digits import splits

    return splits()[split][0] * 2 - 1


# -- the noise schedule ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def alpha_bars(timesteps: int) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal): the fraction of signal left after each step."""
    s = 0.008
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0).float()


# -- the denoiser ---------------------------------------------------------------------------------
def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """8x8 -> 4x4 -> 8x8 with a skip connection; predicts the noise in ``x`` at step ``t``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c, tdim = channels, 4 * channels
        self.c = c
        self.tmlp = nn.Sequential(nn.Linear(c, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.down1, self.down2 = ResBlock(c, c, tdim), ResBlock(c, c, tdim)
        self.pool = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid1, self.mid2 = ResBlock(2 * c, 2 * c, tdim), ResBlock(2 * c, 2 * c, tdim)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.up1, self.up2 = ResBlock(2 * c, c, tdim), ResBlock(c, c, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.tmlp(time_embedding(t, self.c).to(x.dtype))
        h = self.inp(x)
        skip = self.down2(self.down1(h, temb), temb)
        h = self.mid2(self.mid1(self.pool(skip), temb), temb)
        h = self.up2(self.up1(torch.cat([self.up(h), skip], dim=1), temb), temb)
        return self.out(h)  # type: ignore[no-any-return]


@lk.model
def denoiser(channels: int = 16) -> nn.Module:
    return UNet(channels)


@lk.train_data
def images(batch_size: int = 64, subset: int = 0) -> DataLoader:
    x = digit_images()
    if subset:
        x = x[:subset]
    return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True, drop_last=True)


@lk.training_step
def train(denoiser, batch, timesteps: int = 200):
    """The DDPM loss: noise an image to a random step, predict the noise (mean squared error)."""
    (x0,) = batch
    t = torch.randint(0, timesteps, (x0.shape[0],), device=x0.device)
    abar = alpha_bars(timesteps).to(x0.device)[t].view(-1, 1, 1, 1).to(x0.dtype)
    noise = torch.randn_like(x0)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    loss = F.mse_loss(denoiser(xt, t).float(), noise.float())
    lk.log("train/loss", loss, on_epoch=True, prog_bar=True)
    return loss


@lk.configure_optimizers
def optimizer(denoiser, lr: float = 2e-3):
    opt = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=0.0)
    return opt


# -- sampling and its measurement -----------------------------------------------------------------
@torch.no_grad()
def sample(model: nn.Module, n: int, timesteps: int, seed: int = 0) -> torch.Tensor:
    """DDPM ancestral sampling from pure noise; returns ``(n, 1, 8, 8)`` images in [-1, 1].

    Each step estimates the clean image from the predicted noise, clips it to the data's
    range, and draws the previous step from the posterior given that estimate.
    """
    model.eval()
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    abar = alpha_bars(timesteps)
    abar_prev = torch.cat([torch.ones(1), abar[:-1]])
    x = torch.randn(n, 1, 8, 8, generator=gen)
    for i in reversed(range(timesteps)):
        t = torch.full((n,), i, device=p.device)
        eps = model(x.to(p.device, p.dtype), t).float().cpu()
        alpha = abar[i] / abar_prev[i]
        x0 = ((x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()).clamp(-1, 1)
        x = (abar_prev[i].sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - abar_prev[i]) * x) / (
            1 - abar[i]
        )
        if i > 0:
            std = ((1 - abar_prev[i]) / (1 - abar[i]) * (1 - alpha)).sqrt()
            x = x + std * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path: Path, scale: int = 4) -> Path:
    """A square grid of images (dark ink on white); PNG via matplotlib or Pillow, else PGM."""
    n = images.shape[0]
    side = math.ceil(math.sqrt(n))
    pad = torch.full((side * side - n, 1, 8, 8), -1.0)
    tiles = torch.cat([images.float().cpu(), pad]).view(side, side, 8, 8)
    tiles = nn.functional.pad(tiles, (1, 1, 1, 1), value=-1.0)  # a blank border per tile
    grid = tiles.permute(0, 2, 1, 3).reshape(side * 10, side * 10)
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    pixels = (255 * (1 - (grid + 1) / 2)).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image

        Image.fromarray(pixels, mode="L").save(path.with_suffix(".png"))
        return path.with_suffix(".png")
    except ImportError:
        pass
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.imsave(path.with_suffix(".png"), pixels, cmap="gray", vmin=0, vmax=255)
        return path.with_suffix(".png")
    except ImportError:
        out = path.with_suffix(".pgm")
        out.write_bytes(f"P5 {pixels.shape[1]} {pixels.shape[0]} 255\n".encode() + pixels.tobytes())
        return out


def digits_classifier(root: Path, smoke: bool) -> tuple[nn.Module, str]:
    """``examples/digits.py``'s newest checkpoint under ``root``, else a quickly trained one."""
    from examples import digits

    found = sorted(
        (root / "lightkit_logs" / "digits").glob("version_*/**/*.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    if found:
        # lk.load_models rebuilds the models from the spec stored in the file.
        return lk.load_models(found[-1])["cnn"], str(found[-1])
    # No checkpoint: train the digits example briefly (the same functions, other flags).
    spec = lk.collect(digits).with_hparams(subset=256 if smoke else 0)
    epochs = 1 if smoke else 6
    fitted = lk.Trainer(
        max_epochs=epochs,
        seed=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(spec)
    return fitted.models["cnn"].eval(), f"trained now (examples.digits, {epochs} epochs)"


@torch.no_grad()
def judge(classifier: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Three numbers for a batch of images in [-1, 1]: the classifier's mean top-class
    probability; the entropy (bits) of its predicted-class histogram, where log2(10) = 3.32
    means all ten digits appear equally often; and the mean distance (L2, 64 pixels) from each
    image to its nearest training image."""
    x = (images.float().cpu() + 1) / 2  # back to the classifier's [0, 1]
    probs = torch.softmax(classifier(x), dim=1)
    hist = torch.bincount(probs.argmax(1), minlength=10).float() / len(x)
    entropy = -(hist[hist > 0] * hist[hist > 0].log2()).sum()
    nearest = torch.cdist(images.float().cpu().flatten(1), digit_images().flatten(1)).min(1)
    return {
        "confidence": probs.max(1).values.mean().item(),
        "class_entropy": entropy.item(),
        "nearest_train": nearest.values.mean().item(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the denoiser, sample a grid, judge the samples with a digits classifier."""
    from examples import _common

    def extra(parser: Any) -> None:
        parser.add_argument("--samples", type=Path, help="where to write the sample grid")
        parser.add_argument("--num-samples", type=int, default=64)

    spec, flags, args = _common.command_line(
        lk.collect(),
        argv,
        doc=__doc__,
        trainer={"max_steps": 2000, "max_epochs": -1, "seed": 0},
        smoke_hparams={"channels": 8, "timesteps": 20, "subset": 256},
        smoke_trainer={"max_steps": 10, "log_every_n_steps": 1},
        extra=extra,
    )
    start = time.perf_counter()
    fitted = lk.Trainer(**flags).fit(spec)
    hp = spec.hparams
    samples = sample(fitted.models["denoiser"], args.num_samples, hp.timesteps)
    out = args.samples or (fitted.log_dir or Path(".")) / "samples.png"
    grid = save_grid(samples, out)
    root = Path(flags.get("default_root_dir") or ".")
    classifier, source = digits_classifier(root, _common.smoke())
    gen = torch.Generator().manual_seed(1)
    judged = {
        "samples": judge(classifier, samples),
        "real": judge(classifier, digit_images("test")),  # held-out digits: the target
        "noise": judge(classifier, torch.rand(256, 1, 8, 8, generator=gen) * 2 - 1),
    }
    results = {
        "train_loss": fitted.metrics["train/loss"],
        "steps": fitted.global_step,
        **{f"{who}_{key}": value for who, row in judged.items() for key, value in row.items()},
        "classifier": source,
        "grid": str(grid),
        "log_dir": str(fitted.log_dir),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    _common.report("diffusion: results", results)
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file so the spec records importable function names.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.diffusion import main

    main()
