"""The runtime: strategy + precision + device, and how the flags resolve to them."""

from lightkit.runtime.runtime import Runtime

__all__ = ["Runtime"]
