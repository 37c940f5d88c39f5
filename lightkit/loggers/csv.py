"""``CSVLogger``: one wide ``metrics.csv`` (a ``step`` column, one column per metric) and
``hparams.json``. Columns grow as new metrics appear; no row is ever lost."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lightkit.loggers.base import Logger, flatten_params


@attrs.define
class CSVLogger(Logger):
    """Write metrics to ``<log_dir>/metrics.csv``.

    Example::

        lk.Trainer(logger=lk.CSVLogger(flush_every_n_steps=10))
    """

    _rows: list[dict[str, Any]] = attrs.field(factory=list, init=False, repr=False)
    _columns: list[str] = attrs.field(factory=lambda: ["step"], init=False, repr=False)
    _written_columns: list[str] = attrs.field(factory=list, init=False, repr=False)
    _steps_since_flush: int = attrs.field(default=0, init=False, repr=False)

    @property
    def metrics_file(self) -> Path:
        assert self.log_dir is not None, "CSVLogger.setup() was not called"
        return self.log_dir / "metrics.csv"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        last = self._rows[-1] if self._rows else None
        if last is not None and last["step"] == step and not (set(metrics) & set(last)):
            last.update(metrics)  # one row per logging step
        else:
            self._rows.append({"step": step, **metrics})
            self._steps_since_flush += 1
        for key in metrics:
            if key not in self._columns:
                self._columns.append(key)
        if self._steps_since_flush >= self.flush_every_n_steps:
            self.save()

    def log_hparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        assert self.log_dir is not None
        path = self.log_dir / "hparams.json"
        data: dict[str, Any] = {"hparams": flatten_params(params)}
        if metrics:
            data["metrics"] = dict(metrics)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    def save(self) -> None:
        if self.log_dir is None or not self._rows:
            return
        path = self.metrics_file
        if self._written_columns and self._columns != self._written_columns:
            # New columns: rewrite the file with the wider header, keeping every old row.
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
            rows, mode = old + self._rows, "w"
        elif self._written_columns:
            rows, mode = self._rows, "a"
        else:
            rows, mode = self._rows, "w"
        with open(path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, restval="")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
        self._written_columns = list(self._columns)
        self._rows = []
        self._steps_since_flush = 0
