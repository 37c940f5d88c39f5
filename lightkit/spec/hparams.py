"""All hyperparameters of a spec as one pydantic model, built from the functions' signatures.

The same name in two functions is one hyperparameter; their types and defaults must agree.
The model remembers which functions declared each field, so errors can name them.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
import warnings
from collections.abc import Sequence
from typing import Any

import pydantic
import pydantic.json_schema
from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from lightkit.errors import Problem
from lightkit.spec.signature import FunctionPlan


class Hparams(BaseModel):
    """Base of every spec's hyperparameter model: frozen, unknown names refused."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        protected_namespaces=(),
        ser_json_inf_nan="constants",  # `float("inf")` is a value: JSON null would lose it
    )

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        """The values by name (Python objects, not JSON)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def __eq__(self, other: object) -> bool:
        # Each spec builds its own model class, so compare by names and values, not class.
        if not isinstance(other, Hparams):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        # Equal values must hash alike (``1 == 1.0``, a list and its copy), so values are
        # frozen into hashable forms rather than compared by ``repr``.
        return hash(tuple(sorted((k, _frozen(v)) for k, v in self.as_dict().items())))

    def __reduce__(self) -> tuple[Any, ...]:
        # Each spec builds its model class at run time, so pickle cannot find it by name:
        # send the fields and rebuild the class on the other side.
        model = type(self)
        fields = {name: (f.annotation, f) for name, f in model.model_fields.items()}
        return (_rebuild_hparams, (fields, hparam_sources(model), self.as_dict()))


def _rebuild_hparams(
    fields: dict[str, Any], sources: dict[str, list[str]], values: dict[str, Any]
) -> Hparams:
    model = pydantic.create_model("Hparams", __base__=Hparams, **fields)
    model.__hparam_sources__ = sources  # type: ignore[attr-defined]
    return model.model_validate(values)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for ``value`` that equal values share; ``None`` when there is none
    (such a value then adds nothing to the hash, which stays consistent with equality)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_frozen(v) for v in value)
    if isinstance(value, dict):
        return frozenset((_frozen(k), _frozen(v)) for k, v in value.items())
    if isinstance(value, BaseModel):
        return _frozen(dict(value))
    try:
        hash(value)
    except TypeError:
        return None
    return value


def _type_key(annotation: Any) -> Any:
    """A comparable form of a type: ``List[int]`` and ``list[int]`` are one, ``Optional[int]``
    and ``int | None`` are one, and two ``Field(gt=0)`` in ``Annotated`` are equal (pydantic's
    ``FieldInfo`` compares by identity)."""
    if isinstance(annotation, FieldInfo):
        return ("Field", repr(annotation))
    origin = typing.get_origin(annotation)
    if origin is None:
        return annotation
    if origin is types.UnionType:
        origin = typing.Union
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # get_args flattens Annotated[T, meta, ...] to (T, meta, ...)
        return (origin, _type_key(args[0]), tuple(_type_key(a) for a in args[1:]))
    return (origin, tuple(_type_key(a) for a in args))


def same_type(a: Any, b: Any) -> bool:
    """Whether two annotations declare the same hyperparameter type."""
    try:
        return bool(a == b) or bool(_type_key(a) == _type_key(b))
    except Exception:
        return a is b


def _same_default(a: Any, b: Any) -> bool:
    if isinstance(a, FieldInfo) or isinstance(b, FieldInfo):
        return repr(a) == repr(b)
    try:
        if type(a) is not type(b) and not (_plain_number(a) and _plain_number(b)):
            return False  # True == 1, but a bool default is not an int one
        return bool(a == b)  # 1 and 1.0 declare the same value of the one annotated type
    except Exception:
        return a is b


def _plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def show_default(default: Any) -> str:
    """A default as written: ``0.1``, ``Field(0.1, ge=0)``."""
    if not isinstance(default, FieldInfo):
        return repr(default)
    parts = [] if default.is_required() else [repr(default.default)]
    for m in default.metadata:
        if dataclasses.is_dataclass(m):
            parts += [f"{f.name}={getattr(m, f.name)!r}" for f in dataclasses.fields(m)]
        else:
            parts.append(repr(m))
    if default.description:
        parts.append(f"description={default.description!r}")
    return f"Field({', '.join(parts)})"


def build_hparams_model(
    plans: Sequence[FunctionPlan],
) -> tuple[type[Hparams] | None, list[Problem]]:
    """One pydantic model with a field per hyperparameter, or the conflicts found."""
    seen: dict[str, tuple[Any, Any, FunctionPlan]] = {}
    sources: dict[str, list[str]] = {}
    problems: list[Problem] = []
    for plan in plans:
        for p in plan.params:
            if not p.declares:
                continue
            if p.name.startswith("_") or p.name in dir(Hparams):
                problems.append(
                    Problem(
                        "bad-hparam-name",
                        f"{plan.where}: hyperparameter '{p.name}' cannot be a field name "
                        f"(reserved or private). Rename the parameter.",
                    )
                )
                continue
            if p.name in seen:
                annotation, default, first = seen[p.name]
                if first.fn is plan.fn:
                    continue
                same_default = _same_default(default, p.default)
                if same_default and default is None and Any in (annotation, p.annotation):
                    # ``x=None`` says nothing of the type: ``x: float | None = None`` decides.
                    if annotation is Any:
                        seen[p.name] = (p.annotation, default, first)
                elif not same_type(annotation, p.annotation) or not same_default:
                    problems.append(
                        Problem(
                            "hparam-conflict",
                            f"hyperparameter '{p.name}' is declared twice, differently:\n"
                            f"  {first.where}: {p.name}: {type_name(annotation)} = "
                            f"{show_default(default)}\n"
                            f"  {plan.where}: {p.name}: {type_name(p.annotation)} = "
                            f"{show_default(p.default)}\n"
                            f"The same name is one hyperparameter: give both the same type and "
                            f"default (and the same Field constraints), or rename one.",
                        )
                    )
                    continue
            else:
                seen[p.name] = (p.annotation, p.default, plan)
            sources.setdefault(p.name, []).append(plan.where)
    for plan in plans:  # parameters that use a hyperparameter declared elsewhere
        for p in plan.params:
            if p.kind != "hparam" or p.declares or p.name not in seen:
                continue
            annotation, default, first = seen[p.name]
            if p.annotation is not None and not same_type(p.annotation, annotation):
                problems.append(
                    Problem(
                        "hparam-conflict",
                        f"{plan.where}: parameter '{p.name}' is annotated "
                        f"{type_name(p.annotation)}, but the hyperparameter it receives is "
                        f"declared as {type_name(annotation)} in {first.where}. Use the same "
                        f"type, or drop the annotation.",
                    )
                )
            elif plan.where not in sources[p.name]:
                sources[p.name].append(plan.where)
    if problems:
        return None, problems
    fields: dict[str, Any] = {name: (ann, default) for name, (ann, default, _) in seen.items()}
    try:
        model = pydantic.create_model("Hparams", __base__=Hparams, **fields)
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        return None, [
            Problem(
                "bad-hparam-type",
                f"the hyperparameters cannot form a model: {exc}. Declared by: "
                + "; ".join(f"{n} in {', '.join(s)}" for n, s in sources.items()),
            )
        ]
    defaults = _checked_defaults(model, seen)
    if isinstance(defaults, list):
        return None, defaults
    bad = _without_json_form(model, seen)
    if bad:
        return None, bad
    converted = _with_converted_defaults(model, defaults)
    converted.__hparam_sources__ = sources  # type: ignore[attr-defined]
    return converted, []


def _with_converted_defaults(model: type[Hparams], defaults: Hparams) -> type[Hparams]:
    """``model`` with each default its annotation converts (``batch_size: int = "4"``,
    ``root: Path = "data"``, ``norm: Norm = "layer"``) replaced by the converted value
    (``defaults``, the defaults validated), so a function receives the annotated type whether
    the value is the default or was given (``with_hparams``, a flag, a spec read from JSON),
    as the annotation promises."""
    fields = model.model_fields
    changed = {
        name: value
        for name, field in fields.items()
        if field.default_factory is None
        and not field.is_required()
        and type(value := getattr(defaults, name)) is not type(field.default)
    }
    if not changed:
        return model
    new_fields: dict[str, Any] = {
        name: (
            field.annotation,
            FieldInfo.merge_field_infos(field, default=changed[name]) if name in changed else field,
        )
        for name, field in fields.items()
    }
    return pydantic.create_model("Hparams", __base__=Hparams, **new_fields)


def _without_json_form(
    model: type[Hparams], seen: dict[str, tuple[Any, Any, FunctionPlan]]
) -> list[Problem]:
    """A problem per hyperparameter whose annotation has no JSON schema (an arbitrary class):
    the spec is data, written with its schema into ``spec.json`` and every checkpoint."""
    try:
        with warnings.catch_warnings():
            # A default that is not JSON (fit refuses it later, naming it) is not this check's.
            warnings.simplefilter("ignore", pydantic.json_schema.PydanticJsonSchemaWarning)
            model.model_json_schema()
    except pydantic.PydanticInvalidForJsonSchema:
        pass
    else:
        return []
    config = ConfigDict(arbitrary_types_allowed=True)
    problems = []
    for name, (annotation, default, plan) in seen.items():
        try:
            pydantic.TypeAdapter(annotation, config=config).json_schema()
        except pydantic.PydanticInvalidForJsonSchema:
            if _annotated(plan, name):
                what = f"is annotated {type_name(annotation)}, which has"
            else:  # its type is its default's (`act=nn.ReLU`, Lightning's save_hyperparameters)
                kind = "a class" if isinstance(default, type) else f"a {type(default).__name__}"
                what = f"has no annotation, and its default {default!r:.60} ({kind}) has"
            problems.append(
                Problem(
                    "bad-hparam-type",
                    f"{plan.where}: hyperparameter '{name}' {what} no JSON form, so the spec "
                    f"could not be written as data (spec.json, checkpoints). Make it a JSON "
                    f"value (a string or Literal naming the choice, numbers, lists) and build "
                    f"the object inside the function, e.g. `act: Literal['relu', 'gelu'] = 'relu'`, "
                    f"then `{{'relu': nn.ReLU, 'gelu': nn.GELU}}[act]()`.",
                )
            )
    return problems


def _annotated(plan: FunctionPlan, name: str) -> bool:
    """Whether ``plan``'s function annotates its parameter ``name`` (or another declares it)."""
    try:
        param = inspect.signature(plan.fn).parameters.get(name)
    except (TypeError, ValueError):
        return True
    return param is None or param.annotation is not inspect.Parameter.empty


