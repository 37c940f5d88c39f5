"""Strategy plugins and the table that maps config strings to them.

``"single_device"`` runs in this process; ``"ddp"`` and ``"fsdp"`` run one process per device
over ``torch.distributed``; ``"auto"`` picks ``single_device`` for one device, ``ddp`` for more.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightkit.errors import ConfigError, did_you_mean
from lightkit.strategies.base import Strategy
from lightkit.strategies.single_device import SingleDevice
from lightkit.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightkit.strategies.ddp import DDPStrategy
    from lightkit.strategies.fsdp import FSDPStrategy

# The distributed strategies are imported when first used: a one-device run loads neither.
__getattr__ = lazy_attributes(
    __name__,
    {"DDPStrategy": "lightkit.strategies.ddp", "FSDPStrategy": "lightkit.strategies.fsdp"},
    globals(),
)

__all__ = [
    "STRATEGIES",
    "DDPStrategy",
    "FSDPStrategy",
    "SingleDevice",
    "Strategy",
    "strategy_class",
]

#: Config name -> "module:class"; imported on use so ``import lightkit`` stays light.
STRATEGIES: dict[str, str] = {
    "single_device": "lightkit.strategies.single_device:SingleDevice",
    "ddp": "lightkit.strategies.ddp:DDPStrategy",
    "fsdp": "lightkit.strategies.fsdp:FSDPStrategy",
}


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``; ``ConfigError`` listing the names otherwise."""
    target = STRATEGIES.get(name)
    if target is None:
        raise ConfigError(
            f"strategy={name!r} is not a strategy.{did_you_mean(name, STRATEGIES)} "
            f"Available: auto, {', '.join(STRATEGIES)}; or pass a Strategy instance.",
            code="unknown-strategy",
        )
    module, _, cls = target.partition(":")
    found: Any = getattr(importlib.import_module(module), cls)
    return found  # type: ignore[no-any-return]
