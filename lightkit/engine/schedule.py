"""The compiled schedule of a run, recorded from a dry run of the real loop (``lightkit explain``).

The engine is compiled exactly as :class:`~lightkit.Trainer` compiles it for a run (models,
optimizers, loaders, callbacks, event lists), except that a dry run writes nothing. Then, on the
compiled objects only:

- every loader becomes a stand-in of the same length (per rank) that yields placeholders;
- the step callers and every event's listener tuple become recorders: they note what would be
  called there, with what it is injected, and call nothing;
- the runtime's ``backward``, ``optimizer_step`` and ``clip_gradients``, the optimizers'
  ``zero_grad``, the schedulers and the loggers become recorders too.

Then the real loop (``fit_loop``, ``evaluate`` or ``predict_loop``) runs. The loops have no
dry-run branch, so the order recorded is the order a run takes. What depends on the data is
not known to a dry run: every training step is taken to return a loss, ``ctx.should_stop`` is
never set, ``max_time`` never runs out, and a callback's own decisions (does a monitored
checkpoint improve?) are not taken: callbacks are listed where they are called.

Why one module of ~560 lines: the recorders, the stand-ins and the driver (:func:`explain`)
are one mechanism, each piece meaningful only against the others and against the loop they
stand in for; split, a reader would hop between files to follow one dry run. How a schedule
is printed lives apart, in ``schedule_render.py``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from lightkit.engine.config import TrainerConfig
from lightkit.engine.context import _CURRENT
from lightkit.engine.engine import Engine
from lightkit.engine.epoch_iterator import EpochIterator
from lightkit.errors import ConfigError, describe_function
from lightkit.runtime.runtime import Runtime
from lightkit.spec.roles import EVENTS
from lightkit.spec.signature import FunctionPlan
from lightkit.spec.spec import TrainingSpec
from lightkit.strategies.single_device import SingleDevice
from lightkit.utils.seed import isolate_rng, seed_everything

__all__ = ["Entry", "Listener", "Schedule", "explain"]

_STEP_ROLES = {
    "fit": "training_step",
    "validate": "validation_step",
    "test": "test_step",
    "predict": "predict_step",
}


@attrs.frozen
class Listener:
    """A function that runs at an entry: a step, a function hook or a callback method."""

    kind: str  #: "step", "hook" or "callback"
    name: str  #: ``train``, ``announce``, ``ModelCheckpoint.on_train_epoch_end``
    call: str  #: the call with what it is injected: ``optim(net, lr=0.001)``
    where: str  #: ``file:line``

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


@attrs.frozen
class Entry:
    """One thing that happens in a run, in order."""

    what: str  #: an event name, a step role, or a runtime action ("backward", ...)
    kind: str  #: "event", "step" or "runtime"
    stage: str  #: the loop stage: "train", "train_epoch", "validate", "test", "predict"
    epoch: int
    batch_idx: int | None
    global_step: int
    listeners: tuple[Listener, ...] = ()
    detail: str = ""
    sanity: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["listeners"] = [x.to_dict() for x in self.listeners]
        return out

    @property
    def label(self) -> str:
        return f"{self.what} ({self.detail})" if self.detail else self.what


@attrs.define
class Schedule:
    """What a run of ``stage`` does, in order. ``render()`` for people, ``to_json()`` for tools."""

    stage: str
    entries: list[Entry]
    facts: dict[str, Any] = attrs.field(factory=dict)
    #: Every event's listeners, also of events this schedule never reaches (``exception``).
    listening: dict[str, tuple[Listener, ...]] = attrs.field(factory=dict)

    def calls(self) -> list[str]:
        """The name of every user function, hook and callback method called, in order."""
        return [x.name for e in self.entries for x in e.listeners]

    def to_json(self) -> str:
        return json.dumps(
            {
                "stage": self.stage,
                "facts": self.facts,
                "entries": [e.to_dict() for e in self.entries],
                "listening": {k: [x.to_dict() for x in v] for k, v in self.listening.items()},
            },
            indent=2,
            default=str,
        )

    def render(self) -> str:
        from lightkit.engine.schedule_render import render

        return render(self)


# -- recording -------------------------------------------------------------------------------


class _Enough(Exception):
    """Raised by a recorder when the schedule holds ``max_entries``: the dry run stops there."""


class _Placeholder:
    """What a stand-in loader yields instead of a batch."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<batch {self.index}>"


