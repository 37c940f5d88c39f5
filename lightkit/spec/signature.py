"""Read each function's signature once and classify every parameter with one rule table.

The rules, in order (pytest's: a parameter with a default is never *injected* by default):

1. its name is a model's name            -> the built model
2. it is a loop value the role supplies  -> injected by the loop (``batch``, ``ctx``, ...)
3. it is a loop value the role never supplies -> error (``unsupplied-loop-value``)
4. it has a default                      -> a hyperparameter
5. another function declares it as a hyperparameter -> that hyperparameter's value
6. otherwise                             -> error (``unknown-parameter``)

``*args``/``**kwargs`` and positional-only parameters are errors of their own.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic.fields import FieldInfo

from lightkit.errors import Problem, describe_function, did_you_mean, sorted_list
from lightkit.spec.roles import EVENT_VALUES, LOOP_VALUES, supplies

ParamKind = Literal["model", "loop", "hparam"]

_ROLE_LABEL = {
    "model": "@model functions",
    "training_step": "training steps",
    "validation_step": "validation steps",
    "test_step": "test steps",
    "predict_step": "predict steps",
    "configure_optimizers": "configure_optimizers functions",
    "train_data": "data functions",
    "val_data": "data functions",
    "test_data": "data functions",
    "predict_data": "data functions",
}


@dataclass(frozen=True, slots=True)
class Param:
    """One classified parameter. ``annotation``/``default`` matter for hyperparameters only;
    a parameter without a default that names another function's hyperparameter has
    ``default=REFERENCE``: it receives the value, but does not declare the hyperparameter."""

    name: str
    kind: ParamKind
    annotation: Any = None
    default: Any = None

    @property
    def declares(self) -> bool:
        return self.kind == "hparam" and self.default is not REFERENCE


class _Reference:
    def __repr__(self) -> str:
        return "REFERENCE"

    def __reduce__(self) -> str:
        return "REFERENCE"  # the module's one instance, also after pickling (`is` checks)


REFERENCE: Any = _Reference()


@dataclass(frozen=True, slots=True)
class FunctionPlan:
    """What calling one user function needs, resolved once at collect time."""

    role: str
    fn: Callable[..., Any]
    name: str
    params: tuple[Param, ...]
    event: str | None = None
    manual: bool = False

    @property
    def where(self) -> str:
        return describe_function(self.fn)

    def names(self, kind: ParamKind) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.kind == kind)


#: Parameters of Lightning's hooks that lightkit's functions never receive, and what to do.
LIGHTNING_PARAMS = {
    name: "Lightning's (trainer, pl_module) are not passed: ask for ctx (ctx.epoch, "
    "ctx.global_step, ctx.should_stop, ...) and the models by name."
    for name in ("trainer", "pl_module")
} | {
    "optimizer_idx": "Lightning 1.x's optimizer_idx has no counterpart: with several "
    "optimizers the step optimizes itself and receives `optimizers` (from_lightning.md).",
}


def role_label(role: str, event: str | None = None) -> str:
    return f"'{event}' hooks" if role == "on" else _ROLE_LABEL[role]


def read_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations evaluated; one that does not evaluate becomes
    :class:`Unresolved`."""
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        # One name imported under TYPE_CHECKING (``net: nn.Module``) must not cost the other
        # parameters their types: evaluate each annotation on its own.
        sig = inspect.signature(fn)
        namespace = getattr(inspect.unwrap(fn), "__globals__", {})
        params = [
            p.replace(annotation=_eval_annotation(p.annotation, namespace))
            for p in sig.parameters.values()
        ]
        return sig.replace(parameters=params)


class Unresolved:
    """A string annotation that does not evaluate (a typo, a name imported under
    ``TYPE_CHECKING``, a class local to a function): harmless on a model or loop value, an
    error on a hyperparameter, whose annotation is its type."""

    __slots__ = ("error", "text")

    def __init__(self, text: str, error: Exception) -> None:
        self.text, self.error = text, error

    def problem(self, where: str, name: str) -> Problem:
        return Problem(
            "bad-hparam-type",
            f"{where}: hyperparameter '{name}' is annotated {self.text!r}, which does not "
            f"evaluate in its module ({type(self.error).__name__}: {self.error}). Fix the "
            f"annotation, or make the name importable at module level (not only under "
            f"`if TYPE_CHECKING:`; a class defined inside a function cannot be named in a "
            f"string annotation).",
        )


