"""``plot_metrics``: draw a run's logged curves from its ``metrics.csv`` into a PNG.

Needs matplotlib (``pip install "lightkit[plot]"``). Also available as ``lightkit plot RUN_DIR``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from lightkit.errors import LightkitError

#: Columns that are not curves.
_SKIP = {"step", "epoch"}


def find_metrics_file(run_dir: str | Path) -> Path:
    """``metrics.csv`` of ``run_dir``: the file itself, the folder's own, or the newest one
    below it (``lightkit_logs/<name>`` holds one per ``version_N``)."""
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise LightkitError(
            f"plot_metrics({str(run_dir)!r}): no such file or folder. Give a run folder "
            f"(result.log_dir, e.g. lightkit_logs/<name>/version_0) or its metrics.csv.",
            code="no-metrics-file",
        )
    own = path / "metrics.csv"
    if own.is_file():
        return own
    found = sorted(path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LightkitError(
            f"plot_metrics({str(run_dir)!r}): no metrics.csv in this folder or below it. Runs "
            f"write one when the CSV logger is on (logger=True, the default, or lk.CSVLogger()); "
            f"a CSVLogger given its own save_dir writes it there instead: pass that logger's "
            f"log_dir.",
            code="no-metrics-file",
        )
    return found[-1]


def read_metrics(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Each metric's ``(steps, values)`` from a ``metrics.csv`` (empty cells skipped)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for name, cell in row.items():
                if name in _SKIP or name is None or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                steps, values = curves.setdefault(name, ([], []))
                steps.append(float(step))
                values.append(value)
    return curves


def _panel_of(name: str) -> str:
    """Metrics that differ only by their stage share a panel: ``train/loss``, ``val/loss``."""
    return name.rsplit("/", 1)[-1] if "/" in name else name


def plot_metrics(
    run_dir: str | Path,
    output: str | Path | None = None,
    metrics: Sequence[str] | None = None,
) -> Path:
    """Write a PNG with a panel per metric (``train/loss`` and ``val/loss`` share one), step on
    the x axis, and return its path.

    Args:
        run_dir: a run folder (``result.log_dir``), a folder above runs (the newest run's file
            is used), or a ``metrics.csv``.
        output: the PNG's path (default: ``metrics.png`` next to ``metrics.csv``).
        metrics: the names to draw (default: all).

    Raises:
        LightkitError: ``missing-dependency`` without matplotlib; ``no-metrics-file`` when
            nothing was logged; ``unknown-metric`` for a name not in the file.

    Example::

        result = trainer.fit(spec)
        lk.plot_metrics(result.log_dir)  # -> .../version_0/metrics.png
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise LightkitError(
            'plot_metrics needs matplotlib: pip install "lightkit[plot]" (or matplotlib).',
            code="missing-dependency",
        ) from exc
    source = find_metrics_file(run_dir)
    curves = read_metrics(source)
    if metrics is not None:
        unknown = [m for m in metrics if m not in curves]
        if unknown:
            raise LightkitError(
                f"plot_metrics(metrics={list(metrics)!r}): {', '.join(unknown)} not in "
                f"{source}. Logged: {', '.join(sorted(curves)) or 'nothing'}.",
                code="unknown-metric",
            )
        curves = {m: curves[m] for m in metrics}
    if not curves:
        raise LightkitError(
            f"plot_metrics: {source} holds no metric values yet.", code="no-metrics-file"
        )
    panels: dict[str, list[str]] = {}
    for name in curves:
        panels.setdefault(_panel_of(name), []).append(name)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5 * cols, 3.5 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel, names) in zip(axes, panels.items(), strict=False):
        for name in names:
            steps, values = curves[name]
            few = len(steps) <= 20  # epoch-level curves: show the points
            ax.plot(steps, values, label=name, marker="o" if few else None, markersize=3)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(str(source.parent))
    out = Path(output) if output is not None else source.with_name("metrics.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
