"""Durations from the forms users write: seconds, ``timedelta``, ``"DD:HH:MM:SS"``, a dict."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any


def parse_duration(value: Any) -> float | None:
    """Seconds from a number, a ``timedelta``, ``"DD:HH:MM:SS"``, or a dict of timedelta args."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return timedelta(**value).total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    if isinstance(value, str):
        if re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            return float(value)
        parts = value.strip().split(":")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            d, h, m, s = (int(p) for p in parts)
            return float(timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds())
    raise ValueError(f"duration {value!r}: give seconds, a timedelta, or 'DD:HH:MM:SS'")
