"""``TrainingSpec``: the validated, serialisable description of a training program.

A spec is data: every function is stored as an import path (``"examples.digits:train"``), the
hyperparameters as values plus their JSON schema. Loading the JSON imports the functions back
and re-runs the same analysis ``collect()`` does.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    computed_field,
    field_serializer,
    field_validator,
    model_validator,
)

from lightkit.errors import (
    Problem,
    SpecError,
    describe_function,
    did_you_mean,
    file_label,
    sorted_list,
)
from lightkit.spec.hparams import (
    Hparams,
    build_hparams_model,
    hparam_sources,
    source_name,
    type_name,
)
from lightkit.spec.registry import unknown_event
from lightkit.spec.roles import ENTRY_POINT_NEEDS, EVENTS, LOOP_VALUES, ROLES, SINGLE_ROLES
from lightkit.spec.signature import FunctionPlan, classify
from lightkit.utils.pydantic_errors import AlsoValidationError


def function_ref(fn: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a function. A callable that no import path reaches (a
    ``functools.partial``, a method bound to an instance, a callable object) is written as
    ``"<partial of module:qualname>"``, which loading refuses with the fix. A function of the
    running script or notebook (``__main__``) is ``"__main__@<pid>:qualname"``: this process
    loads it back, another one refuses it (its ``__main__`` is another program)."""
    if isinstance(fn, functools.partial):
        return f"<partial of {function_ref(fn.func)}>"
    if inspect.ismethod(fn) and not isinstance(fn.__self__, type):  # a classmethod imports
        return f"<bound method {function_ref(fn.__func__)}>"
    if not (inspect.isroutine(fn) or isinstance(fn, type)):
        return f"<{type(fn).__name__} object from {getattr(type(fn), '__module__', '?')}>"
    module = getattr(fn, "__module__", "?")
    if module == "__main__":  # the running script or notebook: this process only
        module = f"__main__@{os.getpid()}"
    return f"{module}:{getattr(fn, '__qualname__', repr(fn))}"


def import_function(ref: str) -> Callable[..., Any]:
    """Import ``"module:qualname"``; a clear error when that cannot work."""
    if ref.startswith("<"):
        raise SpecError(
            f"{ref} cannot be loaded: it was registered as a callable object, not a function "
            f"defined with `def` at the top of a module, and a spec file holds functions by "
            f"import path only. Register a top-level function instead (`def opt(net, lr=0.5): "
            f"...` rather than `partial(opt, lr=0.5)`), or pass the spec you have: "
            f"`lk.load_models(path, spec=lk.collect(...))`.",
            code="unimportable-function",
        )
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise SpecError(
            f"{ref!r} is not a function reference; expected 'module:qualname'.",
            code="unimportable-function",
        )
    main, _, pid = module_name.partition("@")
    if main == "__main__" and pid != str(os.getpid()):
        raise SpecError(
            f"cannot import function {ref!r}: it was defined in a script run directly or in a "
            f"notebook ({'process ' + pid if pid else 'no process recorded'}), and this "
            f"process's __main__ is another program. Move it to an importable module (a `def` "
            f"in a .py file on the Python path) to load the spec elsewhere, or pass the spec "
            f"you have: `lk.load_models(path, spec=lk.collect(...))`.",
            code="unimportable-function",
        )
    module_name = main
    hint = ""
    if "<locals>" in qualname or "<lambda>" in qualname:
        hint = (
            " It was defined inside another function or as a lambda, so no process can import "
            "it. Move it to an importable module (a `def` in a .py file on the Python path) to "
            "load the spec elsewhere."
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        # For a lambda or a nested function, the attribute error says nothing the hint does
        # not (`'function' object has no attribute '<locals>'`).
        detail = "." if hint else f": {exc}."
        raise SpecError(
            f"cannot import function {ref!r}{detail}{hint}", code="unimportable-function"
        ) from None
    if not callable(obj):
        raise SpecError(f"{ref!r} is not callable.", code="unimportable-function")
    return obj  # type: ignore[no-any-return]


def _validate_fn(value: Any) -> Callable[..., Any]:
    if isinstance(value, str):
        return import_function(value)
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"expected a function or 'module:qualname', got {value!r}")


FunctionRef = Annotated[
    Callable[..., Any],
    PlainValidator(_validate_fn),
    PlainSerializer(function_ref, return_type=str),
]


