"""``TrainerConfig``: the trainer's flags, with Lightning's names and meanings, validated."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from lightkit.errors import ConfigError, did_you_mean, sorted_list
from lightkit.utils.devices import check_accelerator, parse_devices
from lightkit.utils.duration import parse_duration as parse_max_time
from lightkit.utils.pydantic_errors import AlsoValidationError

IntOrFraction = int | float


def _fraction(name: str, value: int | float) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int (batches) or a float in [0, 1] (fraction)")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name}={value}: a float is a fraction of the batches and must be in [0, 1]"
        )
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name}={value} must be >= 0")
    return value


def _built(value: Any, field: str) -> Any:
    """``value`` with each ``{"class_path": ..., "init_args": ...}`` mapping built into its
    object: how ``config.json`` and config files give callbacks, loggers and plugins."""
    from lightkit.utils.config_file import build_object

    def build(v: Any) -> Any:
        if isinstance(v, Mapping) and "class_path" in v:
            return build_object(v, field)
        return v

    if isinstance(value, (list, tuple)):
        return [build(v) for v in value]
    return build(value)


def _imported(value: Any, key: str) -> Any:
    """The function a ``{"function": "module:qualname"}`` value names (how a function among
    the options is written to ``config.json``); any other value as it is."""
    if isinstance(value, Mapping) and value.get("class_path") == "builtins:function":
        raise ConfigError(
            f"compile[{key!r}] was a function that an earlier lightkit wrote as its class "
            f"only, so which one is lost. Give compile={{{key!r}: fn}} in Python, or write "
            f'{{"function": "module:name"}} in the file.',
            code="bad-compile-option",
        )
    if not (isinstance(value, Mapping) and set(value) == {"function"}):
        return value
    from lightkit.errors import SpecError
    from lightkit.spec.spec import import_function

    ref = str(value["function"])
    try:
        return import_function(ref)
    except SpecError:
        if ref.startswith("<"):
            why = "it is not a function defined with `def` (a bound method, a partial, a callable object)"
        elif ref.startswith("__main__"):
            why = "it was defined in a script run directly or in a notebook, another process"
        elif "<locals>" in ref or "<lambda>" in ref:
            why = "it was defined inside a function, or as a lambda"
        else:
            why = "its module or name is not there"
        raise ConfigError(
            f"compile[{key!r}] is the function {ref!r}, which this process cannot import: "
            f"{why}. Define it with `def` at the top of a module on the Python path (the "
            f"file then names it as module:name), or give compile={{{key!r}: fn}} in Python.",
            code="bad-compile-option",
        ) from None


class FlagError(AlsoValidationError, ConfigError, ValidationError):
    """Refused trainer flags: an :class:`~lightkit.ConfigError` whose ``code`` is that of the
    flags' own check (``unknown-precision``, ...; ``invalid-config`` for a wrong type or
    range), and pydantic's ``ValidationError`` (``errors()`` names each field)."""

    default_code = "invalid-config"

    def __str__(self) -> str:
        # pydantic's report, then what each refused flag means (its range's sense: -1 = none).
        names = dict.fromkeys(str(e["loc"][0]) for e in self.errors() if e["loc"])
        fields = TrainerConfig.model_fields
        meanings = [
            f"\n{name}: {fields[name].description}"
            for name in names
            if name in fields and fields[name].description
        ]
        return super().__str__() + "".join(meanings)


_UNSET = object()


@contextmanager
def _flag_errors() -> Iterator[None]:
    try:
        yield
    except FlagError:
        raise
    except ValidationError as exc:
        raise FlagError.of(exc) from None


#: Lightning's strategy names that lightkit does not take, and what to write instead.
_SPAWNS = "it starts the processes itself (start_method='spawn' by default), in scripts and notebooks alike"
_LIGHTNING_STRATEGIES = {
    "ddp_spawn": f"Lightning's 'ddp_spawn' is not offered: use strategy='ddp', {_SPAWNS}.",
    "ddp_notebook": f"Lightning's 'ddp_notebook' is not offered: use strategy='ddp', {_SPAWNS}.",
    "ddp_fork": "Lightning's 'ddp_fork' is strategy=DDPStrategy(start_method='fork') here.",
    "ddp_find_unused_parameters_true": (
        "Lightning's 'ddp_find_unused_parameters_true' is "
        "strategy=DDPStrategy(find_unused_parameters=True) here."
    ),
    "dp": "DataParallel ('dp') is not offered: strategy='ddp' runs one process per device.",
}


