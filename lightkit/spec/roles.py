"""The roles a function can play, the events hooks can listen to, and what each supplies.

This table is the single source for what a function of each role may ask for by name.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Role = Literal[
    "model",
    "training_step",
    "validation_step",
    "test_step",
    "predict_step",
    "configure_optimizers",
    "train_data",
    "val_data",
    "test_data",
    "predict_data",
    "on",
]

ROLES: Final[tuple[str, ...]] = get_args(Role)

#: Roles with at most one function per spec.
SINGLE_ROLES: Final[tuple[str, ...]] = tuple(r for r in ROLES if r not in ("model", "on"))

EVENTS: Final[tuple[str, ...]] = (
    "fit_start",
    "fit_end",
    "train_epoch_start",
    "train_epoch_end",
    "train_batch_start",
    "train_batch_end",
    "validation_epoch_start",
    "validation_epoch_end",
    "test_epoch_start",
    "test_epoch_end",
    "predict_epoch_start",
    "predict_epoch_end",
    "before_backward",
    "after_backward",
    "before_optimizer_step",
    "save_checkpoint",
    "load_checkpoint",
    "exception",
    # Finer-grained events, beyond the ones DESIGN.md lists.
    "sanity_check_start",
    "sanity_check_end",
    "validation_batch_start",
    "validation_batch_end",
    "test_batch_start",
    "test_batch_end",
    "predict_batch_start",
    "predict_batch_end",
    "train_start",
    "train_end",
)

#: Every name the loop can inject besides the models and the hyperparameters.
LOOP_VALUES: Final[tuple[str, ...]] = (
    "batch",
    "batch_idx",
    "dataloader_idx",
    "optimizer",
    "optimizers",
    "scheduler",
    "schedulers",
    "ctx",
    "hparams",
)

#: Names only some hook events supply; elsewhere they are ordinary parameter names.
EVENT_VALUES: Final[tuple[str, ...]] = ("outputs", "loss", "exception", "checkpoint")

_BASE = frozenset({"ctx", "hparams"})
_OPTIM = frozenset({"optimizer", "optimizers", "scheduler", "schedulers"})
_BATCH = frozenset({"batch", "batch_idx"})
_EVAL = _BASE | _BATCH | {"dataloader_idx"}

#: What each role supplies, and whether it also receives the models by name.
ROLE_SUPPLIES: Final[dict[str, tuple[frozenset[str], bool]]] = {
    "model": (_BASE, False),
    "training_step": (_BASE | _BATCH | _OPTIM, True),
    "validation_step": (_EVAL, True),
    "test_step": (_EVAL, True),
    "predict_step": (_EVAL, True),
    "configure_optimizers": (_BASE, True),
    "train_data": (_BASE, False),
    "val_data": (_BASE, False),
    "test_data": (_BASE, False),
    "predict_data": (_BASE, False),
}

_FIT = _BASE | _OPTIM
#: What each hook event supplies (every event also receives the models by name).
EVENT_SUPPLIES: Final[dict[str, frozenset[str]]] = {
    "fit_start": _FIT,
    "fit_end": _FIT,
    "train_epoch_start": _FIT,
    "train_epoch_end": _FIT,
    "train_batch_start": _FIT | _BATCH,
    "train_batch_end": _FIT | _BATCH | {"outputs"},
    "validation_epoch_start": _BASE,
    "validation_epoch_end": _BASE,
    "test_epoch_start": _BASE,
    "test_epoch_end": _BASE,
    "predict_epoch_start": _BASE,
    "predict_epoch_end": _BASE,
    "before_backward": _FIT | _BATCH | {"loss"},
    "after_backward": _FIT | _BATCH,
    "before_optimizer_step": _FIT,
    "save_checkpoint": _FIT | {"checkpoint"},
    "load_checkpoint": _FIT | {"checkpoint"},
    "exception": _BASE | {"exception"},
    "sanity_check_start": _BASE,
    "sanity_check_end": _BASE,
    "validation_batch_start": _EVAL,
    "validation_batch_end": _EVAL | {"outputs"},
    "test_batch_start": _EVAL,
    "test_batch_end": _EVAL | {"outputs"},
    "predict_batch_start": _EVAL,
    "predict_batch_end": _EVAL | {"outputs"},
    "train_start": _FIT,
    "train_end": _FIT,
}

#: Lightning hook names (without ``on_``) that are no event here, and the event to use: an
#: evaluation run is one epoch.
LIGHTNING_EVENTS: Final[dict[str, str]] = {
    **{
        f"{stage}_{edge}": f"{stage}_epoch_{edge}"
        for stage in ("validation", "test", "predict")
        for edge in ("start", "end")
    },
    "before_zero_grad": "before_optimizer_step",
    "after_optimizer_step": "train_batch_end",
}

#: Lightning hooks with no event at all, and what to do instead.
LIGHTNING_HOOKS: Final[dict[str, str]] = {
    "setup": "build things in the @lk.model and data functions, which run once per entry "
    "point; an lk.Callback has setup(ctx, stage)",
    "teardown": "an lk.Callback has teardown(ctx, stage), which runs after errors too",
    "prepare_data": "download inside the data function on one process: if ctx.local_rank == 0: "
    "download(), then ctx.runtime.barrier()",
    "before_batch_transfer": "transform batches in the collate_fn or the step",
    "after_batch_transfer": "transform batches in the collate_fn or the step",
}


def event_hint(event: str, prefix: str = "") -> str:
    """`` Lightning's on_test_end is test_epoch_end here.`` for a Lightning hook name, else the
    closest event (`` Did you mean ...?``), else nothing. ``prefix``: ``"on_"`` for a
    callback's method names."""
    from lightkit.errors import did_you_mean

    bare = event.removeprefix("on_")  # @lk.on("on_before_zero_grad"), copied as written
    if bare in LIGHTNING_EVENTS:
        return f" Lightning's on_{bare} is {prefix}{LIGHTNING_EVENTS[bare]} here."
    if bare in LIGHTNING_HOOKS:
        return f" Lightning's {bare} has no event here: {LIGHTNING_HOOKS[bare]}."
    return did_you_mean(prefix + event, [prefix + e for e in EVENTS])


