"""What ``lk.log`` records, and how step values become epoch aggregates.

Values stay tensors on their device while training runs: a step costs a ``detach`` and a few
attribute writes, never a host sync. They become Python floats only when a logger is written,
an epoch ends, or someone reads ``ctx.metrics``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lightkit.errors import LightkitError, LightkitWarning, user_call_site, user_stacklevel
from lightkit.utils.apply import first_tensor

REDUCTIONS = ("mean", "sum", "max", "min")
_STAGE_WORDS = {
    "train": "the training step",
    "train_epoch": "an epoch-level hook",
    "validate": "validation",
    "test": "testing",
    "predict": "prediction",
}
#: Names the loggers write in every row themselves.
RESERVED = ("step", "epoch")


class Metric:
    """One logged name, its options (fixed at its first ``log``) and its values."""

    __slots__ = (
        "epoch_key",
        "epoch_sizes",
        "epoch_values",
        "loader",
        "logger",
        "name",
        "on_epoch",
        "on_step",
        "pending",
        "prog_bar",
        "reduce",
        "source",
        "stage",
        "step_key",
        "sync_dist",
        "value",
        "where",
    )

    def __init__(
        self,
        name: str,
        stage: str,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        sync_dist: bool,
        reduce: str,
        logger: bool = True,
    ) -> None:
        self.name = name
        self.logger = logger
        self.stage = stage
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.sync_dist = sync_dist
        self.reduce = reduce
        self.value: Any = None
        self.where = ""  # the first log call's place, for errors raised at the epoch's end
        self.loader = ""  # the evaluation loader's name suffix it was first logged with
        self.epoch_values: list[Any] = []
        self.epoch_sizes: list[int] = []
        # A metric object (torchmetrics' interface: update/compute/reset) logged under this
        # name: its epoch value is its own compute(), and it is reset when the epoch ends.
        self.source: Any = None
        self.pending = False  # the object was logged since its last reset
        # Lightning's names when a value is logged per step and per epoch: the loggers get
        # `name_step` and `name_epoch` (one column would mix, and lose, the two).
        both = on_step and on_epoch
        self.step_key = f"{name}_step" if both else name
        self.epoch_key = f"{name}_epoch" if both else name


class MetricStore:
    """The metrics of one run. ``stage`` is set by the loop: ``"train"`` while training steps
    run (``on_step`` by default), anything else counts as epoch-level (``on_epoch``)."""

    def __init__(
        self,
        all_reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
        warn_unsynced: bool = False,
        rank: int = 0,
    ) -> None:
        # By stage, then name: a name logged in training and again in validation is two
        # metrics, each with its own options and epoch values (as in Lightning). `_current`
        # is the stage's own table, swapped when the stage changes, so that a log call looks
        # its metric up by name alone.
        self._by_stage: dict[str, dict[str, Metric]] = {}
        self._current: dict[str, Metric] = {}
        self.stage = "train"
        self.suffix = ""  # "/dataloader_idx_N" while evaluating several loaders
        #: Latest value of every metric: the step value, or the epoch aggregate once final.
        self.latest: dict[str, Any] = {}
        #: Step values logged since the last write to the loggers.
        self.unwritten: dict[str, Any] = {}
        #: The global step the current training batch began at, which its row is written
        #: under (set by the fit loop); ``None`` before the first training batch.
        self.row_step: int | None = None
        #: ``row_step`` when the newest unwritten value was logged (``None``: nothing unwritten).
        self.unwritten_step: int | None = None
        self.batch: Any = None  # the current batch, to read its size from when needed
        self._unsized = False  # warned that a batch had no tensor to read its size from
        self._all_reduce = all_reduce
        # Several processes, this one rank 0: say once per evaluation metric that each rank
        # aggregates its own share unless it asks for sync_dist (Lightning says so too).
        self._warn_unsynced = warn_unsynced
        self.rank = rank  # `rank_zero_only` calls record nothing on the other ranks

    @property
    def stage(self) -> str:
        """``"train"`` while training steps run; an evaluation stage or an epoch's hooks."""
        return self._stage

    @stage.setter
    def stage(self, stage: str) -> None:
        self._stage = stage
        self._current = self._by_stage.setdefault(stage, {})

    def _all(self) -> Iterator[Metric]:
        for table in self._by_stage.values():
            yield from table.values()

    # -- recording ---------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        on_step: bool | None,
        on_epoch: bool | None,
        prog_bar: bool,
        sync_dist: bool,
        reduce: str,
        batch_size: int | None,
        logger: bool = True,
        add_dataloader_idx: bool = True,
        rank_zero_only: bool = False,
    ) -> None:
        if rank_zero_only and self.rank:
            return
        suffix = self.suffix
        base = name
        if suffix and add_dataloader_idx:
            name = name + suffix
        m = self._current.get(name)
        if m is not None and suffix and m.loader != suffix:
            raise _bad_metric(
                f"lk.log({name!r}, ..., add_dataloader_idx=False) is logged from evaluation "
                f"loaders {m.loader.rsplit('_', 1)[-1]} and {suffix.rsplit('_', 1)[-1]} under "
                f"one name, which would pool their values into one aggregate. Give each "
                f"loader's value its own name (e.g. f'{name}/{{dataloader_idx}}'), or leave "
                f"add_dataloader_idx on.",
            )
        if m is None:
            # A metric object reduces across processes itself: no sync_dist warning for it.
            m = self._register(
                name,
                on_step,
                on_epoch,
                prog_bar,
                sync_dist,
                reduce,
                logger,
                rank_zero_only,
                reduces_itself=is_metric_object(value),
            )
            if name != base and m.step_key != name:  # Lightning's `val/loss_epoch/dataloader_idx_0`
                m.step_key = f"{base}_step{suffix}"
                m.epoch_key = f"{base}_epoch{suffix}"
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise _bad_metric(
                    f"lk.log({name!r}, ...) got a tensor of shape {tuple(value.shape)}; a metric "
                    f"is one number. Reduce it first (e.g. `.mean()`).",
                )
            value = value.detach()
        elif isinstance(value, float):
            pass
        elif isinstance(value, numbers.Real):  # int, bool, numpy scalars
            value = float(value)
        elif getattr(value, "size", None) == 1 and hasattr(value, "item"):  # a numpy array
            value = float(value.item())
        elif is_metric_object(value):
            m.source, m.pending = value, True  # its epoch value: compute() at the epoch's end
            value = _batch_value(m, value) if m.on_step else None
            if value is None:
                return
        else:
            several = (
                " Log several values with ctx.log_dict(...)."
                if isinstance(value, dict)
                else " Text is not a metric: write it through a logger's experiment "
                "(TensorBoardLogger.experiment.add_text)."
                if isinstance(value, str)
                else ""
            )
            raise _bad_metric(
                f"lk.log({name!r}, {value!r}): a metric must be a number, a one-element "
                f"tensor or a metric object, got {type(value).__name__}.{several}",
            )
        if m.sync_dist and m.on_step and self._all_reduce is not None:
            # A number differs per rank as a tensor does: both are reduced.
            if isinstance(value, torch.Tensor):
                value = _floating(value).reshape(())
            else:
                value = torch.tensor(value, dtype=torch.float64)
            value = self._all_reduce(value, m.reduce)
        self.latest[name] = value
        if m.on_step:
            m.value = value
            if m.logger:
                self.unwritten[m.step_key] = value
                self.unwritten_step = self.row_step
            if m.on_epoch:
                self.latest[m.step_key] = value
        if m.on_epoch and m.source is None:  # a metric object's epoch value is its own
            m.epoch_values.append(value)
            m.epoch_sizes.append(batch_size if batch_size is not None else self._batch_size(m))

    def _register(
        self,
        name: str,
        on_step: bool | None,
        on_epoch: bool | None,
        prog_bar: bool,
        sync_dist: bool,
        reduce: str,
        logger: bool = True,
        rank_zero_only: bool = False,
        reduces_itself: bool = False,
    ) -> Metric:
        if not isinstance(name, str) or not name.strip() or name in RESERVED:
            why = (
                "is a column every logger row has (the step, the epoch)"
                if name in RESERVED
                else "must be a non-empty string"
            )
            raise _bad_metric(
                f"lk.log({name!r}, ...): a metric's name {why}. Name the metric otherwise, "
                f"e.g. 'train/{name or 'loss'}'.",
            )
        if self._stage == "predict":
            raise _bad_metric(
                f"lk.log({name!r}, ...) in prediction: prediction records no metrics, so the "
                f"value would go nowhere (Lightning refuses it too). Return it from "
                f"predict_step, or compute it in a test_step, which logs.",
            )
        if rank_zero_only and sync_dist:
            raise _bad_metric(
                f"lk.log({name!r}, ..., sync_dist=True, rank_zero_only=True): a value logged on "
                f"rank 0 alone cannot be reduced across the ranks. Drop one of the two.",
            )
        if reduce not in REDUCTIONS:
            raise _bad_metric(
                f"lk.log({name!r}, ..., reduce={reduce!r}): reduce must be one of "
                f"{', '.join(REDUCTIONS)}.",
            )
        training = self.stage == "train"
        step = training if on_step is None else bool(on_step)
        epoch = (not training) if on_epoch is None else bool(on_epoch)
        if not (step or epoch):
            where = _STAGE_WORDS.get(self.stage, self.stage)
            default = "on_step=True" if training else "on_epoch=True"
            raise _bad_metric(
                f"lk.log({name!r}, ..., on_step={on_step}, on_epoch={on_epoch}) in {where} "
                f"records the value nowhere: neither per step nor per epoch. Pass "
                f"on_epoch=True for the epoch's {reduce} (in {where} the default is "
                f"{default}), or on_step=True for each step's value.",
            )
        m = Metric(
            name,
            self.stage,
            step,
            epoch,
            bool(prog_bar),
            bool(sync_dist),
            reduce,
            bool(logger),
        )
        if (
            self._warn_unsynced
            and m.on_epoch
            and not m.sync_dist
            and not rank_zero_only
            and not reduces_itself
            and self.stage in ("validate", "test")
        ):
            warnings.warn(
                LightkitWarning(
                    f"lk.log({name!r}) in {_STAGE_WORDS[self.stage]} is aggregated per epoch on "
                    f"each process alone (sync_dist=False), so the loggers, result.metrics and "
                    f"the callbacks see rank 0's share of the data. Pass sync_dist=True to reduce "
                    f"it across the processes.",
                    code="epoch-metric-not-synced",
                ),
                stacklevel=user_stacklevel(),
            )
        other = next((k for k, table in self._by_stage.items() if name in table), None)
        if other is not None:
            warnings.warn(
                LightkitWarning(
                    f"lk.log({name!r}) in {_STAGE_WORDS.get(self.stage, self.stage)}: the same name "
                    f"is logged in {_STAGE_WORDS.get(other, other)}. Each keeps its own values and "
                    f"epoch aggregate, but they share one column of metrics.csv and one key of "
                    f"result.metrics, where the value written last wins. Name them apart (e.g. "
                    f"'train/{name}' and 'val/{name}') to keep both.",
                    code="metric-name-shared",
                ),
                stacklevel=user_stacklevel(),
            )
        if reduces_itself:  # its compute() runs at the epoch's end, far from the log call
            m.where = user_call_site()
        m.loader = self.suffix
        self._current[name] = m
        return m

    def _batch_size(self, m: Metric) -> int:
        t = first_tensor(self.batch)
        if t is None and self.batch is not None and m.reduce == "mean" and not self._unsized:
            self._unsized = True  # once a run: each such batch says the same
            warnings.warn(
                LightkitWarning(
                    f"lk.log({m.name!r}, ...) is averaged over the epoch weighted by batch "
                    f"size, but the batch ({type(self.batch).__name__}) holds no tensor to "
                    f"read it from (dim 0 of the first tensor in a tuple, list, dict or "
                    f"dataclass), so each batch weighs 1. Pass lk.log(..., batch_size=n).",
                    code="unknown-batch-size",
                ),
                stacklevel=user_stacklevel(),
            )
        return int(t.shape[0]) if t is not None and t.dim() > 0 else 1

    # -- reading -----------------------------------------------------------------------------
    def take_unwritten(self) -> dict[str, float]:
        """The step values logged since the last call, as floats (one host sync)."""
        if not self.unwritten:
            return {}
        out = _floats(self.unwritten)
        self.unwritten = {}
        self.unwritten_step = None
        return out

    def end_epoch(self, stages: tuple[str, ...]) -> dict[str, float]:
        """Aggregate the epoch values of metrics logged in ``stages``; return them as floats,
        those for the loggers (``logger=True``) only."""
        finished: dict[str, Any] = {}
        quiet: list[str] = []
        both: list[Metric] = []
        for m in self._all():
            if m.stage not in stages:
                continue
            if m.source is not None and m.pending:
                if m.on_epoch:
                    finished[m.epoch_key] = _computed(m)
                m.source.reset()
                m.pending = False
                if not m.on_epoch:  # logged per step only: reset, no epoch value
                    continue
            elif not m.on_epoch or not m.epoch_values:
                continue
            else:
                finished[m.epoch_key] = self._aggregate(m)
            if not m.logger:
                quiet.append(m.epoch_key)
            if m.on_step:
                both.append(m)
            m.epoch_values = []
            m.epoch_sizes = []
        out = _floats(finished)
        self.latest.update(out)
        for m in both:  # the plain name holds the epoch value once the epoch ends
            self.latest[m.name] = out[m.epoch_key]
        for name in quiet:
            del out[name]
        return out

    def _aggregate(self, m: Metric) -> Any:
        # Reduced where the values live: one device->host copy per epoch (in `_floats`), not
        # one per logged value.
        device = next((v.device for v in m.epoch_values if isinstance(v, torch.Tensor)), None)
        if device is None or device.type not in ("cpu", "cuda"):
            device = torch.device("cpu")  # MPS has no float64
        values = torch.stack(
            [
                torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                for v in m.epoch_values
            ]
        )
        sizes = torch.tensor(m.epoch_sizes, dtype=torch.float64, device=device)
        if m.reduce == "mean":
            total = torch.stack([(values * sizes).sum(), sizes.sum()])
            if m.sync_dist and self._all_reduce is not None:
                total = self._all_reduce(total, "sum")
            return total[0] / total[1]
        reducers: dict[str, Callable[[], torch.Tensor]] = {
            "sum": values.sum,
            "max": values.max,
            "min": values.min,
        }
        result = reducers[m.reduce]()
        if m.sync_dist and self._all_reduce is not None:
            result = self._all_reduce(result, m.reduce)
        return result

    def progress(self) -> dict[str, float]:
        """The latest values of metrics logged with ``prog_bar=True``."""
        return _floats(
            {
                m.name: self.latest[m.name]
                for m in self._all()
                if m.prog_bar and m.name in self.latest
            }
        )

    def floats(self) -> dict[str, float]:
        """Every metric's latest value as a float."""
        return _floats(self.latest)

    def logged_floats(self) -> dict[str, float]:
        """The latest values of the names some stage logs for the loggers (``logger=True``)."""
        names = {key for m in self._all() if m.logger for key in (m.step_key, m.epoch_key)}
        return {k: v for k, v in self.floats().items() if k in names}

    def snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The latest and unwritten values, for :meth:`restore` (the sanity check's logs are
        dropped, as in Lightning)."""
        return dict(self.latest), dict(self.unwritten)

    def restore(self, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
        self.latest, self.unwritten = dict(state[0]), dict(state[1])

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to carry on as if never stopped: the latest values (what
        callbacks read, e.g. an ``EarlyStopping`` monitor at the epoch's end), the step values
        no logger row holds yet, and the training step's epoch values so far, with their
        metrics' options. A metric object keeps its own state (torchmetrics: in the module)."""
        epoch = [
            {
                "name": m.name,
                "on_step": m.on_step,
                "on_epoch": m.on_epoch,
                "prog_bar": m.prog_bar,
                "sync_dist": m.sync_dist,
                "reduce": m.reduce,
                "logger": m.logger,
                "values": _float_list(m.epoch_values),
                "sizes": list(m.epoch_sizes),
            }
            for m in self._by_stage.get("train", {}).values()
            if m.source is None and m.epoch_values
        ]
        return {"latest": self.floats(), "unwritten": _floats(self.unwritten), "epoch": epoch}

    def load_state_dict(self, state: dict[str, Any], epoch_values: bool = True) -> None:
        """Restore what :meth:`state_dict` returned; ``epoch_values=False`` keeps the latest
        and unwritten values only."""
        self.latest.update(state.get("latest") or {})
        self.unwritten.update(state.get("unwritten") or {})
        if not epoch_values:
            return
        table = self._by_stage.setdefault("train", {})
        for item in state.get("epoch") or ():
            m = Metric(
                item["name"],
                "train",
                item["on_step"],
                item["on_epoch"],
                item["prog_bar"],
                item["sync_dist"],
                item["reduce"],
                item["logger"],
            )
            m.epoch_values, m.epoch_sizes = list(item["values"]), list(item["sizes"])
            table[m.name] = m

    def reset_epoch(self, stages: tuple[str, ...]) -> None:
        """Drop unfinished epoch values of ``stages`` (an interrupted evaluation)."""
        for m in self._all():
            if m.stage in stages:
                m.epoch_values = []
                m.epoch_sizes = []
                if m.source is not None and m.pending:
                    m.source.reset()
                    m.pending = False