def _eval_annotation(annotation: Any, namespace: dict[str, Any]) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)
    except Exception as exc:
        return Unresolved(annotation, exc)


def hparam_annotation(param: inspect.Parameter) -> Any:
    """The declared type, or the default's type when unannotated (``Any`` for ``None``)."""
    if param.annotation is not inspect.Parameter.empty:
        if param.default is None and not _admits_none(param.annotation):
            # ``hidden: int = None`` means "an int, or None": PEP 484's old implicit Optional.
            return Optional[param.annotation]
        return param.annotation
    default = param.default
    if isinstance(default, FieldInfo):
        default = default.get_default(call_default_factory=True, validated_data={})
    return type_of_default(default)


def _admits_none(annotation: Any) -> bool:
    if annotation in (Any, None, type(None)):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_none(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_none(a) for a in typing.get_args(annotation))
    return False


_SCALARS = (bool, int, float, str)


def type_of_default(default: Any) -> Any:
    """The type a default implies: ``0.9`` -> ``float``, ``(0.9, 0.999)`` ->
    ``tuple[float, float]``, ``[64, 64]`` -> ``list[int]`` (so a value given on the command
    line or in JSON is checked and converted per element), ``None`` -> ``Any``."""
    if default is None:
        return Any
    kind = type(default)
    if kind is tuple and default and all(type(v) in _SCALARS for v in default):
        return tuple[tuple(type(v) for v in default)]  # type: ignore[misc]
    if kind in (list, set, frozenset) and default:
        items = {type(v) for v in default}
        if items == {int, float}:
            items = {float}
        if len(items) == 1 and next(iter(items)) in _SCALARS:
            return kind[next(iter(items))]
    return kind


