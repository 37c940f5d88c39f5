"""The ``lightkit`` command line.

::

    lightkit fit examples/digits.py --lr 3e-4 --max-epochs 5 --devices 2
    lightkit fit --config lightkit_logs/digits/version_0/config.toml --max-epochs 10
    lightkit explain examples.digits --accumulate-grad-batches 2
    lightkit spec examples/digits.py            # the validated spec as JSON
    lightkit hparams examples/digits.py         # name, type, default, used by
    lightkit plot lightkit_logs/digits/version_0

A TARGET is a ``.py`` file or an importable module name (``module:registry`` names an explicit
``lk.Registry``); several targets are collected together, as ``lk.collect`` does.

Parsing has two phases: the targets are imported and collected first, so the hyperparameter
flags can be generated from the spec's pydantic model; then every flag (hyperparameters and
``TrainerConfig``) is parsed and validated before anything is built. Precedence: defaults <
``--config`` file < flags. A usage error (unknown flag, wrong type, bad config file) exits with
status 2; a target that cannot be imported, an invalid spec or a failed run exits with 1. No
traceback is printed unless ``--traceback`` is given.

From Python, ``lk.cli.main(["fit", "examples.digits", "--max-epochs", "1"])`` returns the exit
code.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import traceback
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "main"]

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
_SHORT_NAMES = {
    "logger": {
        "csv": "lightkit.loggers:CSVLogger",
        "tensorboard": "lightkit.loggers:TensorBoardLogger",
    },
    "callbacks": {},  # bare names are looked up in lightkit.callbacks
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
        if base is bool and not self.allows_none:
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


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _BadValue(f"not valid JSON ({exc})") from None


def hparam_flags(spec: Any, taken: set[str]) -> list[Flag]:
    """A flag per hyperparameter; one whose name a trainer or CLI flag has is ``--hparams.X``."""
    sources = spec.hparam_sources()
    flags = []
    for name, field in spec.hparams_model.model_fields.items():
        option = "--" + name.replace("_", "-")
        if option in taken:
            option = "--hparams." + name.replace("_", "-")
        used = ", ".join(s.split("(")[0] for s in sources.get(name, []))
        flags.append(
            Flag(
                "hparams",
                name,
                option,
                field.annotation,
                getattr(spec.hparams, name),
                field.description,
                extra=f"used by {used}" if used else "",
            )
        )
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


def instantiate(ref: Any, kind: str) -> Any:
    """Build the object a reference names: ``"module:Class"``, ``"Class(arg=1)"`` (a bare name
    is looked up in ``lightkit.callbacks``/``lightkit.loggers``), or ``{"class_path": ...,
    "init_args": {...}}``."""
    import ast
    import importlib

    if isinstance(ref, Mapping):
        if "class_path" not in ref:
            raise _BadValue(f"{dict(ref)!r} has no 'class_path'")
        path, kwargs = str(ref["class_path"]), dict(ref.get("init_args") or {})
    elif isinstance(ref, str):
        path, kwargs = ref.strip(), {}
        if path.endswith(")") and "(" in path:
            path, _, args = path.partition("(")
            try:
                call = ast.parse(f"f({args}", mode="eval").body
                assert isinstance(call, ast.Call) and not call.args
                kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            except (SyntaxError, ValueError, AssertionError):
                raise _BadValue(
                    f"{ref!r}: arguments must be keyword=literal pairs, e.g. "
                    f"EarlyStopping(monitor='val/loss', patience=3)"
                ) from None
    else:
        raise _BadValue(f"{ref!r} is not a class reference")
    path = _SHORT_NAMES.get(kind, {}).get(path.lower(), path)
    module_name, _, qualname = path.rpartition(":")
    if not module_name:
        module_name, qualname = (
            ("lightkit.loggers" if kind == "logger" else "lightkit.callbacks"),
            path,
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise _BadValue(f"cannot import {path!r}: {exc}") from None
    try:
        return obj(**kwargs)
    except Exception as exc:
        raise _BadValue(f"{path}(**{kwargs!r}) raised {type(exc).__name__}: {exc}") from None


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


# -- phase 1: targets and the config file ----------------------------------------------------


def _split_targets(args: list[str]) -> tuple[list[str], list[str]]:
    """The leading arguments that are not flags are the targets."""
    i = 0
    while i < len(args) and not args[i].startswith("-"):
        i += 1
    return args[:i], args[i:]


def _normalize(args: list[str]) -> list[str]:
    """``--max_epochs=3`` -> ``--max-epochs=3``: both spellings work."""
    out = []
    for a in args:
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a.partition("=")
            a = name.replace("_", "-") + eq + value
        out.append(a)
    return out


def _prescan(args: list[str]) -> tuple[str | None, bool]:
    """``--config`` and whether help was asked for, before the full parser exists."""
    config = None
    for i, a in enumerate(args):
        if a == "--config":
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise UsageError("argument --config: expected a file path")
            config = args[i + 1]
        elif a.startswith("--config="):
            config = a.partition("=")[2]
    return config, any(a in ("-h", "--help") for a in args)


def collect_targets(targets: Sequence[str]) -> Any:
    """Import each target and collect them into one spec."""
    import lightkit as lk
    from lightkit.utils.imports import import_target

    sources = []
    for target in targets:
        name, attr = target, ""
        if ":" in target and not (len(target) > 1 and target[1] == ":"):  # not C:\...
            name, _, attr = target.partition(":")
        module = _import(name, target, import_target)
        if attr:
            try:
                sources.append(getattr(module, attr))
            except AttributeError:
                raise TargetError(
                    f"cannot collect {target!r}: module {module.__name__!r} has no {attr!r}."
                ) from None
        else:
            sources.append(module)
    return lk.collect(*sources)


def _import(name: str, target: str, import_target: Any) -> Any:
    try:
        return import_target(name)
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else target
        line = f"\n    {exc.text.strip()}" if exc.text else ""
        raise TargetError(
            f"cannot import {target!r}: syntax error at {where}: {exc.msg}.{line}"
        ) from None
    except FileNotFoundError:
        raise TargetError(
            f"no such file: {name}. A TARGET is a .py file path or an importable module name "
            f"(examples/digits.py or examples.digits)."
        ) from None
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise TargetError(
                f"cannot import {target!r}: there is no module named {missing!r}. A TARGET is "
                f"a .py file path or an importable module name; run from the folder it is "
                f"importable from, or add that folder to PYTHONPATH."
            ) from None
        raise TargetError(
            f"importing {target!r} failed: it imports {missing!r}, which is not installed ({exc})."
        ) from None
    except ImportError as exc:
        raise TargetError(f"importing {target!r} failed: {exc}") from None
    except Exception as exc:
        raise TargetError(
            f"importing {target!r} raised {type(exc).__name__}: {exc}{_user_frame(exc)}"
        ) from exc


# -- phase 2: the full parser ----------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=40, width=100)


def _parser(command: str, hflags: list[Flag], tflags: list[Flag], has_target: bool) -> Any:
    target = "TARGET [TARGET ...] " if command not in ("plot",) else ""
    parser = argparse.ArgumentParser(
        prog=f"lightkit {command}",
        usage=f"lightkit {command} {target}[flags]",
        description=f"lightkit {command}: {COMMANDS[command]}.\n\n{TARGET_HELP}",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="a .toml, .json or .yaml file setting any flag below; flags given here win",
    )
    run.add_argument(
        "--print-config",
        nargs="?",
        const="",
        metavar="FORMAT",
        choices=["", "toml", "json", "yaml"],
        help="print the full effective config (toml, json or yaml; default: the --config "
        "file's format, else toml) and exit",
    )
    run.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    if command in TRAINER_COMMANDS:
        run.add_argument(
            "--ckpt-path",
            metavar="PATH",
            help="a checkpoint to start from: a path, 'last' or 'best'",
        )
    if command == "explain":
        run.add_argument(
            "--stage",
            choices=["fit", "validate", "test", "predict"],
            default="fit",
            help="the entry point to explain (default: fit)",
        )
        run.add_argument(
            "--format", choices=["text", "json"], default="text", help="text (default) or json"
        )
    if command == "predict":
        run.add_argument(
            "--output", metavar="FILE", help="save the predictions with torch.save to FILE"
        )
    if command == "hparams":
        run.add_argument(
            "--format", choices=["table", "json"], default="table", help="table or json"
        )
    if hflags or not has_target:
        group = parser.add_argument_group(
            "hyperparameters (from TARGET)",
            None if has_target else "give a TARGET to see its hyperparameter flags",
        )
        for flag in hflags:
            _add(group, flag)
    if tflags:
        group = parser.add_argument_group("trainer (lk.TrainerConfig)")
        for flag in tflags:
            _add(group, flag)
    return parser


def _add(group: Any, flag: Flag) -> None:
    kwargs: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS, "help": flag.help()}
    if flag.kind == "bool":
        group.add_argument(flag.option, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if flag.kind == "list":
        kwargs["nargs"] = "*"
    group.add_argument(flag.option, metavar=flag.metavar, **kwargs)


def _check(flag: Flag, value: Any, spec: Any, base: dict[str, Any], refs: dict[int, Any]) -> Any:
    """The validated value of one flag, checked alone (its field's type and constraints)."""
    from pydantic import ValidationError

    from lightkit.engine.config import TrainerConfig

    try:
        if flag.section == "trainer":
            value = _build_objects(flag, value, refs)
            return getattr(TrainerConfig.model_validate({flag.name: value}), flag.name)
        return getattr(spec.hparams_model.model_validate({**base, flag.name: value}), flag.name)
    except ValidationError as exc:
        mine = [e for e in exc.errors() if not e["loc"] or e["loc"][0] == flag.name]
        raise _BadValue(_pydantic_text((mine or exc.errors())[0]["msg"])) from None
    except Exception as exc:  # a field validator's own error (an unknown strategy, ...)
        if isinstance(exc, _BadValue):
            raise
        raise _BadValue(str(exc)) from None


def _file_items(
    data: Mapping[str, Any], path: str, by_section: dict[str, dict[str, Flag]]
) -> list[tuple[Flag, Any]]:
    """The (flag, value) pairs a config file sets: in ``[hparams]``/``[trainer]`` tables, or
    flat when a name is unambiguous."""
    from lightkit.errors import did_you_mean

    items: list[tuple[Flag, Any]] = []
    known = {**by_section["hparams"], **by_section["trainer"]}

    def unknown(key: str, where: str, choices: Mapping[str, Any]) -> UsageError:
        return UsageError(
            f"{path}: unknown key {key!r}{where}.{did_you_mean(key, choices)} Known keys: "
            f"{', '.join(sorted(choices)) or '(none)'}."
        )

    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in ("target", "ckpt_path"):
            continue
        if key in ("hparams", "trainer") and isinstance(value, Mapping):
            for raw_inner, inner in value.items():
                name = str(raw_inner).replace("-", "_")
                flag = by_section[key].get(name)
                if flag is None:
                    raise unknown(name, f" in [{key}]", by_section[key])
                items.append((flag, inner))
            continue
        hp, tr = by_section["hparams"].get(key), by_section["trainer"].get(key)
        if hp is not None and tr is not None:
            raise UsageError(
                f"{path}: {key!r} is both a hyperparameter and a trainer flag; put it in an "
                f"[hparams] or a [trainer] table."
            )
        flag = hp or tr
        if flag is None:
            raise unknown(key, "", {**known, "target": 0, "ckpt_path": 0})
        items.append((flag, value))
    return items


class Parsed:
    """The outcome of parsing: the spec with its hyperparameters set, the trainer config, and
    what else the command asked for."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.spec: Any = None
        self.config: Any = None
        self.args: argparse.Namespace = argparse.Namespace()
        self.file_format: str | None = None
        self.ckpt_path: Any = None
        self.refs: dict[int, Any] = {}


def parse(command: str, args: list[str]) -> Parsed:
    """Both phases: targets and config file, then every flag, all validated."""
    from pydantic import ValidationError

    from lightkit.engine.config import TrainerConfig
    from lightkit.utils.config_file import format_of, read_config

    out = Parsed()
    targets, rest = _split_targets(args)
    rest = _normalize(rest)
    config_path, wants_help = _prescan(rest)
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = read_config(config_path)
            out.file_format = format_of(config_path)
        except Exception as exc:
            raise UsageError(str(exc)) from None
    if not targets and "target" in data:
        found = data["target"]
        targets = [found] if isinstance(found, str) else [str(t) for t in found]
    out.targets = targets
    tflags = trainer_flags() if command in TRAINER_COMMANDS else []
    if not targets:
        if wants_help:
            _parser(command, [], tflags, has_target=False).parse_args(rest)
        raise UsageError(
            f"{command} needs a TARGET: a .py file or an importable module "
            f"(lightkit {command} examples/digits.py), or a --config file with target = [...]."
        )
    spec = collect_targets(targets)
    taken = {f.option for f in tflags} | {
        "--config", "--print-config", "--traceback", "--ckpt-path", "--stage", "--format",
        "--output", "--help",
    }  # fmt: skip
    hflags = hparam_flags(spec, taken)
    parser = _parser(command, hflags, tflags, has_target=True)
    ns, unknown = parser.parse_known_args(rest)
    if unknown:
        parser.error(_unknown_message(unknown, parser, command))
    out.args = ns
    # A config file's trainer keys are known to every command (one file serves them all).
    known_trainer = tflags or trainer_flags()
    by_section = {
        "hparams": {f.name: f for f in hflags},
        "trainer": {f.name: f for f in known_trainer},
    }
    by_dest = {f.dest: f for f in hflags + tflags}
    base = spec.hparams.as_dict()
    hp: dict[str, Any] = {}
    tr: dict[str, Any] = {}

    for flag, value in _file_items(data, config_path or "", by_section):
        if flag.section == "trainer" and not tflags:
            continue
        try:
            checked = _check(flag, flag.from_file(value), spec, base, out.refs)
        except _BadValue as exc:
            raise UsageError(
                f"{config_path}: [{flag.section}] {flag.name}: expected {flag.type_text}, got "
                f"{value!r}: {exc}"
            ) from None
        (hp if flag.section == "hparams" else tr)[flag.name] = checked
    for dest, value in vars(ns).items():
        if dest not in by_dest:
            continue
        flag = by_dest[dest]
        try:
            checked = _check(flag, flag.from_text(value), spec, base, out.refs)
        except _BadValue as exc:
            shown = " ".join(value) if isinstance(value, list) else value
            parser.error(f"argument {flag.option}: expected {flag.type_text}, got {shown!r}: {exc}")
        (hp if flag.section == "hparams" else tr)[flag.name] = checked

    try:
        out.spec = spec.with_hparams(**hp)
    except ValidationError as exc:
        parser.error(_pydantic_message(exc, by_section["hparams"], "hyperparameters"))
    if command in TRAINER_COMMANDS:
        try:
            out.config = TrainerConfig(**tr)
        except ValidationError as exc:
            parser.error(_pydantic_message(exc, by_section["trainer"], "trainer flags"))
    ckpt = getattr(ns, "ckpt_path", None)
    out.ckpt_path = ckpt if ckpt is not None else data.get("ckpt_path", data.get("ckpt-path"))
    return out


def _unknown_message(unknown: list[str], parser: Any, command: str) -> str:
    from lightkit.errors import did_you_mean

    options = [o for a in parser._actions for o in a.option_strings]
    flags = [u.partition("=")[0] for u in unknown if u.startswith("-")]
    if not flags:
        return (
            f"unexpected argument {unknown[0]!r}: TARGETs come first, right after the "
            f"command (lightkit {command} TARGET [TARGET ...] [flags])."
        )
    first = flags[0]
    return (
        f"unknown flag{'s' if len(flags) > 1 else ''} {', '.join(flags)}."
        f"{did_you_mean(first, options)} `lightkit {command} TARGET --help` lists every flag."
    )


def _pydantic_text(msg: str) -> str:
    """pydantic's message without the ``Value error, `` it puts before a validator's text."""
    return msg.removeprefix("Value error, ")


def _pydantic_message(exc: Any, flags: Mapping[str, Flag], what: str) -> str:
    parts = []
    for e in exc.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        label = f"argument {flags[name].option}" if name in flags else f"the {what} conflict"
        parts.append(f"{label}: {_pydantic_text(e['msg'])}")
    return "; ".join(parts)


# -- the commands ----------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _metrics_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "(no metrics logged)"
    return _table([[k, f"{v:.6g}"] for k, v in sorted(metrics.items())], ["metric", "value"])


def _print_config(parsed: Parsed, fmt: str) -> None:
    from lightkit.engine.config import TrainerConfig
    from lightkit.utils.config_file import RUN_FILE_HEADER, dumps, run_config, to_toml

    fmt = fmt or parsed.file_format or "toml"
    config = parsed.config if parsed.config is not None else TrainerConfig()
    data = run_config(parsed.spec, config, parsed.targets, parsed.ckpt_path, parsed.refs)
    if fmt == "toml":
        _out(to_toml(data, header=RUN_FILE_HEADER.format(name="<this file>")))
    else:
        _out(dumps(data, fmt))


def _run_command(command: str, parsed: Parsed) -> int:
    import lightkit as lk

    spec, config, ns = parsed.spec, parsed.config, parsed.args
    if command == "spec":
        _out(spec.model_dump_json(indent=2))
        return 0
    if command == "hparams":
        return _hparams(spec, ns.format)
    if command == "explain":
        from lightkit.engine.schedule import explain

        schedule = explain(spec, config, ns.stage, parsed.ckpt_path)
        _out(schedule.to_json() if ns.format == "json" else schedule.render())
        return 0
    _check_devices(config)
    trainer = lk.Trainer(config)
    if command == "predict":
        predictions = trainer.predict(spec, parsed.ckpt_path)
        if ns.output:
            import torch

            torch.save(predictions, ns.output)
            _out(f"predictions of {len(predictions)} batches saved to {ns.output}")
        else:
            _out(f"predicted {len(predictions)} batches (--output FILE saves them)")
        return 0
    result = getattr(trainer, command)(spec, parsed.ckpt_path)
    lines = []
    if result.log_dir is not None:
        lines.append(f"run folder: {result.log_dir}")
    if command == "fit":
        lines.append(
            f"stopped by {result.stopped_by} after {result.epoch} epoch(s), "
            f"{result.global_step} step(s)"
        )
        if result.best_checkpoint is not None:
            lines.append(f"best checkpoint: {result.best_checkpoint}")
        if result.last_checkpoint is not None:
            lines.append(f"last checkpoint: {result.last_checkpoint}")
    lines.append(_metrics_table(result.metrics))
    _out("\n".join(lines))
    return 0


def _check_devices(config: Any) -> None:
    """Resolve accelerator/devices/strategy/precision now: an impossible combination is a
    usage error, found before anything is built."""
    from lightkit.errors import ConfigError
    from lightkit.runtime.connector import connect

    try:
        connect(
            config.accelerator, config.devices, config.strategy, config.precision, config.num_nodes
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _hparams(spec: Any, fmt: str) -> int:
    from lightkit.utils.config_file import plain_value

    sources = spec.hparam_sources()
    model = spec.hparams_model
    rows = []
    data = []
    for name, field in model.model_fields.items():
        used = [s.split("(")[0] for s in sources.get(name, [])]
        value = getattr(spec.hparams, name)
        default = field.get_default(call_default_factory=True)
        shown = value.value if isinstance(value, enum.Enum) else value
        rows.append([name, _type_text(field.annotation), repr(shown), ", ".join(used)])
        data.append(
            {
                "name": name,
                "type": _type_text(field.annotation),
                "default": plain_value(default),
                "value": plain_value(value),
                "used_by": used,
                "description": field.description,
            }
        )
    if fmt == "json":
        _out(json.dumps(data, indent=2, default=repr))
    elif not rows:
        _out("(no hyperparameters)")
    else:
        _out(_table(rows, ["name", "type", "default", "used by"]))
    return 0


def _plot(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightkit plot",
        description=f"lightkit plot: {COMMANDS['plot']}.",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or a metrics.csv")
    parser.add_argument("--output", metavar="PNG", help="where to write (default: next to it)")
    parser.add_argument("--metrics", nargs="+", metavar="NAME", help="only these metrics")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback")
    ns = parser.parse_args(_normalize(args))
    try:
        from lightkit.plot import plot_metrics
    except ImportError as exc:
        raise TargetError(f"plotting is not available: {exc}") from None
    path = plot_metrics(ns.run_dir, output=ns.output, metrics=ns.metrics)
    _out(str(path))
    return 0


def _top_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: lightkit COMMAND TARGET [TARGET ...] [flags]",
        "",
        "lightkit's command line: train, evaluate, inspect and explain a training spec.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        TARGET_HELP,
        "`lightkit COMMAND TARGET --help` lists every flag, TARGET's hyperparameters included.",
    ]
    return "\n".join(lines) + "\n"


def _dispatch(args: list[str]) -> int:
    import lightkit

    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(_top_help())
        return 0 if args else 2
    if args[0] == "--version":
        _out(f"lightkit {lightkit.__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        from lightkit.errors import did_you_mean

        hint = did_you_mean(command, COMMANDS)
        raise UsageError(
            f"unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}. "
            f"`lightkit --help` says more."
        )
    if command == "plot":
        return _plot(rest)
    parsed = parse(command, rest)
    if parsed.args.print_config is not None:
        _print_config(parsed, parsed.args.print_config)
        return 0
    return _run_command(command, parsed)


# -- errors ----------------------------------------------------------------------------------


def _user_frame(exc: BaseException) -> str:
    """`` (in train at examples/x.py:12)``: the innermost frame outside lightkit and torch."""
    import lightkit

    skip: tuple[str, ...] = (
        str(Path(lightkit.__file__).parent),
        str(Path(typing.__file__).parent),
    )
    try:
        import torch

        skip = (*skip, str(Path(torch.__file__).parent))
    except ImportError:
        pass
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            path = frame.filename
            try:
                rel = os.path.relpath(path)
                path = path if rel.startswith("..") else rel
            except ValueError:
                pass
            found = f" (in {frame.name} at {path}:{frame.lineno})"
    return found


def _message(exc: BaseException) -> tuple[int, str, bool]:
    """Exit code, message, and whether to suggest ``--traceback``."""
    from pydantic import ValidationError

    from lightkit.errors import LightkitError, SpecError

    if isinstance(exc, UsageError):
        return 2, str(exc), False
    if isinstance(exc, TargetError):
        return 1, str(exc), exc.__cause__ is not None
    if isinstance(exc, SpecError):
        return 1, f"invalid spec [{exc.code}]: {exc}", False
    if isinstance(exc, LightkitError):
        return 1, f"{exc} [{exc.code}]", False
    if isinstance(exc, ValidationError):
        return 2, str(exc), False
    return 1, f"{type(exc).__name__}: {exc}{_user_frame(exc)}", True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    command = args[0] if args and args[0] in COMMANDS else None
    prog = f"lightkit {command}" if command else "lightkit"
    show_traceback = "--traceback" in args
    try:
        return _dispatch(args)
    except SystemExit as exc:  # argparse (--help: 0, usage: 2); a preempted fit (128 + signal)
        if getattr(exc, "signum", None) is not None:
            saved = getattr(exc, "checkpoint", None)
            sys.stderr.write(
                f"{prog}: stopped by signal {exc.signum}"  # type: ignore[attr-defined]
                + (f"; resume from {saved} (--ckpt-path last)\n" if saved else "\n")
            )
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as exc:
        code, message, hint = _message(exc)
        if show_traceback:
            traceback.print_exc()
        elif hint:
            message += "\n(run with --traceback for the full traceback)"
        sys.stderr.write(f"{prog}: error: {message}\n")
        return code
