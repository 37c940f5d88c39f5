"""``Engine``: a spec and a config compiled into everything the loops need.

Compiling happens once per entry point, in DESIGN's order: seed, build the models in the order
their functions were defined, set them up on the runtime, then the optimizers, then the data.
Every user function is bound to a positional caller here, so the loops never inspect a
signature or look a name up.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightkit.callbacks.base import Callback
from lightkit.engine.binders import bind_plan
from lightkit.engine.compiling import compile_module
from lightkit.engine.config import TrainerConfig
from lightkit.engine.context import RunContext
from lightkit.engine.epoch_iterator import EpochIterator
from lightkit.engine.events import Events
from lightkit.engine.optim import (
    ManualOptimizer,
    SchedulerConfig,
    check_scheduler_use,
    needs_closure,
    parse_optimizers,
)
from lightkit.errors import (
    ConfigError,
    LightkitWarning,
    StepError,
    describe_function,
    did_you_mean,
    user_call_site,
    user_stacklevel,
)
from lightkit.loggers.base import Logger, make_version_dir
from lightkit.runtime.runtime import Runtime, given, not_batches
from lightkit.spec.roles import EVENT_ARGS, EVENTS, ROLE_ARGS
from lightkit.spec.spec import TrainingSpec
from lightkit.utils.apply import first_tensor
from lightkit.utils.modules import sync_batchnorm
from lightkit.utils.seed import isolate_rng

if TYPE_CHECKING:
    from lightkit.callbacks.checkpoint import ModelCheckpoint

_ANY_STAGE = ("exception", "load_checkpoint")
STAGE_EVENTS = {
    "fit": EVENTS,
    "validate": tuple(e for e in EVENTS if e.startswith("validation_") or e in _ANY_STAGE),
    "test": tuple(e for e in EVENTS if e.startswith("test_") or e in _ANY_STAGE),
    "predict": tuple(e for e in EVENTS if e.startswith("predict_") or e in _ANY_STAGE),
}


class Limits:
    """Batch limits and schedule flags after ``fast_dev_run``/``overfit_batches`` apply."""

    def __init__(self, config: TrainerConfig) -> None:
        c = config
        self.train: int | float = c.limit_train_batches
        self.val: int | float = c.limit_val_batches
        self.test: int | float = c.limit_test_batches
        self.predict: int | float = c.limit_predict_batches
        self.sanity = c.num_sanity_val_steps
        max_epochs = c.max_epochs
        self.max_steps = c.max_steps
        self.val_check_interval: int | float = c.val_check_interval
        self.check_val_every_n_epoch = c.check_val_every_n_epoch
        self.overfit = False
        self.dev_run = False
        if c.fast_dev_run:
            n = 1 if c.fast_dev_run is True else int(c.fast_dev_run)
            self.train = self.val = self.test = self.predict = n
            self.sanity, max_epochs, self.max_steps = 0, 1, n
            self.val_check_interval, self.check_val_every_n_epoch = 1.0, 1
            self.dev_run = True
        elif c.overfit_batches:
            self.train = self.val = c.overfit_batches
            self.overfit = True
        if max_epochs is None:
            max_epochs = -1 if self.max_steps != -1 else 1000
        self.max_epochs: int = max_epochs


class Engine:
    """The compiled run. Built by :class:`~lightkit.Trainer`; the loops read its attributes."""

    def __init__(
        self, spec: TrainingSpec, config: TrainerConfig, runtime: Runtime, stage: str
    ) -> None:
        self.spec = spec
        self.config = config
        self.runtime = runtime
        self.stage = stage
        self.limits = Limits(config)
        self.ctx = RunContext(runtime, spec.hparams)
        self.ctx._engine = self  # built-in callbacks read loaders, models and loggers through it
        self.store = self.ctx._store
        self.models: dict[str, nn.Module] = {}
        # What evaluation steps get: no DDP wrapper (no gradients to sync), compiled as asked.
        self.eval_models: dict[str, nn.Module] = {}
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[SchedulerConfig] = []
        self.manual = False
        self.callbacks: list[Callback] = []
        self.loggers: list[Logger] = []
        #: The callbacks whose ``setup`` returned: only they are torn down.
        self.callbacks_set_up: list[Callback] = []
        self.run_dir: Path | None = None
        self.events: Events
        self.train_iter: EpochIterator | None = None
        self.building_models = False  # a @model function runs (fit-only values refuse)
        self.building_train_data = False  # the train_data function runs
        self.warned_batch_start = False  # a train_batch_start hook returned a value
        self.warned_length = False  # the training loader's len() was wrong (said once a run)
        self.time_up = False  # max_time passed; the run stops once the minimums are met
        #: ``(step, epoch)`` of the last row the loggers got (what fit_end logs joins it).
        self.last_row: tuple[int, int] | None = None
        self.eval_loaders: list[Any] = []
        self.step_call: Any = None
        self.eval_call: Any = None
        # Loop state. `skip_batches` is the resume position inside `start_epoch`.
        self.start_epoch = 0
        self.skip_batches = 0
        self.batches_seen = 0
        self.epochs_done = 0
        self.stopped_by: str | None = None
        self.last_checkpoint: Path | None = None
        #: Handles of the optimizer step pre-hooks a manual fit registered (removed at its end).
        self.step_hooks: list[Any] = []
        # Checkpoints (lightkit/checkpoint/restore.py): what a restore asks the fit loop to do at
        # its first epoch, the random states as the current epoch's batches began, the file
        # restored from, the best file of this trainer's previous run, the signal guard.
        self.resume: Any = None
        self.epoch_start: dict[str, Any] | None = None
        #: The spec, hparams and config as checkpoints store them (built at the first save).
        self.checkpoint_record: dict[str, Any] | None = None
        #: The flags as JSON when the run's outputs were set up, before callbacks resolve
        #: their folders: what ``config.json`` and every checkpoint's ``config`` hold.
        self.config_json: str | None = None
        self.restored_from: Path | None = None
        self.previous_best: Path | None = None
        #: Evaluating after this trainer's fit, which wrote no checkpoint.
        self.previous_fit_unsaved = False
        self.preemption: Any = None
        #: Model states to start from instead of the fresh ones (the trainer's last fit).
        self.initial_weights: dict[str, dict[str, Any]] | None = None

    # -- building ------------------------------------------------------------------------------
    @property
    def user_models(self) -> dict[str, nn.Module]:
        """The models as their functions built them: no strategy wrapper, not compiled."""
        unwrap = self.runtime.unwrap
        return {name: unwrap(unwrap_compiled(m)) for name, m in self.models.items()}

    def constants(self, *, models: dict[str, nn.Module] | None = None) -> dict[str, Any]:
        """Everything fixed for the run that a function may ask for by name. ``models``: what
        a step gets (the training step, DDP's wrapper, whose forward syncs the gradients;
        an evaluation step, ``eval_models``). Every other function and hook gets the models
        as their functions built them (``net[0]``, ``net.weight`` and methods work under
        every strategy)."""
        models = self.user_models if models is None else models
        values: dict[str, Any] = {"ctx": self.ctx, "hparams": self.spec.hparams, **models}
        # validate/test/predict build no optimizers; a load_checkpoint hook asking for them
        # gets none.
        values.update(optimizers=[], optimizer=None, schedulers=[], scheduler=None)
        if self.optimizers:
            handed: list[Any] = list(self.optimizers)
            if self.wraps_manual_optimizers:
                handed = [
                    ManualOptimizer(o, self.runtime, self._before_step_listeners)
                    for o in self.optimizers
                ]
            values["optimizers"] = list(handed)
            values["optimizer"] = handed[0]
            values["schedulers"] = [s.scheduler for s in self.schedulers]
            values["scheduler"] = self.schedulers[0].scheduler if self.schedulers else None
        return values

    @property
    def wraps_manual_optimizers(self) -> bool:
        """A manual step gets :class:`ManualOptimizer` wrappers (16-mixed: each step goes
        through the grad scaler, and the wrapper fires ``before_optimizer_step``)."""
        return self.manual and getattr(self.runtime.precision, "scaler", None) is not None

    def _before_step_listeners(self) -> Sequence[Callable[..., Any]]:
        events = getattr(self, "events", None)
        return getattr(events, "before_optimizer_step", ())

    def describe_role(self, role: str, fallback: str | None = None) -> str:
        """The function playing ``role`` as errors name it (``train() at x.py:12``), else
        ``fallback`` (the role's name)."""
        plan = self.spec.plan(role)
        return describe_function(plan.fn) if plan else (fallback or role)

    def call_role(self, role: str, *args: Any) -> Any:
        plan = self.spec.plan(role)
        assert plan is not None
        dynamic = ROLE_ARGS.get(role, ())
        return bind_plan(plan, dynamic, self.constants(), self.spec.hparams)(*args)

    def build_models(self) -> None:
        """Call every ``@model`` function (definition order), then set the modules up."""
        built: dict[str, nn.Module] = {}
        base = {"ctx": self.ctx, "hparams": self.spec.hparams}
        for plan in self.spec.plans:
            if plan.role != "model":
                continue
            self.building_models = True
            try:
                module = bind_plan(plan, (), base, self.spec.hparams)()
            finally:
                self.building_models = False
            if not isinstance(module, nn.Module):
                raise StepError(
                    f"{describe_function(plan.fn)} returned {type(module).__name__}; a @model "
                    f"function must return a torch.nn.Module.",
                    code="bad-model",
                )
            built[plan.name] = module
        if self.config.sync_batchnorm and self.runtime.world_size > 1:
            built = sync_batchnorm(built)
        for name, module in built.items():
            wrapped = self.runtime.setup(module)
            plain = self.runtime.unwrap(wrapped)  # DDP's module; FSDP's is the module itself
            evaluated = plain
            if self.config.compile:
                compiled = compile_module(wrapped, self.config.compile)
                if plain is not wrapped:  # evaluation skips the DDP wrapper: compile the module
                    evaluated = compile_module(plain, self.config.compile)
                else:
                    evaluated = compiled
                wrapped = compiled
            self.models[name] = wrapped
            self.eval_models[name] = evaluated

    def load_weights(self, states: dict[str, dict[str, Any]]) -> None:
        """Load a state into each built model, through the strategy."""
        strategy = self.runtime.strategy
        for name, module in self.models.items():
            strategy.load_module_state_dict(unwrap_compiled(module), states[name])

    def build_optimizers(self) -> None:
        plan = self.spec.plan("configure_optimizers")
        assert plan is not None
        setup = parse_optimizers(self.call_role("configure_optimizers"), describe_function(plan.fn))
        self.optimizers = [self.runtime.setup_optimizer(o) for o in setup.optimizers]
        self.schedulers = setup.schedulers
        step_plan = self.spec.plan("training_step")
        assert step_plan is not None
        self.manual = step_plan.manual or len(self.optimizers) > 1
        check_scheduler_use(self.schedulers, self.manual, describe_function(plan.fn))
        if not self.manual and needs_closure(setup.optimizers[0]):
            name = type(setup.optimizers[0]).__name__
            raise ConfigError(
                f"{describe_function(plan.fn)} returned {name}, whose step() needs a closure "
                f"that evaluates the loss again (as LBFGS does); automatic optimization steps "
                f"once after its backward. Step it yourself: @lk.training_step(manual=True), "
                f"then in the step `def closure(): optimizer.zero_grad(); loss = ...; "
                f"ctx.backward(loss); return loss` and `optimizer.step(closure)`.",
                code="optimizer-needs-closure",
            )
        if self.manual:
            why = "manual=True" if step_plan.manual else f"{len(self.optimizers)} optimizers"
            cfg = self.config
            given = [
                (f"{name}={value!r}", fix)
                for name, value, unset, fix in (
                    (
                        "accumulate_grad_batches",
                        cfg.accumulate_grad_batches,
                        1,
                        "step the optimizer every n batches",
                    ),
                    (
                        "gradient_clip_val",
                        cfg.gradient_clip_val,
                        None,
                        "clip with ctx.runtime.clip_gradients(opt, value) before opt.step()",
                    ),
                )
                if value != unset and value != 0
            ]
            if given:
                flags = " and ".join(flag for flag, _ in given)
                raise ConfigError(
                    f"{describe_function(step_plan.fn)} optimizes manually ({why}), so {flags} "
                    f"cannot apply. Do it inside the step: {'; '.join(fix for _, fix in given)}; "
                    f"or drop {'the flags' if len(given) > 1 else 'the flag'}.",
                    code="manual-optimization-flags",
                )

    def training_data(self) -> EpochIterator:
        """The training data, built on first use: by fit's set-up after the optimizers, or
        earlier when :meth:`estimated_stepping_batches` is read (in ``configure_optimizers``)."""
        if self.train_iter is None:
            if self.building_train_data:  # the data function asked for its own count
                raise ConfigError(
                    f"ctx.estimated_stepping_batches was read by {user_call_site()}, while "
                    f"{self.describe_role('train_data', 'the training data')} builds "
                    f"the training data it counts. Read it in configure_optimizers or a fit "
                    f"hook, after the data exists.",
                    code="fit-only",
                )
            self.building_train_data = True
            try:
                self.train_iter = self.build_data(
                    "train_data", self.limits.train, "limit_train_batches"
                )[0]
            finally:
                self.building_train_data = False
        return self.train_iter

    def estimated_stepping_batches(self) -> int | float:
        """The optimizer steps this fit takes if no other stop comes first: per epoch, the
        training batches (after ``limit_train_batches``, per process) over
        ``accumulate_grad_batches`` (the last partial window steps too), times ``max_epochs``,
        at most ``max_steps``; ``math.inf`` when nothing bounds it. In manual optimization
        it counts training batches, as ``global_step`` does."""
        if self.stage != "fit" or self.building_models:
            during = "a @model function" if self.building_models else self.stage
            raise ConfigError(
                f"ctx.estimated_stepping_batches was read during {during}, by "
                f"{user_call_site()}: it counts the "
                f"optimizer steps of a fit, and only fit knows them (validate, test, predict "
                f"and lk.load_models build the models without one). Read it in "
                f"configure_optimizers or in a fit hook.",
                code="fit-only",
            )
        import math

        limits = self.limits
        batches = self.training_data().num_batches
        if batches is None:  # an iterable without a length: only max_steps bounds the fit
            return limits.max_steps if limits.max_steps != -1 else math.inf
        per_epoch = -(-batches // self.config.accumulate_grad_batches)
        total: int | float = per_epoch * limits.max_epochs if limits.max_epochs != -1 else math.inf
        if limits.max_steps != -1:
            total = min(total, limits.max_steps)
        return total

    def build_data(self, role: str, limit: int | float, flag: str) -> list[EpochIterator]:
        """Call a data function; return one epoch iterator per loader it gave.

        Evaluation data may be a list of loaders, or a dict of them (its values in order, as
        Lightning takes it); a list of batches (tensors, or tuples, lists or dicts of them) is
        one loader. Training data is one iterable: a list of batches is
        iterated as it is, and a list of several ``DataLoader``s is an error rather than
        silently training on the first.
        """
        value = self.call_role(role)
        if (
            role != "train_data"
            and isinstance(value, dict)
            and value
            and not any(map(is_batch, value.values()))
        ):
            loaders = list(value.values())  # as Lightning: in order, dataloader_idx 0, 1, ...
        elif role != "train_data":
            several = isinstance(value, (list, tuple)) and not (value and all(map(is_batch, value)))
            loaders = list(value) if several else [value]
        elif isinstance(value, (list, tuple)) and value and all(is_loader(v) for v in value):
            if len(value) > 1:
                raise ConfigError(
                    f"{self.describe_role(role)} returned "
                    f"{len(value)} DataLoaders; training takes one. Concatenate the datasets "
                    f"(torch.utils.data.ConcatDataset) or interleave the loaders in one iterable.",
                    code="several-train-loaders",
                )
            loaders = [value[0]]
        else:
            loaders = [value]
        shuffle_default = role == "train_data"
        out = []
        for loader in loaders:
            if role == "train_data" and self.limits.overfit:
                loader = sequential(loader)
            problem = not_batches(loader)
            if problem is not None:
                raise ConfigError(
                    f"{self.describe_role(role)} returned something that "
                    f"is not batches: {given(loader)}; expected a DataLoader or another "
                    f"iterable of batches (a list of batches works).{problem}",
                    code="bad-data",
                )
            loader = self.runtime.setup_dataloader(
                loader, shuffle_default=shuffle_default, name=self.describe_role(role)
            )
            try:
                out.append(EpochIterator(loader, limit, flag))
            except ConfigError as exc:  # the flag does not fit this loader: say whose it is
                raise ConfigError(
                    f"{self.describe_role(role)} returned a loader that {flag} does not fit: {exc}",
                    code=exc.code,
                ) from None
        return out

    def bind_steps(self, stage: str) -> None:
        evaluating = self.constants(models=self.eval_models)
        constants = self.constants(models=self.models) if stage == "fit" else evaluating
        role = {
            "fit": "training_step",
            "validate": "validation_step",
            "test": "test_step",
            "predict": "predict_step",
        }[stage]
        plan = self.spec.plan(role)
        if plan is not None:
            self.step_call = bind_plan(plan, ROLE_ARGS[role], constants, self.spec.hparams)
        if stage == "fit":
            val = self.spec.plan("validation_step")
            self.eval_call = (
                None
                if val is None
                else bind_plan(val, ROLE_ARGS["validation_step"], evaluating, self.spec.hparams)
            )
        hooks = [p for p in self.spec.plans if p.role == "on"]
        self.events = Events(
            hooks,
            self.callbacks,
            self.constants(),
            self.user_models,
            self.spec.hparams,
            STAGE_EVENTS[stage],
        )

    # -- outputs -------------------------------------------------------------------------------
    def setup_outputs(self, ckpt_path: str | None = None) -> None:
        """Create the run folder and set the loggers up (global rank 0 only writes).
        ``ckpt_path``: the checkpoint the run starts from, as its ``config.toml`` records it."""
        config = self.config
        self.config_json = json.dumps(config.model_dump(mode="json"))
        # Evaluation writes no checkpoints: without loggers it writes nothing at all.
        checkpoints = config.enable_checkpointing and self.stage == "fit"
        wants_dir = (config.logger is not False or checkpoints) and not self.limits.dev_run
        if not wants_dir:
            return
        name = run_name(self.spec)
        if self.runtime.is_global_zero:
            self.run_dir = make_version_dir(config.root_dir / "lightkit_logs" / name)
        self.run_dir = self.runtime.broadcast(self.run_dir)
        self.ctx.log_dir = self.run_dir
        if not self.runtime.is_global_zero or self.run_dir is None:
            return
        for logger in self.loggers:
            logger.setup(self.run_dir)
        write_run_files(self.run_dir, self.spec, config, self.stage, ckpt_path)

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        """The run's checkpoint callback: the first ``ModelCheckpoint`` that monitors a metric,
        else the first one (Lightning's ``trainer.checkpoint_callback`` is the first)."""
        from lightkit.callbacks.checkpoint import ModelCheckpoint as Checkpoint

        found = [cb for cb in self.callbacks if isinstance(cb, Checkpoint)]
        return next((cb for cb in found if cb.monitor is not None), found[0] if found else None)

    @property
    def best_checkpoint(self) -> Path | None:
        """The checkpoint callback's best file: by its monitor, else the newest it kept (also
        one a resumed run restored with the callback's state)."""
        cb = self.checkpoint_callback
        return Path(cb.best_model_path) if cb is not None and cb.best_model_path else None

    def log_rows(self, metrics: dict[str, float], step: int, epoch: int | None = None) -> None:
        """Give the loggers one row at ``step``; its ``epoch`` column is the current epoch
        unless given."""
        if self.loggers and metrics:
            epoch = self.ctx.epoch if epoch is None else epoch
            row = {**metrics, "epoch": epoch}
            for logger in self.loggers:
                logger.log_metrics(row, step)
            self.last_row = (step, epoch)

    def flush_unwritten(self) -> None:
        """Write the step values not written yet, as an error ends the run: under the step
        their batch began at, like their row had it been written (an optimizer step may have
        advanced ``global_step`` since), else under ``global_step``."""
        store = self.store
        step = store.unwritten_step if store.unwritten_step is not None else store.row_step
        self.log_rows(store.take_unwritten(), self.ctx.global_step if step is None else step)

    def rebuilt_models(self, states: dict[str, dict[str, Any]]) -> dict[str, nn.Module]:
        """Plain modules on the CPU: each ``@model`` function called again (no strategy, no
        compile) and loaded with the full state ``states[name]`` (a sharded strategy's)."""
        hparams = self.spec.hparams
        base = {"ctx": self.ctx, "hparams": hparams}
        models: dict[str, nn.Module] = {}
        with isolate_rng():  # the initialisation it redraws must not shift the user's stream
            for plan in self.spec.plans:
                if plan.role == "model":
                    module = bind_plan(plan, (), base, hparams)()
                    module = self.runtime.precision.convert_module(module)
                    module.load_state_dict(states[plan.name])
                    models[plan.name] = module.cpu()
        return models

    def monitor_hint(self, monitor: str, logged: Iterable[str]) -> str:
        """For a monitor's "never logged" message: why a validation metric never comes (this
        fit never validates), or else the logged name it was likely meant to be."""
        if monitor.lower().startswith("val"):  # val/loss, val_acc, valid/...
            why = self.without_validation()
            if why:
                return why
        return did_you_mean(monitor, list(logged))

    def without_validation(self) -> str:
        """Why this fit never validates (a sentence for a monitor's error); ``""`` if it does."""
        if self.stage != "fit":
            return ""
        missing = [r for r in ("validation_step", "val_data") if self.spec.get(r) is None]
        if missing:
            why = f"the spec has no {' and no '.join('@' + r for r in missing)}"
        elif self.limits.val == 0:
            why = "limit_val_batches=0"
        else:
            return ""
        return (
            f" This fit never validates ({why}), so a metric the validation step logs is "
            f"never logged: monitor a training metric, or validate."
        )

    def unwrapped_models(self) -> dict[str, nn.Module]:
        return {
            name: unwrap_compiled(self.runtime.unwrap(unwrap_compiled(m)))
            for name, m in self.models.items()
        }


def run_name(spec: TrainingSpec) -> str:
    """The program's name: its run folder's under ``lightkit_logs``, recorded in each of its
    checkpoints (a resume takes only its own program's files). It is the module that defines
    most of the spec's functions, ties going to the training step's: a script that imports a
    shared training step is still itself. A script run as ``python train.py`` is ``train``,
    as ``lightkit fit train.py`` names it; a notebook takes its file's name where Jupyter
    says it, else ``default``."""
    names = [_program_name(e.fn) for e in spec.functions]
    if not names:
        return "default"
    counts = {n: names.count(n) for n in names}
    top = max(counts.values())
    for role in ("training_step", "validation_step", "test_step", "predict_step", "model"):
        entry = spec.get(role) or (spec.models[0] if role == "model" and spec.models else None)
        if entry is not None and counts[_program_name(entry.fn)] == top:
            return _program_name(entry.fn)
    return next(n for n in names if counts[n] == top)


def _program_name(fn: Any) -> str:
    """The short name of the module (or script, or notebook) that defines ``fn``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", "") or ""
    if module == "__main__":
        return _main_name(fn)
    return module.rsplit(".", 1)[-1] or "default"


def _code_file(fn: Any) -> Path | None:
    """The ``.py`` file ``fn``'s code comes from (``None`` for a notebook cell's)."""
    path = Path(getattr(getattr(inspect.unwrap(fn), "__code__", None), "co_filename", "") or "")
    # A notebook cell's code names a kernel's file that is no script (ipykernel_<pid>/...).
    if path.suffix == ".py" and not path.parent.name.startswith("ipykernel_") and path.is_file():
        return path
    return None


def _main_name(fn: Any) -> str:
    """The name of the program that defines ``fn`` in ``__main__``. The code's file name is
    kept when a function travels to the rank processes, where ``__main__`` is another."""
    path = _code_file(fn)
    if path is not None:
        return path.stem
    session = os.environ.get("JPY_SESSION_NAME")  # the notebook's path, from Jupyter
    return Path(session).stem if session else "default"


def write_run_files(
    run_dir: Path,
    spec: TrainingSpec,
    config: TrainerConfig,
    stage: str = "fit",
    ckpt_path: str | None = None,
) -> None:
    """``spec.json``, ``config.json`` and ``config.toml`` (targets + hyperparameters + trainer
    flags, for ``lightkit fit --config``): what ran, reproducible from the folder."""
    from lightkit.utils.config_file import write_run_config

    try:
        (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2) + "\n")
    except (TypeError, ValueError) as exc:  # a hyperparameter that is not JSON
        warnings.warn(
            LightkitWarning(f"spec.json not written: {exc}", code="run-file-not-written"),
            stacklevel=user_stacklevel(),
        )
    (run_dir / "config.json").write_text(
        json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
    )
    try:
        write_run_config(run_dir, spec, config, stage, ckpt_path)
    except (TypeError, ValueError) as exc:
        warnings.warn(
            LightkitWarning(f"config.toml not written: {exc}", code="run-file-not-written"),
            stacklevel=user_stacklevel(),
        )


def is_loader(obj: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(obj, DataLoader)


def is_batch(obj: Any) -> bool:
    """Whether an item of a list that a data function returned is a batch rather than a
    loader: ``[(x, y), ...]`` is one loader of ready batches, ``[loader_a, loader_b]`` two
    loaders. A batch is a tensor; a tuple, dict or dataclass with a tensor anywhere inside
    (``{"inputs": (x, mask), "target": [y]}``); a list holding a tensor itself (``[x, y]``,
    where ``[[(x, y)], [(x, y)]]`` is two loaders of lists); or anything not iterable."""
    if isinstance(obj, torch.Tensor):
        return True
    if is_loader(obj):
        return False
    if isinstance(obj, list):
        return any(isinstance(item, torch.Tensor) for item in obj)
    if not hasattr(obj, "__iter__") and not hasattr(obj, "__getitem__"):
        return True  # a loader is iterable: this is one batch (a custom object)
    return first_tensor(obj) is not None


def sequential(loader: Any) -> Any:
    """The same loader without shuffling (``overfit_batches`` repeats the same batches)."""
    from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

    from lightkit.utils.data import rebuild_with_sampler

    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader  # an iterable dataset's order is its own
    batches = loader.batch_sampler
    custom = batches is not None and type(batches) is not BatchSampler
    # With batch_sampler=BatchSampler(RandomSampler(...)), loader.sampler is a stand-in.
    order = loader.sampler if custom else getattr(batches, "sampler", loader.sampler)
    if not custom and isinstance(order, SequentialSampler):
        return loader
    if not custom:
        warnings.warn(
            LightkitWarning(
                "overfit_batches: the training loader's shuffling is turned off.",
                code="overfit-shuffle-off",
            ),
            stacklevel=user_stacklevel(),
        )
    # A custom batch sampler cannot be rebuilt: kept as is, with sampler-not-replaced.
    return rebuild_with_sampler(loader, SequentialSampler(loader.dataset))  # type: ignore[arg-type]


def unwrap_compiled(module: nn.Module) -> nn.Module:
    return getattr(module, "_orig_mod", module)


__all__ = ["EVENT_ARGS", "Engine", "Limits"]