class SpecEntry(BaseModel):
    """One function of the spec and its role."""

    model_config = ConfigDict(frozen=True)

    role: str
    fn: FunctionRef
    name: str
    manual: bool = False
    event: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _import(cls, data: Any) -> Any:
        """Import a function given by reference, saying whose it is when that fails."""
        if not (isinstance(data, dict) and isinstance(data.get("fn"), str)):
            return data
        try:
            fn = import_function(data["fn"])
        except SpecError as exc:
            role, name = data.get("role"), data.get("name")
            whose = (
                f"model {name!r}"
                if role == "model"
                else f"the @lk.on({data.get('event')!r}) hook"
                if role == "on"
                else f"the @{role} function"
            )
            raise SpecError(f"{whose}: {exc}", code=exc.code) from None
        return {**data, "fn": fn}

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:  # a hand-edited spec.json
            raise SpecError(
                f"role {role!r} is not a role.{did_you_mean(role, ROLES)} Roles: "
                f"{sorted_list(ROLES)}.",
                code="unknown-role",
            )
        return role


def analyse(
    entries: Sequence[SpecEntry],
) -> tuple[list[FunctionPlan], type[Hparams] | None, list[Problem]]:
    """Classify every function, check roles and build the hyperparameter model."""
    problems: list[Problem] = []
    models = [e for e in entries if e.role == "model"]
    model_names = [e.name for e in models]

    by_name: dict[str, SpecEntry] = {}
    for e in models:
        if e.name in by_name and by_name[e.name].fn is not e.fn:
            problems.append(
                Problem(
                    "duplicate-model",
                    f"two models are named '{e.name}':\n  {describe_function(by_name[e.name].fn)}\n"
                    f'  {describe_function(e.fn)}\nGive one another name: @lk.model(name="...").',
                )
            )
        by_name.setdefault(e.name, e)
        if not e.name.isidentifier():
            # A lambda, partial or callable object registered without name=.
            kind = "a lambda" if e.name == "<lambda>" else f"a {type(e.fn).__name__} object"
            problems.append(
                Problem(
                    "bad-model-name",
                    f"@model: {describe_function(e.fn)} is {kind}, which has no name other "
                    f"functions can ask for the model by ({e.name!r}). Give one: "
                    f'reg.model(builder, name="net").',
                )
            )
        if e.name in LOOP_VALUES:
            problems.append(
                Problem(
                    "model-name-clash",
                    f"{describe_function(e.fn)}: the model name '{e.name}' is also a loop value, "
                    f"so functions could not ask for both. Name it otherwise: "
                    f'@lk.model(name="{e.name}_model").',
                )
            )
    for role in SINGLE_ROLES:
        same = [e for e in entries if e.role == role]
        if len({id(e.fn) for e in same}) > 1:
            listed = "\n".join(f"  {describe_function(e.fn)}" for e in same)
            fix = "Keep one, or collect them into separate specs."
            if _from_cells(same):
                fix += (
                    " In a notebook, a function renamed and run again stays registered under "
                    "its old name: restart the kernel, or register the cell's functions on a "
                    "lk.Registry() the cell creates, and collect that."
                )
            problems.append(
                Problem(
                    "duplicate-role",
                    f"{len(same)} functions are marked @{role}, but a spec has at most one:\n"
                    f"{listed}\n{fix}",
                )
            )

    # A hook on a misspelled event is read as if on the closest event, for its hyperparameters
    # only: a conflict with another function's is reported now, not after the fix.
    misnamed: list[FunctionPlan] = []
    for e in entries:
        if e.role == "on" and e.event not in EVENTS:
            problems.append(
                Problem(
                    "unknown-event", f"{describe_function(e.fn)}: {unknown_event(str(e.event))}"
                )
            )
            guess = difflib.get_close_matches(str(e.event), EVENTS, n=1, cutoff=0)
            plan, _ = classify(e.role, e.fn, e.name, model_names, event=guess[0], manual=e.manual)
            if plan is not None:
                misnamed.append(plan)
    entries = [e for e in entries if e.role != "on" or e.event in EVENTS]
    classified = [
        classify(e.role, e.fn, e.name, model_names, event=e.event, manual=e.manual, partial=True)
        for e in entries
    ]
    # A parameter without a default may name a hyperparameter another function declares;
    # such functions are classified again, knowing the declared names.
    declared = {p.name for plan, _ in classified if plan for p in plan.params if p.declares}
    plans: list[FunctionPlan] = []
    for e, (plan, found) in zip(entries, classified, strict=True):
        if any(pr.code == "unknown-parameter" for pr in found) and declared:
            plan, found = classify(
                e.role,
                e.fn,
                e.name,
                model_names,
                event=e.event,
                manual=e.manual,
                hparam_names=declared,
                partial=True,
            )
        problems.extend(found)
        if plan is not None:
            plans.append(plan)
    # Hyperparameter conflicts are reported alongside the problems above, not after them:
    # a function with other problems has a partial plan, for this check only.
    model, found = build_hparams_model(plans + misnamed)
    problems.extend(found)
    return plans, None if problems else model, problems


