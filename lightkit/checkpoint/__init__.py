"""Checkpoints: atomic files, safe loading, what a checkpoint holds, exact resume, preemption."""

from lightkit.checkpoint.io import atomic_save, clean_stale_temps, safe_load
from lightkit.checkpoint.preemption import Preempted
from lightkit.checkpoint.restore import load_models, restore
from lightkit.checkpoint.state import FORMAT_VERSION, build_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "Preempted",
    "atomic_save",
    "build_checkpoint",
    "clean_stale_temps",
    "load_models",
    "restore",
    "safe_load",
]
