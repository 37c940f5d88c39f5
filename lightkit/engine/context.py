"""The run context (``ctx``) and ``lk.log``.

One ``RunContext`` exists per run; ``lk.log`` finds it through a context variable, the only
global state lightkit keeps besides the registries.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from lightkit.engine.metrics import MetricStore
from lightkit.errors import ConfigError, LightkitWarning, user_call_site, user_stacklevel

_CURRENT: ContextVar[RunContext | None] = ContextVar("lightkit_run", default=None)


class RunContext:
    """What a user function can know about the run and do to it.

    Attributes:
        epoch: the current epoch (0-based).
        global_step: optimizer steps taken (training batches in manual optimization).
        batch_idx: index of the current batch within its epoch.
        rank, local_rank, world_size, is_global_zero: where this process sits.
        device: the device models and batches live on.
        precision: the precision's name (``"bf16-mixed"``, ...).
        hparams: the spec's hyperparameters.
        should_stop: set it to ``True`` to stop after the current step (with several
            processes: after the batch where the ranks next agree on it, see
            ``docs/distributed.md``).
    """

    __slots__ = (
        "_engine",
        "_runtime",
        "_store",
        "batch_idx",
        "dataloader_idx",
        "device",
        "epoch",
        "global_step",
        "hparams",
        "is_global_zero",
        "local_rank",
        "log_dir",
        "precision",
        "rank",
        "should_stop",
        "stage",
        "world_size",
    )

    def __init__(self, runtime: Any, hparams: Any, store: MetricStore | None = None) -> None:
        self._runtime = runtime
        self._engine: Any = None  # the compiled run, for built-in callbacks (set by Engine)
        self._store = (
            store
            if store is not None
            else MetricStore(
                runtime.all_reduce,
                warn_unsynced=runtime.world_size > 1 and runtime.is_global_zero,
                rank=runtime.rank,
            )
        )
        self.epoch = 0
        self.global_step = 0
        self.batch_idx = 0
        self.dataloader_idx = 0
        self.stage = "setup"
        self.rank = runtime.rank
        self.local_rank = runtime.local_rank
        self.world_size = runtime.world_size
        self.is_global_zero = runtime.is_global_zero
        self.device: torch.device = runtime.device
        self.precision: str = runtime.precision.name
        self.hparams = hparams
        self.should_stop = False
        self.log_dir: Path | None = None

    def __repr__(self) -> str:
        return (
            f"RunContext(stage={self.stage!r}, epoch={self.epoch}, global_step={self.global_step}, "
            f"batch_idx={self.batch_idx}, rank={self.rank}/{self.world_size})"
        )

    def log(
        self,
        name: str,
        value: Any,
        *,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        prog_bar: bool = False,
        sync_dist: bool = False,
        reduce: str = "mean",
        batch_size: int | None = None,
        logger: bool = True,
        add_dataloader_idx: bool = True,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a metric; see :func:`lightkit.log`."""
        self._store.log(
            name,
            value,
            on_step,
            on_epoch,
            prog_bar,
            sync_dist,
            reduce,
            batch_size,
            logger,
            add_dataloader_idx,
            rank_zero_only,
        )

    def log_dict(self, values: Mapping[str, Any], **options: Any) -> None:
        """``log`` each item of ``values`` with the same options."""
        for name, value in values.items():
            self.log(name, value, **options)

    @property
    def metrics(self) -> dict[str, float]:
        """The latest logged value of every metric (epoch aggregates once an epoch ends)."""
        return self._store.floats()

    @property
    def estimated_stepping_batches(self) -> int | float:
        """The optimizer steps this fit takes unless a stop comes first (Lightning's
        ``trainer.estimated_stepping_batches``): the training batches per epoch (per process)
        over ``accumulate_grad_batches``, rounded up, times ``max_epochs``, at most
        ``max_steps``; ``math.inf`` when nothing bounds it. For a scheduler's length, e.g.
        ``OneCycleLR(opt, max_lr, total_steps=ctx.estimated_stepping_batches)``; read in
        ``configure_optimizers``, it builds the training data there, before the optimizer.

        Raises:
            ConfigError: ``fit-only`` outside a fit.
        """
        if self._engine is None:
            raise ConfigError(
                f"ctx.estimated_stepping_batches (read by {user_call_site()}) is known only in "
                f"a Trainer's fit; this context belongs to no run of a Trainer (lk.load_models "
                f"builds models without one). Read it in configure_optimizers or a fit hook, "
                f"not in a @model function.",
                code="fit-only",
            )
        return self._engine.estimated_stepping_batches()  # type: ignore[no-any-return]

    @property
    def runtime(self) -> Any:
        """The :class:`~lightkit.Runtime` this run uses."""
        return self._runtime

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward through the precision plugin (scales the loss under 16-mixed); other
        arguments go to ``Tensor.backward`` (``retain_graph=True``), as Lightning's
        ``manual_backward``. In manual optimization it fires ``before_backward`` and
        ``after_backward`` around the backward, as ``manual_backward`` fires Lightning's hooks.
        """
        engine = self._engine
        if engine is None or not engine.manual:
            self._runtime.backward(loss, *args, **kwargs)
            return
        events, batch, batch_idx = engine.events, self._store.batch, self.batch_idx
        for call in events.before_backward:
            call(batch, batch_idx, loss)
        self._runtime.backward(loss, *args, **kwargs)
        for call in events.after_backward:
            call(batch, batch_idx)


def current() -> RunContext | None:
    """The running context, or ``None`` outside a run."""
    return _CURRENT.get()


def log(
    name: str,
    value: Any,
    *,
    on_step: bool | None = None,
    on_epoch: bool | None = None,
    prog_bar: bool = False,
    sync_dist: bool = False,
    reduce: str = "mean",
    batch_size: int | None = None,
    logger: bool = True,
    add_dataloader_idx: bool = True,
    rank_zero_only: bool = False,
) -> None:
    """Log a metric from inside any function the trainer calls.

    Defaults follow Lightning: ``on_step=True, on_epoch=False`` in training steps,
    ``on_step=False, on_epoch=True`` in evaluation and epoch hooks. Epoch values are averaged
    weighted by batch size (dim 0 of the batch's first tensor unless ``batch_size`` is given);
    ``reduce`` may be ``"sum"``, ``"max"`` or ``"min"`` instead. ``sync_dist=True`` reduces
    across ranks. Values may be tensors (kept on device, no sync) or numbers.
    ``logger=False`` keeps the metric out of the loggers (it is still in ``ctx.metrics``,
    ``result.metrics``, the progress bar and the callbacks' view). With several evaluation
    loaders, names get ``/dataloader_idx_N`` unless ``add_dataloader_idx=False`` (then make
    the names differ yourself). ``rank_zero_only=True`` is for a call that runs on rank 0
    only: other ranks record nothing and the value is never reduced across ranks (so it cannot
    be ``sync_dist``, and callbacks on other ranks cannot monitor it), as in Lightning.

    Example::

        lk.log("train/loss", loss, prog_bar=True)
        lk.log("val/acc", acc, on_epoch=True)

    Outside a run (a step called directly in a test) it records nothing and warns
    (:class:`LightkitWarning`, ``log-outside-run``), as Lightning's ``self.log`` does
    without a trainer.
    """
    ctx = _CURRENT.get()
    if ctx is None:
        warnings.warn(
            LightkitWarning(
                f"lk.log({name!r}, ...) outside a run records nothing: it logs inside the "
                f"functions a trainer calls (steps, hooks, callbacks). Calling a step directly, "
                f"as a test does, is fine; run it through trainer.fit/validate/test/predict "
                f"to log.",
                code="log-outside-run",
            ),
            stacklevel=user_stacklevel(),
        )
        return
    ctx._store.log(
        name,
        value,
        on_step,
        on_epoch,
        prog_bar,
        sync_dist,
        reduce,
        batch_size,
        logger,
        add_dataloader_idx,
        rank_zero_only,
    )


def log_dict(values: Mapping[str, Any], **options: Any) -> None:
    """:func:`log` each item of ``values`` with the same options (``on_epoch=True``, ...)."""
    for name, value in values.items():
        log(name, value, **options)
