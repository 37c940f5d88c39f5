"""Command-line flags: one per hyperparameter (from the spec's pydantic model) and one per
``TrainerConfig`` field, with their types, choices and help."""

from __future__ import annotations

import enum
import json
import os
import sys
import types
import typing
from typing import Any

from lightkit.errors import ConfigError
from lightkit.utils.config_file import build_object

COMMANDS: dict[str, str] = {
    "fit": "train the spec",
    "validate": "run the validation step over the validation data once",
    "test": "run the test step over the test data once",
    "predict": "run the predict step over the predict data",
    "spec": "print the validated spec as JSON (exit 1 listing every problem if invalid)",
    "hparams": "list the hyperparameters: name, type, default, used by",
    "explain": "print the compiled schedule of a run: every event in order, and who runs there",
    "plot": "draw a run's metrics.csv as a PNG",
}
RUN_COMMANDS = ("fit", "validate", "test", "predict")
TRAINER_COMMANDS = (*RUN_COMMANDS, "explain")
TARGET_HELP = (
    "TARGET is a .py file (examples/digits.py) or an importable module (examples.digits);\n"
    "`module:name` names an lk.Registry in it. Several targets are collected together."
)
NONE_WORDS = ("none", "null")
#: The words a boolean flag takes as a value (``--enable-progress-bar false``), any case.
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
BOOL_HELP = (
    "A boolean flag is given as --FLAG or --no-FLAG, or with a value: --FLAG true|false\n"
    "(also 1|0, yes|no)."
)

# Trainer fields typed `Any` (or too loosely for a useful metavar): what a flag takes.
_TRAINER_METAVARS = {
    "strategy": "NAME",
    "precision": "PRECISION",
    "logger": "BOOL|csv|tensorboard|module:Class",
    "callbacks": "module:Class",
    "max_time": "SECONDS|DD:HH:MM:SS",
    "devices": "N|auto|0,1",
    "compile": "BOOL|JSON",
    "default_root_dir": "DIR",
    "deterministic": "BOOL|warn",
}
_TRAINER_TYPES = {
    "strategy": "auto, single_device, ddp or fsdp",
    "precision": "32-true, 64-true, 16-mixed, bf16-mixed, 16-true or bf16-true",
    "logger": "true, false, csv, tensorboard, or module:Class",
    "callbacks": "module:Class references",
    "max_time": "seconds or DD:HH:MM:SS",
    "compile": "a bool or a JSON object of torch.compile arguments",
    "deterministic": "true, false or warn",
    "default_root_dir": "a folder",
}


class UsageError(Exception):
    """A bad command line or config file: exit status 2."""


class TargetError(Exception):
    """A target that cannot be imported: exit status 1."""


class _BadValue(Exception):
    """A value a flag or config key cannot take; the caller adds where it came from."""


def _rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _out(text: str) -> None:
    if _rank_zero():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


# -- types -----------------------------------------------------------------------------------


