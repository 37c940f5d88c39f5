"""``Trainer``: compile a spec with a config and run fit, validate, test or predict."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lightkit.checkpoint.preemption import preemption_guard
from lightkit.engine.compiling import note_compile_failure
from lightkit.engine.config import TrainerConfig
from lightkit.engine.context import _CURRENT
from lightkit.engine.engine import Engine, run_name
from lightkit.engine.evaluation import evaluate, predict_loop
from lightkit.engine.events import Events, check_callback_methods
from lightkit.engine.loops import fit_loop
from lightkit.engine.result import Result
from lightkit.errors import (
    CheckpointError,
    ConfigError,
    LightkitError,
    LightkitWarning,
    user_stacklevel,
)
from lightkit.runtime.connector import connect
from lightkit.runtime.runtime import Runtime
from lightkit.spec.spec import TrainingSpec
from lightkit.utils.modules import check_sync_batchnorm
from lightkit.utils.seed import seed_everything


@dataclasses.dataclass(frozen=True)
class Fitted:
    """Where a fit ended, for validate/test/predict after it: the models' states and the
    loop position (so evaluation rows and ``Result.global_step`` say which step they judge)."""

    states: dict[str, dict[str, Any]]
    global_step: int
    epoch: int


class Trainer:
    """Runs a :class:`~lightkit.TrainingSpec`. Takes every :class:`TrainerConfig` flag.

    Example::

        trainer = lk.Trainer(max_epochs=3, precision="bf16-mixed", seed=0)
        result = trainer.fit(spec)
        trainer.test(spec, ckpt_path="best")
    """

    def __init__(self, config: TrainerConfig | None = None, /, **flags: Any) -> None:
        if config is not None and flags:
            values = {name: getattr(config, name) for name in TrainerConfig.model_fields}
            config = TrainerConfig(**(values | flags))
        self.config = config if config is not None else TrainerConfig(**flags)
        self.last_engine: Engine | None = None
        # The spec of this trainer's last completed fit, the modules it trained and where it
        # ended: validate, test and predict of the same spec without ckpt_path start there.
        self._fitted: tuple[TrainingSpec, Result] | None = None
        #: This trainer's last fit wrote no checkpoint: "best"/"last" would be an earlier run's.
        self._fit_saved_nothing = False

    def __repr__(self) -> str:
        changed = self.config.model_dump(exclude_defaults=True)
        return f"Trainer({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- entry points -----------------------------------------------------------------------
    def fit(self, spec: TrainingSpec, ckpt_path: str | Path | None = None) -> Result:
        """Train. ``ckpt_path`` (a path, ``"last"`` or ``"best"``) resumes a run exactly."""
        self._fitted = None
        before = self.last_engine
        try:
            result = self._run("fit", spec, ckpt_path)
        except BaseException:
            # As a LightningModule keeps what it learned when fit raises (Ctrl-C in a
            # notebook): validate/test/predict then start where this process's run stopped.
            engine = self.last_engine
            if engine is not None and engine is not before and engine.models:
                stopped = Result(
                    models=engine.unwrapped_models(),
                    global_step=engine.ctx.global_step,
                    epoch=engine.epochs_done,
                )
                self._fitted = (spec, stopped)
            raise
        self._fitted = (spec, result)
        return result

    def validate(self, spec: TrainingSpec, ckpt_path: str | Path | None = None) -> Result:
        """Run the validation step over the validation data once.

        The weights: ``ckpt_path``'s (a path, ``"last"`` or ``"best"``); else, after a ``fit``
        of the same spec on this trainer, the weights that fit ended with (as Lightning's
        ``trainer.validate(model)`` after ``fit``), also where a fit that raised in this
        process stopped (Ctrl-C); else the ``@model`` functions' fresh ones.
        """
        return self._run("validate", spec, ckpt_path, self._fitted_weights(spec, ckpt_path))

    def test(self, spec: TrainingSpec, ckpt_path: str | Path | None = None) -> Result:
        """Run the test step over the test data once; the weights as :meth:`validate` says."""
        return self._run("test", spec, ckpt_path, self._fitted_weights(spec, ckpt_path))

    def predict(self, spec: TrainingSpec, ckpt_path: str | Path | None = None) -> list[Any]:
        """Return what the predict step returned for every batch (a list per loader if several);
        the weights as :meth:`validate` says."""
        result = self._run("predict", spec, ckpt_path, self._fitted_weights(spec, ckpt_path))
        return result.extras["predictions"]  # type: ignore[no-any-return]

    def _fitted_weights(self, spec: TrainingSpec, ckpt_path: str | Path | None) -> Fitted | None:
        """Where this trainer's last fit ended, if it fitted this spec (same functions, same
        hyperparameters) and no checkpoint is asked for."""
        if ckpt_path is not None or self._fitted is None or self._fitted[0] != spec:
            return None
        result = self._fitted[1]
        states = {name: module.state_dict() for name, module in result.models.items()}
        return Fitted(states, result.global_step, result.epoch)

    # -- the run ----------------------------------------------------------------------------
    def _run(
        self,
        stage: str,
        spec: TrainingSpec,
        ckpt_path: str | Path | None,
        weights: Fitted | None = None,
    ) -> Result:
        if not isinstance(spec, TrainingSpec):
            raise ConfigError(
                f"trainer.{stage}() takes a TrainingSpec (from lk.collect()), got "
                f"{type(spec).__name__}.",
                code="not-a-spec",
            )
        if ckpt_path is not None and not isinstance(ckpt_path, (str, os.PathLike)):
            data = {"fit": "train_data", "validate": "val_data", "test": "test_data"}
            hint = (
                f" Data comes from the spec's @lk.{data.get(stage, 'predict_data')} function, "
                f"not from an argument (Lightning's trainer.{stage}(model, loader))."
                if not isinstance(ckpt_path, (int, float, bool))
                else ""
            )
            raise CheckpointError(
                f"trainer.{stage}(spec, ckpt_path=...) takes a checkpoint: a path, 'last' or "
                f"'best'; got {type(ckpt_path).__name__}.{hint}",
                code="not-a-checkpoint",
            )
        spec.require(stage)
        cfg = self.config
        strategy = connect(cfg.accelerator, cfg.devices, cfg.strategy, cfg.precision, cfg.num_nodes)
        if cfg.sync_batchnorm:  # before any process starts
            check_sync_batchnorm(strategy.world_size, strategy.device)
        launcher = getattr(strategy, "launcher", None)
        if launcher is not None:
            # devices=N from a plain process: start the ranks, run this same call in each.
            return launcher.launch(self, stage, spec, ckpt_path, weights)  # type: ignore[no-any-return]
        group = getattr(strategy, "group", None)
        if group is not None:  # distributed: the DistributedSampler seeds with the run's seed
            group.run_seed = cfg.seed
        runtime = Runtime.from_strategy(strategy)
        runtime.launch()
        try:
            result = self._run_engine(stage, spec, ckpt_path, runtime, weights)
            # Distributed strategies agree on the metrics (a collective: before teardown).
            finish = getattr(strategy, "finish_result", None)
            return finish(result, self.last_engine) if finish is not None else result
        finally:
            runtime.teardown()

    def _run_engine(
        self,
        stage: str,
        spec: TrainingSpec,
        ckpt_path: Any,
        runtime: Runtime,
        weights: Fitted | None = None,
    ) -> Result:
        cfg = self.config
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        engine = Engine(spec, cfg, runtime, stage)
        if weights is not None:  # evaluating where this trainer's fit ended, as Lightning
            engine.initial_weights = weights.states
            engine.ctx.global_step = weights.global_step
            engine.ctx.epoch = engine.epochs_done = weights.epoch
        if self.last_engine is not None:  # ckpt_path="best" prefers this trainer's last best
            # ... but a fit never resumes another program's.
            if stage != "fit" or run_name(self.last_engine.spec) == run_name(spec):
                engine.previous_best = self.last_engine.best_checkpoint
            if self.last_engine.stage == "fit":
                self._fit_saved_nothing = self.last_engine.last_checkpoint is None
        engine.previous_fit_unsaved = stage != "fit" and self._fit_saved_nothing
        self.last_engine = engine
        token = _CURRENT.set(engine.ctx)
        status = "failed"
        try:
            with _global_modes(cfg), preemption_guard(engine, stage):
                try:
                    self._compile(engine, stage, ckpt_path)
                    predictions = self._loop(engine, stage)
                except BaseException as exc:
                    if cfg.compile:
                        note_compile_failure(exc, cfg.compile)
                    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
                    status = "interrupted" if interrupted else "failed"
                    _fire_exception(engine, exc)
                    raise
                status = "success"
        finally:
            _finish(engine, stage, status)
            _CURRENT.reset(token)
        result = Result(
            metrics=engine.store.floats(),
            models=engine.unwrapped_models(),
            best_checkpoint=engine.best_checkpoint,
            last_checkpoint=engine.last_checkpoint,
            log_dir=engine.run_dir,
            global_step=engine.ctx.global_step,
            epoch=engine.epochs_done,
            stopped_by=engine.stopped_by if stage == "fit" else None,
        )
        if stage == "predict":
            result.extras["predictions"] = predictions
        return result

    def _compile(
        self, engine: Engine, stage: str, ckpt_path: Any, *, dry_run: bool = False
    ) -> None:
        """Build everything the loops need. ``dry_run`` (``lightkit explain``) writes nothing:
        no loggers, no run folder, no callback ``setup``."""
        from lightkit.callbacks import default_callbacks
        from lightkit.loggers import default_loggers

        cfg, limits = self.config, engine.limits
        check_callback_methods(cfg.callbacks, engine.spec.model_names)  # before any compute
        engine.build_models()
        if engine.initial_weights is not None:  # the weights this trainer's fit ended with
            engine.load_weights(engine.initial_weights)
        if stage == "fit":
            engine.build_optimizers()
            engine.training_data()
            has_step, has_data = (
                engine.spec.get("validation_step") is not None,
                engine.spec.get("val_data") is not None,
            )
            if has_step and has_data:
                if limits.val != 0:  # limit_val_batches=0: val_data is not called (Lightning)
                    engine.eval_loaders = engine.build_data(
                        "val_data", limits.val, "limit_val_batches"
                    )
            elif (has_step or has_data) and limits.val != 0 and not dry_run:
                have, lack = ("@validation_step", "@val_data")[:: 1 if has_step else -1]
                warnings.warn(
                    LightkitWarning(
                        f"the spec has a {have} but no {lack}: fit skips validation. Add a {lack} "
                        f"function to validate during training.",
                        code="validation-skipped",
                    ),
                    stacklevel=user_stacklevel(),
                )
        else:
            role, limit, flag = {
                "validate": ("val_data", limits.val, "limit_val_batches"),
                "test": ("test_data", limits.test, "limit_test_batches"),
                "predict": ("predict_data", limits.predict, "limit_predict_batches"),
            }[stage]
            engine.eval_loaders = engine.build_data(role, limit, flag)
        engine.callbacks = default_callbacks(cfg, stage, limits.dev_run)
        engine.loggers = (
            default_loggers(cfg)
            if not limits.dev_run and engine.runtime.is_global_zero and not dry_run
            else []
        )
        found = None
        if ckpt_path is not None:  # a missing checkpoint fails before the run folder is made
            from lightkit.checkpoint.restore import locate

            found = locate(engine, ckpt_path, full=stage == "fit")
        if not dry_run:
            for cb in engine.callbacks if stage == "fit" else ():
                # The folder an earlier fit chose is chosen anew, not written with the flags.
                forget = getattr(cb, "forget_run_folder", None)
                if forget is not None:
                    forget()
            engine.setup_outputs(_recorded_checkpoint(stage, ckpt_path, found))
            for cb in engine.callbacks:
                cb.setup(engine.ctx, stage)
                engine.callbacks_set_up.append(cb)
        engine.bind_steps(stage)
        manual_hooks = stage == "fit" and engine.manual and not engine.wraps_manual_optimizers
        if manual_hooks and engine.events.before_optimizer_step:
            # A manual step calls opt.step() itself: the event fires from torch's own step
            # pre-hook, before each step, as in Lightning (under 16-mixed the wrapper the
            # step gets fires it, also for a step the scaler skips).
            callers = engine.events.before_optimizer_step

            def before_step(optimizer: Any, args: Any, kwargs: Any) -> None:
                for call in callers:
                    call(optimizer)

            engine.step_hooks = [o.register_step_pre_hook(before_step) for o in engine.optimizers]
        if found is not None:  # after binding: load_checkpoint hooks see the file first
            from lightkit.checkpoint.restore import restore

            restore(engine, found, full=stage == "fit")
        if engine.loggers:
            for logger in engine.loggers:
                logger.log_hparams(engine.spec.hparams.as_dict())
                if stage == "fit":
                    for model in engine.unwrapped_models().values():
                        logger.log_graph(model, _graph_input(engine, model))

    def _loop(self, engine: Engine, stage: str) -> Any:
        if stage == "fit":
            fit_loop(engine)
            return None
        if stage == "predict":
            return predict_loop(engine, engine.eval_loaders)
        evaluate(engine, stage, engine.eval_loaders, engine.step_call)
        return None


def _graph_input(engine: Engine, model: torch.nn.Module) -> Any:
    """``model.example_input_array`` as a batch reaches the model: on its device, and cast
    as the precision casts batches; ``None`` without one (the logger says so)."""
    example = getattr(model, "example_input_array", None)
    if example is None:
        return None
    from lightkit.utils.apply import apply_to_tensors

    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        example = apply_to_tensors(example, lambda t: t.to(device))
    return engine.runtime.precision.convert_input(example)


def _fire_exception(engine: Engine, exc: BaseException) -> None:
    """Tell exception hooks; an error inside them must not mask the original one."""
    events = getattr(engine, "events", None)
    try:
        listeners = events.exception if events is not None else _early_exception_hooks(engine)
    except Exception as bind_error:  # never in place of the user's own error
        warnings.warn(
            LightkitWarning(
                f"exception hooks not called: {bind_error}", code="exception-hook-failed"
            ),
            stacklevel=user_stacklevel(),
        )
        return
    for call in listeners:
        try:
            call(exc)
        except Exception as hook_error:
            warnings.warn(
                LightkitWarning(
                    f"an exception hook raised {hook_error!r} while handling {exc!r}",
                    code="exception-hook-failed",
                ),
                stacklevel=user_stacklevel(),
            )


def _early_exception_hooks(engine: Engine) -> tuple[Any, ...]:
    """The ``exception`` listeners, bound with what exists when set-up failed (a ``@model``,
    data or ``configure_optimizers`` function raised): a hook asking for a model that was
    never built cannot be called, and a warning says so."""
    ready = []
    for plan in engine.spec.plans:
        if plan.role != "on" or plan.event != "exception":
            continue
        missing = [n for n in plan.names("model") if n not in engine.models]
        if missing:
            warnings.warn(
                LightkitWarning(
                    f"exception hook {plan.where} not called: it asks for {', '.join(missing)}, "
                    f"which the run had not built when the error happened.",
                    code="exception-hook-failed",
                ),
                stacklevel=user_stacklevel(),
            )
        else:
            ready.append(plan)
    constants, hparams = engine.constants(), engine.spec.hparams
    models = engine.user_models
    callers = list(Events(ready, [], constants, models, hparams, ("exception",)).exception)
    # The callbacks list is made after the data: before that, the user's own callbacks, each
    # bound alone (one asking for a model never built is skipped, as a hook is).
    for cb in engine.callbacks or engine.config.callbacks:
        try:
            bound = Events([], [cb], constants, models, hparams, ("exception",))
        except LightkitError:
            warnings.warn(
                LightkitWarning(
                    f"{type(cb).__name__}.on_exception not called: it asks for something the run "
                    f"had not built when the error happened (a model, the optimizers).",
                    code="exception-hook-failed",
                ),
                stacklevel=user_stacklevel(),
            )
            continue
        callers.extend(bound.exception)
    return tuple(callers)


def _recorded_checkpoint(stage: str, ckpt_path: Any, found: Any) -> str | None:
    """The checkpoint a run folder's config.toml names: what fit resumes from as given
    ("last" stays "last": the rerun continues the newest run), the very file an evaluation
    judged (a later fit must not change what "best" reruns)."""
    if ckpt_path is None:
        return None
    if stage != "fit" and found is not None:
        return str(Path(found[0]).resolve())
    if str(ckpt_path) in ("last", "best"):
        return str(ckpt_path)
    return str(Path(ckpt_path).resolve())  # the file reruns from any folder, as targets do


def _finish(engine: Engine, stage: str, status: str) -> None:
    """Flush loggers and tear callbacks down, whatever happened."""
    for handle in engine.step_hooks:  # the optimizers outlive the run (a user's own)
        handle.remove()
    if status != "success" and engine.loggers:
        # What was logged before the error reaches the files, then the error propagates.
        try:
            engine.flush_unwritten()
        except Exception:
            pass
    for cb in engine.callbacks_set_up:  # as a context manager: no exit without an enter
        try:
            cb.teardown(engine.ctx, stage)
        except Exception:
            if status == "success":
                raise
    for logger in engine.loggers:
        if status == "success" and stage == "fit":
            try:
                logger.log_hparams(engine.spec.hparams.as_dict(), engine.store.logged_floats())
            except Exception:
                pass
        logger.finalize(status)


@contextlib.contextmanager
def _global_modes(cfg: TrainerConfig) -> Iterator[None]:
    """Apply ``deterministic``/``benchmark``/``detect_anomaly`` for the run, then restore."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.is_anomaly_enabled(),
    )
    if cfg.deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=cfg.deterministic == "warn")
    if cfg.benchmark is not None:
        torch.backends.cudnn.benchmark = cfg.benchmark
    if cfg.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.autograd.set_detect_anomaly(saved[3])
