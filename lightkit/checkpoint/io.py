"""Atomic checkpoint files and safe loading.

A checkpoint is written to a temporary file in the same folder (its name never ends in
``.ckpt``: ``.last.ckpt.<random>.<pid>@<host>.tmp``), flushed and fsynced, then renamed into
place with ``os.replace``: a kill at any moment leaves either the old or the new complete file.
Temporaries left by a killed writer are removed by :func:`clean_stale_temps` on the next start.

Reading always uses ``torch.load(weights_only=True)``: a checkpoint can never run code. Before
that, the CRC32 of every record in the file (torch writes them, but does not check them on
load) is verified, so a truncated or bit-flipped file is refused instead of silently loading
wrong numbers.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import socket
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from lightkit.errors import CheckpointError

TMP_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.(\d+)@([A-Za-z0-9_-]+)\.tmp$")
#: A temporary from another machine (shared filesystem) is removed only when this old.
_FOREIGN_TMP_AGE_S = 24 * 3600.0

# What ``torch.load(weights_only=True)`` accepts (exact types: subclasses are refused).
_LEAF_TYPES = (int, float, bool, str, bytes, complex, type(None))
_TORCH_LEAVES = (torch.Size, torch.dtype, torch.device, torch.layout)
_TENSOR_TYPES = (torch.Tensor, nn.Parameter)


def _write(state: dict[str, Any], f: IO[bytes]) -> None:
    """Serialize ``state`` into the open temporary file (a seam tests slow down or break)."""
    torch.save(state, f)


def atomic_save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically; return ``path``.

    Raises:
        CheckpointError: ``state`` holds something ``torch.load(weights_only=True)`` would
            refuse (the key is named), or the file could not be written (the path is named;
            any previous file at ``path`` is left unchanged).
    """
    path = Path(path)
    ensure_loadable(state, where=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".{os.getpid()}@{_HOST}{TMP_SUFFIX}", dir=path.parent
        )
    except OSError as exc:
        raise _write_failed(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            _write(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from exc
        raise
    fsync_dir(path.parent)
    return path


def atomic_link(source: str | Path, path: str | Path) -> Path:
    """Make ``path`` another name of the finished file ``source``, atomically (a hard link
    renamed into place). Falls back to copying when the filesystem has no hard links."""
    source, path = Path(source), Path(path)
    tmp = path.parent / f".{path.name}.link.{os.getpid()}@{_HOST}{TMP_SUFFIX}"
    try:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        try:
            os.link(source, tmp)
        except OSError:
            import shutil

            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _write_failed(path, exc) from exc
    fsync_dir(path.parent)
    return path


def _write_failed(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(
        f"could not write checkpoint {path}: {type(exc).__name__}: {exc}. The previous file at "
        f"that path (if any) is unchanged. Check free disk space and permissions.",
        code="checkpoint-write-failed",
    )


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove temporaries that a killed writer left in ``folder``; return what was removed.

    A temporary is stale when the process that wrote it (same machine) is gone, or when it
    comes from another machine and is older than a day. Live writers are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if match is None:
            continue
        pid, host = int(match.group(1)), match.group(2)
        if host == _HOST:
            stale = pid != os.getpid() and not _alive(pid)
        else:
            try:
                stale = now - entry.stat().st_mtime > _FOREIGN_TMP_AGE_S
            except OSError:
                continue
        if stale:
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_loadable(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``CheckpointError`` naming the first value ``torch.load(weights_only=True)``
    would refuse: a checkpoint holds tensors, numbers, strings, bools, None, ``torch.Size``,
    dtypes, devices, and lists, tuples, sets and dicts of them."""
    stack: list[tuple[str, Any]] = [("checkpoint", obj)]
    seen: set[int] = set()
    while stack:
        key, value = stack.pop()
        kind = type(value)
        if kind in _LEAF_TYPES or kind in _TENSOR_TYPES or kind in _TORCH_LEAVES:
            continue
        if kind is dict or kind is collections.OrderedDict:
            if id(value) in seen:
                continue
            seen.add(id(value))
            for k, v in value.items():
                if type(k) not in _LEAF_TYPES:
                    raise _not_loadable(f"{key} has a key {k!r}", type(k), where)
                stack.append((f"{key}[{k!r}]", v))
        elif kind is list or kind is tuple or kind is set:
            if id(value) in seen:
                continue
            seen.add(id(value))
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        else:
            raise _not_loadable(key, kind, where)


def _not_loadable(key: str, kind: type, where: str) -> CheckpointError:
    return CheckpointError(
        f"cannot save {where}: {key} is a {kind.__module__}.{kind.__qualname__}. A checkpoint "
        f"is loaded with torch.load(weights_only=True), so it may hold only tensors, numbers, "
        f"strings, bools, None, and lists, tuples, sets and plain dicts of them. Convert the "
        f"value (a number, a string, a tensor) where it is put into the checkpoint: a "
        f"callback's state_dict(), a save_checkpoint hook, or a scheduler's state.",
        code="checkpoint-unserializable",
    )


def verify_records(path: str | Path) -> None:
    """Check the CRC32 of every record of the zip file ``path``; raise ``CheckpointError``
    if one differs, the file is truncated, or it is not a torch zip file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # zipfile raises many types on damaged files
        raise _corrupt(path, exc) from None
    if bad is not None:
        raise CheckpointError(
            f"{path} is corrupt: the checksum of its record {bad!r} does not match (a bit "
            f"flipped on disk or in transfer?). Use another checkpoint.",
            code="checkpoint-corrupt",
        )


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable checkpoint (truncated or corrupt?): {type(exc).__name__}: {exc}",
        code="checkpoint-corrupt",
    )


def safe_load(
    path: str | Path, map_location: Any = "cpu", *, verify: bool = True
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a ``CheckpointError``
    naming the file. ``verify`` first checks every record's CRC32 (one extra read)."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise CheckpointError(f"no checkpoint file at {path}{hint}.", code="checkpoint-not-found")
    if verify and zipfile.is_zipfile(path):
        verify_records(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = next(
            (
                line.strip().rstrip(".")
                for line in text.splitlines()
                if "Unsupported" in line or "GLOBAL" in line
            ),
            "",
        )
        if "GLOBAL" in detail:  # a reference to a Python callable: a pickle that runs code
            raise CheckpointError(
                f"refused to load {path}: it holds objects that are not plain tensors and "
                f"containers ({detail}). lightkit loads checkpoints with weights_only=True, so "
                f"a checkpoint can never run code.",
                code="checkpoint-unsafe",
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt, or not written by "
            f"torch.save): torch.load(weights_only=True) refused it"
            + (f" ({detail})." if detail else "."),
            code="checkpoint-corrupt",
        ) from None
    except Exception as exc:  # torch.load raises many types on damaged files
        raise _corrupt(path, exc) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint dict.",
            code="not-a-checkpoint",
        )
    return state


__all__ = [
    "atomic_link",
    "atomic_save",
    "clean_stale_temps",
    "ensure_loadable",
    "fsync_dir",
    "safe_load",
    "verify_records",
]
