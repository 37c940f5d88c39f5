"""What the examples share: a command line built from the spec, the smoke switch, reports.

Every hyperparameter of the spec becomes a flag (``--lr 3e-4``; pydantic checks the value), and
the trainer flags the examples scale by are offered under their ``TrainerConfig`` names
(``--precision bf16-mixed --strategy ddp --devices 2``). ``LIGHTKIT_SMOKE=1`` in the
environment applies each example's smoke settings (tiny data, one or two epochs) before the
command line, so the test suite runs every example in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightkit as lk

SMOKE_ENV = "LIGHTKIT_SMOKE"

#: Trainer flags offered by every example: name -> how to read the text.
TRAINER_FLAGS: dict[str, Callable[[str], Any]] = {
    "max_epochs": int,
    "max_steps": int,
    "max_time": str,
    "accelerator": str,
    "devices": lambda s: int(s) if s.isdigit() else s,
    "num_nodes": int,
    "strategy": str,
    "precision": str,
    "seed": int,
    "default_root_dir": str,
    "accumulate_grad_batches": int,
    "gradient_clip_val": float,
    "log_every_n_steps": int,
    "limit_train_batches": lambda s: int(s) if s.isdigit() else float(s),
    "limit_val_batches": lambda s: int(s) if s.isdigit() else float(s),
    "num_sanity_val_steps": int,
}
SWITCHES = ("enable_checkpointing", "enable_progress_bar", "enable_model_summary", "compile")


def smoke() -> bool:
    """Whether ``LIGHTKIT_SMOKE`` asks for a tiny run."""
    return os.environ.get(SMOKE_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def command_line(
    spec: lk.TrainingSpec,
    argv: Sequence[str] | None,
    *,
    doc: str | None,
    trainer: Mapping[str, Any],
    smoke_hparams: Mapping[str, Any] | None = None,
    smoke_trainer: Mapping[str, Any] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    omit: Sequence[str] = (),
) -> tuple[lk.TrainingSpec, dict[str, Any], argparse.Namespace]:
    """Parse ``argv`` into (spec with hyperparameters set, trainer flags, all arguments).

    Precedence: the example's defaults, then its smoke settings (under ``LIGHTKIT_SMOKE=1``),
    then the command line. ``omit``: trainer flags the example sets itself.
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n\n")[0])
    group = parser.add_argument_group("hyperparameters (from the functions' signatures)")
    for name, field in spec.hparams_model.model_fields.items():
        value = getattr(spec.hparams, name)
        annotation = getattr(field.annotation, "__name__", None) or repr(field.annotation)
        choices = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal:  # the choices, as lightkit's CLI
            annotation = "{" + ",".join(map(str, choices)) + "}"
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest="hp_" + name,
            metavar=annotation if annotation.startswith("{") else annotation.upper(),
            default=None,
            help=f"default: {value!r}",
        )
    group = parser.add_argument_group("trainer flags (lk.TrainerConfig)")
    fields = lk.TrainerConfig.model_fields
    for name, convert in TRAINER_FLAGS.items():
        if name in omit:
            continue
        default = trainer.get(name, fields[name].default)
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest="tr_" + name,
            type=convert,
            metavar={int: "N", float: "X"}.get(convert, "VALUE"),  # type: ignore[call-overload]
            default=None,
            help=f"{fields[name].description or ''} (here: {default!r})".lstrip(),
        )
    for name in SWITCHES:
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest="tr_" + name,
            action=argparse.BooleanOptionalAction,
            default=None,
        )
    parser.add_argument("--results", type=Path, help="also write the results as JSON here")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)

    hparams: dict[str, Any] = {}
    flags: dict[str, Any] = dict(trainer)
    if smoke():
        hparams.update(smoke_hparams or {})
        flags.update(smoke_trainer or {})
    for key, value in vars(args).items():
        if value is None:
            continue
        if key.startswith("hp_"):
            hparams[key[3:]] = value  # a string: pydantic converts it, or names the field
        elif key.startswith("tr_"):
            flags[key[3:]] = value
    return spec.with_hparams(**hparams), flags, args


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def report(title: str, rows: Mapping[str, Any]) -> None:
    """Print ``rows`` as an aligned two-column table."""
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for key, value in rows.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")


def write_results(args: argparse.Namespace, results: Mapping[str, Any]) -> None:
    """Write ``results`` to ``--results`` when given (paths become strings)."""
    if args.results is None:
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str) + "\n")


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` as ``{metric: [(step, value), ...]}``, empty cells skipped."""
    import csv

    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            for key, text in row.items():
                if key != "step" and text not in ("", None):
                    series.setdefault(key, []).append((step, float(text)))
    return series