class _StandIn:
    """A loader of ``length`` placeholders (``None``: endless; a limit must stop it)."""

    def __init__(self, length: int | None) -> None:
        self.length = length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("a stand-in for a loader without a length")
        return self.length

    def __iter__(self) -> Iterator[_Placeholder]:
        i = 0
        while self.length is None or i < self.length:
            yield _Placeholder(i)
            i += 1


def _signature_call(fn: Callable[..., Any], injects: Sequence[str], values: dict[str, Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "fn")
    args = [f"{n}={values[n]!r}" if n in values else n for n in injects]
    return f"{name}({', '.join(args)})"


def _where(fn: Callable[..., Any]) -> str:
    return describe_function(fn).rsplit(" at ", 1)[-1]


class _Recorder:
    """Swaps the compiled callers of an engine for recorders; ``entries`` is what they saw."""

    def __init__(self, engine: Engine, budget: int) -> None:
        self.engine = engine
        self.budget = budget
        self.entries: list[Entry] = []
        self.listening: dict[str, tuple[Listener, ...]] = {}  # event -> its listeners
        self.sanity = False
        self.plans = {id(p.fn): p for p in engine.spec.plans}
        self.hparams = engine.spec.hparams.as_dict()
        self.loss = torch.zeros(())

    # -- what a caller is ------------------------------------------------------------------
    def listener(self, caller: Any, kind: str) -> Listener:
        fn = getattr(caller, "__wrapped_fn__", caller)
        plan: FunctionPlan | None = self.plans.get(id(fn))
        if plan is not None:
            injects = [p.name for p in plan.params]
            values = {p.name: self.hparams[p.name] for p in plan.params if p.kind == "hparam"}
            name = getattr(fn, "__name__", plan.name)
        else:  # a callback's bound method
            injects = list(getattr(caller, "__injects__", ()))
            values = {}
            owner = type(getattr(fn, "__self__", None)).__name__
            name = f"{owner}.{getattr(fn, '__name__', 'method')}"
        call = _signature_call(fn, injects, values)
        if plan is None:
            call = f"{type(getattr(fn, '__self__', None)).__name__}.{call.split('.')[-1]}"
        return Listener(kind=kind, name=name, call=call, where=_where(fn))

    def add(
        self,
        what: str,
        kind: str,
        listeners: tuple[Listener, ...] = (),
        detail: str = "",
        batch: bool = True,
    ) -> None:
        if len(self.entries) >= self.budget:
            raise _Enough
        ctx = self.engine.ctx
        stage = self.engine.store.stage  # ctx.stage says "train_epoch" for a whole epoch
        if what == "write_logs":  # per batch in training, per run in evaluation
            batch = stage == "train"
        in_batch = batch and stage not in ("train_epoch", "setup")
        self.entries.append(
            Entry(
                what=what,
                kind=kind,
                stage=stage,
                epoch=ctx.epoch,
                batch_idx=ctx.batch_idx if in_batch else None,
                global_step=ctx.global_step,
                listeners=listeners,
                detail=detail,
                sanity=self.sanity,
            )
        )

    # -- the swaps -------------------------------------------------------------------------
    def kind_of(self, caller: Any) -> str:
        return "hook" if id(getattr(caller, "__wrapped_fn__", caller)) in self.plans else "callback"

    def event(self, name: str, callers: tuple[Any, ...]) -> Callable[..., None]:
        listeners = tuple(self.listener(c, self.kind_of(c)) for c in callers)
        if listeners:
            self.listening[name] = listeners
        # Checkpoint callbacks keep their own books (did validation run since the last save?):
        # their methods run, so their save decisions are theirs.
        passing = tuple(
            c
            for c in callers
            if isinstance(getattr(getattr(c, "__wrapped_fn__", None), "__self__", None), _DryMark)
        )
        batch = "batch" in name or name in ("before_backward", "after_backward")
        batch = batch or name == "before_optimizer_step"

        def record(*args: Any) -> None:
            if name == "sanity_check_start":
                self.sanity = True
            self.add(name, "event", listeners, batch=batch)
            for call in passing:
                call(*args)
            if name == "sanity_check_end":
                self.sanity = False

        return record

    def dry_checkpoints(self) -> None:
        """Swap each ``ModelCheckpoint`` for a copy that records its saves instead of writing
        them, then bind the events again over the copies."""
        try:
            from lightkit.callbacks.checkpoint import ModelCheckpoint
        except ImportError:
            return
        engine = self.engine
        found = False
        for i, cb in enumerate(engine.callbacks):
            if not isinstance(cb, ModelCheckpoint):
                continue
            dry = copy.copy(cb)
            dry.__class__ = _dry_checkpoint_class(type(cb), self)
            dry.dirpath = None  # setup() points it at a temporary folder; nothing is written
            saved = engine.run_dir
            with tempfile.TemporaryDirectory() as tmp:
                engine.run_dir = Path(tmp)
                try:
                    dry.setup(engine.ctx, "fit")
                finally:
                    engine.run_dir = saved
            engine.callbacks[i] = dry
            found = True
        if found:
            engine.bind_steps("fit")

    def checkpoint_saved(self, cb: Any) -> None:
        monitor = getattr(cb, "monitor", None)
        detail = type(cb).__mro__[1].__name__
        if monitor is not None:
            detail += f", when {monitor} is in the top {getattr(cb, 'save_top_k', 1)}"
            if getattr(cb, "save_last", False):
                detail += "; last.ckpt always"
        self.add("save_checkpoint", "event", self.save_listeners, detail=detail)

    def step(self, role: str, caller: Any, result: Any) -> Callable[..., Any]:
        listeners = (self.listener(caller, "step"),)

        def record(*args: Any) -> Any:
            self.add(role, "step", listeners)
            return result

        return record

    def runtime(self, what: str, detail: str = "") -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.add(what, "runtime", detail=detail)

        return record

    def install(self, stage: str, world_size: int) -> None:
        """Swap loaders, steps, events, runtime actions, schedulers and loggers."""
        engine, cfg = self.engine, self.engine.config
        limits = engine.limits
        if stage == "fit":
            self.dry_checkpoints()  # first: it binds the steps and events again
        if engine.train_iter is not None:
            engine.train_iter = _stand_in(engine.train_iter, limits.train, world_size, "train")
        eval_limit = {"fit": limits.val, "validate": limits.val, "test": limits.test}.get(
            stage, limits.predict
        )
        engine.eval_loaders = [
            _stand_in(it, eval_limit, world_size, "eval") for it in engine.eval_loaders
        ]
        manual = engine.manual
        if engine.step_call is not None:
            result = None if stage != "fit" or manual else self.loss
            engine.step_call = self.step(_STEP_ROLES[stage], engine.step_call, result)
        if engine.eval_call is not None:
            engine.eval_call = self.step("validation_step", engine.eval_call, None)
        events = engine.events
        self.save_listeners = tuple(
            self.listener(c, self.kind_of(c)) for c in events.save_checkpoint
        )
        for name in EVENTS:
            setattr(events, name, (self.event(name, getattr(events, name)),))

        rt = engine.runtime
        k = cfg.accumulate_grad_batches
        rt.plain_steps = False  # the loop must call the recorders below
        rt.backward = self.runtime("backward", f"loss / {k}" if k > 1 else "")  # type: ignore[method-assign]
        rt.optimizer_step = self.runtime("optimizer_step")  # type: ignore[method-assign]
        clip = f"{cfg.gradient_clip_algorithm} at {cfg.gradient_clip_val}"
        rt.clip_gradients = self.runtime("clip_gradients", clip)  # type: ignore[method-assign]
        rt.to_device = _same  # type: ignore[method-assign]
        rt.autocast = contextlib.nullcontext  # type: ignore[method-assign]
        for opt in engine.optimizers:
            opt.zero_grad = self.runtime("zero_grad")  # type: ignore[method-assign]
        engine.schedulers = [
            attrs.evolve(
                s,
                scheduler=_SchedulerRecorder(
                    self.runtime(
                        "scheduler_step",
                        f"{type(s.scheduler).__name__}, every {s.frequency} {s.interval}(s)",
                    )
                ),
            )
            for s in engine.schedulers
        ]
        wants_logs = cfg.logger is not False and cfg.logger is not None and not limits.dev_run
        if wants_logs:
            engine.loggers = [object()]  # type: ignore[list-item]  # only its truth is read
            engine.log_rows = self.runtime("write_logs")  # type: ignore[method-assign]


class _DryMark:
    """Marks the dry copies of checkpoint callbacks."""

    __slots__ = ()


def _dry_checkpoint_class(base: type, recorder: _Recorder) -> type:
    """A subclass of a checkpoint callback whose saves are recorded, not written."""

    def _save(self: Any, engine: Engine, position: tuple[int, int]) -> None:
        recorder.checkpoint_saved(self)
        # What a real save updates, so the callback's next decisions are the real ones.
        self._last_global_step_saved = engine.ctx.global_step
        self._val_since_save = False
        self._last_time = time.monotonic()

    def save_last_now(
        self: Any, engine: Engine, position: tuple[int, int], weights_only: bool = False
    ) -> Path:
        recorder.checkpoint_saved(self)
        return Path("last.ckpt")

    namespace = {"__slots__": (), "_save": _save, "save_last_now": save_last_now}
    return type(base.__name__, (base, _DryMark), namespace)


class _SchedulerRecorder:
    def __init__(self, record: Callable[..., None]) -> None:
        self.step = record


def _same(batch: Any) -> Any:
    return batch


def _per_rank_length(loader: Any, length: int | None, world_size: int) -> int | None:
    """Batches one rank gets once the loader is split ``world_size`` ways
    (``DistributedSampler``: every rank gets ``ceil(n / world_size)`` samples)."""
    if length is None or world_size == 1:
        return length
    dataset = getattr(loader, "dataset", None)
    batch_size: int | None = getattr(loader, "batch_size", None)
    try:
        samples = math.ceil(len(dataset) / world_size)  # type: ignore[arg-type]
    except TypeError:
        return math.ceil(length / world_size)
    if not batch_size:
        return samples
    drop_last = bool(getattr(loader, "drop_last", False))
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)