def _batch_value(m: Metric, obj: Any) -> Any:
    """A metric object's value for this batch, as Lightning logs a torchmetrics ``Metric``
    per step: what its last ``forward`` returned; ``None`` after ``update`` alone."""
    value = getattr(obj, "_forward_cache", None)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise _bad_metric(
                f"lk.log({m.name!r}, {type(obj).__name__}): its batch value has shape "
                f"{tuple(value.shape)}; a metric is one number. Give it a scalar reduction "
                f"(e.g. average='micro'), or log it with on_step=False, on_epoch=True for its "
                f"epoch value alone.",
            )
        return value.detach()
    return value


def is_metric_object(value: Any) -> bool:
    """Whether ``value`` is a metric object (torchmetrics' ``Metric`` interface)."""
    return all(callable(getattr(value, name, None)) for name in ("update", "compute", "reset"))


def _computed(m: Metric) -> Any:
    """The epoch value of ``m``'s metric object: its ``compute()``, one number."""
    value = m.source.compute()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().reshape(())
    if isinstance(value, numbers.Real):
        return float(value)
    raise LightkitError(
        f"lk.log({m.name!r}, {type(m.source).__name__}): its compute() returned "
        f"{type(value).__name__}"
        f"{f' of shape {tuple(value.shape)}' if isinstance(value, torch.Tensor) else ''}; a "
        f"metric is one number. Give it a scalar reduction (e.g. average='micro'); for a "
        f"MetricCollection, ctx.log_dict(collection) logs each metric under its name."
        f"{f' (Logged by {m.where}.)' if m.where else ''}",
        code="bad-metric",
    )