class TrainingSpec(BaseModel):
    """The validated spec: functions by role, hooks, and hyperparameters.

    Build it with :func:`lightkit.collect`; change hyperparameters with :meth:`with_hparams`.

    Example::

        spec = lk.collect()
        spec = spec.with_hparams(lr=3e-4)
        text = spec.model_dump_json()
        same = lk.TrainingSpec.model_validate_json(text)
    """

    # Infinity and NaN stay values in JSON (the schema's defaults too); null would lose them.
    model_config = ConfigDict(
        frozen=True, arbitrary_types_allowed=True, ser_json_inf_nan="constants"
    )

    functions: tuple[SpecEntry, ...]
    hparams: Any = None

    _plans: tuple[FunctionPlan, ...] = PrivateAttr(default=())
    _hparams_model: type[Hparams] | None = PrivateAttr(default=None)
    # What a no-argument collect() in a function left out (others' functions), and the
    # functions it ran in: for require()'s error.
    _left_out: tuple[Any, tuple[Any, ...]] = PrivateAttr(default=((), ()))

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _unwrap_spec_errors(exc, validating=False) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> TrainingSpec:
        """Validate ``obj``; a spec problem raises :class:`SpecError`, not pydantic's error."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _unwrap_spec_errors(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> TrainingSpec:
        """Load a spec from JSON, importing its functions back.

        Raises:
            SpecError: a function cannot be imported (it is named, with the fix), or the
                functions no longer form a valid spec.
            pydantic.ValidationError: the text is not a spec.
        """
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise _unwrap_spec_errors(exc) from None

    @classmethod
    def _analysed(
        cls,
        functions: tuple[SpecEntry, ...],
        plans: Sequence[FunctionPlan],
        model: type[Hparams],
        hparams: Hparams | None = None,
    ) -> TrainingSpec:
        """A spec from functions already analysed (by ``collect()``, or before pickling):
        the analysis is not redone. On the receiving side of a pickle it could not be: a
        script's functions arrive without the globals their string annotations name."""
        spec = cls.model_construct(
            functions=tuple(functions),
            hparams=hparams if hparams is not None else model.model_validate({}),
        )
        spec._plans = tuple(plans)
        spec._hparams_model = model
        return spec

    @field_validator("functions")
    @classmethod
    def _once_each(cls, functions: tuple[SpecEntry, ...]) -> tuple[SpecEntry, ...]:
        # The same function in the same role listed twice (a spec.json edited or joined by
        # hand) counts once, as collect() counts a function reached through two sources.
        seen: dict[tuple[Any, ...], SpecEntry] = {}
        for e in functions:
            seen.setdefault((e.role, e.name, e.event, e.manual, id(e.fn)), e)
        return tuple(seen.values())

    @model_validator(mode="after")
    def _analyse(self) -> TrainingSpec:
        plans, model, problems = analyse(self.functions)
        if problems:
            raise SpecError(problems, where=source_files(self.functions, problems))
        assert model is not None
        values = self.hparams
        if isinstance(values, BaseModel):
            values = dict(values)
        elif isinstance(values, dict):  # given as data (spec.json): names checked first
            _check_names(values, model)
        try:
            hparams = model.model_validate(values or {})
        except ValidationError as exc:
            refused = HparamError.of(exc).name_sources(hparam_sources(model))
            raise _HparamsRefused(refused) from None
        object.__setattr__(self, "hparams", hparams)
        self._plans = tuple(plans)
        self._hparams_model = model
        return self

    @field_serializer("hparams")
    def _dump_hparams(self, value: Any, info: Any) -> Any:
        return value.model_dump(mode=info.mode) if isinstance(value, BaseModel) else value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hparams_schema(self) -> dict[str, Any]:
        """The JSON schema of the hyperparameters."""
        return self.hparams_model.model_json_schema()

    # -- access -----------------------------------------------------------------------------

    @property
    def hparams_model(self) -> type[Hparams]:
        """The pydantic model class of the hyperparameters."""
        assert self._hparams_model is not None
        return self._hparams_model

    @property
    def plans(self) -> tuple[FunctionPlan, ...]:
        """The classified parameters of every function, in ``functions`` order."""
        return self._plans

    def get(self, role: str) -> SpecEntry | None:
        """The function entry of a single-valued role, or ``None``."""
        for e in self.functions:
            if e.role == role:
                return e
        return None

    def plan(self, role: str) -> FunctionPlan | None:
        """The plan of a single-valued role's function, or ``None``."""
        for p in self._plans:
            if p.role == role:
                return p
        return None

    @property
    def models(self) -> tuple[SpecEntry, ...]:
        """The model functions, in build order."""
        return tuple(e for e in self.functions if e.role == "model")

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.functions if e.role == "model")

    @property
    def hooks(self) -> tuple[SpecEntry, ...]:
        return tuple(e for e in self.functions if e.role == "on")

    def hparam_sources(self) -> dict[str, list[str]]:
        """Hyperparameter name -> the functions that declare it."""
        return hparam_sources(self.hparams_model)

    # -- changing and checking ---------------------------------------------------------------

    def with_hparams(self, **overrides: Any) -> TrainingSpec:
        """A new spec with some hyperparameters changed, validated by pydantic.

        Raises:
            SpecError: a name is not a hyperparameter (the known ones are listed).
            HparamError: a value does not fit its type or constraints; a ``SpecError``
                (``bad-hparam-value``) and pydantic's ``ValidationError`` naming the field.
        """
        _check_names(overrides, self.hparams_model)
        values = {**dict(self.hparams), **overrides}
        try:
            hparams = self.hparams_model.model_validate(values)
        except ValidationError as exc:
            raise HparamError.of(exc).name_sources(self.hparam_sources()) from None
        new = self.model_copy(update={"hparams": hparams})
        return new

    def require(self, entry_point: str) -> None:
        """Raise a ``SpecError`` listing every role ``entry_point`` needs that is missing."""
        needs = ENTRY_POINT_NEEDS[entry_point]
        have = {e.role for e in self.functions}
        missing = [r for r in needs if r not in have]
        if missing:
            listed = ", ".join(f"@lk.{r}" for r in missing)
            running, left_out = self._left_out
            why = ""
            if any(e.role in missing for e in left_out):
                from lightkit.spec.collect import left_out_note

                why = " " + left_out_note(running, [e for e in left_out if e.role in missing])
            raise SpecError(
                f"trainer.{entry_point}() needs {listed}, which the spec does not have. "
                f"Define {'them' if len(missing) > 1 else 'it'} in a collected module "
                f"(the spec has: {sorted_list(have) if have else 'nothing'}).{why}",
                code="missing-role",
            )

    def describe(self) -> str:
        """A readable multi-line summary: roles, functions, hyperparameters."""
        lines = ["TrainingSpec"]
        for plan in self._plans:
            label = f"on({plan.event})" if plan.role == "on" else plan.role
            if plan.role == "model":
                label = f"model '{plan.name}'"
            extra = " [manual]" if plan.manual else ""
            lines.append(f"  {label:<28} {function_ref(plan.fn)}{extra}")
        lines.append("  hyperparameters:")
        sources = self.hparam_sources()
        fields = self.hparams_model.model_fields
        if not fields:
            lines.append("    (none)")
        for name, field in fields.items():
            used = ", ".join(source_name(s) for s in sources.get(name, []))
            lines.append(
                f"    {name}: {type_name(field.annotation)} = {getattr(self.hparams, name)!r}"
                f"  (used by {used})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """A spec as a notebook cell's last line: the table ``print(spec)`` shows."""
        printer.text("TrainingSpec(...)" if cycle else self.describe())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainingSpec):
            return NotImplemented
        return self.functions == other.functions and self.hparams == other.hparams

    def __hash__(self) -> int:
        return hash((self.functions, self.hparams))

    def __reduce__(self) -> tuple[Any, ...]:
        # The hyperparameter model is built at run time, so pickle cannot find it by name: the
        # hparams travel with their fields (Hparams.__reduce__), the analysis with them. It
        # is not redone on the other side, where a script's functions may lack the globals
        # their string annotations name (cloudpickle sends only what the bodies use).
        return (_rebuild_spec, (self.functions, self.hparams, self._plans))