def _checked_defaults(
    model: type[Hparams], seen: dict[str, tuple[Any, Any, FunctionPlan]]
) -> Hparams | list[Problem]:
    """The defaults validated (pydantic does not validate defaults itself), or a problem per
    default that its own type refuses (``hidden: int = 8.5``)."""
    defaults = {
        name: field.get_default(call_default_factory=True, validated_data={})
        for name, field in model.model_fields.items()
    }
    try:
        return model.model_validate(defaults)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            if name not in seen:
                continue
            annotation, default, plan = seen[name]
            problems.append(
                Problem(
                    "bad-hparam-default",
                    f"{plan.where}: hyperparameter '{name}': the default "
                    f"{show_default(default)} does not fit its type {type_name(annotation)} "
                    f"({error['msg']}). Change the default or the annotation.",
                )
            )
        return problems or [Problem("bad-hparam-default", str(exc))]


def type_name(annotation: Any) -> str:
    """``int``, ``Optional[float]``, ``Literal['relu', 'gelu']``,
    ``Annotated[int, Field(gt=0)]``: a type as a user wrote it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return f"Annotated[{type_name(base)}, {', '.join(map(_metadata_text, metadata))}]"
    return repr(annotation).replace("typing.", "")


def _metadata_text(item: Any) -> str:
    """``Field(gt=0)`` for pydantic's ``FieldInfo`` (its repr lists every unset attribute)."""
    if not isinstance(item, FieldInfo):
        return repr(item)
    parts = []
    for constraint in item.metadata:  # annotated_types' Gt(gt=0), pydantic's own, ...
        fields = getattr(constraint, "__dict__", None) or {
            name: getattr(constraint, name) for name in getattr(constraint, "__slots__", ())
        }
        parts += [f"{k}={v!r}" for k, v in fields.items() if v is not None] or [repr(constraint)]
    # The other arguments given (title, description, examples, ...); an alias also sets the
    # two derived ones, which the user did not write.
    given = getattr(item, "_attributes_set", {"description": item.description})
    derived = {"validation_alias", "serialization_alias"} if "alias" in given else set()
    parts += [
        f"{k}={v!r}"
        for k, v in given.items()
        if v is not None and k not in derived and k not in ("default", "annotation")
    ]
    return f"Field({', '.join(parts)})"


def source_name(source: str) -> str:
    """The function's name in one of :func:`hparam_sources`' entries:
    ``"train(net, lr) at x.py:3"`` -> ``"train"``, ``"partial(opt)(net, lr) at ..."`` ->
    ``"partial(opt)"``."""
    head = source.rsplit(" at ", 1)[0]
    return head[: head.rfind("(")] if head.endswith(")") else head


def hparam_sources(model: type[Hparams]) -> dict[str, list[str]]:
    """Field name -> the functions that declare it."""
    return dict(getattr(model, "__hparam_sources__", {}))
