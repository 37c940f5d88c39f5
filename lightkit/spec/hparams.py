"""All hyperparameters of a spec as one pydantic model, built from the functions' signatures.

The same name in two functions is one hyperparameter; their types and defaults must agree.
The model remembers which functions declared each field, so errors can name them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from lightkit.errors import Problem
from lightkit.spec.signature import FunctionPlan


class Hparams(BaseModel):
    """Base of every spec's hyperparameter model: frozen, unknown names refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, protected_namespaces=()
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
        return hash(tuple(sorted((k, repr(v)) for k, v in self.as_dict().items())))


def _same_default(a: Any, b: Any) -> bool:
    if isinstance(a, FieldInfo) or isinstance(b, FieldInfo):
        return repr(a) == repr(b)
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


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
                elif annotation != p.annotation or not same_default:
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
            if p.annotation is not None and p.annotation != annotation:
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
    model.__hparam_sources__ = sources  # type: ignore[attr-defined]
    return model, []


def type_name(annotation: Any) -> str:
    """``int``, ``Optional[float]``, ``Literal['relu', 'gelu']``: a type as a user wrote it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def hparam_sources(model: type[Hparams]) -> dict[str, list[str]]:
    """Field name -> the functions that declare it."""
    return dict(getattr(model, "__hparam_sources__", {}))