#: Lightning Trainer flags lightkit does not take (most removed in Lightning 2), and their port.
LIGHTNING_FLAGS = {
    "gpus": "Lightning 1.x's gpus=N is accelerator='gpu', devices=N.",
    "tpu_cores": "TPUs are not supported: lightkit runs on CPUs, CUDA GPUs and MPS.",
    "num_processes": "Lightning 1.x's num_processes=N is devices=N (with strategy='ddp').",
    "auto_lr_find": "There is no learning-rate finder: sweep lr with spec.with_hparams(lr=...).",
    "auto_scale_batch_size": "There is no batch-size finder: sweep the data function's "
    "batch_size hyperparameter.",
    "resume_from_checkpoint": "Resume with trainer.fit(spec, ckpt_path=...) (a path, 'last' "
    "or 'best').",
    "progress_bar_refresh_rate": "Pass callbacks=[lk.ProgressBar(refresh_rate=n)], or "
    "enable_progress_bar=False.",
    "reload_dataloaders_every_n_epochs": "Data functions run once per run: make the dataset "
    "or sampler change with the epoch (from_lightning.md).",
    "amp_backend": "Mixed precision is torch.autocast: precision='16-mixed' or 'bf16-mixed'.",
    "weights_summary": "Use enable_model_summary, or callbacks=[lk.ModelSummary(max_depth=n)].",
    "profiler": "There is no profiler flag: run torch.profiler in a train_batch_start / "
    "train_batch_end callback.",
    "plugins": "Pass a Precision instance as precision= and a Strategy instance as strategy=.",
    "barebones": "Turn off logger, enable_progress_bar, enable_checkpointing and "
    "enable_model_summary.",
}