def _stand_in(it: EpochIterator, limit: int | float, world_size: int, which: str) -> EpochIterator:
    length = _per_rank_length(it.loader, it.length, world_size)
    if length is None and not isinstance(limit, int):
        flag = "limit_train_batches" if which == "train" else "limit_val_batches"
        raise ConfigError(
            f"the {which} loader has no length (an iterable dataset?), so a dry run cannot know "
            f"where its epochs end. Give {flag} an int number of batches to explain.",
            code="fraction-of-unsized-loader",
        )
    stand = EpochIterator(_StandIn(length), limit)
    return stand


# -- the dry run -----------------------------------------------------------------------------


def world_size_of(config: TrainerConfig) -> int:
    """How many processes a run of ``config`` has, without starting any."""
    from lightkit.runtime.connector import resolve_accelerator, resolve_devices
    from lightkit.runtime.environment import detect

    env = detect()
    if env.joined:
        return int(env.world_size)
    devices = config.devices
    try:
        count = len(resolve_devices(devices, resolve_accelerator(config.accelerator)))
    except ConfigError:  # a GPU config explained on a machine without one
        if isinstance(devices, int):
            count = devices
        elif isinstance(devices, (list, tuple)):
            count = len(devices)
        elif isinstance(devices, str) and devices.strip().isdigit():
            count = int(devices)
        elif isinstance(devices, str) and "," in devices:
            count = len([d for d in devices.split(",") if d.strip()])
        else:
            count = 1
    return count * config.num_nodes


