"""Import a user's module from a file path or a dotted name.

A file is imported as pytest's default ("prepend") import mode imports a test file: walk up
from the file while the folder is a package (has an ``__init__.py``); the first folder that is
not is the *import root*, put at the front of ``sys.path``, and the module's name is the dotted
path from there (``examples/digits.py`` -> ``examples.digits`` because ``examples/`` is a
package; ``/tmp/run/base.py`` -> ``base``). The name depends on the file alone, never on the
working directory, so the import paths a spec records are the same wherever lightkit runs.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType


def looks_like_path(target: str) -> bool:
    """Whether ``target`` names a file (``x.py``, ``a/b``) rather than a module name."""
    return target.endswith(".py") or os.sep in target or "/" in target


def file_module_name(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The import root and the module name of a ``.py`` file.

    Example::

        file_module_name("examples/digits.py")  # (Path("/repo"), "examples.digits")
        file_module_name("/tmp/run/base.py")    # (Path("/tmp/run"), "base")
    """
    file = Path(path).resolve()
    parts = [] if file.name == "__init__.py" else [file.stem]
    folder = file.parent
    while (
        (folder / "__init__.py").is_file()
        and folder.name.isidentifier()
        and folder.parent != folder
    ):
        parts.append(folder.name)
        folder = folder.parent
    return folder, ".".join(reversed(parts))


def on_path(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is on ``sys.path`` (``""``, the changing working directory, aside)."""
    wanted = Path(folder).resolve()
    for entry in sys.path:
        try:
            if entry and Path(entry).resolve() == wanted:
                return True
        except OSError:
            continue
    return False


def add_to_path(folder: str | os.PathLike[str]) -> None:
    """Put ``folder`` at the front of ``sys.path`` unless it is there already."""
    if not on_path(folder):
        sys.path.insert(0, str(Path(folder).resolve()))


def add_working_directory() -> None:
    """What ``python -m`` does: make modules in the working directory importable by name.

    The ``lightkit`` script starts with its own folder on ``sys.path``, not the working
    directory; ``python -P`` (``sys.flags.safe_path``) asks for neither, and is respected.
    """
    if not getattr(sys.flags, "safe_path", False):  # Python 3.11+
        add_to_path(Path.cwd())


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file:
        return None
    try:
        return Path(file).resolve()
    except OSError:
        return None


def _imported_from(file: Path) -> ModuleType | None:
    """A module already imported from ``file`` under its own, importable name.

    ``__main__`` (a script run directly) and aliases (``sys.modules["os.path"]``) do not count:
    another process could not import the functions by that name.
    """
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if name == "__main__" or spec is None or spec.name != name:
            continue
        # The base name first: resolving every loaded module's path costs ~30 ms.
        path = getattr(module, "__file__", None)
        if path and os.path.basename(path) == file.name and _file_of(module) == file:
            return module
    return None


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it is under it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel.startswith("..") else rel


def import_file(path: str | os.PathLike[str]) -> ModuleType:
    """Import a ``.py`` file under the name :func:`file_module_name` gives it, with its import
    root on ``sys.path`` (so other processes, which copy ``sys.path``, import it too).

    A module already imported from the same file is reused (under that name, or under another
    importable one; ``__main__`` does not count), so a file imported once by name and once by
    path registers its functions once.

    Raises:
        FileNotFoundError: there is no such file.
        ImportError: the file's name is taken by another module (a different file imported
            earlier, or one found first on ``sys.path``), or is not a module name.
    """
    given = Path(path)
    if not given.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    file = given.resolve()
    root, name = file_module_name(file)
    if not name or "." in file.stem:
        raise ImportError(
            f"cannot import {shown_path(file)}: {file.stem!r} is not a module name (it has a "
            f"dot in it). Rename the file, e.g. to {file.stem.replace('.', '_')}.py."
        )
    module = sys.modules.get(name)
    if module is not None and _file_of(module) == file:
        add_to_path(root)
        return module
    found = _imported_from(file)
    if found is not None:
        return found
    if module is not None:
        raise _taken(file, root, name, module, cached=True)
    parts = name.split(".")
    imported = {n for i in range(len(parts)) if (n := ".".join(parts[: i + 1])) in sys.modules}
    add_to_path(root)
    importlib.invalidate_caches()  # the file may be newer than the import system's listings
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # A package above the file resolved to another folder of the same name.
        missing = exc.name or ""
        parent = missing.rpartition(".")[0]
        if not parent or not (name == missing or name.startswith(missing + ".")):
            raise
        raise _taken(file, root, name, sys.modules.get(parent), parent in imported) from None
    if _file_of(module) != file:
        raise _taken(file, root, name, module, cached=False)
    return module


def file_target(module: str) -> str | None:
    """How a run configuration should name an imported module to import it again: its file
    (relative to the working directory when under it) when its name needs an import root that
    a file target puts on ``sys.path``; ``None`` when the name imports by itself (from the
    working directory or an installed package) or the module has no file.
    """
    loaded = sys.modules.get(module)
    file = None if loaded is None else _file_of(loaded)
    if file is None:
        return None
    root, name = file_module_name(file)
    installed = {Path(p).resolve() for k, p in sysconfig.get_paths().items() if "lib" in k}
    if name != module or root == Path.cwd().resolve() or root in installed:
        return None
    return shown_path(file)


def _taken(
    file: Path, root: Path, name: str, other: ModuleType | None, cached: bool
) -> ImportError:
    """The error for a file whose module name (or its package's) belongs to another module."""
    other_file = None if other is None else _file_of(other)
    what = f"module {other.__name__!r}" if other is not None else "another module"
    if other_file is None:
        where = f"{what} is a built-in or namespace module"
    elif cached:
        where = f"{what} is already imported from {other_file}"
    else:
        where = f"{what} is found first on sys.path, at {other_file}"
    return ImportError(
        f"cannot import {shown_path(file)} as module {name!r}: {where}. A file is imported under "
        f"its dotted path from the first folder above it without an __init__.py ({root}); "
        f"rename the file (or its package) so that its name is unique."
    )


def import_target(target: str) -> ModuleType:
    """Import ``target``: a ``.py`` file path (:func:`import_file`) or a module name."""
    if looks_like_path(target):
        return import_file(target)
    return importlib.import_module(target)
