"""``CSVLogger``: one wide ``metrics.csv`` (a ``step`` column, one column per metric) and
``hparams.json``.

Rows are buffered and appended every ``flush_every_n_steps`` rows and at the end. The file
has one row per step: values logged again at the step of the newest row (a step's training
values, then the epoch aggregates computed at that step) merge into it, the later value of a
name replacing the earlier one. When a new metric appears the file is rewritten once with
the wider header, keeping every row already written.

The ``step`` column is always the step the row was logged at: a metric named ``step`` never
replaces it (it is left out of the file, with a warning once; ``lk.log`` refuses the name).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lightkit.errors import LightkitWarning, user_stacklevel
from lightkit.loggers.base import Logger, reset_run_state
from lightkit.utils.config_file import plain_value


@attrs.define
class CSVLogger(Logger):
    """Write metrics to ``<log_dir>/metrics.csv`` and hyperparameters to ``hparams.json``.

    ``metrics.csv`` has a ``step`` column (the real step of each row, whatever the metrics
    are called: a metric named ``step`` is not written) and one column per metric.

    Example::

        lk.Trainer(logger=lk.CSVLogger(flush_every_n_steps=10))
        lk.Trainer(logger=[lk.CSVLogger(), lk.TensorBoardLogger()])
    """

    _rows: list[dict[str, Any]] = attrs.field(factory=list, init=False, repr=False)
    _columns: list[str] = attrs.field(factory=lambda: ["step"], init=False, repr=False)
    _written_columns: list[str] = attrs.field(factory=list, init=False, repr=False)
    # The newest row, and where it starts in the file once written: a later write for the same
    # step takes it back from the file (truncate) into the buffer, so a merge costs no rewrite
    # and an error between the two writes still finds the row on disk or in the buffer.
    _last: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)
    _last_offset: int | None = attrs.field(default=None, init=False, repr=False)
    _warned_step: bool = attrs.field(default=False, init=False, repr=False)

    def setup(self, run_dir: Path) -> None:
        # A logger used for a second run (fit, then validate; two fits) starts that run clean.
        reset_run_state(self)
        super().setup(run_dir)

    @property
    def metrics_file(self) -> Path:
        """``<log_dir>/metrics.csv``."""
        if self.log_dir is None:
            raise RuntimeError("CSVLogger.setup(run_dir) was not called; no folder chosen yet.")
        return self.log_dir / "metrics.csv"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if "step" in metrics:  # the column is the row's real step: never a metric's value
            metrics = self._without_step(metrics)
        last = self._last
        # One row per step and epoch: a batch that stepped no optimizer (its step returned
        # None) shares its step with the next epoch's first batch, whose values must not
        # replace its own.
        if (
            last is not None
            and last["step"] == step
            and metrics.get("epoch", last.get("epoch")) == last.get("epoch")
        ):
            if self._last_offset is not None:  # already on disk: take it back
                os.truncate(self.metrics_file, self._last_offset)
                self._last_offset = None
                self._rows.append(last)
            last.update(metrics)  # the later value wins: an epoch aggregate replaces the step's
        else:
            self._last = {"step": step, **metrics}
            self._last_offset = None
            self._rows.append(self._last)
        columns = self._columns
        for key in metrics:
            if key not in columns:
                columns.append(key)
        if len(self._rows) >= self.flush_every_n_steps:
            self.save()

    def _without_step(self, metrics: Mapping[str, float]) -> dict[str, float]:
        if not self._warned_step:
            self._warned_step = True
            warnings.warn(
                LightkitWarning(
                    "CSVLogger: a metric named 'step' is not written to metrics.csv, whose 'step' "
                    "column is the step each row was logged at. Log it under another name.",
                    code="reserved-metric-name",
                ),
                stacklevel=user_stacklevel(),
            )
        return {k: v for k, v in metrics.items() if k != "step"}

    def log_hparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        if self.log_dir is None:
            return
        # JSON holds lists and dicts as they are (TensorBoard's hparams need flat strings);
        # what it cannot hold is written as its repr.
        data: dict[str, Any] = {"hparams": {k: plain_value(v) for k, v in params.items()}}
        if metrics:
            data["metrics"] = dict(metrics)
        path = self.log_dir / "hparams.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=repr) + "\n")
        os.replace(tmp, path)

    def save(self) -> None:
        if self.log_dir is None or not self._rows:
            return
        path = self.metrics_file
        rows = self._rows
        if not self._written_columns or not path.exists():
            mode = "w"
        elif self._columns != self._written_columns:
            # New columns: rewrite the file with the wider header, keeping every old row.
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f)) + rows
            mode = "w"
        else:
            mode = "a"
        with open(path, mode, newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, restval="")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows[:-1])
            f.flush()
            offset = f.tell()
            writer.writerow(rows[-1])
            f.flush()
        self._written_columns = list(self._columns)
        self._rows = []
        self._last_offset = offset if rows[-1] is self._last else None
