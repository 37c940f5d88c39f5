"""``-mixed`` precisions: float32 parameters, forward under ``torch.autocast``.

``16-mixed`` adds a ``torch.amp.GradScaler``: the loss is scaled before backward, gradients
are unscaled before hooks and clipping see them, and a step whose gradients overflowed is
skipped while the scale is lowered, exactly as ``GradScaler`` does.

The scaler's ``update()`` ends an iteration once every optimizer of it stepped. It runs after
the automatic step; in manual optimization after the training step returns, or earlier when
a ``backward`` follows an ``opt.step()`` in the same step (the new loss must be scaled by the
updated scale, and the same optimizer may then step again).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import attrs
import torch

from lightkit.errors import ConfigError
from lightkit.precision.base import Precision, to_dtype, unwrap_optimizer

_NAMES = {torch.float16: "16-mixed", torch.bfloat16: "bf16-mixed"}


def _check_dtype(instance: Any, attribute: Any, value: Any) -> None:
    if value not in _NAMES:
        raise ConfigError(
            f"MixedPrecision(dtype={value!r}): autocast runs in torch.float16 ('16-mixed') or "
            f"torch.bfloat16 ('bf16-mixed'). For float32 use precision='32-true'; for float64, "
            f"'64-true' (TruePrecision(torch.float64)).",
            code="unknown-precision",
        )


@attrs.define
class MixedPrecision(Precision):
    """Autocast to ``dtype`` (``torch.float16``: ``16-mixed``; ``torch.bfloat16``: ``bf16-mixed``).

    Args:
        dtype: the autocast dtype.
        scaler_kwargs: options for ``torch.amp.GradScaler`` (``16-mixed`` only), e.g.
            ``{"init_scale": 2.0**10}``.

    Example::

        lk.Trainer(precision="16-mixed")  # or precision=MixedPrecision(torch.float16)
    """

    dtype: torch.dtype = attrs.field(
        default=torch.bfloat16, converter=to_dtype, validator=_check_dtype
    )
    scaler_kwargs: dict[str, Any] = attrs.field(factory=dict)
    device_type: str = attrs.field(default="cpu", init=False)
    #: The grad scaler (``16-mixed``, once ``setup`` ran); ``None`` otherwise.
    scaler: torch.amp.GradScaler | None = attrs.field(default=None, init=False)
    _pending_state: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)
    # Per iteration: the optimizers already unscaled, whether any stepped (an update is due)
    # and whether the last step really ran (set by a step hook, so no host sync is added).
    _unscaled: set[int] = attrs.field(factory=set, init=False, repr=False, eq=False)
    _due: bool = attrs.field(default=False, init=False, repr=False, eq=False)
    _ran: bool = attrs.field(default=False, init=False, repr=False, eq=False)
    _hooked: weakref.WeakKeyDictionary[Any, Any] = attrs.field(
        factory=weakref.WeakKeyDictionary, init=False, repr=False, eq=False
    )

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]

    def setup(self, device: torch.device) -> None:
        kind = device.type
        if not torch.amp.is_autocast_available(kind):
            raise ConfigError(
                f"precision={self.name!r} needs torch.autocast on {kind!r}, which this torch "
                f"build (torch {torch.__version__}) does not offer. Use precision='32-true' there.",
                code="precision-unsupported",
            )
        if kind == "cuda" and self.dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"precision='bf16-mixed' needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(device)} has none. Use precision='16-mixed'.",
                code="precision-unsupported",
            )
        if (
            kind == "mps"
            and self.dtype is torch.bfloat16
            and not torch.backends.mps.is_macos_or_newer(14, 0)
        ):
            raise ConfigError(
                "precision='bf16-mixed' on MPS needs macOS 14 or newer; use '16-mixed'.",
                code="precision-unsupported",
            )
        if self.dtype is torch.float16 and (self.scaler is None or kind != self.device_type):
            # A plugin instance reused on the same kind of device keeps its scaler (and scale).
            try:
                self.scaler = torch.amp.GradScaler(kind, **self.scaler_kwargs)
            except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
                raise ConfigError(
                    f"precision='16-mixed' needs a gradient scaler on {kind!r}: {exc}. "
                    f"Use precision='bf16-mixed' (no scaler needed) or '32-true'.",
                    code="precision-unsupported",
                ) from exc
            self._unscaled.clear()
            self._due = False
        self.device_type = kind
        if self.scaler is not None and self._pending_state is not None:
            self.scaler.load_state_dict(self._pending_state)
            self._pending_state = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        # No weight cast cache (as Lightning): a manual step that runs a forward after its
        # optimizer stepped must see the new weights, not the cached casts of the old ones.
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        scaler = self.scaler
        if scaler is None:
            loss.backward(*args, **kwargs)
            return
        if self._due:  # an optimizer stepped since the last update: end that iteration first
            self.update()
        scaler.scale(loss).backward(*args, **kwargs)

    @property
    def unscales(self) -> bool:
        return self.scaler is not None  # 16-mixed; bf16 has no scale to undo

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            return
        optimizer = unwrap_optimizer(optimizer)
        key = id(optimizer)
        if key not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(key)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        scaler = self.scaler
        if scaler is None:
            optimizer.step()
            return True
        optimizer = unwrap_optimizer(optimizer)
        if optimizer not in self._hooked:
            self._hooked[optimizer] = optimizer.register_step_post_hook(self._mark_ran)
        self._ran = False
        scaler.step(optimizer)  # skips optimizer.step() if the unscaled gradients are not finite
        self._due = True
        return self._ran

    @property
    def step_pending(self) -> bool:
        """An optimizer step went through the scaler (taken or skipped) since its update."""
        return self._due

    def _mark_ran(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._ran = True

    def update(self) -> None:
        if self.scaler is not None and (self._due or self._unscaled):
            self.scaler.update()
        self._due = False
        self._unscaled.clear()

    @property
    def scale(self) -> float | None:
        """The current loss scale (``16-mixed``), or ``None``. Reading it syncs the device."""
        return None if self.scaler is None else float(self.scaler.get_scale())

    def state_dict(self) -> dict[str, Any]:
        if self.scaler is not None:
            return {"scaler": self.scaler.state_dict()}
        if self._pending_state is not None:
            return {"scaler": dict(self._pending_state)}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaler_state = state.get("scaler")
        if not scaler_state or self.dtype is not torch.float16:
            return  # bf16-mixed has no scaler: a 16-mixed checkpoint's scale does not apply
        if self.scaler is None:
            self._pending_state = dict(scaler_state)  # restored once setup() creates the scaler
        else:
            self.scaler.load_state_dict(scaler_state)