#: The values the loop passes to each event's hooks at the moment it fires, in order; every
#: other name a hook asks for is fixed for the whole run and bound once.
EVENT_ARGS: Final[dict[str, tuple[str, ...]]] = {
    **{event: () for event in EVENT_SUPPLIES},
    "train_batch_start": ("batch", "batch_idx"),
    "train_batch_end": ("batch", "batch_idx", "outputs"),
    "before_backward": ("batch", "batch_idx", "loss"),
    "after_backward": ("batch", "batch_idx"),
    "before_optimizer_step": ("optimizer",),
    "save_checkpoint": ("checkpoint",),
    "load_checkpoint": ("checkpoint",),
    "exception": ("exception",),
    "validation_batch_start": ("batch", "batch_idx", "dataloader_idx"),
    "validation_batch_end": ("batch", "batch_idx", "dataloader_idx", "outputs"),
    "test_batch_start": ("batch", "batch_idx", "dataloader_idx"),
    "test_batch_end": ("batch", "batch_idx", "dataloader_idx", "outputs"),
    "predict_batch_start": ("batch", "batch_idx", "dataloader_idx"),
    "predict_batch_end": ("batch", "batch_idx", "dataloader_idx", "outputs"),
}

#: The values each role's function receives per call (the rest is bound once).
ROLE_ARGS: Final[dict[str, tuple[str, ...]]] = {
    "training_step": ("batch", "batch_idx"),
    "validation_step": ("batch", "batch_idx", "dataloader_idx"),
    "test_step": ("batch", "batch_idx", "dataloader_idx"),
    "predict_step": ("batch", "batch_idx", "dataloader_idx"),
}

#: What each entry point of the trainer needs, by role.
ENTRY_POINT_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "fit": ("model", "training_step", "configure_optimizers", "train_data"),
    "validate": ("model", "validation_step", "val_data"),
    "test": ("model", "test_step", "test_data"),
    "predict": ("model", "predict_step", "predict_data"),
}


def supplies(role: str, event: str | None = None) -> tuple[frozenset[str], bool]:
    """The loop values a role (or hook event) supplies and whether it receives models."""
    if role == "on":
        return EVENT_SUPPLIES[event or ""], True
    return ROLE_SUPPLIES[role]
