"""``ModelCheckpoint``: save checkpoints while training (Lightning's arguments and meanings).

The fit loop offers two save points where the run's state is consistent: after every
training batch (once its optimizer step, logging, validation and stop checks are done) and
after every completed epoch (validation run, epoch schedulers stepped). The callback decides
at those points whether a checkpoint is due; a checkpoint resumes exactly where it was taken.

Files end in ``.ckpt`` and are written atomically (temporary file, fsync, rename). A file that
falls out of the top k is deleted only after the new one is safely in place, and only files
this callback wrote are ever deleted. ``last.ckpt`` is replaced atomically (a hard link to the
file just written, or a copy where links are unsupported).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from lightkit.callbacks.base import Callback
from lightkit.checkpoint.io import atomic_link, clean_stale_temps
from lightkit.errors import ConfigError, LightkitWarning, sorted_list, user_stacklevel
from lightkit.strategies.base import Strategy
from lightkit.utils.validators import at_least, one_of, seconds

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine

_EXTENSION = ".ckpt"


def _seconds(value: Any) -> float | None:
    return seconds(value, "ModelCheckpoint", "train_time_interval")


def _absolute(dirpath: str | Path | None) -> Path | None:
    # As Lightning: a relative folder is the one under the working directory of the moment
    # the callback is made. Its paths (best_model_path, ...) are then absolute, and a run
    # resumed from another working directory does not take that folder's files for its own.
    return None if dirpath is None else Path(dirpath).expanduser().resolve()


_FIXED_NAMES = {
    "CHECKPOINT_NAME_LAST": "last",
    "FILE_EXTENSION": ".ckpt",
    "CHECKPOINT_JOIN_CHAR": "-",
    "CHECKPOINT_EQUALS_CHAR": "=",
}


class _FixedName:
    """A name attribute of Lightning's ``ModelCheckpoint`` that reads as Lightning's value and
    refuses an assignment on an instance (a class or subclass one is refused at ``fit``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.value = name, _FIXED_NAMES[name]

    def __get__(self, obj: Any, owner: type | None = None) -> str:
        return self.value

    def __set__(self, obj: Any, value: Any) -> None:
        if value != self.value:  # the same value again changes nothing
            raise _fixed_names_error(type(obj).__name__, [f"{self.name} = {value!r}"])


def _check_fixed_names(cls: type) -> None:
    changed = [
        f"{name} = {getattr(cls, name)!r}"
        for name, value in _FIXED_NAMES.items()
        if getattr(cls, name, value) != value
    ]
    if changed:
        raise _fixed_names_error(cls.__name__, changed)


def _fixed_names_error(owner: str, changed: list[str]) -> ConfigError:
    return ConfigError(
        f"{owner}.{', '.join(changed)}: lightkit's checkpoint names are fixed. The "
        f"newest file is always last.ckpt (what ckpt_path='last' finds, in every run "
        f"folder), files end in .ckpt, and a filename template writes name=value joined "
        f"by its own characters. Leave these as they are; to keep each epoch's file "
        f"under a name of your own, use filename= (e.g. '{{epoch}}-end') with "
        f"save_top_k=-1.",
        code="fixed-checkpoint-names",
    )


@attrs.define
class ModelCheckpoint(Callback):
    """Save the run (models, optimizers, loop position, random states) as training goes.

    Args:
        dirpath: the folder; default ``<run_dir>/checkpoints``. A relative folder is made
            absolute against the working directory when the callback is made (Lightning's
            rule), so the paths it reports are absolute.
        filename: a template such as ``"{epoch}-{step}-{val/loss:.3f}"``; each ``{name}`` is
            filled from the logged metrics (plus ``epoch`` and ``step``). With
            ``auto_insert_metric_name`` the name is written before the value, a ``/`` in it
            as ``_``: ``epoch=3-step=40-val_loss=0.123.ckpt``. Default ``"{epoch}-{step}"``.
            ``.ckpt`` is appended; a template that ends in it already does not get a second
            one (``"model"`` and ``"model.ckpt"`` both write ``model.ckpt``).
        monitor: the metric ranking checkpoints; ``None`` keeps the newest ones.
        mode: ``"min"`` or ``"max"``: which values of ``monitor`` are better.
        save_top_k: keep the k best files (``-1``: all, ``0``: none besides ``last``). Without
            a monitor it may only be -1, 0 or 1 (1: the newest).
        save_last: also keep ``last.ckpt``, replaced at every save. The checkpoint callback
            that ``enable_checkpointing`` adds sets it, so by default the newest checkpoint is
            always ``last.ckpt``. Lightning's ``"link"`` is taken too: ``last.ckpt`` is a hard
            link to the file just written either way (a copy where links cannot be made).
        save_weights_only: store only the models (plus spec and config): smaller, but cannot
            resume training.
        every_n_train_steps: save every n optimizer steps.
        train_time_interval: save at the first batch end after this much time (seconds or a
            ``timedelta``).
        every_n_epochs: save every n epochs (the default, 1, when none of the three is set):
            at the epoch's end or after its validations, as ``save_on_train_epoch_end`` says.
        save_on_train_epoch_end: ``True``: save when a training epoch ends; ``False``: after
            each validation instead (epochs without one save nothing), and when training stops
            inside an epoch (``max_steps``, ``max_time``). ``None`` (Lightning's
            rule): at the epoch's end when validation runs once per epoch, at its end
            (``check_val_every_n_epoch=1``, ``val_check_interval=1.0``) or never; after each
            validation otherwise.
        auto_insert_metric_name: write ``name=`` before each value in the file name.
        enable_version_counter: when a file name is taken, add ``-v1``, ``-v2``, ... A name
            taken by the very file that leaves the top k is not taken: that file is
            replaced in place (atomically), so a fixed ``filename`` keeps its name.
        verbose: print each save.

    Example::

        lk.Trainer(callbacks=[lk.ModelCheckpoint(monitor="val/loss", save_top_k=3,
                                                 filename="{epoch}-{val/loss:.3f}")])
    """

    monitors: ClassVar[bool] = True
    #: Lightning's class attributes for file names, for code that reads them. lightkit's
    #: names are fixed (the newest file is always ``last.ckpt``, which ``ckpt_path="last"``
    #: finds): a run refuses a subclass or an assignment that changes them.
    CHECKPOINT_NAME_LAST: ClassVar[str] = _FixedName()  # type: ignore[assignment]
    FILE_EXTENSION: ClassVar[str] = _FixedName()  # type: ignore[assignment]
    CHECKPOINT_JOIN_CHAR: ClassVar[str] = _FixedName()  # type: ignore[assignment]
    CHECKPOINT_EQUALS_CHAR: ClassVar[str] = _FixedName()  # type: ignore[assignment]

    dirpath: str | Path | None = attrs.field(default=None, converter=_absolute)
    filename: str | None = None
    monitor: str | None = None
    verbose: bool = False
    save_last: bool | Literal["link"] | None = attrs.field(
        default=None, validator=one_of(True, False, None, "link")
    )
    save_top_k: int = attrs.field(default=1, validator=at_least(-1))
    save_weights_only: bool = False
    mode: Literal["min", "max"] = attrs.field(default="min", validator=one_of("min", "max"))
    auto_insert_metric_name: bool = True
    every_n_train_steps: int | None = attrs.field(
        default=None, validator=at_least(0, optional=True)
    )
    train_time_interval: float | None = attrs.field(default=None, converter=_seconds)
    every_n_epochs: int | None = attrs.field(default=None, validator=at_least(0, optional=True))
    enable_version_counter: bool = True
    save_on_train_epoch_end: bool | None = None

    #: Path -> monitored value of the files kept for the top k.
    best_k_models: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    kth_best_model_path: str = attrs.field(default="", init=False, repr=False)
    kth_value: float = attrs.field(default=math.inf, init=False, repr=False)
    best_model_path: str = attrs.field(default="", init=False, repr=False)
    best_model_score: float | None = attrs.field(default=None, init=False, repr=False)
    current_score: float | None = attrs.field(default=None, init=False, repr=False)
    last_model_path: str = attrs.field(default="", init=False, repr=False)
    _last_global_step_saved: int = attrs.field(default=0, init=False, repr=False)
    _last_time: float = attrs.field(default=0.0, init=False, repr=False)
    _auto_dir: bool = attrs.field(default=False, init=False, repr=False)
    _sanity: bool = attrs.field(default=False, init=False, repr=False)
    _val_ran: bool = attrs.field(default=False, init=False, repr=False)
    _val_since_save: bool = attrs.field(default=False, init=False, repr=False)
    _val_at_epoch_end: bool = attrs.field(default=False, init=False, repr=False)
    _on_epoch_end: bool = attrs.field(default=True, init=False, repr=False)
    _carried_best: tuple[str, float] | None = attrs.field(default=None, init=False, repr=False)
    _warned: set[str] = attrs.field(factory=set, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        given = [
            name
            for name in ("every_n_train_steps", "every_n_epochs", "train_time_interval")
            if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise ConfigError(
                f"ModelCheckpoint({', '.join(f'{n}=...' for n in given)}): these triggers are "
                f"exclusive; set one of every_n_train_steps, every_n_epochs, "
                f"train_time_interval.",
                code="checkpoint-config",
            )
        if not given:
            self.every_n_epochs = 1
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise ConfigError(
                f"ModelCheckpoint(save_top_k={self.save_top_k}) needs a monitor to rank the "
                f"checkpoints: set monitor='val/loss' (a logged metric), or save_top_k=-1 to "
                f"keep every file.",
                code="checkpoint-config",
            )
        if self.train_time_interval is not None and self.train_time_interval <= 0:
            raise ConfigError(
                "ModelCheckpoint(train_time_interval=...) must be positive.",
                code="checkpoint-config",
            )
        self.kth_value = math.inf if self.mode == "min" else -math.inf

    # -- identity and state ------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return (
            f"ModelCheckpoint{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}, "
            f"'every_n_train_steps': {self.every_n_train_steps or 0}, "
            f"'every_n_epochs': {self.every_n_epochs or 0}, "
            f"'train_time_interval': {self.train_time_interval!r}}}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": None if self.dirpath is None else str(self.dirpath),
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
            "last_global_step_saved": self._last_global_step_saved,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.dirpath is None and state.get("dirpath"):
            # Never set up here: the caller's object of a devices=N run, taking rank 0's state.
            # It adopts that run's folder (chosen for it, as setup() would have).
            self.dirpath = Path(state["dirpath"])
            self._auto_dir = True
        same_dir = self.dirpath is not None and state.get("dirpath") == str(self.dirpath)
        self.best_model_path = state.get("best_model_path", "")
        self.best_model_score = state.get("best_model_score")
        self.current_score = state.get("current_score")
        self._last_global_step_saved = int(state.get("last_global_step_saved", 0))
        if same_dir:
            self.best_k_models = {
                p: float(v) for p, v in state.get("best_k_models", {}).items() if Path(p).exists()
            }
            self.kth_best_model_path = state.get("kth_best_model_path", "")
            self.kth_value = float(state.get("kth_value", self.kth_value))
            self.last_model_path = state.get("last_model_path", "")
            self._carried_best = None
        elif self.best_model_path and self.best_model_score is not None:
            # Another folder (a new version folder): its files are not ours to delete, but
            # its best still counts as the best until a better one is written here.
            self._carried_best = (self.best_model_path, float(self.best_model_score))

    # -- run events --------------------------------------------------------------------------
    def forget_run_folder(self) -> None:
        """Before a new run's flags are written: a folder this callback chose for an earlier
        run (``<run_dir>/checkpoints``) is no flag of the user's, and is chosen again."""
        if self._auto_dir:
            self.dirpath = None

    def setup(self, ctx: Any, stage: str) -> None:
        if stage != "fit":
            return
        _check_fixed_names(type(self))
        engine: Engine = ctx._engine
        if self.dirpath is None or self._auto_dir:
            self._auto_dir = True
            base = engine.run_dir if engine.run_dir is not None else engine.config.root_dir
            self.dirpath = Path(base) / "checkpoints"
        self.best_k_models = {}
        self.kth_best_model_path = ""
        self.kth_value = math.inf if self.mode == "min" else -math.inf
        self.best_model_path = ""
        self.best_model_score = None
        self.current_score = None
        self.last_model_path = ""
        self._last_global_step_saved = 0
        self._last_time = time.monotonic()
        self._val_ran = self._val_since_save = self._val_at_epoch_end = self._sanity = False
        self._on_epoch_end = self._saves_on_train_epoch_end(engine)
        self._carried_best = None
        if engine.runtime.is_global_zero:
            clean_stale_temps(self.dirpath)
        if not engine.limits.dev_run:
            from lightkit.checkpoint.state import spec_json

            spec_json(engine.spec)  # unstorable hyperparameters fail now, not at the first save

    def _saves_on_train_epoch_end(self, engine: Engine) -> bool:
        """Lightning's rule for ``save_on_train_epoch_end=None``."""
        if self.save_on_train_epoch_end is not None:
            return bool(self.save_on_train_epoch_end)
        limits = engine.limits
        validates = (
            engine.spec.plan("validation_step") is not None
            and bool(engine.eval_loaders)
            and limits.val != 0
        )
        if not validates:
            return True  # nothing else would ever save
        if limits.check_val_every_n_epoch != 1:
            return False  # validation skips epoch ends, or counts batches across them
        # An int interval counts batches (1: every batch), even the int 1 that Lightning's
        # `== 1.0` takes for the float.
        interval = limits.val_check_interval
        return isinstance(interval, float) and interval == 1.0

    def on_sanity_check_start(self, ctx: Any) -> None:
        self._sanity = True

    def on_sanity_check_end(self, ctx: Any) -> None:
        self._sanity = False

    def on_validation_epoch_end(self, ctx: Any) -> None:
        if not self._sanity:
            self._val_ran = self._val_since_save = True

    # -- save points (called by the fit loop) ------------------------------------------------
    def batch_done(self, engine: Engine, leaving: bool) -> None:
        """After a training batch. ``leaving``: training stops after it, mid-epoch."""
        validated, self._val_since_save = self._val_since_save, False
        # Saving at the epoch's end: only a run that leaves mid-epoch saves here (its epoch
        # ends now). Saving after validations: each one saves, and so does leaving (a
        # max_time stop validates nothing first; its last steps must not be lost).
        trigger = leaving if self._on_epoch_end else (validated or leaving)
        if not (self.every_n_train_steps or self.train_time_interval is not None or trigger):
            return  # the common case, once per batch: nothing can be due
        if engine.limits.dev_run:
            return
        ctx = engine.ctx
        step = ctx.global_step
        if step == self._last_global_step_saved:
            return
        due = False
        if self.every_n_train_steps and step % self.every_n_train_steps == 0:
            due = True
        if self.train_time_interval is not None:
            timed = time.monotonic() - self._last_time >= self.train_time_interval
            if engine.runtime.world_size > 1:
                timed = bool(engine.runtime.broadcast(timed))
            due = due or timed
        train = engine.train_iter
        last_of_epoch = (
            train is not None
            and train.num_batches is not None
            and ctx.batch_idx + 1 >= train.num_batches
        )
        if validated and last_of_epoch:
            self._val_at_epoch_end = True  # saved by epoch_done, after the epoch's schedulers
        if (
            self.every_n_epochs
            and not last_of_epoch
            and trigger
            and (ctx.epoch + 1) % self.every_n_epochs == 0
        ):
            due = True
        if due:
            self._save(engine, (ctx.epoch, ctx.batch_idx + 1))

    def epoch_done(self, engine: Engine) -> None:
        """After a completed training epoch (validation and epoch schedulers included)."""
        validated = self._val_since_save or self._val_at_epoch_end
        self._val_since_save = self._val_at_epoch_end = False
        if engine.limits.dev_run:
            return
        ctx = engine.ctx
        if ctx.global_step == self._last_global_step_saved:
            return
        if not (self._on_epoch_end or validated):
            return
        if self.every_n_epochs and (ctx.epoch + 1) % self.every_n_epochs == 0:
            self._save(engine, (engine.epochs_done, 0))

    def train_done(self, engine: Engine, position: tuple[int, int]) -> None:
        """Training ended (before ``fit_end``): with ``save_last``, write ``last.ckpt`` if no
        save holds this step yet, so the last trained weights are on disk (Lightning's
        ``on_train_end``): e.g. after a stop asked at an epoch's start, or a last epoch whose
        save waits for a validation that does not run."""
        if not self.save_last or engine.limits.dev_run:
            return
        if engine.ctx.global_step == self._last_global_step_saved:
            return
        self._last_global_step_saved = engine.ctx.global_step
        self.save_last_now(engine, position, weights_only=self.save_weights_only)

    def save_last_now(
        self, engine: Engine, position: tuple[int, int], weights_only: bool = False
    ) -> Path:
        """Write ``last.ckpt`` now (the full state unless ``weights_only``; preemption uses
        it whatever ``save_last``)."""
        from lightkit.checkpoint.state import build_checkpoint

        path = self._dir() / "last.ckpt"
        previous = self.last_model_path
        self.last_model_path = str(path)
        try:
            ckpt = build_checkpoint(engine, position=position, weights_only=weights_only)
            engine.runtime.strategy.save_checkpoint(ckpt, path)
        except BaseException:
            self.last_model_path = previous
            raise
        engine.runtime.barrier("checkpoint-saved")
        engine.last_checkpoint = path
        return path

    # -- saving ------------------------------------------------------------------------------
    def _dir(self) -> Path:
        assert self.dirpath is not None, "ModelCheckpoint.setup() was not called"
        return Path(self.dirpath)

    def _save(self, engine: Engine, position: tuple[int, int]) -> None:
        from lightkit.checkpoint.state import build_checkpoint

        rt = engine.runtime
        metrics = self._candidates(engine)
        before = self._memory()
        removals: list[str] = []
        topk_path: Path | None = None
        try:
            if self.save_top_k != 0:
                topk_path = self._update_topk(engine, metrics, removals)
            last_path = self._dir() / "last.ckpt" if self.save_last else None
            if topk_path is None and last_path is None:
                return
            if last_path is not None:
                self.last_model_path = str(last_path)
            self._last_global_step_saved = engine.ctx.global_step
            ckpt = build_checkpoint(engine, position=position, weights_only=self.save_weights_only)
            written = topk_path or last_path
            assert written is not None
            rt.strategy.save_checkpoint(ckpt, written)
            if last_path is not None and topk_path is not None:
                if type(rt.strategy).save_checkpoint is Strategy.save_checkpoint:
                    if rt.is_global_zero:  # one file, written by rank 0: link it
                        atomic_link(topk_path, last_path)
                else:  # a strategy with its own format (sharded): write it again
                    rt.strategy.save_checkpoint(ckpt, last_path)
        except BaseException:
            self._restore_memory(before)
            raise
        rt.barrier("checkpoint-saved")
        self._last_time = time.monotonic()
        keep = {str(topk_path), str(last_path), self.best_model_path, *self.best_k_models}
        if rt.is_global_zero:
            folder = self._dir().resolve()
            for old in removals:
                # Only files of this folder: a previous run's files (another version folder)
                # are never deleted.
                if old not in keep and Path(old).resolve().is_relative_to(folder):
                    _remove(Path(old))
        if self.verbose and rt.is_global_zero:
            print(
                f"ModelCheckpoint: saved {written} (epoch {engine.ctx.epoch}, step "
                f"{engine.ctx.global_step})"
            )
        engine.last_checkpoint = Path(written if last_path is None else last_path)

    def _update_topk(
        self, engine: Engine, metrics: dict[str, float], removals: list[str]
    ) -> Path | None:
        if self.monitor is None:
            # save_top_k=1 keeps only the newest: the previous file leaves, so a new file of
            # the same name replaces it in place (Lightning's rule) instead of taking `-v1`.
            leaving = self.best_model_path if self.save_top_k == 1 else ""
            path = self._path(engine, metrics, replacing=leaving or None)
            previous, self.best_model_path = self.best_model_path, str(path)
            if self.save_top_k == 1 and previous and previous != str(path):
                removals.append(previous)
            return path
        current = metrics.get(self.monitor)
        if current is None:
            logged = [k for k in metrics if k not in ("epoch", "step")]  # the filename's own
            message = (
                f"ModelCheckpoint(monitor={self.monitor!r}) could not find {self.monitor!r} in "
                f"the logged metrics: {sorted_list(logged)}.{engine.monitor_hint(self.monitor, logged)} "
                f"Log it with lk.log({self.monitor!r}, value), or change monitor."
            )
            if self._val_ran:
                raise ConfigError(message, code="monitor-not-logged")
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(
                    LightkitWarning(
                        message + " (no top-k file saved until it is)", code="monitor-not-logged"
                    ),
                    stacklevel=user_stacklevel(),
                )
            return None
        if math.isnan(current):
            current = math.inf if self.mode == "min" else -math.inf
        better = self._is_better(current)
        if engine.runtime.world_size > 1:
            # Saved only if every rank finds it better (Lightning's unanimous decision): a
            # monitor logged without sync_dist can differ between ranks.
            better = not engine.runtime.strategy.reduce_any(not better)
        if not better:
            if self.verbose and engine.runtime.is_global_zero:
                print(
                    f"ModelCheckpoint: {self.monitor}={current:.5g} is not in the top "
                    f"{self.save_top_k}"
                )
            return None
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        replacing = None
        if len(self.best_k_models) >= k:
            replacing = self.kth_best_model_path
            self.best_k_models.pop(replacing, None)
            removals.append(replacing)
        path = self._path(engine, metrics, replacing=replacing)
        self.current_score = current
        self.best_k_models[str(path)] = current
        worst, best = (max, min) if self.mode == "min" else (min, max)
        if len(self.best_k_models) == k:
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.__getitem__)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self._carried_best is not None and self._better(
            self._carried_best[1], self.best_model_score
        ):
            self.best_model_path, self.best_model_score = self._carried_best
        return path

    def _is_better(self, current: float) -> bool:
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        return self._better(current, self.kth_value)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _candidates(self, engine: Engine) -> dict[str, float]:
        metrics = dict(engine.store.floats())
        metrics["epoch"] = engine.ctx.epoch
        metrics["step"] = engine.ctx.global_step
        return metrics

    def _path(self, engine: Engine, metrics: dict[str, float], replacing: str | None) -> Path:
        """Where to write: the formatted name, or with ``enable_version_counter`` the first of
        ``-v1``, ``-v2``, ... not taken. The file leaving the top k (``replacing``) does not
        count as taken: it is overwritten in place. That is safe: the new file is written
        under a temporary name and renamed over it, so a failed write leaves it untouched."""
        name = self.format_checkpoint_name(metrics)
        path = self._dir() / name
        if self.enable_version_counter:
            version = 1
            while path.exists() and str(path) != replacing:
                path = self._dir() / self.format_checkpoint_name(metrics, ver=version)
                version += 1
        if engine.runtime.world_size > 1:
            path = Path(engine.runtime.broadcast(str(path)))
        return path

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None
    ) -> str:
        """The file name for ``metrics`` (Lightning's rules; ``/`` in names becomes ``_``).

        A template ending in ``.ckpt`` loses it first: ``filename="model.ckpt"`` names
        ``model.ckpt`` and ``model-v1.ckpt`` (Lightning writes ``model.ckpt.ckpt``)."""
        template = filename if filename is not None else self.filename
        if template is not None and template.endswith(_EXTENSION):
            template = template[: -len(_EXTENSION)]
        template = template or "{epoch}-{step}"
        groups = sorted(set(re.findall(r"(\{.*?)[:\}]", template)), key=len, reverse=True)
        values = dict(metrics)
        for group in groups:
            name = group[1:]
            if self.auto_insert_metric_name:
                template = template.replace(group, name.replace("/", "_") + "=" + "\x00" + name)
            template = template.replace(group, "\x00" + name)
            if name not in values:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(
                        LightkitWarning(
                            f"ModelCheckpoint(filename={self.filename!r}): {name!r} was not logged; "
                            f"0 is written in its place.",
                            code="filename-metric-missing",
                        ),
                        stacklevel=user_stacklevel(),
                    )
                values[name] = 0
        for group in groups:
            name = group[1:]
            template = template.replace("\x00" + name, "{0[" + name + "]")
        text = template.format(values)
        if ver is not None:
            text += f"-v{ver}"
        return text + _EXTENSION

    def _memory(self) -> dict[str, Any]:
        return {
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "current_score": self.current_score,
            "last_model_path": self.last_model_path,
            "_last_global_step_saved": self._last_global_step_saved,
        }

    def _restore_memory(self, saved: dict[str, Any]) -> None:
        for key, value in saved.items():
            setattr(self, key, value)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():  # a sharded checkpoint is a folder
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        warnings.warn(
            LightkitWarning(
                f"ModelCheckpoint: could not delete {path}: {exc}", code="checkpoint-not-deleted"
            ),
            stacklevel=user_stacklevel(),
        )


__all__ = ["ModelCheckpoint"]
