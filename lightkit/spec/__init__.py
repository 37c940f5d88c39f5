"""The spec layer: decorators, registries, signature analysis, hyperparameters, the spec.

Imports nothing from the engine or the runtime.
"""

from lightkit.spec.collect import collect
from lightkit.spec.hparams import Hparams
from lightkit.spec.registry import Registry
from lightkit.spec.spec import SpecEntry, TrainingSpec

__all__ = ["Hparams", "Registry", "SpecEntry", "TrainingSpec", "collect"]
