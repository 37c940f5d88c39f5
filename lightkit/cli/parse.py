"""Parsing in two phases: import and collect the targets (so the hyperparameter flags exist),
then parse and validate every flag, the config file included, before anything is built."""

from __future__ import annotations

import argparse
import ast
import os
import re
import traceback
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightkit.cli.flags import (
    BOOL_HELP,
    COMMANDS,
    NONE_WORDS,
    TARGET_HELP,
    TRAINER_COMMANDS,
    Flag,
    TargetError,
    UsageError,
    _BadValue,
    _build_objects,
    _with_code,
    hparam_flags,
    parse_bool,
    trainer_flags,
)

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
                source = getattr(module, attr)
            except AttributeError:
                raise TargetError(
                    f"cannot collect {target!r}: module {module.__name__!r} has no {attr!r}."
                ) from None
            if not isinstance(source, (lk.Registry, types.ModuleType)):
                raise TargetError(
                    f"cannot collect {target!r}: `module:name` names an lk.Registry, and "
                    f"{attr!r} is {type(source).__name__} {source!r}. Give the registry's "
                    f"name, or the module alone ({name}) for its decorated functions."
                )
            sources.append(source)
        else:
            sources.append(module)
    return lk.collect(*sources)


def _import(name: str, target: str, import_target: Any) -> Any:
    runs_at = _unguarded_run(name)
    if runs_at is not None:
        raise TargetError(
            f"{name}:{runs_at} runs a Trainer at the file's top level, so importing it (as the "
            f"command line does) would train before this command runs, and again in each "
            f'process with --devices. Put that call under `if __name__ == "__main__":`; '
            f"`python {Path(name).name}` still runs it."
        )
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
                f"cannot import {target!r}: there is no module named {missing!r}"
                f"{_where_modules_are_looked_for()}. A TARGET is a .py file path or a module "
                f"name; check the spelling, give the file's path, or add the folder that holds "
                f"{missing.partition('.')[0]!r} to PYTHONPATH."
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


_RUNS = ("fit", "validate", "test", "predict")


