"""Shared pieces of the precision tests: tiny data, a tiny MLP, a spec builder, and the
hand-written ``GradScaler`` loops the trainer must match bitwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}

N, N_IN, N_OUT, BATCH = 64, 8, 3, 16
_g = torch.Generator().manual_seed(7)
X = torch.randn(N, N_IN, generator=_g)
Y = (X[:, :N_OUT] * torch.tensor([1.0, -1.0, 0.5])).argmax(1)  # learnable labels

#: What each precision promises inside a step: (inputs, activations, params and grads, default).
EXPECTED: dict[str, tuple[torch.dtype, torch.dtype, torch.dtype, torch.dtype]] = {
    "32-true": (torch.float32, torch.float32, torch.float32, torch.float32),
    "64-true": (torch.float64, torch.float64, torch.float64, torch.float64),
    "16-mixed": (torch.float32, torch.float16, torch.float32, torch.float32),
    "bf16-mixed": (torch.float32, torch.bfloat16, torch.float32, torch.float32),
    "16-true": (torch.float16, torch.float16, torch.float16, torch.float16),
    "bf16-true": (torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16),
}


def trainer(**flags: Any) -> lk.Trainer:
    return lk.Trainer(**{**QUIET, **flags})


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_IN, 16), nn.ReLU(), nn.Linear(16, N_OUT))


def loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=BATCH)


def ce(net: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(net(x), y)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def build_spec(
    *,
    model: Callable[..., Any] | None = None,
    step: Callable[..., Any] | None = None,
    optim: Callable[..., Any] | None = None,
    manual: bool = False,
    hooks: dict[str, Callable[..., Any]] | None = None,
    eval_step: Callable[..., Any] | None = None,
) -> lk.TrainingSpec:
    """Model ``net``, unshuffled data (4 batches of 16), SGD with momentum and a cross-entropy
    step; ``eval_step`` also becomes the validation and predict step over the same data."""
    reg = lk.Registry()

    def net():
        return make_net()

    def data():
        return loader()

    def train(net, batch):
        return ce(net, batch)

    def optimizer(net):
        return sgd(net.parameters())

    reg.model(model or net, name="net")
    reg.train_data(data)
    reg.training_step(step or train, manual=manual)
    reg.configure_optimizers(optim or optimizer)
    for event, fn in (hooks or {}).items():
        reg.on(event, fn)
    if eval_step is not None:
        reg.val_data(data)
        reg.predict_data(data)
        reg.validation_step(eval_step)
        reg.predict_step(eval_step)
    return lk.collect(reg)


def reference_amp(
    epochs: int,
    *,
    clip: float | None = None,
    inject_at: int | None = None,
    accumulate: int = 1,
    max_batches: int | None = None,
    unscale: bool = True,
    grads: list[torch.Tensor] | None = None,
) -> tuple[nn.Module, torch.amp.GradScaler]:
    """The hand-written CPU float16 autocast + ``GradScaler`` loop (PyTorch's AMP recipe).

    ``inject_at``: the global batch whose first gradient entry is made inf after backward;
    ``unscale=False`` clips the scaled gradient (the mistake the plugin must not make);
    ``grads`` receives the first layer's unscaled gradient before each step."""
    net = make_net()
    opt = sgd(net.parameters())
    scaler = torch.amp.GradScaler("cpu")
    seen = 0
    batches = len(loader())
    for _ in range(epochs):
        for i, (x, y) in enumerate(loader()):
            if seen == max_batches:
                return net, scaler
            with torch.autocast("cpu", dtype=torch.float16):
                loss = ce(net, (x, y))
            scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
            if seen == inject_at:
                net[0].weight.grad[0, 0] = float("inf")
            seen += 1
            if (i + 1) % accumulate and i + 1 != batches:
                continue
            if grads is not None:
                scaler.unscale_(opt)
                grads.append(net[0].weight.grad.clone())
            if clip is not None:
                if unscale and grads is None:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    return net, scaler


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert p.dtype == q.dtype, name
        assert torch.equal(p.detach(), q.detach()), name
