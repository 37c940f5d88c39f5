"""lightkit: a declarative training DSL for PyTorch.

Decorate plain functions, collect them into a validated spec, and let the Trainer compile the
spec into a training loop on one CPU, one GPU, or many processes.

Example::

    import lightkit as lk

    @lk.model
    def net(hidden: int = 64):
        return torch.nn.Sequential(torch.nn.Linear(32, hidden), torch.nn.Linear(hidden, 10))

    ...
    result = lk.Trainer(max_epochs=3).fit(lk.collect())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# ``import lightkit`` is cheap: a public name's module (pydantic, the engine, the strategies, …)
# is imported the first time the name is used, by ``__getattr__`` below, and the name is then
# an ordinary attribute. The same imports, spelled out for type checkers and readers, are in
# the ``TYPE_CHECKING`` block; tests/test_public_api_lazy.py keeps the two and ``__all__`` equal.
_SOURCES: dict[str, tuple[str, ...]] = {
    "lightkit.callbacks": (
        "EarlyStopping",
        "GradientNormMonitor",
        "LearningRateMonitor",
        "ModelCheckpoint",
        "ModelSummary",
        "ProgressBar",
        "Timer",
    ),
    "lightkit.callbacks.base": ("Callback",),
    "lightkit.checkpoint.restore": ("load_models",),
    "lightkit.engine.config": ("TrainerConfig",),
    "lightkit.engine.context": ("RunContext", "log", "log_dict"),
    "lightkit.engine.result": ("Result",),
    "lightkit.engine.trainer": ("Trainer",),
    "lightkit.errors": (
        "CheckpointError",
        "ConfigError",
        "DistributedError",
        "LightkitError",
        "LightkitWarning",
        "SpecError",
        "StepError",
    ),
    "lightkit.loggers": ("CSVLogger", "Logger", "TensorBoardLogger"),
    "lightkit.plot": ("plot_metrics",),
    "lightkit.precision": ("MixedPrecision", "Precision", "TruePrecision"),
    "lightkit.runtime.runtime": ("Runtime",),
    "lightkit.spec.collect": ("collect",),
    "lightkit.spec.decorators": (
        "configure_optimizers",
        "model",
        "on",
        "predict_data",
        "predict_step",
        "test_data",
        "test_step",
        "train_data",
        "training_step",
        "val_data",
        "validation_step",
    ),
    "lightkit.spec.hparams": ("Hparams",),
    "lightkit.spec.registry": ("Registry",),
    "lightkit.spec.spec": ("SpecEntry", "TrainingSpec"),
    "lightkit.strategies": ("DDPStrategy", "FSDPStrategy", "SingleDevice", "Strategy"),
    "lightkit.utils.seed": ("seed_everything",),
}
_SOURCE_OF = {name: module for module, names in _SOURCES.items() for name in names}
#: Subpackages reachable as attributes (``lk.callbacks.EarlyStopping``) without importing them.
_SUBMODULES = frozenset(
    {
        "callbacks", "checkpoint", "cli", "engine", "errors", "loggers", "plot", "precision",
        "runtime", "spec", "strategies", "utils",
    }
)  # fmt: skip

if TYPE_CHECKING:
    from lightkit import cli
    from lightkit.callbacks import (
        EarlyStopping,
        GradientNormMonitor,
        LearningRateMonitor,
        ModelCheckpoint,
        ModelSummary,
        ProgressBar,
        Timer,
    )
    from lightkit.callbacks.base import Callback
    from lightkit.checkpoint.restore import load_models
    from lightkit.engine.config import TrainerConfig
    from lightkit.engine.context import RunContext, log, log_dict
    from lightkit.engine.result import Result
    from lightkit.engine.trainer import Trainer
    from lightkit.errors import (
        CheckpointError,
        ConfigError,
        DistributedError,
        LightkitError,
        LightkitWarning,
        SpecError,
        StepError,
    )
    from lightkit.loggers import CSVLogger, Logger, TensorBoardLogger
    from lightkit.plot import plot_metrics
    from lightkit.precision import MixedPrecision, Precision, TruePrecision
    from lightkit.runtime.runtime import Runtime
    from lightkit.spec.collect import collect
    from lightkit.spec.decorators import (
        configure_optimizers,
        model,
        on,
        predict_data,
        predict_step,
        test_data,
        test_step,
        train_data,
        training_step,
        val_data,
        validation_step,
    )
    from lightkit.spec.hparams import Hparams
    from lightkit.spec.registry import Registry
    from lightkit.spec.spec import SpecEntry, TrainingSpec
    from lightkit.strategies import DDPStrategy, FSDPStrategy, SingleDevice, Strategy
    from lightkit.utils.seed import seed_everything


__all__ = [
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DDPStrategy",
    "DistributedError",
    "EarlyStopping",
    "FSDPStrategy",
    "GradientNormMonitor",
    "Hparams",
    "LearningRateMonitor",
    "LightkitError",
    "LightkitWarning",
    "Logger",
    "MixedPrecision",
    "ModelCheckpoint",
    "ModelSummary",
    "Precision",
    "ProgressBar",
    "Registry",
    "Result",
    "RunContext",
    "Runtime",
    "SingleDevice",
    "SpecEntry",
    "SpecError",
    "StepError",
    "Strategy",
    "TensorBoardLogger",
    "Timer",
    "Trainer",
    "TrainerConfig",
    "TrainingSpec",
    "TruePrecision",
    "__version__",
    "cli",
    "collect",
    "configure_optimizers",
    "load_models",
    "log",
    "log_dict",
    "model",
    "on",
    "plot_metrics",
    "predict_data",
    "predict_step",
    "seed_everything",
    "test_data",
    "test_step",
    "train_data",
    "training_step",
    "val_data",
    "validation_step",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (see ``_SOURCES``)."""
    source = _SOURCE_OF.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"lightkit.{name}")
    else:
        raise AttributeError(f"module 'lightkit' has no attribute {name!r}")
    globals()[name] = value  # from now on a plain attribute: no second call here
    return value


def __dir__() -> list[str]:
    # The public names and subpackages (for tab completion), not this file's own imports.
    return sorted({*__all__, *_SUBMODULES} | {n for n in globals() if n.startswith("__")})
