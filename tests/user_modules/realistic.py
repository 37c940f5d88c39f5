"""A small GAN as a user would write it: two models, manual optimization, data for every
stage, hooks, and hyperparameters shared between functions."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

FEATURES = 8


@lk.model
def generator(latent_dim: int = 16, hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, FEATURES))


@lk.model(name="critic")
def build_discriminator(hidden: int = 64, dropout: float = Field(0.1, ge=0, lt=1)) -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(hidden, 1)
    )


def _dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, FEATURES, generator=g))


@lk.train_data
def train_loader(batch_size: int = 32, num_samples: int = 256) -> DataLoader:
    return DataLoader(_dataset(num_samples, 0), batch_size=batch_size, shuffle=True)


@lk.val_data
def val_loader(batch_size: int = 32) -> DataLoader:
    return DataLoader(_dataset(64, 1), batch_size=batch_size)


@lk.predict_data
def noise_loader(batch_size: int = 32, latent_dim: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(64, latent_dim)), batch_size=batch_size)


@lk.training_step(manual=True)
def adversarial(generator, critic, batch, optimizers, ctx, latent_dim: int = 16):
    (real,) = batch
    opt_g, opt_d = optimizers
    fake = generator(torch.randn(real.shape[0], latent_dim))
    loss_d = critic(fake.detach()).mean() - critic(real).mean()
    opt_d.zero_grad()
    ctx.backward(loss_d)
    opt_d.step()
    loss_g = -critic(fake).mean()
    opt_g.zero_grad()
    ctx.backward(loss_g)
    opt_g.step()
    lk.log("train/loss_d", loss_d)
    lk.log("train/loss_g", loss_g)


@lk.validation_step
def val(generator, critic, batch, batch_idx, latent_dim: int = 16):
    (real,) = batch
    fake = generator(torch.randn(real.shape[0], latent_dim))
    lk.log("val/gap", critic(real).mean() - critic(fake).mean())


@lk.predict_step
def sample(generator, batch):
    (z,) = batch
    return generator(z)


@lk.configure_optimizers
def optim(
    generator,
    critic,
    lr: float = Field(2e-4, gt=0, description="learning rate of both optimizers"),
    optimizer_name: Literal["adam", "rmsprop"] = "adam",
):
    make = torch.optim.Adam if optimizer_name == "adam" else torch.optim.RMSprop
    return [make(generator.parameters(), lr=lr), make(critic.parameters(), lr=lr)]


@lk.on("train_epoch_end")
def report(ctx, generator):
    ctx.log("train/gen_norm", sum(p.norm() for p in generator.parameters()))


@lk.on("train_batch_end")
def every_n(outputs, batch_idx, ctx, log_every: int = 10):
    if batch_idx % log_every == 0:
        ctx.log("train/batch_seen", float(batch_idx))


@lk.on("save_checkpoint")
def remember(checkpoint, latent_dim: int = 16):
    checkpoint["latent_dim"] = latent_dim


@lk.on("exception")
def on_crash(exception, ctx):
    print(f"run failed at step {ctx.global_step}: {exception!r}")