def classify(
    role: str,
    fn: Callable[..., Any],
    name: str,
    model_names: Iterable[str],
    *,
    event: str | None = None,
    manual: bool = False,
    hparam_names: Collection[str] = (),
    partial: bool = False,
) -> tuple[FunctionPlan | None, list[Problem]]:
    """Classify ``fn``'s parameters for ``role``. Returns the plan, or the problems found.

    ``hparam_names`` are the hyperparameters other functions declare: a parameter without a
    default that has one of these names receives its value. ``partial=True`` returns, with
    the problems, a plan of the parameters that could be classified: its hyperparameters can
    still be checked against the other functions' (nothing runs it)."""
    problems: list[Problem] = []
    models = tuple(model_names)
    loop_values, gets_models = supplies(role, event)
    try:
        sig = read_signature(fn)
    except (TypeError, ValueError) as exc:
        return None, [
            Problem("unreadable-signature", f"{fn!r}: cannot read its signature ({exc}).")
        ]

    where = describe_function(fn)
    label = role_label(role, event)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        # Calling it would only make a coroutine: its body would never run.
        return None, [
            Problem(
                "async-function",
                f"{where} is an async function, but lightkit calls its functions directly, "
                f"inside the loop; its body would never run. Make it a plain `def` (call "
                f"async code with asyncio.run(...) inside it if you must).",
            )
        ]
    params: list[Param] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            problems.append(
                Problem(
                    "variadic-parameter",
                    f"{where}: parameter '{star}{p.name}' is not supported: lightkit passes "
                    f"every value by name, so it must know each name. List the parameters "
                    f"you need explicitly.",
                )
            )
        elif p.kind is p.POSITIONAL_ONLY:
            problems.append(
                Problem(
                    "positional-only-parameter",
                    f"{where}: parameter '{p.name}' is positional-only (before '/'); lightkit "
                    f"passes values by name. Remove the '/'.",
                )
            )
        elif p.name in models:
            if gets_models and p.default is not p.empty and p.default is not None:
                # A default says "hyperparameter"; the model would be passed instead, silently.
                problems.append(
                    Problem(
                        "model-name-clash",
                        f"{where}: parameter '{p.name}' has a default ({p.default!r}), as a "
                        f"hyperparameter has, but '{p.name}' is also a model's name, and the "
                        f"model would be passed instead. Rename the parameter, or the model "
                        f'(@lk.model(name="{p.name}_model")).',
                    )
                )
            elif gets_models:
                params.append(Param(p.name, "model"))
            else:
                problems.append(
                    Problem(
                        "model-not-available",
                        f"{where}: parameter '{p.name}' is a model, but {label} do not receive "
                        f"models (they run before models exist or independently of them). "
                        f"They receive: {sorted_list(loop_values)}.",
                    )
                )
        elif p.name in loop_values:
            params.append(Param(p.name, "loop"))
        elif p.name in LOOP_VALUES or (
            # A role's parameter may be a hyperparameter named like an event value
            # (``loss="mse"``); without a default it asks for the event's value.
            p.name in EVENT_VALUES
            and (role == "on" or (p.default is p.empty and p.name not in hparam_names))
        ):
            hint = ""
            if p.name == "outputs" and event is not None and event.endswith("_epoch_end"):
                stage = event.removesuffix("_epoch_end")
                hint = (
                    f" Lightning 1.x's epoch-end outputs are gone, as in Lightning 2: collect "
                    f"them in a {stage}_batch_end hook, which receives `outputs`."
                )
            problems.append(
                Problem(
                    "unsupplied-loop-value",
                    f"{where}: parameter '{p.name}' is a loop value that {label} never "
                    f"receive. They receive: {sorted_list(loop_values)}"
                    + (f" and the models ({sorted_list(models)})" if gets_models and models else "")
                    + f". Remove '{p.name}' or rename it."
                    + hint,
                )
            )
        elif p.default is not p.empty and not (
            # ``= Field(gt=0)`` sets constraints but no value: not a default.
            isinstance(p.default, FieldInfo) and p.default.is_required()
        ):
            if isinstance(p.annotation, Unresolved):
                problems.append(p.annotation.problem(where, p.name))
            else:
                params.append(Param(p.name, "hparam", hparam_annotation(p), p.default))
        elif p.name in hparam_names:
            if isinstance(p.annotation, Unresolved):
                problems.append(p.annotation.problem(where, p.name))
            else:
                annotation = None if p.annotation is p.empty else p.annotation
                params.append(Param(p.name, "hparam", annotation, REFERENCE))
        else:
            available = [*models, *loop_values] if gets_models else list(loop_values)
            close = did_you_mean(p.name, available)
            if p.name == "self":
                close = (
                    " lightkit's functions are plain functions, not methods: drop `self` (a "
                    "LightningModule's hook becomes a decorated function of its own"
                    + (
                        f"; self(x) becomes {models[0]}(x)"
                        if gets_models and len(models) == 1
                        else ""
                    )
                    + ")."
                )
            elif p.name in LIGHTNING_PARAMS:
                close = " " + LIGHTNING_PARAMS[p.name]
            elif gets_models and len(models) == 1 and not close and models[0] not in sig.parameters:
                close = (
                    f" The model here is {models[0]!r}: name the parameter {models[0]}, or name "
                    f"the model @lk.model(name={p.name!r})."
                )
            elif gets_models and not models and not close:  # the model is what is missing
                close = (
                    f" To receive a model under this name, give an @lk.model function the "
                    f"name (def {p.name}(...), or @lk.model(name={p.name!r}))."
                )
            problems.append(
                Problem(
                    "unknown-parameter",
                    f"{where}: parameter '{p.name}' is not a model "
                    f"({sorted_list(models) if gets_models and models else 'none here'}), a loop value "
                    f"({sorted_list(loop_values)}) or a hyperparameter (give it a default)."
                    + close,
                )
            )
    if problems and not partial:
        return None, problems
    return FunctionPlan(role, fn, name, tuple(params), event, manual), problems
