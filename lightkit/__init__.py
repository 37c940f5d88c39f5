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
from lightkit.checkpoint.state import load_models
from lightkit.engine.config import TrainerConfig
from lightkit.engine.context import RunContext, log
from lightkit.engine.result import Result
from lightkit.engine.trainer import Trainer
from lightkit.errors import (
    CheckpointError,
    ConfigError,
    DistributedError,
    LightkitError,
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

__version__ = "0.1.0"

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
    "model",
    "on",
    "plot_metrics",
    "predict_data",
    "predict_step",
    "test_data",
    "test_step",
    "train_data",
    "training_step",
    "val_data",
    "validation_step",
]
