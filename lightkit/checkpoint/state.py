"""What a checkpoint holds, how one is built from a running engine, and how a run resumes.

A full checkpoint (``kind: "full"``) holds every model's and optimizer's state, the
schedulers, the precision plugin (grad scaler), accumulated gradients of an unfinished
accumulation window, the loop position, every callback's ``state_dict()``, the global random
generators (python, numpy if imported, torch, CUDA) and the training loader's generators, the
spec and trainer config as JSON, and the lightkit and torch versions. A weights-only
checkpoint (``kind: "weights"``) holds the models, the spec and the config.

Finding a checkpoint for ``ckpt_path="last"|"best"``: :mod:`.find`. Loading one back into a
run, with every check first: :mod:`.restore`. Exact mid-epoch resume (the random states and
the resume position): :mod:`.resume`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from lightkit.checkpoint.resume import capture_random
from lightkit.errors import CheckpointError, LightkitWarning, user_stacklevel
from lightkit.precision.base import unwrap_optimizer
from lightkit.utils.modules import optimizer_owner

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine
    from lightkit.spec.spec import TrainingSpec

#: The key that marks a lightkit checkpoint; its value is the format version.
FORMAT_KEY = "lightkit_checkpoint"
#: The format this lightkit writes; it reads this one and older ones.
FORMAT_VERSION = 1
CKPT_SUFFIX = ".ckpt"
LAST_NAME = "last"


# -- building -------------------------------------------------------------------------------
def spec_json(spec: TrainingSpec) -> str:
    """The spec as JSON; ``CheckpointError`` naming the hyperparameters JSON cannot hold."""
    try:
        return spec.model_dump_json()
    except Exception as exc:  # pydantic raises its own serialization errors
        from pydantic_core import to_jsonable_python

        bad = []
        for name, value in spec.hparams.as_dict().items():
            try:
                to_jsonable_python(value)
            except Exception:
                bad.append(f"{name}={value!r:.60} ({type(value).__name__})")
        what = "; ".join(bad) if bad else str(exc)
        raise CheckpointError(
            f"cannot store the spec in a checkpoint: hyperparameters must be JSON values "
            f"(numbers, strings, bools, None, lists and dicts of them, or pydantic types that "
            f"serialize to them), but got: {what}. Make the hyperparameter a primitive (e.g. a "
            f"string naming the choice, a Literal) and build the object inside the function "
            f"that uses it, or turn checkpointing off (enable_checkpointing=False).",
            code="hparams-not-serializable",
        ) from None


def _run_record(engine: Engine) -> dict[str, Any]:
    """The spec, hyperparameters and trainer config as a checkpoint stores them. They are
    fixed for a run, so they are serialized once (the spec's JSON schema is not cheap)."""
    record = engine.checkpoint_record
    if record is None:
        from lightkit.engine.engine import run_name

        record = engine.checkpoint_record = {
            "program": run_name(engine.spec),  # a resume never takes another program's file
            "spec": spec_json(engine.spec),
            "hparams": json.loads(engine.spec.hparams.model_dump_json()),
            "config": engine.config_json or json.dumps(engine.config.model_dump(mode="json")),
        }
    return copy.deepcopy(record)  # save_checkpoint hooks may edit what they are given


def optimizer_types(optimizers: Sequence[Any]) -> list[list[str]]:
    """Each optimizer's class and its optimizer bases, by name (``["AdamW", "Adam"]``): a
    resume refuses an optimizer that shares none of them, whose state would not fit."""
    return [
        [
            c.__name__
            for c in type(unwrap_optimizer(o)).__mro__
            if issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
        ]
        for o in optimizers
    ]


def build_checkpoint(
    engine: Engine, *, position: tuple[int, int], weights_only: bool = False
) -> dict[str, Any]:
    """The checkpoint of ``engine`` now. ``position`` is ``(epoch, batches done in it)``: where
    a resumed run continues. Fires the ``save_checkpoint`` event (hooks may add keys)."""
    from lightkit import __version__
    from lightkit.engine.engine import unwrap_compiled

    strategy = engine.runtime.strategy
    ctx = engine.ctx
    epoch, done = position
    ckpt: dict[str, Any] = {
        FORMAT_KEY: FORMAT_VERSION,
        "kind": "weights" if weights_only else "full",
        "versions": {"lightkit": __version__, "torch": str(torch.__version__)},
        # Lightning's `epoch`: the epoch the save happened in (its `{epoch}` in file names).
        "epoch": ctx.epoch,
        # The epochs complete: where a resume continues, and what evaluating the file reports.
        "epochs_done": epoch,
        "global_step": ctx.global_step,
        "models": {
            name: strategy.module_state_dict(unwrap_compiled(m))
            for name, m in engine.models.items()
        },
        **_run_record(engine),
    }
    if not weights_only:
        train = engine.train_iter
        ckpt["optimizers"] = [
            strategy.optimizer_state_dict(optimizer_owner(opt, engine.models.values()), opt)
            for opt in engine.optimizers
        ]
        ckpt["optimizer_types"] = optimizer_types(engine.optimizers)
        ckpt["schedulers"] = [cfg.scheduler.state_dict() for cfg in engine.schedulers]
        ckpt["precision"] = engine.runtime.precision.state_dict()
        ckpt["loop"] = {
            "epoch": epoch,
            "batches_done": done,
            "global_step": ctx.global_step,
            "batches_seen": engine.batches_seen,
            "epochs_done": engine.epochs_done,
            "num_batches": None if train is None else train.num_batches,
            "accumulate_grad_batches": engine.config.accumulate_grad_batches,
        }
        ckpt.update(_grads(engine))
        ckpt["metrics"] = _metrics(engine)
        states: dict[str, Any] = {}
        for cb in engine.callbacks:
            state = cb.state_dict()
            if state:
                states[cb.state_key] = state
        ckpt["callbacks"] = states
        ckpt["epoch_start"] = engine.epoch_start if done else None
    events = getattr(engine, "events", None)
    if events is not None:
        # A weights-only file holds no callback state: its hooks run, callbacks' do not
        # (Lightning's rule).
        callers = events.hooks_only["save_checkpoint"] if weights_only else events.save_checkpoint
        for call in callers:
            call(ckpt)
    if not weights_only:
        # After the hooks: whatever they drew is part of the state the run continues from.
        loader = engine.train_iter.loader if engine.train_iter is not None else None
        ckpt["random"] = capture_random(loader)
    return ckpt


def sharded(strategy: Any) -> bool:
    """Whether ``strategy`` keeps its own (sharded) model states: FSDP's, not the base's."""
    from lightkit.strategies.base import Strategy

    return type(strategy).module_state_dict is not Strategy.module_state_dict


def _metrics(engine: Engine) -> list[dict[str, Any]] | None:
    """Each rank's metric state (:meth:`MetricStore.state_dict`), in rank order, on rank 0,
    which writes the file: with several processes, a collective."""
    state = engine.store.state_dict()
    if engine.runtime.world_size == 1:
        return [state]
    strategy = engine.runtime.strategy
    ranks = strategy.gather_object(state)
    if sharded(strategy):
        # A sharded checkpoint is written by every rank, its plain values as if replicated:
        # every rank must hold the same list.
        ranks = strategy.broadcast(ranks)
    return ranks


def _grads(engine: Engine) -> dict[str, Any]:
    """Gradients held between optimizer steps (an unfinished accumulation window):
    ``{"grads": {model: {parameter: tensor}}}`` in one process; with several, each rank's own
    (a window's gradients are not all-reduced until it ends) as ``{"rank_grads": [...]}``, in
    rank order, on rank 0, which writes the file. With several processes and accumulation (or
    manual optimization), a collective: every rank calls it."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in engine.models.items():
        user = engine.runtime.unwrap(getattr(module, "_orig_mod", module))
        grads = {n: p.grad for n, p in user.named_parameters() if p.grad is not None}
        if grads:
            out[name] = grads
    strategy = engine.runtime.strategy
    if sharded(strategy):
        if out:  # sharded gradients: not stored
            warnings.warn(
                LightkitWarning(
                    f"checkpoint saved inside an accumulation window: under strategy "
                    f"{strategy.name!r} the window's gradients are not stored, so a resumed run "
                    f"recomputes the window from its next batch.",
                    code="accumulation-not-saved",
                ),
                stacklevel=user_stacklevel(),
            )
        return {}
    if engine.runtime.world_size == 1:
        return {"grads": out} if out else {}
    if engine.config.accumulate_grad_batches == 1 and not engine.manual:
        return {}  # every batch steps and zeroes: no window to keep (the same on every rank)
    local = {m: {n: g.detach().cpu() for n, g in grads.items()} for m, grads in out.items()}
    ranks = strategy.gather_object(local)  # to rank 0, which writes the file
    return {"rank_grads": ranks} if ranks and any(ranks) else {}


__all__ = [
    "CKPT_SUFFIX",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "LAST_NAME",
    "build_checkpoint",
    "sharded",
    "spec_json",
]