def _floats(values: dict[str, Any]) -> dict[str, float]:
    """Convert to floats with at most one device->host copy per device."""
    tensors = [(k, v) for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if tensors and all(v.device.type == "cpu" for _, v in tensors):
        # Nothing to copy: reading each value costs ~1 us, a stack ~30 us (logger rows and the
        # progress bar read metrics often).
        out.update({k: float(v) for k, v in tensors})
    elif tensors:
        flat = torch.stack([v.reshape(()).to(torch.float64) for _, v in tensors]).tolist()
        out.update({k: x for (k, _), x in zip(tensors, flat, strict=True)})
    return {k: out[k] for k in values}


def _float_list(values: list[Any]) -> list[float]:
    """Epoch values as floats (exact: a float32 or float64 value is a Python float), with one
    device->host copy for the values on a device."""
    if all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in values):
        return [float(v) for v in values]
    tensors = [v.reshape(()).to(torch.float64) for v in values if isinstance(v, torch.Tensor)]
    copied = iter(torch.stack(tensors).tolist())
    return [next(copied) if isinstance(v, torch.Tensor) else float(v) for v in values]


def _floating(value: torch.Tensor) -> torch.Tensor:
    """A metric to reduce across ranks: floating dtypes kept (float64 stays exact)."""
    return value if value.is_floating_point() else value.float()


def _bad_metric(message: str) -> LightkitError:
    """A refused ``lk.log`` call, naming the user's line that made it."""
    return LightkitError(f"{message} (Logged by {user_call_site()}.)", code="bad-metric")