def _strip(annotation: Any) -> tuple[Any, bool]:
    """``(annotation without Optional/Annotated, whether None is allowed)``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        args = [a for a in members if a is not type(None)]
        allows_none = len(args) < len(members)
        if len(args) == 1:
            return _strip(args[0])[0], allows_none
        return typing.Union[tuple(args)], allows_none
    return annotation, annotation is Any or annotation is None


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (list, tuple, set, frozenset) or annotation in (
        list,
        tuple,
        set,
        frozenset,
    )


def _choices(annotation: Any) -> dict[str, Any] | None:
    """Text -> value for a ``Literal`` or an ``Enum``; ``None`` for other types."""
    if typing.get_origin(annotation) is typing.Literal:
        return {str(v): v for v in typing.get_args(annotation)}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {str(m.value): m for m in annotation}
    return None


def _type_text(annotation: Any) -> str:
    from lightkit.spec.hparams import type_name

    if annotation is Any:
        return "any value"
    text = type_name(annotation)
    return text.replace("NoneType", "None")


class Flag:
    """One generated flag: a hyperparameter or a trainer field."""

    def __init__(
        self,
        section: str,
        name: str,
        option: str,
        annotation: Any,
        default: Any,
        description: str | None,
        extra: str = "",
        type_text: str | None = None,
        metavar: str | None = None,
    ) -> None:
        self.section, self.name, self.option = section, name, option
        self.annotation, self.default = annotation, default
        base, self.allows_none = _strip(annotation)
        self.base = base
        self.choices = _choices(base)
        if base is bool:  # --flag, --no-flag, --flag true|false (|none where None is allowed)
            self.kind = "bool"
        elif self.choices is not None:
            self.kind = "choice"
        elif _is_list(base) or (section == "trainer" and name == "callbacks"):
            self.kind = "list"
        else:
            self.kind = "value"
        if type_text is None and self.choices is not None:
            names = [*self.choices, *(["none"] if self.allows_none else [])]
            type_text = "one of " + ", ".join(names)
        self.type_text = type_text or _type_text(annotation)
        self.description = description or ""
        self.extra = extra
        self.metavar = metavar or self._metavar()

    @property
    def dest(self) -> str:
        return f"{self.section}.{self.name}"

    def _metavar(self) -> str:
        if self.choices is not None:
            names = list(self.choices) + (["none"] if self.allows_none else [])
            return "{" + ",".join(names) + "}"
        base = self.base
        if self.kind == "list":
            args = [a for a in typing.get_args(base) if a is not Ellipsis]
            base = args[0] if len(args) == 1 or (args and all(a == args[0] for a in args)) else str
        members = [m for m in _union_args(base) if m is not type(None)]
        names = [m.__name__ for m in members if isinstance(m, type)]
        metavar = "|".join(n.upper() for n in names) if len(names) == len(members) else "VALUE"
        return f"{metavar}|none" if self.allows_none and self.kind != "list" else metavar

    def help(self) -> str:
        default = self.default
        if isinstance(default, enum.Enum):
            default = default.value
        parts = [self.type_text, f"default: {default!r}"]
        if self.extra:
            parts.append(self.extra)
        text = (self.description.rstrip(".") + ". " if self.description else "") + (
            "[" + "; ".join(parts) + "]"
        )
        return text.replace("%", "%%")

    # -- values ----------------------------------------------------------------------------
    def from_text(self, raw: Any) -> Any:
        """A flag's text (a list of texts for list flags) as a value for pydantic to check."""
        if self.kind == "list":
            tokens = list(raw)
            if len(tokens) == 1 and tokens[0].strip()[:1] == "[":
                return _json(tokens[0])
            if len(tokens) == 1 and tokens[0].strip().lower() in NONE_WORDS and self.allows_none:
                return None
            if self.section == "trainer" and self.name == "callbacks":
                return [_json(t) if t.strip()[:1] == "{" else t for t in tokens]
            return tokens
        return self.from_file(raw)

    def from_file(self, value: Any) -> Any:
        """A value read from a config file (or a flag's text) made ready for pydantic."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in NONE_WORDS and self.allows_none:
            return None
        if self.choices is not None:
            if text in self.choices:
                return self.choices[text]
            for choice in self.choices.values():  # an enum member by name
                if isinstance(choice, enum.Enum) and choice.name.lower() == text.lower():
                    return choice
            raise _BadValue("not one of the choices")
        if self.base is str:
            return value
        members = _union_args(self.base)
        if self.base is Any or text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                return value
        if any(m in (int, float) for m in members) and len(members) > 1:
            try:
                number = json.loads(text)
            except ValueError:
                return value
            return number if isinstance(number, (int, float)) else value
        return value


def parse_bool(text: str) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no`` (any case) as a bool."""
    try:
        return BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise _BadValue("expected true, false, 1, 0, yes or no") from None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _BadValue(f"not valid JSON ({exc})") from None


def hparam_flags(spec: Any, taken: set[str]) -> list[Flag]:
    """A flag per hyperparameter; one whose name a trainer or CLI flag has, or the ``--no-X``
    of a bool hyperparameter ``X`` (``no_bias`` beside ``bias``), is ``--hparams.X``."""
    from lightkit.spec.hparams import source_name

    sources = spec.hparam_sources()
    flags = []
    for name, field in spec.hparams_model.model_fields.items():
        used = ", ".join(source_name(s) for s in sources.get(name, []))
        flags.append(
            Flag(
                "hparams",
                name,
                "--" + name.replace("_", "-"),
                field.annotation,
                getattr(spec.hparams, name),
                field.description,
                extra=f"used by {used}" if used else "",
            )
        )
    negatives = {"--no-" + f.option[2:] for f in flags if f.kind == "bool"}
    for flag in flags:
        if flag.option in taken or flag.option in negatives:
            flag.option = "--hparams." + flag.name.replace("_", "-")
    return flags


def trainer_flags() -> list[Flag]:
    """A flag per ``TrainerConfig`` field."""
    from lightkit.engine.config import TrainerConfig

    flags = []
    for name, field in TrainerConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        flags.append(
            Flag(
                "trainer",
                name,
                "--" + name.replace("_", "-"),
                field.annotation,
                default,
                field.description,
                type_text=_TRAINER_TYPES.get(name),
                metavar=_TRAINER_METAVARS.get(name),
            )
        )
    return flags


# -- references to classes (callbacks, loggers) ----------------------------------------------


def _with_code(text: str, code: str | None) -> str:
    """``text [code]`` for an error that has a lightkit code, as the CLI prints every one."""
    return f"{text} [{code}]" if code else text


def instantiate(ref: Any, kind: str) -> Any:
    """Build the object a reference names (see :func:`build_object`)."""
    try:
        return build_object(ref, kind)
    except ConfigError as exc:
        raise _BadValue(_with_code(str(exc), exc.code)) from None


def _build_objects(flag: Flag, value: Any, refs: dict[int, Any]) -> Any:
    """Callbacks and loggers given by reference become instances; ``refs`` remembers each
    instance's reference for ``--print-config``."""
    if flag.name == "callbacks":
        items = value if isinstance(value, list) else [value]
        built = []
        for ref in items:
            obj = instantiate(ref, "callbacks")
            refs[id(obj)] = ref
            built.append(obj)
        return built
    if flag.name == "logger" and not isinstance(value, bool) and value is not None:
        items = value if isinstance(value, list) else [value]
        built = []
        for ref in items:
            obj = instantiate(ref, "logger")
            refs[id(obj)] = ref
            built.append(obj)
        return built if isinstance(value, list) else built[0]
    return value
