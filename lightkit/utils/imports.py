"""Import a user's module from a file path or a dotted name."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


def _importable_name(path: Path) -> str | None:
    """A dotted name under which ``path`` is importable from ``sys.path`` (or the cwd)."""
    roots = [Path.cwd(), *(Path(p) for p in sys.path if p)]
    for root in roots:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except (ValueError, OSError):
            continue
        parts = rel.with_suffix("").parts
        if parts and all(part.isidentifier() for part in parts):
            return ".".join(parts)
    return None


def import_target(target: str) -> ModuleType:
    """Import ``target``: a ``.py`` file path or an importable module name.

    A file is imported under its dotted name when it is importable from the working directory
    (``examples/digits.py`` -> ``examples.digits``), so the functions' import paths work in
    other processes too; otherwise under its stem, with its folder added to ``sys.path``.
    """
    looks_like_path = target.endswith(".py") or os.sep in target or "/" in target
    if not looks_like_path:
        return importlib.import_module(target)
    path = Path(target)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {target}")
    name = _importable_name(path)
    if name is not None:
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(name)
            if Path(getattr(module, "__file__", "") or "").resolve() == path.resolve():
                return module
        except ImportError:
            pass
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(path.stem)
