"""The ``lightkit`` command line.

::

    lightkit fit examples/digits.py --lr 3e-4 --max-epochs 5 --devices 2
    lightkit fit --config lightkit_logs/digits/version_0/config.toml --max-epochs 10
    lightkit explain examples.digits --accumulate-grad-batches 2
    lightkit spec examples/digits.py            # the validated spec as JSON
    lightkit hparams examples/digits.py         # name, type, default, used by
    lightkit plot lightkit_logs/digits/version_0

A TARGET is a ``.py`` file or a module name importable from the working directory
(``module:registry`` names an explicit ``lk.Registry``); several targets are collected
together, as ``lk.collect`` does. A file is imported under its dotted path from the first
folder above it without an ``__init__.py`` (pytest's rule), whatever the working directory.

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
from collections.abc import Mapping, Sequence
from typing import Any

from lightkit.cli.flags import (
    COMMANDS,
    TARGET_HELP,
    TargetError,
    UsageError,
    _out,
    _type_text,
)
from lightkit.cli.parse import (
    Parsed,
    _HelpFormatter,
    _normalize,
    _user_frame,
    parse,
)

__all__ = ["COMMANDS", "main"]

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


def _print_config(parsed: Parsed, fmt: str, command: str) -> None:
    from lightkit.engine.config import TrainerConfig
    from lightkit.utils.config_file import (
        RUN_FILE_HEADER,
        absolute_file_target,
        dumps,
        run_config,
        to_toml,
    )

    fmt = fmt or parsed.file_format or "toml"
    config = parsed.config if parsed.config is not None else TrainerConfig()
    # As a run folder's config.toml: a file target by its absolute path, to run from anywhere.
    targets = [absolute_file_target(t) for t in parsed.targets] if parsed.targets else None
    data = run_config(parsed.spec, config, targets, parsed.ckpt_path, parsed.refs)
    if fmt == "toml":
        header = RUN_FILE_HEADER.format(command=command, name="<this file>")
        _out(to_toml(data, header=header))
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
    if config is None:
        from lightkit.engine.config import TrainerConfig

        config = TrainerConfig()
    if config.seed is None:
        # As LightningCLI: a run the command line starts is seeded, and the run folder's
        # config.toml records the seed, so that `--config` repeats the run.
        import random

        config.seed = random.SystemRandom().randrange(2**31)
        print(f"seed {config.seed} (drawn; --seed {config.seed} repeats this run)", file=sys.stderr)
    config._cli_targets = list(parsed.targets) if parsed.targets else None
    config._cli_refs = [
        (obj, parsed.refs[id(obj)]) for obj in _objects(config) if id(obj) in parsed.refs
    ]
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


def _objects(config: Any) -> list[Any]:
    """The objects in a configuration's fields (callbacks, loggers, plugins)."""
    found: list[Any] = []
    from lightkit.utils.config_file import OBJECT_FIELDS

    for name in OBJECT_FIELDS:
        value = getattr(config, name)
        found.extend(value if isinstance(value, (list, tuple)) else [value])
    return found


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
        raise UsageError(f"{exc} [{exc.code}]") from None


def _cell(value: Any) -> str:
    """A hyperparameter value as the table shows it: as typed (a path as its string)."""
    if isinstance(value, enum.Enum):
        value = value.value
    elif isinstance(value, os.PathLike):
        value = os.fspath(value)
    return repr(value)


def _hparams(spec: Any, fmt: str) -> int:
    from lightkit.spec.hparams import source_name
    from lightkit.utils.config_file import plain_value

    sources = spec.hparam_sources()
    model = spec.hparams_model
    rows = []
    data = []
    for name, field in model.model_fields.items():
        used = [source_name(s) for s in sources.get(name, [])]
        value = getattr(spec.hparams, name)
        default = field.get_default(call_default_factory=True)
        shown, base = _cell(value), _cell(default)
        # The default column is the default; a value given on this command line follows it.
        cell = base if shown == base else f"{base} → {shown}"
        rows.append([name, _type_text(field.annotation), cell, ", ".join(used)])
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
        _print_config(parsed, parsed.args.print_config, command)
        return 0
    return _run_command(command, parsed)


# -- errors ----------------------------------------------------------------------------------


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
    if isinstance(exc, ValidationError):  # a trainer flag's FlagError too: a usage error
        code = f" [{exc.code}]" if isinstance(exc, LightkitError) else ""
        return 2, f"{exc}{code}", False
    if isinstance(exc, LightkitError):
        return 1, f"{exc} [{exc.code}]", False
    notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))  # compile's, say
    return 1, f"{type(exc).__name__}: {exc}{_user_frame(exc)}{notes}", True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Module targets are found from the working directory, as under ``python -m lightkit``: it
    goes to the front of ``sys.path`` unless it is there already (the ``lightkit`` script
    starts with its own folder there instead) or ``python -P`` asked for neither.
    """
    from lightkit.utils.imports import add_working_directory

    add_working_directory()
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