def _unguarded_run(name: str) -> int | None:
    """The line of a ``Trainer(...).fit(...)`` (or validate, test, predict) that a ``.py``
    target runs at its top level, outside ``if __name__ == "__main__":``, directly or through
    a top-level call of one of its own functions (``main()``); read, not run."""
    if not name.endswith(".py") or not os.path.isfile(name):
        return None
    try:
        tree = ast.parse(Path(name).read_bytes(), filename=name)
    except (SyntaxError, ValueError):
        return None  # the import reports it

    def is_trainer(node: ast.AST | None) -> bool:
        func = node.func if isinstance(node, ast.Call) else None
        return (isinstance(func, ast.Attribute) and func.attr == "Trainer") or (
            isinstance(func, ast.Name) and func.id == "Trainer"
        )

    def is_main_guard(node: ast.If) -> bool:
        test = node.test
        return (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and {"__name__", "'__main__'"}
            <= {ast.unparse(test.left), ast.unparse(test.comparators[0]).replace('"', "'")}
        )

    def calls(node: ast.AST) -> Iterator[ast.Call]:
        """The calls ``node`` makes when it runs: not those inside a lambda or a def."""
        if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        if isinstance(node, ast.Call):
            yield node
        for child in ast.iter_child_nodes(node):
            yield from calls(child)

    trainers: set[str] = set()
    functions = {
        f.name: f for f in tree.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
    }

    def runs(call: ast.Call, names: set[str]) -> bool:
        func = call.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in _RUNS
            and (
                is_trainer(func.value)
                or (isinstance(func.value, ast.Name) and func.value.id in names)
            )
        )

    def trains(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        local = {
            t.id
            for stmt in ast.walk(fn)
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and is_trainer(stmt.value)
            for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(t, ast.Name)
        }
        return any(runs(c, trainers | local) for stmt in fn.body for c in calls(stmt))

    def run_in(node: ast.AST) -> int | None:
        for call in calls(node):
            own = functions.get(call.func.id) if isinstance(call.func, ast.Name) else None
            if runs(call, trainers) or (own is not None and trains(own)):
                return call.lineno
        return None

    def scan(body: list[ast.stmt]) -> int | None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # runs only when called
            if isinstance(stmt, ast.If) and is_main_guard(stmt):
                continue
            blocks = [getattr(stmt, f, None) or [] for f in ("body", "orelse", "finalbody")]
            blocks += [h.body for h in getattr(stmt, "handlers", [])]
            if not any(blocks):  # a simple statement
                value = getattr(stmt, "value", None)
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and is_trainer(value):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    trainers.update(t.id for t in targets if isinstance(t, ast.Name))
                found = run_in(stmt)
            else:  # a compound one: its head (an if's test, a for's iterable), then its blocks
                heads = [getattr(stmt, f, None) for f in ("test", "iter")]
                heads += [item.context_expr for item in getattr(stmt, "items", [])]
                found = next((n for h in heads if h is not None for n in [run_in(h)] if n), None)
                for block in blocks:
                    found = found or scan(block)
            if found is not None:
                return found
        return None

    return scan(tree.body)


def _where_modules_are_looked_for() -> str:
    """`` in the working directory (/x) or on the Python path``, as far as that is true."""
    from lightkit.utils.imports import on_path

    cwd = Path.cwd().resolve()
    if on_path(cwd):
        return f" in the working directory ({cwd}) or on the Python path"
    return f" on the Python path (which does not hold the working directory, {cwd})"


# -- phase 2: the full parser ----------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=40, width=100)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _BoolAction):
            yes, no = action.option_strings
            return f"{yes} [true|false{'|none' if action.allows_none else ''}], {no}"
        return super()._format_action_invocation(action)


class _BoolAction(argparse.Action):
    """``--flag``, ``--no-flag``, or ``--flag VALUE`` with VALUE one of ``BOOL_WORDS`` (as
    Lightning's CLI writes booleans: ``--enable-progress-bar false``)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, allows_none: bool = False, **kwargs: Any
    ) -> None:
        (option,) = option_strings
        super().__init__([option, "--no-" + option[2:]], dest, nargs="?", **kwargs)
        self.allows_none = allows_none  # `bool | None`: --flag none too

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        yes, no = self.option_strings
        if option_string == no:
            if values is not None:
                parser.error(
                    f"argument {no}: takes no value, got {values!r}; write {no} alone, or "
                    f"{yes} true|false."
                )
            setattr(namespace, self.dest, False)
            return
        if values is None:
            setattr(namespace, self.dest, True)
            return
        if self.allows_none and values.strip().lower() in NONE_WORDS:
            setattr(namespace, self.dest, None)
            return
        try:
            setattr(namespace, self.dest, parse_bool(values))
        except _BadValue as exc:
            parser.error(f"argument {yes}: {exc}, got {values!r}.")


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _parser(command: str, hflags: list[Flag], tflags: list[Flag], has_target: bool) -> Any:
    target = "TARGET [TARGET ...] " if command not in ("plot",) else ""
    has_bools = any(f.kind == "bool" for f in hflags + tflags)
    booleans = f"\n\n{BOOL_HELP}" if has_bools else ""
    parser = argparse.ArgumentParser(
        prog=f"lightkit {command}",
        usage=f"lightkit {command} {target}[flags]",
        description=f"lightkit {command}: {COMMANDS[command]}.\n\n{TARGET_HELP}{booleans}",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    # argparse reads `--lr -1e-3` as two flags: its test for a negative number misses the
    # exponent form. (A private attribute, stable since Python 3.2.)
    parser._negative_number_matcher = _NEGATIVE_NUMBER
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
        group.add_argument(flag.option, action=_BoolAction, allows_none=flag.allows_none, **kwargs)
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
        first = (mine or exc.errors())[0]
        text = _pydantic_text(first["msg"])
        if first["type"] == "missing" and len(first["loc"]) == 2:  # a fixed-length tuple
            text = f"too few values: item {int(first['loc'][1]) + 1} is missing"
        raise _BadValue(_with_code(text, _code_of(first))) from None
    except Exception as exc:  # a field validator's own error (an unknown strategy, ...)
        if isinstance(exc, _BadValue):
            raise
        raise _BadValue(_with_code(str(exc), getattr(exc, "code", None))) from None


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


def _script_named_in(config_path: str) -> str | None:
    """The script a run folder's config file names in its header comment, if it does."""
    try:
        text = Path(config_path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r'target = \["([^"]+)"\] reruns it', text)
    return found.group(1) if found else None


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
            raise UsageError(_with_code(str(exc), getattr(exc, "code", None))) from None
    if not targets and "target" in data:
        found = data["target"]
        targets = [found] if isinstance(found, str) else [str(t) for t in found]
    out.targets = targets
    tflags = trainer_flags() if command in TRAINER_COMMANDS else []
    if not targets:
        if wants_help:
            _parser(command, [], tflags, has_target=False).parse_args(rest)
        late = next((a for a in rest if not a.startswith("-") and ".py" in a), None)
        if late is not None:  # `lightkit fit --max-epochs 2 tiny.py`
            raise UsageError(
                f"{late!r} looks like a TARGET: TARGETs come first, right after the command "
                f"(lightkit {command} {late} [flags])."
            )
        if config_path is not None:  # a run folder's file from a script: it has no target
            script = _script_named_in(config_path) or "script.py"
            raise UsageError(
                f"{config_path} names no target: its run's functions came from a script run "
                f"as `python {Path(script).name}`, which is not importable by name. Add "
                f'target = ["{script}"] at its top (with the script\'s own fit call under '
                f'`if __name__ == "__main__":`), or give the target here: '
                f"lightkit {command} {script} --config {config_path}."
            )
        raise UsageError(
            f"{command} needs a TARGET right after the command: a .py file or an importable "
            f"module (lightkit {command} examples/digits.py [flags]), or a --config file with "
            f"target = [...]."
        )
    spec = collect_targets(targets)
    # A hyperparameter named like a trainer flag is --hparams.X in every command, those
    # without trainer flags too: a flag copied from a fit command line means the same there.
    every_tflag = tflags or trainer_flags()
    negatives = {"--no-" + f.option[2:] for f in every_tflag if f.kind == "bool"}
    taken = {f.option for f in every_tflag} | negatives | {
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
                f"{value!r}: {exc}{_declared_by(spec, flag)}"
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
            parser.error(
                f"argument {flag.option}: expected {flag.type_text}, got {shown!r}: {exc}"
                f"{_declared_by(spec, flag)}"
            )
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
    if command not in TRAINER_COMMANDS:
        from lightkit.engine.config import TrainerConfig

        name = first.lstrip("-").replace("-", "_")
        if name in TrainerConfig.model_fields:  # a flag copied from a fit line
            same = f"--hparams.{name}"
            also = f" The hyperparameter of that name is {same}." if same in options else ""
            return (
                f"{first} is a trainer flag, and `lightkit {command}` takes hyperparameters "
                f"only (it trains nothing): leave it out.{also} `lightkit {command} TARGET "
                f"--help` lists every flag."
            )
    from lightkit.engine.config import LIGHTNING_FLAGS

    flag = first.lstrip("-").replace("-", "_")
    lightning = _LIGHTNING_CLI_FLAGS.get(flag) or LIGHTNING_FLAGS.get(flag)
    hint = f" {lightning}" if lightning else did_you_mean(first, options)
    return (
        f"unknown flag{'s' if len(flags) > 1 else ''} {', '.join(flags)}.{hint} "
        f"`lightkit {command} TARGET --help` lists every flag."
    )


#: The command line's own words for the ports of Lightning flags whose Python form differs.
_LIGHTNING_CLI_FLAGS = {
    "gpus": "Lightning 1.x's --gpus N is --accelerator gpu --devices N.",
    "resume_from_checkpoint": "Resume with --ckpt-path (a path, last or best).",
    "num_processes": "Lightning 1.x's --num-processes N is --devices N.",
}


def _code_of(error: Mapping[str, Any]) -> str | None:
    """The lightkit code of one pydantic error, when a lightkit check raised it."""
    return getattr((error.get("ctx") or {}).get("error"), "code", None)


def _pydantic_text(msg: str) -> str:
    """pydantic's message without the ``Value error, `` it puts before a validator's text."""
    return msg.removeprefix("Value error, ")


def _pydantic_message(exc: Any, flags: Mapping[str, Flag], what: str) -> str:
    parts = []
    for e in exc.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        label = f"argument {flags[name].option}" if name in flags else f"the {what} conflict"
        parts.append(_with_code(f"{label}: {_pydantic_text(e['msg'])}", _code_of(e)))
    return "; ".join(parts)


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


def _declared_by(spec: Any, flag: Flag) -> str:
    """`` (declared by optim(net, lr) at train.py:6)`` for a hyperparameter's flag."""
    if flag.section != "hparams":
        return ""
    sources = spec.hparam_sources().get(flag.name, [])
    return f" ({flag.name!r} is declared by {' and '.join(sources)})" if sources else ""
