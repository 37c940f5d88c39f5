"""Finding a checkpoint: what ``ckpt_path="last"`` and ``ckpt_path="best"`` resolve to.

``"last"`` is the newest readable checkpoint in the run's checkpoint folders; ``"best"`` the
best one a ``ModelCheckpoint`` recorded. Unreadable files are skipped with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightkit.checkpoint.io import clean_stale_temps
from lightkit.checkpoint.state import CKPT_SUFFIX, LAST_NAME
from lightkit.errors import CheckpointError, LightkitWarning, user_stacklevel

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine


def search_dirs(engine: Engine, *, other_runs: bool = True) -> list[Path]:
    """The folders ``ckpt_path="last"|"best"`` search: checkpoint callbacks' folders, then
    ``<default_root_dir>/checkpoints`` (a run without a run folder) and the run folders
    ``<default_root_dir>/lightkit_logs/<name>/version_*/checkpoints``. When this program
    (``<name>``) has none, ``other_runs`` searches the other programs' folders: an
    evaluation-only module evaluates what a training module wrote. A resume never does (it
    would continue another program's training)."""
    from lightkit.callbacks.checkpoint import ModelCheckpoint
    from lightkit.engine.engine import run_name

    dirs: list[Path] = [
        Path(cb.dirpath)
        for cb in engine.callbacks
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None
    ]
    # Where a ModelCheckpoint without a dirpath writes in a run without a run folder
    # (logger=False, enable_checkpointing=False and a ModelCheckpoint in callbacks).
    dirs.append(engine.config.root_dir / "checkpoints")
    logs = engine.config.root_dir / "lightkit_logs"
    own = sorted(logs.glob(f"{run_name(engine.spec)}/version_*/checkpoints"))
    if own or not other_runs:
        dirs.extend(own)
    else:
        dirs.extend(sorted(logs.glob("*/version_*/checkpoints")))
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d not in unique:
            unique.append(d)
    return unique


def _candidates(dirs: list[Path]) -> list[Path]:
    """Checkpoint files in ``dirs``, newest first (``last.ckpt`` first among equals)."""
    files: list[tuple[float, bool, Path]] = []
    for d in dirs:
        clean_stale_temps(d)
        for f in d.glob(f"*{CKPT_SUFFIX}"):
            try:
                files.append((f.stat().st_mtime, f.stem.startswith(LAST_NAME), f))
            except OSError:
                continue
    files.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [f for _, _, f in files]


def _first_loadable(
    engine: Engine, files: list[Path], what: str, *, resume: bool = False
) -> tuple[Path, dict[str, Any]] | None:
    """The first of ``files`` that loads. To ``resume``, only a full checkpoint of this
    program: a weights-only export beside it cannot continue a run, and a file in the shared
    ``<root>/checkpoints`` may be another program's. What is passed over is said."""
    from lightkit.engine.engine import run_name

    program = run_name(engine.spec)
    passed_over: list[str] = []
    found = None
    for f in files:
        try:
            ckpt = engine.runtime.strategy.load_checkpoint(f)
        except CheckpointError as exc:
            warnings.warn(
                LightkitWarning(
                    f'ckpt_path="{what}": skipping {f}, which cannot be used: {exc}',
                    code="checkpoint-skipped",
                ),
                stacklevel=user_stacklevel(),
            )
            continue
        if resume and ckpt.get("kind") == "weights":
            passed_over.append(f"{f} (weights only)")
        elif resume and ckpt.get("program", program) != program:
            passed_over.append(f"{f} (program {ckpt['program']!r}, this is {program!r})")
        else:
            found = f, ckpt
            break
    if passed_over:
        warnings.warn(
            LightkitWarning(
                f'ckpt_path="{what}": passed over {len(passed_over)} checkpoint(s) a resume of '
                f"this program cannot continue from: {'; '.join(passed_over[:3])}"
                f"{'; ...' if len(passed_over) > 3 else ''}. Pass a full checkpoint's path to "
                f"resume from it anyway.",
                code="checkpoint-skipped",
            ),
            stacklevel=user_stacklevel(),
        )
    return found


def find_checkpoint(
    engine: Engine, which: str, *, other_runs: bool = True, resume: bool = False
) -> tuple[Path, dict[str, Any]] | None:
    """Resolve ``"last"`` (the newest readable checkpoint) or ``"best"`` (the best one a
    ``ModelCheckpoint`` recorded) and load it; ``None`` when there is none. ``other_runs``:
    see :func:`search_dirs`."""
    found = _find(engine, which, other_runs=other_runs, resume=resume)
    unsaved = getattr(engine, "previous_fit_unsaved", False)
    if found is not None and unsaved and engine.runtime.is_global_zero:
        warnings.warn(
            LightkitWarning(
                f'ckpt_path="{which}": this trainer\'s fit wrote no checkpoint, so '
                f"{found[0]}, from an earlier run, is evaluated: not the weights that fit "
                f"ended with. Leave ckpt_path out to evaluate those.",
                code="checkpoint-from-earlier-run",
            ),
            stacklevel=user_stacklevel(),
        )
    return found


def _find(
    engine: Engine, which: str, *, other_runs: bool, resume: bool
) -> tuple[Path, dict[str, Any]] | None:
    dirs = search_dirs(engine, other_runs=other_runs)
    files = _candidates(dirs)
    if which == "best":
        previous = getattr(engine, "previous_best", None)
        if previous is not None and Path(previous).exists():
            found = _first_loadable(engine, [Path(previous)], which, resume=resume)
            if found is not None:
                return found
        newest = _first_loadable(engine, files, which, resume=resume)
        if newest is None:
            return None
        best = _recorded_best(newest[0], newest[1])
        if best is not None:
            found = _first_loadable(engine, [best], which, resume=resume)
            if found is not None:
                return found
        warnings.warn(
            LightkitWarning(
                f'ckpt_path="best": no checkpoint records a best model; using the newest, {newest[0]}.',
                code="no-best-checkpoint",
            ),
            stacklevel=user_stacklevel(),
        )
        return newest
    return _first_loadable(engine, files, which, resume=resume)


def _recorded_best(path: Path, ckpt: dict[str, Any]) -> Path | None:
    states = ckpt.get("callbacks") or {}
    entries = [
        s
        for key, s in states.items()
        if key.startswith("ModelCheckpoint") and isinstance(s, dict) and s.get("best_model_path")
    ]
    entries.sort(key=lambda s: s.get("monitor") is None)  # a monitored best first
    for state in entries:
        best = Path(state["best_model_path"])
        for candidate in (best, path.parent / best.name):
            if candidate.exists():  # a file, or a sharded checkpoint's folder
                return candidate
    return None


__all__ = ["find_checkpoint", "search_dirs"]