class TrainerConfig(BaseModel):
    """Every flag of :class:`~lightkit.Trainer`. Invalid values raise :class:`FlagError`, a
    ``ConfigError`` that is also pydantic's ``ValidationError``, naming each field."""

    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        validate_assignment=True,
        ser_json_inf_nan="constants",  # as the spec: an infinite float stays one
    )
    # Where the command line got this configuration: its targets, and the references it built
    # objects from, as (object, reference) pairs (pickling keeps the pairs' objects the ones
    # in the fields). The run folder's config.toml names them, so `lightkit fit --config`
    # can run it again. Not a flag: the Python API sets neither.
    _cli_targets: list[str] | None = PrivateAttr(default=None)
    _cli_refs: list[tuple[Any, Any]] = PrivateAttr(default_factory=list)

    if not TYPE_CHECKING:  # the pydantic plugin's signature, with every flag, for mypy

        def __init__(self, /, **flags: Any) -> None:
            with _flag_errors():
                super().__init__(**flags)

    def __setattr__(self, name: str, value: Any) -> None:
        # A refused value (a combination check included) leaves the old one in place.
        old = self.__dict__.get(name, _UNSET)
        try:
            with _flag_errors():
                super().__setattr__(name, value)
        except FlagError:
            if old is not _UNSET:
                self.__dict__[name] = old
            raise

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> TrainerConfig:
        with _flag_errors():
            return super().model_validate(obj, *args, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> TrainerConfig:
        with _flag_errors():
            return super().model_validate_json(json_data, *args, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, *args: Any, **kwargs: Any) -> TrainerConfig:
        with _flag_errors():
            return super().model_validate_strings(obj, *args, **kwargs)

    # -- how long ----------------------------------------------------------------------------
    max_epochs: int | None = Field(
        None, ge=-1, description="Stop after this many epochs (-1: no limit)."
    )
    min_epochs: int | None = Field(None, ge=0, description="Train at least this many epochs.")
    max_steps: int = Field(
        -1, ge=-1, description="Stop after this many optimizer steps (-1: no limit)."
    )
    min_steps: int | None = Field(None, ge=0, description="Train at least this many steps.")
    max_time: Any = Field(None, description="Stop after this much time: seconds or 'DD:HH:MM:SS'.")
    # -- where -------------------------------------------------------------------------------
    accelerator: str = Field("auto", description="auto, cpu, cuda (gpu) or mps.")
    devices: int | str | list[int] = Field(
        "auto", description="Number of devices, indices, or 'auto'."
    )
    num_nodes: int = Field(1, ge=1, description="Machines in the job (set by torchrun/SLURM).")
    strategy: Any = Field("auto", description="auto, single_device, ddp, fsdp, or a Strategy.")
    precision: Any = Field(
        "32-true", description="32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true."
    )
    sync_batchnorm: bool = Field(
        False,
        description=(
            "With more than one process, make BatchNorm layers SyncBatchNorm: batch statistics "
            "over all ranks (CUDA only, as torch's SyncBatchNorm)."
        ),
    )
    # -- optimization ------------------------------------------------------------------------
    accumulate_grad_batches: int = Field(1, ge=1, description="Step the optimizer every k batches.")
    gradient_clip_val: float | None = Field(None, ge=0, description="Clip gradients at this value.")
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    # -- evaluation --------------------------------------------------------------------------
    val_check_interval: IntOrFraction = Field(
        1.0, description="Validate every N batches (int) or fraction of an epoch."
    )
    check_val_every_n_epoch: int | None = Field(1, ge=1, description="Validate every N epochs.")
    num_sanity_val_steps: int = Field(
        2, ge=-1, description="Validation batches run before training (-1: all)."
    )
    limit_train_batches: IntOrFraction = 1.0
    limit_val_batches: IntOrFraction = 1.0
    limit_test_batches: IntOrFraction = 1.0
    limit_predict_batches: IntOrFraction = 1.0
    fast_dev_run: bool | int = Field(
        False, description="Run n batches of each stage once, no logs or checkpoints."
    )
    overfit_batches: IntOrFraction = Field(
        0.0, description="Train (and validate) on this many fixed batches."
    )
    inference_mode: bool = Field(
        True, description="Evaluate under torch.inference_mode (else no_grad)."
    )
    # -- reproducibility and debugging -------------------------------------------------------
    seed: int | None = Field(
        None,
        ge=-(2**63),
        lt=2**64,
        description="Seed python, numpy and torch before anything is built.",
    )
    deterministic: bool | Literal["warn"] | None = None
    benchmark: bool | None = None
    detect_anomaly: bool = False
    nonfinite_loss: Literal["auto", "raise", "skip", "ignore"] = Field(
        "auto",
        description=(
            "A NaN/inf training loss: raise before the optimizer step (naming step, batch and "
            "value), skip that step, or ignore it. The check reads the loss once per batch, "
            "which costs a device sync on a GPU: 'auto' checks (raises) on CPU and ignores on "
            "accelerators, so the GPU loop never waits; choose 'raise' there to check anyway."
        ),
    )
    # -- outputs -----------------------------------------------------------------------------
    default_root_dir: str | Path | None = Field(
        None, description="Folder for logs and checkpoints (default: cwd)."
    )
    logger: Any = Field(
        True, description="True (TensorBoard + CSV; also None), False, a Logger or a list."
    )
    log_every_n_steps: int = Field(50, ge=1)
    callbacks: list[Any] = Field(
        default_factory=list, description="Callbacks, or one (None: none)."
    )
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    enable_model_summary: bool = True
    preemption_signals: list[str] = Field(
        default_factory=lambda: ["SIGTERM"],
        description=(
            "Signals that stop fit after the current batch, save last.ckpt and exit with "
            "128 + signal (143 for SIGTERM); e.g. ['SIGTERM', 'SIGUSR1'] for SLURM; [] to off."
        ),
    )
    # -- speed -------------------------------------------------------------------------------
    compile: bool | dict[str, Any] = Field(
        False, description="torch.compile the models (True or compile kwargs)."
    )

    @field_validator(
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "limit_predict_batches",
        "overfit_batches",
        "val_check_interval",
    )
    @classmethod
    def _check_fraction(cls, value: Any, info: Any) -> Any:
        if (
            info.field_name == "val_check_interval"
            and isinstance(value, (int, float))
            and value <= 0
        ):
            raise ValueError("val_check_interval must be > 0")
        return _fraction(info.field_name, value)

    @field_validator("preemption_signals")
    @classmethod
    def _check_signals(cls, value: list[str]) -> list[str]:
        import signal

        names = []
        for name in value:
            full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
            if full not in signal.Signals.__members__ or full in ("SIGKILL", "SIGSTOP"):
                raise ValueError(
                    f"preemption_signals: {name!r} is not a signal that can be caught here "
                    f"(e.g. 'SIGTERM', 'SIGUSR1')"
                )
            names.append(full)
        return names

    @field_validator("fast_dev_run")
    @classmethod
    def _check_fast_dev_run(cls, value: Any) -> Any:
        if not isinstance(value, bool) and value < 0:
            raise ValueError("fast_dev_run must be a bool or a number of batches >= 0")
        return value

    @field_validator("max_time")
    @classmethod
    def _check_max_time(cls, value: Any) -> float | None:
        return parse_max_time(value)

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: Any) -> Any:
        from lightkit.precision import Precision, canonical_name

        return value if isinstance(value, Precision) else canonical_name(value)

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: Any) -> Any:
        from lightkit.strategies import STRATEGIES, Strategy

        if isinstance(value, Strategy):
            return value
        if not isinstance(value, str) or (value != "auto" and value not in STRATEGIES):
            hint = _LIGHTNING_STRATEGIES.get(value) if isinstance(value, str) else None
            if hint is None and isinstance(value, str):
                hint = did_you_mean(value, ["auto", *STRATEGIES]).strip()
            raise ConfigError(
                f"strategy={value!r} is unknown. Available: auto, {', '.join(STRATEGIES)}; "
                f"or pass a Strategy instance." + (f" {hint}" if hint else ""),
                code="unknown-strategy",
            )
        return value

    @field_validator("logger", "callbacks", mode="before")
    @classmethod
    def _none_is_the_default(cls, value: Any, info: Any) -> Any:
        # Lightning's meaning of None: the default logger, no extra callbacks.
        if value is None:
            return True if info.field_name == "logger" else []
        value = _built(value, info.field_name)
        if info.field_name == "callbacks" and not isinstance(value, (list, tuple)):
            return [value]  # one callback, as Lightning takes it (checked as the list is)
        return value

    @field_validator("strategy", "precision", mode="before")
    @classmethod
    def _build_plugin(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name == "strategy":
            return "auto"
        return _built(value, info.field_name)

    @field_validator("compile", mode="before")
    @classmethod
    def _import_functions(cls, value: Any) -> Any:
        # A function among the options (a custom backend) is written as {"function": path}.
        if not isinstance(value, Mapping):
            return value
        return {k: _imported(v, k) for k, v in value.items()}

    @field_validator("logger", "callbacks")
    @classmethod
    def _check_plugins(cls, value: Any, info: Any) -> Any:
        """Loggers and callbacks are checked when the trainer is made, as every other flag."""
        if info.field_name == "logger":
            from lightkit.loggers import check_loggers

            if value is not True:
                check_loggers(value)
        else:
            from lightkit.callbacks import check_callbacks

            check_callbacks(value)
        return value

    @field_validator("accelerator", "devices")
    @classmethod
    def _check_where(cls, value: Any, info: Any) -> Any:
        """The form only: whether the machine has them is checked when a run starts."""
        # A ConfigError is a ValueError: pydantic names the field around it and keeps its code.
        (check_accelerator if info.field_name == "accelerator" else parse_devices)(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _known_flags(cls, data: Any) -> Any:
        # pydantic's "Extra inputs are not permitted" names the typo but not the fix.
        if isinstance(data, dict):
            unknown = [k for k in data if isinstance(k, str) and k not in cls.model_fields]
            if unknown:
                each = " ".join(
                    f"{name!r} is not a Trainer flag."
                    + (
                        f" {LIGHTNING_FLAGS[name]}"
                        if name in LIGHTNING_FLAGS
                        else did_you_mean(name, cls.model_fields)
                    )
                    for name in unknown
                )
                raise ConfigError(
                    f"{each} Flags: {sorted_list(cls.model_fields)}.", code="unknown-flag"
                )
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainerConfig:
        for unit in ("epochs", "steps"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if low is not None and high not in (None, -1) and low > high:
                raise ValueError(
                    f"min_{unit}={low} is more than max_{unit}={high}: a run cannot train at "
                    f"least {low} {unit} and at most {high} (Lightning lets max_{unit} win "
                    f"without a word). Lower min_{unit} or raise max_{unit}"
                )
        interval = self.val_check_interval
        if self.check_val_every_n_epoch is None and isinstance(interval, float) and interval != 1:
            # Lightning refuses it too: counted across epochs, a fraction has no epoch to be
            # a fraction of. (1.0, the default, still means each epoch's end.)
            raise ConfigError(
                f"val_check_interval={interval} is a fraction of an epoch, but "
                f"check_val_every_n_epoch=None counts batches across epochs. Give "
                f"val_check_interval as an int number of batches, or set "
                f"check_val_every_n_epoch (1: every epoch).",
                code="fraction-across-epochs",
            )
        return self

    @field_serializer(
        "strategy", "precision", "logger", "callbacks", "compile", "max_time", "devices"
    )
    def _plain(self, value: Any, info: Any) -> Any:
        """Objects as ``{"class_path": ..., "init_args": {...}}``, which validation builds back;
        one whose class or arguments cannot be written as data as its ``repr``. A callable
        among the compile options as ``{"function": path}`` (a partial or a callable object
        as a path that loading refuses, naming it)."""
        from lightkit.utils.config_file import object_ref

        options = info.field_name == "compile"

        def plain(v: Any) -> Any:
            if v is None or isinstance(v, (bool, int, float, str)):
                return v
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if inspect.isroutine(v) or (options and callable(v) and not isinstance(v, type)):
                from lightkit.spec.spec import function_ref

                return {"function": function_ref(v)}
            ref = object_ref(v)
            if isinstance(ref, str):
                return {"class_path": ref, "init_args": {}}
            return ref if isinstance(ref, dict) else repr(v)

        return plain(value)

    @field_serializer("default_root_dir")
    def _path(self, value: Any) -> Any:
        return None if value is None else str(value)

    # -- derived -----------------------------------------------------------------------------
    @property
    def root_dir(self) -> Path:
        return Path(self.default_root_dir) if self.default_root_dir is not None else Path.cwd()
