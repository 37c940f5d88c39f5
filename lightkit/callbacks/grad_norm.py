"""``GradientNormMonitor``: log gradient norms, in total and per model."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from lightkit.callbacks.base import Callback
from lightkit.utils.validators import at_least, bad_argument


def _norm_type(value: float | int | str) -> float:
    try:
        norm = float(value)  # "inf" works too
    except (TypeError, ValueError):
        norm = math.nan
    if not norm > 0:  # NaN too
        raise bad_argument(
            f"GradientNormMonitor(norm_type={value!r})",
            "norm_type must be a positive number or 'inf'.",
        )
    return norm


def grad_norm(params: list[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor | None:
    """The ``norm_type``-norm of all gradients of ``params`` together (float32, on device, no
    host sync); ``None`` when none has a gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norms = [torch.linalg.vector_norm(g.detach(), norm_type, dtype=torch.float32) for g in grads]
    return _combine(norms, norm_type)


def _combine(norms: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    device = norms[0].device
    total: torch.Tensor = torch.linalg.vector_norm(
        torch.stack([n.to(device) for n in norms]), norm_type
    )
    return total


@attrs.define
class GradientNormMonitor(Callback):
    """Log gradient norms before the optimizer steps: ``grad_norm/total`` over every model
    and ``grad_norm/<model>`` per model.

    Gradients are unscaled first under ``16-mixed``, so the values are the true ones (and a
    later clip sees the same). In manual optimization it runs before each ``opt.step()`` the
    step calls, over every model: with several optimizers in one batch, the row holds the
    last one's values.

    Args:
        norm_type: the p of the p-norm (``2.0``; ``"inf"`` for the largest magnitude).
        every_n_steps: log on every n-th optimizer step (default: ``log_every_n_steps``,
            matching the steps whose rows are written).
        prefix: the metric names' prefix.

    Example::

        lk.Trainer(callbacks=[lk.GradientNormMonitor(every_n_steps=10)])
    """

    norm_type: float = attrs.field(default=2.0, converter=_norm_type)
    every_n_steps: int | None = attrs.field(default=None, validator=at_least(1, optional=True))
    prefix: str = "grad_norm"

    _every: int = attrs.field(default=1, init=False, repr=False)
    _models: list[tuple[str, list[torch.Tensor]]] = attrs.field(
        factory=list, init=False, repr=False
    )

    def setup(self, ctx: Any, stage: str) -> None:
        engine = ctx._engine
        self._every = self.every_n_steps or engine.config.log_every_n_steps
        self._models = [
            (f"{self.prefix}/{name}", [p for p in module.parameters() if p.requires_grad])
            for name, module in engine.unwrapped_models().items()
        ]

    def teardown(self, ctx: Any, stage: str) -> None:
        self._models = []

    def on_before_optimizer_step(self, ctx: Any, optimizer: Any) -> None:
        if (ctx.global_step + 1) % self._every:
            return
        ctx.runtime.unscale_gradients(optimizer)
        norms = []
        for key, params in self._models:
            norm = grad_norm(params, self.norm_type)
            if norm is not None:
                ctx.log(key, norm, on_step=True, on_epoch=False)
                norms.append(norm)
        if norms:
            total = _combine(norms, self.norm_type)
            ctx.log(f"{self.prefix}/total", total, on_step=True, on_epoch=False)