def explain(
    spec: TrainingSpec,
    config: TrainerConfig | None = None,
    stage: str = "fit",
    ckpt_path: Any = None,
    *,
    max_entries: int = 200_000,
) -> Schedule:
    """Compile ``spec`` with ``config`` as ``Trainer.<stage>`` would and record, without
    running any user function, what the run would do, in order.

    Models, optimizers and loaders are built (their functions run: lengths are real); steps,
    hooks and callbacks are not called. Nothing is written and the global random state is left
    as it was. A run longer than ``max_entries`` entries is recorded up to there
    (``facts["truncated"]``).

    Example::

        schedule = explain(lk.collect(mod), lk.TrainerConfig(max_epochs=2))
        print(schedule.render())
    """
    from lightkit.engine.evaluation import evaluate, predict_loop
    from lightkit.engine.loops import fit_loop
    from lightkit.engine.trainer import Trainer

    config = config if config is not None else TrainerConfig()
    if stage not in _STEP_ROLES:
        raise ConfigError(
            f"stage={stage!r}: explain knows fit, validate, test and predict.",
            code="unknown-stage",
        )
    spec.require(stage)
    world_size = world_size_of(config)
    if config.sync_batchnorm and world_size > 1:  # what fit would refuse before it starts
        from lightkit.runtime.connector import resolve_accelerator
        from lightkit.utils.modules import check_sync_batchnorm

        try:
            accelerator = resolve_accelerator(config.accelerator)
        except ConfigError:  # a GPU config explained on a machine without one: as on GPUs
            accelerator = config.accelerator
        check_sync_batchnorm(world_size, torch.device(accelerator))
    runtime = Runtime.from_strategy(SingleDevice())
    trainer = Trainer(config)
    with isolate_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if config.seed is not None:
            seed_everything(config.seed)
        engine = Engine(spec, config, runtime, stage)
        token = _CURRENT.set(engine.ctx)
        try:
            trainer._compile(engine, stage, ckpt_path, dry_run=True)
            recorder = _Recorder(engine, max_entries)
            recorder.install(stage, world_size)
            try:
                if stage == "fit":
                    fit_loop(engine)
                elif stage == "predict":
                    predict_loop(engine, engine.eval_loaders)
                else:
                    evaluate(engine, stage, engine.eval_loaders, engine.step_call)
            except _Enough:
                truncated = True
            else:
                truncated = False
        finally:
            _CURRENT.reset(token)
            runtime.teardown()
    _mark_unsynced(recorder.entries, world_size, config.accumulate_grad_batches)
    facts = _facts(engine, config, stage, world_size)
    if truncated:
        facts["truncated"] = len(recorder.entries)
    return Schedule(stage, recorder.entries, facts, recorder.listening)