def _rebuild_spec(
    functions: tuple[SpecEntry, ...], hparams: Hparams, plans: tuple[FunctionPlan, ...]
) -> TrainingSpec:
    return TrainingSpec._analysed(functions, plans, type(hparams), hparams)


class HparamError(AlsoValidationError, SpecError, ValidationError):
    """Hyperparameter values refused by their types or constraints: a :class:`SpecError`
    (``bad-hparam-value``) and pydantic's ``ValidationError`` (``errors()`` names each)."""

    default_code = "bad-hparam-value"
    cause_codes = False

    def _described(self) -> None:
        #: Hyperparameter name -> the functions that declare it (set by ``name_sources``).
        self.sources: dict[str, list[str]] = {}
        self.problems = [
            Problem(self.code, f"{'.'.join(map(str, e['loc'])) or 'hparams'}: {e['msg']}")
            for e in self.errors()
        ]

    def name_sources(self, sources: dict[str, list[str]]) -> HparamError:
        """Say, in each problem, which functions declare the hyperparameter and the fix."""
        self.sources = {name: list(where) for name, where in sources.items()}
        for problem, name in zip(self.problems, self._names(), strict=True):
            if name in sources:
                problem.message += f" ({self._declared(name)})"
        return self

    def _names(self) -> list[str]:
        return [str(e["loc"][0]) if e["loc"] else "" for e in self.errors()]

    def _declared(self, name: str) -> str:
        where = ", ".join(self.sources[name])
        return f"{name!r} is declared by {where}; give a value its annotation accepts"

    def __str__(self) -> str:
        # pydantic's report (what a ValidationError prints), then where each name is declared.
        names = [n for n in dict.fromkeys(self._names()) if n in self.sources]
        return super().__str__() + "".join(f"\n{self._declared(n)}." for n in names)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_hparam_error, (self.title, self.errors(), self.code, self.sources))


