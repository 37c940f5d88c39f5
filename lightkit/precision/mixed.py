"""``-mixed`` precisions: float32 parameters, forward under ``torch.autocast``.

``16-mixed`` adds a ``torch.amp.GradScaler``: the loss is scaled before backward, gradients
are unscaled before clipping, and a step whose gradients overflowed is skipped while the
scale is lowered, exactly as ``GradScaler`` does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch

from lightkit.errors import ConfigError
from lightkit.precision.base import Precision


@attrs.define
class MixedPrecision(Precision):
    """Autocast to ``dtype`` (``torch.float16``: ``16-mixed``; ``torch.bfloat16``: ``bf16-mixed``).

    Example::

        lk.Trainer(precision="16-mixed")  # or precision=MixedPrecision(torch.float16)
    """

    dtype: torch.dtype = attrs.field(
        default=torch.bfloat16, validator=attrs.validators.in_((torch.float16, torch.bfloat16))
    )
    #: Options for ``torch.amp.GradScaler`` (``16-mixed`` only), e.g. ``{"init_scale": 2.0**10}``.
    scaler_kwargs: dict[str, Any] = attrs.field(factory=dict)
    device_type: str = attrs.field(default="cpu", init=False)
    scaler: torch.amp.GradScaler | None = attrs.field(default=None, init=False)
    _pending_state: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return "16-mixed" if self.dtype is torch.float16 else "bf16-mixed"

    def setup(self, device: torch.device) -> None:
        self.device_type = device.type
        if not torch.amp.is_autocast_available(device.type):
            raise ConfigError(
                f"precision={self.name!r} needs torch.autocast on {device.type!r}, which this "
                f"torch build does not offer. Use precision='32-true' there.",
                code="precision-unsupported",
            )
        if (
            device.type == "mps"
            and self.dtype is torch.bfloat16
            and not torch.backends.mps.is_macos_or_newer(14, 0)
        ):
            raise ConfigError(
                "precision='bf16-mixed' on MPS needs macOS 14 or newer; use '16-mixed'.",
                code="precision-unsupported",
            )
        if self.dtype is torch.float16:
            try:
                self.scaler = torch.amp.GradScaler(device.type, **self.scaler_kwargs)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ConfigError(
                    f"precision='16-mixed' needs a gradient scaler on {device.type!r}: {exc}. "
                    f"Use precision='bf16-mixed' (no scaler needed) or '32-true'.",
                    code="precision-unsupported",
                ) from exc
            if self._pending_state is not None:
                self.scaler.load_state_dict(self._pending_state)
                self._pending_state = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
        return True

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaler_state = state.get("scaler")
        if not scaler_state:
            return
        if self.scaler is None:
            self._pending_state = scaler_state  # restored once setup() creates the scaler
        else:
            self.scaler.load_state_dict(scaler_state)