def _mark_unsynced(entries: list[Entry], world_size: int, accumulate: int) -> None:
    """Distributed accumulation skips the gradient all-reduce inside a window: say where."""
    if world_size == 1 or accumulate == 1:
        return
    for i, e in enumerate(entries):
        if e.what != "backward":
            continue
        later = entries[i + 1 :]
        stepped = any(
            x.what == "optimizer_step"
            for x in later
            if x.batch_idx == e.batch_idx and x.epoch == e.epoch and x.stage == e.stage
        ) or not any(x.what == "backward" for x in later)
        if not stepped:
            entries[i] = attrs.evolve(e, detail=f"{e.detail}, no gradient sync".lstrip(", "))


def _facts(engine: Engine, config: TrainerConfig, stage: str, world_size: int) -> dict[str, Any]:
    changed = {
        k: v
        for k, v in config.model_dump(mode="json").items()
        if v != TrainerConfig.model_fields[k].get_default(call_default_factory=True)
    }
    facts: dict[str, Any] = {
        "stage": stage,
        "config": changed,
        "world_size": world_size,
        "manual_optimization": engine.manual,
        "models": list(engine.models),
        "optimizers": [type(o).__name__ for o in engine.optimizers],
        "callbacks": [type(cb).__name__ for cb in engine.callbacks],
    }
    if engine.train_iter is not None:
        facts["train_batches"] = engine.train_iter.num_batches
    facts["eval_batches"] = [it.num_batches for it in engine.eval_loaders]
    return facts
