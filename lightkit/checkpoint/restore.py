"""Loading a checkpoint back into a run: ``fit``/``validate``/... with ``ckpt_path``, and
:func:`load_models` for inference.

Everything is checked before anything changes (the format, the models and their shapes, the
optimizers, schedulers and callbacks a full resume needs), so a mismatch fails before any step
with what differs and how to fix it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightkit.checkpoint.find import find_checkpoint, search_dirs
from lightkit.checkpoint.resume import ResumeState
from lightkit.checkpoint.state import FORMAT_KEY, FORMAT_VERSION, optimizer_types, sharded
from lightkit.errors import (
    CheckpointError,
    LightkitWarning,
    SpecError,
    sorted_list,
    user_stacklevel,
)
from lightkit.utils.modules import optimizer_owner

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine
    from lightkit.spec.spec import TrainingSpec


def locate(engine: Engine, ckpt_path: str | Path, full: bool) -> tuple[Path, dict[str, Any]] | None:
    """Find and read ``ckpt_path`` (a path, ``"last"`` or ``"best"``), before the run writes
    anything; ``None`` for ``fit(ckpt_path="last")`` with no checkpoint yet (a warning).

    Raises:
        CheckpointError: the file is missing, unreadable, not a lightkit checkpoint or of a
            newer format.
    """
    if isinstance(ckpt_path, str) and ckpt_path in ("last", "best"):
        found = find_checkpoint(engine, ckpt_path, other_runs=not full, resume=full)
        if found is None:
            from lightkit.engine.engine import run_name

            logs = engine.config.root_dir / "lightkit_logs"
            where = ", ".join(str(d) for d in search_dirs(engine, other_runs=not full)) or str(
                logs / run_name(engine.spec) / "version_*" / "checkpoints"
            )
            if full and ckpt_path == "last":
                # Another program's runs are never resumed; say where they are, in case.
                others = sorted(
                    {d.parent.parent.name for d in logs.glob("*/version_*/checkpoints")}
                    - {run_name(engine.spec)}
                )
                hint = (
                    f" Runs of other programs ({', '.join(others)}) are in {logs}: pass a "
                    f"file's path to continue one."
                    if others
                    else ""
                )
                warnings.warn(
                    LightkitWarning(
                        f'fit(ckpt_path="last"): no checkpoint found (searched {where}); '
                        f"training starts from scratch.{hint}",
                        code="checkpoint-not-found",
                    ),
                    stacklevel=user_stacklevel(),
                )
                return None
            raise CheckpointError(
                f'ckpt_path="{ckpt_path}": no readable checkpoint found (searched {where}). '
                f"Train with checkpointing on first, or pass the file's path.",
                code="checkpoint-not-found",
            )
        return found
    path = Path(ckpt_path)
    if not path.exists():  # a typo of "last"/"best", or a path that is not there
        from lightkit.errors import did_you_mean

        close = did_you_mean(str(ckpt_path), ["last", "best"]) if isinstance(ckpt_path, str) else ""
        raise CheckpointError(
            f"ckpt_path={str(ckpt_path)!r}: no checkpoint file at {path.resolve()}.{close} "
            f'ckpt_path takes "last", "best" or the path of a .ckpt file.',
            code="checkpoint-not-found",
        )
    return path, engine.runtime.strategy.load_checkpoint(path)


def restore(engine: Engine, found: tuple[Path, dict[str, Any]], full: bool) -> None:
    """Load the checkpoint :func:`locate` read into ``engine``.

    ``full`` (fit): models, optimizers, schedulers, precision, callbacks, loop position and
    random states; otherwise the models' weights only. The file's format is checked first;
    then the ``load_checkpoint`` hooks run; then everything else is checked before anything is
    loaded, so a mismatch fails before any step.

    Raises:
        CheckpointError: weights-only for a full resume, or it does not fit this spec and
            config.
    """
    path, ckpt = found
    engine.restored_from = path
    bare = _check_file(engine, ckpt, path, full)
    # The hooks before the checks of what the file holds, as Lightning's on_load_checkpoint:
    # they may edit the checkpoint (rename a model's keys) or the run (add back the
    # parameter groups it had gained).
    events = getattr(engine, "events", None)
    if events is not None:
        for call in events.load_checkpoint:
            call(ckpt)
    models = {next(iter(engine.models)): ckpt} if bare else _model_states(engine, ckpt, path)
    _check_models(engine, models, ckpt, path)
    if full:
        _check_full(engine, ckpt, path)
    strategy = engine.runtime.strategy
    for name, module in engine.models.items():
        try:
            strategy.load_module_state_dict(_unwrap_compiled(module), models[name])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise _mismatch(path, f"model '{name}': {exc}") from None
    if full:
        differ = _changed_hparams(engine, ckpt)
        if differ and engine.runtime.is_global_zero:
            warnings.warn(
                LightkitWarning(
                    f"resuming from {path}, which was written with {differ}. The resumed run "
                    f"continues that run: its models, optimizer and scheduler states are restored, "
                    f"so a changed value that only set their initial state (a learning rate, "
                    f"say) does not take effect. To train with the new values from the start, "
                    f"fit without ckpt_path (or in another default_root_dir, if ckpt_path='last' "
                    f"found it).",
                    code="resume-changed-values",
                ),
                stacklevel=user_stacklevel(),
            )
        _restore_full(engine, ckpt, path)
    elif isinstance(ckpt.get("global_step"), int):
        # Evaluating a checkpoint judges the step it was saved at: rows and Result say so.
        # Files before "epochs_done" kept it in "epoch".
        engine.ctx.global_step = ckpt["global_step"]
        engine.ctx.epoch = engine.epochs_done = int(ckpt.get("epochs_done", ckpt.get("epoch", 0)))


def _unwrap_compiled(module: nn.Module) -> nn.Module:
    return getattr(module, "_orig_mod", module)


def _mismatch(path: Path, what: str, fix: str = "") -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} does not fit this run: {what}" + (f"\n{fix}" if fix else ""),
        code="checkpoint-mismatch",
    )


def check_format(ckpt: dict[str, Any], path: Path) -> None:
    """Raise unless ``ckpt`` is a lightkit checkpoint of a format this lightkit reads."""
    version = ckpt.get(FORMAT_KEY)
    if version is None:
        keys = sorted_list(map(str, list(ckpt)[:12]))
        if "pytorch-lightning_version" in ckpt and isinstance(ckpt.get("state_dict"), dict):
            fix = (
                "It is a Lightning checkpoint: load its weights in the @model function, "
                "state = torch.load(path, weights_only=True)['state_dict'], then "
                "net.load_state_dict({k.removeprefix('net.'): v for k, v in state.items() "
                "if k.startswith('net.')}), 'net' being the LightningModule's attribute."
            )
        else:
            fix = (
                "A bare state_dict loads with module.load_state_dict(torch.load(path, "
                "weights_only=True))."
            )
        raise CheckpointError(
            f"{path} is not a lightkit checkpoint (no '{FORMAT_KEY}' key; it has: {keys}). " + fix,
            code="not-a-checkpoint",
        )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        written = (ckpt.get("versions") or {}).get("lightkit", "?")
        from lightkit import __version__

        raise CheckpointError(
            f"{path} has checkpoint format {version!r} (written by lightkit {written}); this "
            f"lightkit ({__version__}) reads formats up to {FORMAT_VERSION}. Upgrade lightkit to "
            f"load it.",
            code="checkpoint-newer-format",
        )


def _check_file(engine: Engine, ckpt: dict[str, Any], path: Path, full: bool) -> bool:
    """What the file is, checked before any hook sees it: ``True`` for a bare state_dict of
    the only model (evaluation); else a lightkit checkpoint of a format this lightkit reads,
    and a full one for a resume."""
    if FORMAT_KEY not in ckpt and not full and len(engine.models) == 1 and _is_state_dict(ckpt):
        return True
    check_format(ckpt, path)
    if full and ckpt.get("kind") != "full":
        raise CheckpointError(
            f"{path} is a weights-only checkpoint (ModelCheckpoint(save_weights_only=True)); "
            f"resuming training needs a full one (optimizers, loop position, random states). "
            f"Use it with trainer.validate/test/predict(ckpt_path=...) or lk.load_models(), or "
            f"resume from a checkpoint written with save_weights_only=False.",
            code="checkpoint-weights-only",
        )
    return False


def _model_states(engine: Engine, ckpt: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    names = list(engine.models)
    stored = ckpt.get("models")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} holds no model states.", code="not-a-checkpoint")
    missing = [n for n in names if n not in stored]
    extra = [n for n in stored if n not in names]
    if missing or extra:
        raise _mismatch(
            path,
            f"it holds the models {sorted_list(stored)}, this spec builds {sorted_list(names)}.",
        )
    return stored


def _is_state_dict(obj: dict[str, Any]) -> bool:
    return bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _check_models(
    engine: Engine, models: dict[str, dict[str, Any]], ckpt: dict[str, Any], path: Path
) -> None:
    """Compare parameter names and shapes before loading anything."""
    strategy = engine.runtime.strategy
    if sharded(strategy):
        return  # a sharding strategy checks its own states
    problems: list[str] = []
    for name, module in engine.models.items():
        own = strategy.unwrap(_unwrap_compiled(module)).state_dict()
        state = models[name]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
            for k in own
            if k in state
            and isinstance(state[k], torch.Tensor)
            and isinstance(own[k], torch.Tensor)
            and state[k].shape != own[k].shape
        ]
        if missing:
            problems.append(f"model '{name}': missing in the checkpoint: {_few(missing)}")
        if unexpected:
            problems.append(f"model '{name}': not in the model: {_few(unexpected)}")
        if shapes:
            problems.append(f"model '{name}': shapes differ: {_few(shapes)}")
    if problems:
        fix = "Build the same models as the run that wrote it."
        differ = _changed_hparams(engine, ckpt)
        if differ:
            fix = (
                f"It was written with {differ}: "
                f"spec.with_hparams(...) with those values builds the same models."
            )
        raise _mismatch(path, "\n  " + "\n  ".join(problems), fix)


def _changed_hparams(engine: Engine, ckpt: dict[str, Any]) -> str:
    """``lr=0.05 (now 0.001), ...``: the stored hyperparameters this spec sets otherwise."""
    stored = ckpt.get("hparams")
    if not isinstance(stored, dict):
        return ""
    current = json.loads(engine.spec.hparams.model_dump_json())
    return ", ".join(
        f"{k}={stored[k]!r} (now {current[k]!r})"
        for k in stored
        if k in current and stored[k] != current[k]
    )


def _few(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _check_full(engine: Engine, ckpt: dict[str, Any], path: Path) -> None:
    """Everything a full resume needs, checked before anything is loaded."""
    from lightkit.strategies.base import Strategy

    loop = ckpt.get("loop")
    if not isinstance(loop, dict) or "random" not in ckpt:
        raise CheckpointError(f"{path} has no loop state to resume from.", code="not-a-checkpoint")
    epoch, done, step = loop["epoch"], loop["batches_done"], loop["global_step"]
    limits = engine.limits
    if limits.max_epochs != -1 and (
        epoch > limits.max_epochs or (epoch == limits.max_epochs and done > 0)
    ):
        raise _mismatch(
            path,
            f"it stopped in epoch {epoch} (0-based, {done} batches into it), but "
            f"max_epochs={limits.max_epochs}: nothing is left to train.",
            f"Set max_epochs above {epoch} to train on, or evaluate it with "
            f"trainer.validate/test(ckpt_path=...).",
        )
    if limits.max_steps != -1 and step > limits.max_steps:
        raise _mismatch(
            path,
            f"it is at global step {step}, but max_steps={limits.max_steps}.",
            f"Set max_steps above {step} to train on.",
        )
    stored_opts = ckpt.get("optimizers", [])
    _same_count(path, "optimizer", stored_opts, engine.optimizers)
    kinds = optimizer_types(engine.optimizers)
    stored_kinds = ckpt.get("optimizer_types") or kinds  # files before it: not checked
    # A class shared (AdamW over Adam, a subclass of one's own) keeps the state's layout.
    if any(not set(a) & set(b) for a, b in zip(stored_kinds, kinds, strict=False)):
        raise _mismatch(
            path,
            f"its optimizers are {', '.join(k[0] for k in stored_kinds)}; "
            f"configure_optimizers returned {', '.join(k[0] for k in kinds)}, whose states do "
            f"not fit.",
            "Resume with the optimizers that wrote it, or start a new fit without ckpt_path "
            "(lk.load_models reads its weights).",
        )
    if type(engine.runtime.strategy).optimizer_state_dict is Strategy.optimizer_state_dict:
        for i, (opt, state) in enumerate(zip(engine.optimizers, stored_opts, strict=True)):
            groups = state.get("param_groups", [])
            own = [len(g["params"]) for g in opt.param_groups]
            theirs = [len(g["params"]) for g in groups]
            if own != theirs:
                fix = ""
                if len(theirs) > len(own):
                    fix = (
                        "The run that wrote it added parameter groups while training (a "
                        "backbone unfrozen with optimizer.add_param_group): add them back in "
                        "a load_checkpoint hook, which runs before this check, e.g. "
                        "`if len(checkpoint['optimizers'][0]['param_groups']) > "
                        "len(optimizer.param_groups): optimizer.add_param_group(...)`."
                    )
                raise _mismatch(
                    path,
                    f"optimizer {i} has parameter groups of sizes {own}, the checkpoint's "
                    f"{theirs}.",
                    fix,
                )
    _same_count(path, "scheduler", ckpt.get("schedulers", []), engine.schedulers)
    train = engine.train_iter
    if train is not None and loop.get("num_batches") != train.num_batches:
        warnings.warn(
            LightkitWarning(
                f"{path}: the run that wrote it had {loop.get('num_batches')} training batches per "
                f"epoch, this one has {train.num_batches}; resuming cannot reproduce its data order.",
                code="resume-data-changed",
            ),
            stacklevel=user_stacklevel(),
        )
    if loop.get("accumulate_grad_batches", 1) != engine.config.accumulate_grad_batches and done:
        warnings.warn(
            LightkitWarning(
                f"{path}: accumulate_grad_batches changed from {loop.get('accumulate_grad_batches')} "
                f"to {engine.config.accumulate_grad_batches} in the middle of an epoch.",
                code="resume-data-changed",
            ),
            stacklevel=user_stacklevel(),
        )


def _same_count(path: Path, what: str, stored: list[Any], built: list[Any]) -> None:
    if len(stored) != len(built):
        raise _mismatch(
            path,
            f"it holds {len(stored)} {what} states, configure_optimizers returned {len(built)}.",
        )


def _restore_full(engine: Engine, ckpt: dict[str, Any], path: Path) -> None:
    strategy = engine.runtime.strategy
    try:
        for opt, state in zip(engine.optimizers, ckpt["optimizers"], strict=True):
            strategy.load_optimizer_state_dict(
                optimizer_owner(opt, engine.models.values()), opt, state
            )
        for cfg, state in zip(engine.schedulers, ckpt["schedulers"], strict=True):
            cfg.scheduler.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise _mismatch(path, f"optimizer or scheduler state: {exc}") from None
    if int(ckpt["loop"]["global_step"]) > 0:
        # Their optimizers stepped before the save. torch's flag for it is per process: unset,
        # an epoch scheduler stepping before this process's first optimizer step (a resume at
        # an epoch's end) would warn that the schedule skips a value, which it does not.
        for cfg in engine.schedulers:
            optimizer = getattr(cfg.scheduler, "optimizer", None)
            if optimizer is not None:
                optimizer._opt_called = True
    engine.runtime.precision.load_state_dict(ckpt.get("precision") or {})
    grads = _window_grads(engine, ckpt, path)
    for name, module in engine.models.items():
        stored = grads.get(name)
        if not stored:
            continue
        user = engine.runtime.unwrap(_unwrap_compiled(module))
        for pname, p in user.named_parameters():
            if pname in stored:
                p.grad = stored[pname].to(device=p.device, dtype=p.dtype)
    states = ckpt.get("callbacks") or {}
    for cb in engine.callbacks:
        state = states.get(cb.state_key)
        if state is not None:
            cb.load_state_dict(state)
    missing = sorted(set(states) - {cb.state_key for cb in engine.callbacks})
    if missing and engine.runtime.is_global_zero:
        warnings.warn(
            LightkitWarning(
                f"{path} holds the state of callbacks this run does not have: "
                f"{', '.join(missing)}. Their state is not restored; pass the same callbacks "
                f"(callbacks=[...]) to continue them.",
                code="callback-state-not-restored",
            ),
            stacklevel=user_stacklevel(),
        )
    _restore_metrics(engine, ckpt.get("metrics"))
    loop = ckpt["loop"]
    ctx = engine.ctx
    engine.start_epoch = ctx.epoch = int(loop["epoch"])
    engine.skip_batches = int(loop["batches_done"])
    ctx.global_step = int(loop["global_step"])
    ctx.batch_idx = max(engine.skip_batches - 1, 0)
    engine.batches_seen = int(loop["batches_seen"])
    engine.epochs_done = int(loop["epochs_done"])
    engine.resume = ResumeState(engine.skip_batches, ckpt["random"], ckpt.get("epoch_start"))


def _restore_metrics(engine: Engine, ranks: Any) -> None:
    """The logged metrics as the checkpoint's run left them: this rank's own when its ranks
    are this run's; otherwise rank 0's latest values, without the unfinished epoch's values
    (the resumed epoch's aggregates then cover the batches after the resume)."""
    if not isinstance(ranks, list) or not ranks:  # older checkpoints hold none
        return
    rt = engine.runtime
    if len(ranks) == rt.world_size:
        engine.store.load_state_dict(ranks[rt.rank])
    else:
        engine.store.load_state_dict(ranks[0], epoch_values=False)


def _window_grads(
    engine: Engine, ckpt: dict[str, Any], path: Path
) -> dict[str, dict[str, torch.Tensor]]:
    """The gradients of the accumulation window the checkpoint was saved in, for this rank:
    its own when the checkpoint's ranks are this run's, else their mean (not bitwise)."""
    ranks = ckpt.get("rank_grads")
    if not ranks:
        return ckpt.get("grads") or {}
    rt = engine.runtime
    if len(ranks) == rt.world_size:
        return ranks[rt.rank]  # type: ignore[no-any-return]
    warnings.warn(
        LightkitWarning(
            f"{path} was saved inside an accumulation window by {len(ranks)} processes and resumes "
            f"in {rt.world_size}: each starts the window from the mean of their gradients, so "
            f"the result is close to, not bitwise equal to, the uninterrupted run.",
            code="resume-world-size-changed",
        ),
        stacklevel=user_stacklevel(),
    )
    mean: dict[str, dict[str, torch.Tensor]] = {}
    for model in {m for grads in ranks for m in grads}:
        names = {n for grads in ranks for n in grads.get(model, {})}
        # A rank without a parameter's gradient adds nothing to DDP's average of the window.
        mean[model] = {
            n: sum(g[model][n] for g in ranks if n in g.get(model, {})) / len(ranks) for n in names
        }
    return mean


# -- models from a file ---------------------------------------------------------------------
def _models_only(spec_json: str, stored_hparams: dict[str, Any]) -> TrainingSpec:
    """The stored spec's @model functions alone, with the stored values of their
    hyperparameters.

    Raises:
        SpecError: the @model functions themselves cannot be imported or collected.
    """
    import json

    from lightkit.spec.spec import TrainingSpec

    data = json.loads(spec_json)
    functions = [f for f in data.get("functions", []) if f.get("role") == "model"]
    spec = TrainingSpec.model_validate_json(json.dumps({"functions": functions}))
    known = spec.hparams_model.model_fields
    return spec.with_hparams(**{k: v for k, v in stored_hparams.items() if k in known})


def load_models(
    path: str | Path,
    *,
    spec: TrainingSpec | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> dict[str, nn.Module]:
    """The models of a checkpoint, rebuilt from its stored spec with its weights loaded.

    The ``@model`` functions are imported from the spec stored in the file and called with
    the stored hyperparameters; pass ``spec`` to build from another spec (its hyperparameters
    are set to the stored ones). Models are returned in eval mode, by name.

    Example::

        models = lk.load_models("lightkit_logs/digits/version_0/checkpoints/last.ckpt")
        net = models["net"]

    Raises:
        CheckpointError: the file is unreadable, not a lightkit checkpoint, or its weights do
            not fit the models.
        SpecError: a stored function can no longer be imported (pass ``spec=``).
    """
    from lightkit.engine.binders import bind_plan
    from lightkit.engine.context import RunContext
    from lightkit.runtime.runtime import Runtime
    from lightkit.spec.spec import TrainingSpec
    from lightkit.strategies.fsdp_checkpoint import read_checkpoint

    path = Path(path)
    ckpt = read_checkpoint(path, map_location=map_location)
    check_format(ckpt, path)
    stored_hparams = ckpt.get("hparams") or {}
    if spec is None:
        try:
            spec = TrainingSpec.model_validate_json(ckpt["spec"])
        except SpecError:
            # Only the @model functions are needed: a script's steps and data may not import
            # now, or no longer form a valid spec.
            try:
                spec = _models_only(ckpt["spec"], stored_hparams)
            except SpecError as exc:
                from lightkit.errors import Problem

                *first, last = exc.problems
                fix = (
                    f"\nThe @model functions stored in {path} cannot be rebuilt now (renamed, "
                    f"moved or changed). Pass them as they are: lk.load_models(path, "
                    f"spec=lk.collect(<your module>)); only the @model functions must match the "
                    f"checkpoint."
                )
                raise SpecError([*first, Problem(last.code, last.message + fix)]) from None
    else:
        known = spec.hparams_model.model_fields
        spec = spec.with_hparams(**{k: v for k, v in stored_hparams.items() if k in known})
    ctx = RunContext(Runtime(accelerator="cpu", devices=1), spec.hparams)
    base = {"ctx": ctx, "hparams": spec.hparams}
    models: dict[str, nn.Module] = {}
    stored = ckpt.get("models") or {}
    for plan in spec.plans:
        if plan.role != "model":
            continue
        module = bind_plan(plan, (), base, spec.hparams)()
        if plan.name not in stored:
            raise _mismatch(
                path,
                f"it holds no weights for model '{plan.name}' (it holds "
                f"{', '.join(map(repr, stored)) or 'none'}). Give the @model the name the "
                f"checkpoint knows: @lk.model(name=...).",
            )
        _to_stored_dtype(module, stored[plan.name])
        try:
            module.load_state_dict(stored[plan.name], strict=strict)
        except RuntimeError as exc:
            raise _mismatch(path, f"model '{plan.name}': {exc}") from None
        models[plan.name] = module.eval()
    return models


def _to_stored_dtype(module: nn.Module, state: dict[str, Any]) -> None:
    """A model trained at 64-true or bf16-true comes back in that dtype: load_state_dict
    would copy the weights into the float32 parameters a fresh build has, silently rounding."""
    dtypes = {
        t.dtype for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()
    }
    if len(dtypes) == 1:
        dtype = dtypes.pop()
        if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
            module.to(dtype)


__all__ = ["check_format", "load_models", "locate", "restore"]