def _hparam_error(title: str, errors: Any, code: str, sources: dict[str, list[str]]) -> HparamError:
    return HparamError._made(title, errors, code).name_sources(sources)


def _from_cells(entries: Sequence[SpecEntry]) -> bool:
    """Whether ``entries`` are functions of ``__main__`` compiled apart (notebook cells)."""
    files = set()
    for e in entries:
        code = getattr(e.fn, "__code__", None)
        if getattr(e.fn, "__module__", None) != "__main__" or code is None:
            return False
        files.add(code.co_filename)
    return len(files) > 1


def _check_names(values: Mapping[str, Any], model: type[Hparams]) -> None:
    """``unknown-hparam`` for a name no function declares, with the near ones."""
    known = model.model_fields
    unknown = [k for k in values if k not in known]
    if unknown:
        raise SpecError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}.{did_you_mean(unknown[0], known)} "
            f"Known hyperparameters: {sorted_list(known)}.",
            code="unknown-hparam",
        )


class _HparamsRefused(SpecError):
    """Hyperparameter values refused while a spec validates: a ``SpecError``
    (``bad-hparam-value``) that pydantic wraps as it wraps any validator's error, where an
    :class:`HparamError` would be merged into pydantic's own. ``model_validate*`` unwrap it
    into the ``HparamError`` it carries; ``TrainingSpec(...)`` raises it as it is."""

    def __init__(self, refused: HparamError) -> None:
        self.refused = refused
        super().__init__(refused.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_HparamsRefused, (self.refused,))


def _unwrap_spec_errors(exc: ValidationError, *, validating: bool = True) -> Exception:
    """The ``SpecError`` behind a validation error (pydantic wraps every ``ValueError`` raised
    in a validator, ours included), or ``exc`` itself when it has other causes too.
    ``validating``: called from ``model_validate*``, where refused hyperparameters become an
    :class:`HparamError`. ``__init__`` keeps them a ``SpecError``: ``model_validate`` runs it
    inside pydantic's validation, which would merge an ``HparamError`` into its own error."""
    errors = [e.get("ctx", {}).get("error") for e in exc.errors()]
    spec_errors = [e for e in errors if isinstance(e, SpecError)]
    if not spec_errors or len(spec_errors) < len(errors):
        return exc
    if len(spec_errors) == 1:
        found = spec_errors[0]
        if isinstance(found, _HparamsRefused) and validating:
            return found.refused
        return found
    return SpecError([p for e in spec_errors for p in e.problems])


def source_files(entries: Sequence[SpecEntry], problems: Sequence[Problem] = ()) -> str:
    """The files that define ``entries``, for the head of an error message: those of the
    functions the ``problems`` name, when they name any."""
    named = [e for e in entries if any(describe_function(e.fn) in p.message for p in problems)]
    return ", ".join(sorted({file_label(e.fn) for e in named or entries}))
