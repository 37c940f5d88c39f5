"""Precision plugins and the table that maps config strings to them.

=============  ==========================================================
``32-true``    float32 everything (default)
``64-true``    float64 parameters and floating inputs
``16-mixed``   float32 parameters, float16 autocast, gradient scaler
``bf16-mixed`` float32 parameters, bfloat16 autocast
``16-true``    float16 parameters and floating inputs
``bf16-true``  bfloat16 parameters and floating inputs
=============  ==========================================================

Lightning's aliases are accepted with Lightning's meaning: ``32`` -> ``32-true``,
``64`` -> ``64-true``, ``16`` -> ``16-mixed``, ``"bf16"`` -> ``bf16-mixed`` (as ints or strings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lightkit.errors import ConfigError, did_you_mean
from lightkit.precision.base import Precision
from lightkit.precision.mixed import MixedPrecision
from lightkit.precision.true import TruePrecision

__all__ = [
    "ALIASES",
    "PRECISIONS",
    "MixedPrecision",
    "Precision",
    "TruePrecision",
    "canonical_name",
    "precision_from",
]

PRECISIONS: dict[str, Callable[[], Precision]] = {
    "32-true": Precision,
    "64-true": lambda: TruePrecision(torch.float64),
    "16-mixed": lambda: MixedPrecision(torch.float16),
    "bf16-mixed": lambda: MixedPrecision(torch.bfloat16),
    "16-true": lambda: TruePrecision(torch.float16),
    "bf16-true": lambda: TruePrecision(torch.bfloat16),
}

ALIASES: dict[str, str] = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def canonical_name(value: Any) -> str:
    """``16`` -> ``"16-mixed"``, ``None`` -> ``"32-true"`` (Lightning's meanings); a known
    name passes; anything else raises ``ConfigError``."""
    if value is None:
        return "32-true"
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    text = ALIASES.get(text, text)
    if text not in PRECISIONS:
        raise ConfigError(
            f"precision={value!r} is not a precision.{did_you_mean(str(value), PRECISIONS)} "
            f"Available: {', '.join(PRECISIONS)} (aliases: 32, 64, 16, 'bf16'); or pass a "
            f"Precision instance.",
            code="unknown-precision",
        )
    return text


def precision_from(value: Any) -> Precision:
    """A plugin instance from a config string, an alias, or an instance (returned as is).

    Raises:
        ConfigError: ``value`` names no precision (the message lists the available ones).
    """
    if isinstance(value, Precision):
        return value
    return PRECISIONS[canonical_name(value)]()
