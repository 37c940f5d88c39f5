"""``LearningRateMonitor``: log each optimizer's learning rate (Lightning's names).

Keys: ``lr-<OptimizerClass>`` (``lr-Adam``), ``lr-<OptimizerClass>/pg<i>`` (1-based) when an
optimizer has several parameter groups (a group's ``"name"`` replaces ``pg<i>``), ``-1``,
``-2``... appended to repeated class names, a scheduler config's ``"name"`` instead of
``lr-<OptimizerClass>``; ``...-momentum`` and ``...-weight_decay`` with the options below.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import attrs

from lightkit.callbacks.base import Callback
from lightkit.utils.validators import one_of


def _suffix(name: str, groups: list[dict[str, Any]], index: int) -> str:
    if len(groups) == 1:
        return name
    return f"{name}/{groups[index].get('name', f'pg{index + 1}')}"


def _momentum(group: dict[str, Any]) -> float:
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return 0.0


@attrs.define
class LearningRateMonitor(Callback):
    """Log the learning rate of every optimizer's parameter groups while training.

    Args:
        logging_interval: ``"step"``, ``"epoch"``, or ``None``: each scheduler's own interval
            (optimizers without a scheduler: every logging step and each epoch's start, as
            Lightning logs them at both). Step values are logged on the trainer's logging
            steps (``log_every_n_steps``) with the rate that step uses. Epoch values are the
            rate the epoch trains at, written as Lightning writes them: in a row at the step
            the epoch starts at, whatever ``log_every_n_steps``.
        log_momentum: also log ``momentum`` (or Adam's ``betas[0]``).
        log_weight_decay: also log ``weight_decay``.

    Example::

        lk.Trainer(callbacks=[lk.LearningRateMonitor(logging_interval="step")])
    """

    logging_interval: Literal["step", "epoch"] | None = attrs.field(
        default=None, validator=one_of(None, "step", "epoch")
    )
    log_momentum: bool = False
    log_weight_decay: bool = False

    #: Per interval, the ``(key, (optimizer, group index), field)`` triples to log. The group
    #: is looked up when logged: loading a checkpoint replaces an optimizer's group dicts.
    _items: dict[str, list[tuple[str, tuple[Any, int], str]]] = attrs.field(
        factory=dict, init=False, repr=False
    )
    _every: int = attrs.field(default=1, init=False, repr=False)
    #: The "step" and "start" items: what each logging step logs.
    _on_logging_steps: list[tuple[str, tuple[Any, int], str]] = attrs.field(
        factory=list, init=False, repr=False
    )
    _engine: Any = attrs.field(default=None, init=False, repr=False)
    #: ``(name, optimizer, where)`` per optimizer, and each one's number of parameter groups
    #: when the items were made: a group added later (a backbone unfrozen) adds its keys.
    _entries: list[tuple[str, Any, str]] = attrs.field(factory=list, init=False, repr=False)
    _group_counts: list[int] = attrs.field(factory=list, init=False, repr=False)
    #: Every learning rate logged, by key, in order (Lightning's ``lrs``).
    lrs: dict[str, list[float]] = attrs.field(factory=dict, init=False, repr=False)
    #: The latest momentum and weight decay logged, by key (with ``log_momentum`` /
    #: ``log_weight_decay``), as Lightning's attributes of these names.
    last_momentum_values: dict[str, float | None] = attrs.field(
        factory=dict, init=False, repr=False
    )
    last_weight_decay_values: dict[str, float | None] = attrs.field(
        factory=dict, init=False, repr=False
    )

    @property
    def keys(self) -> list[str]:
        """Every key this monitor logs (known once a fit has been set up)."""
        return [key for items in self._items.values() for key, _, _ in items]

    def setup(self, ctx: Any, stage: str) -> None:
        self._items = {"step": [], "epoch": [], "start": []}
        self._on_logging_steps, self._entries = [], []
        engine = self._engine = ctx._engine
        if stage != "fit" or engine is None:
            return  # what the last fit logged stays readable (Lightning's lrs too)
        self.lrs, self.last_momentum_values, self.last_weight_decay_values = {}, {}, {}
        self._every = engine.config.log_every_n_steps
        # (base name, optimizer, interval) in Lightning's order: scheduled optimizers first.
        entries: list[tuple[str | None, Any, str]] = []
        scheduled: set[int] = set()
        for cfg in engine.schedulers:
            opt = cfg.scheduler.optimizer
            scheduled.add(id(opt))
            entries.append((cfg.name, opt, cfg.interval))
        for opt in engine.optimizers:
            inner = getattr(opt, "optimizer", opt)
            if id(opt) not in scheduled and id(inner) not in scheduled:
                entries.append((None, opt, "start"))  # every logging step and epoch start
        seen: Counter[str] = Counter()
        for name, opt, interval in entries:
            if name is None:
                base = f"lr-{type(getattr(opt, 'optimizer', opt)).__name__}"
                seen[base] += 1
                name = base if seen[base] == 1 else f"{base}-{seen[base] - 1}"
            self._entries.append((name, opt, self.logging_interval or interval))
        self._make_items()

    def _make_items(self) -> None:
        self._items = {"step": [], "epoch": [], "start": []}
        self._group_counts = []
        for name, opt, where in self._entries:
            groups = opt.param_groups
            self._group_counts.append(len(groups))
            for i in range(len(groups)):
                key = _suffix(name, groups, i)
                self._items[where].append((key, (opt, i), "lr"))
                if key.endswith("/pg1") and key not in self.lrs and key[:-4] in self.lrs:
                    self.lrs[key] = self.lrs.pop(key[:-4])  # its first group, as Lightning
                self.lrs.setdefault(key, [])
                if self.log_momentum:
                    self._items[where].append((f"{key}-momentum", (opt, i), "momentum"))
                    self.last_momentum_values.setdefault(f"{key}-momentum", None)
                if self.log_weight_decay:
                    self._items[where].append((f"{key}-weight_decay", (opt, i), "weight_decay"))
                    self.last_weight_decay_values.setdefault(f"{key}-weight_decay", None)
        self._on_logging_steps = [*self._items["step"], *self._items["start"]]

    def _groups_changed(self) -> None:
        """Remake the keys when an optimizer gained (or lost) a parameter group since."""
        for (_, opt, _), count in zip(self._entries, self._group_counts, strict=True):
            if len(opt.param_groups) != count:
                self._make_items()
                return

    def _read(self, key: str, source: tuple[Any, int], field: str) -> float:
        value = self._value(source, field)
        if field == "lr":
            self.lrs.setdefault(key, []).append(value)
        elif field == "momentum":
            self.last_momentum_values[key] = value
        else:
            self.last_weight_decay_values[key] = value
        return value

    def teardown(self, ctx: Any, stage: str) -> None:
        self._engine = None

    @staticmethod
    def _value(source: tuple[Any, int], field: str) -> float:
        opt, i = source
        group = opt.param_groups[i]
        if field == "momentum":
            return _momentum(group)
        return float(group.get(field, 0.0))

    def on_train_batch_start(self, ctx: Any) -> None:
        # The rows the trainer writes: every `log_every_n_steps` optimizer steps.
        if (ctx.global_step + 1) % self._every:
            return
        self._groups_changed()
        for key, source, field in self._on_logging_steps:
            ctx.log(key, self._read(key, source, field), on_step=True, on_epoch=False)

    def on_train_epoch_start(self, ctx: Any) -> None:
        self._groups_changed()
        epoch = {key: self._read(key, source, field) for key, source, field in self._items["epoch"]}
        for key, value in epoch.items():  # for the metrics; the loggers get the row below
            ctx.log(
                key, value, on_step=False, on_epoch=True, reduce="max", batch_size=1, logger=False
            )
        start = {key: self._read(key, source, field) for key, source, field in self._items["start"]}
        # As Lightning writes them: a row at the step the epoch starts at, whatever
        # log_every_n_steps, with the rates the epoch trains at. The optimizers without a
        # scheduler are in the metrics from here on too (Lightning's callback_metrics), not
        # only from the first logging step.
        if (epoch or start) and self._engine is not None:
            self._engine.store.latest.update(start)
            self._engine.log_rows({**epoch, **start}, ctx.global_step)
