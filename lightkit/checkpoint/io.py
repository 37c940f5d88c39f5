"""Atomic checkpoint files and safe loading.

A checkpoint is written to a temporary file in the same folder (its name never ends in
``.ckpt``), flushed and fsynced, then renamed into place with ``os.replace``: a kill at any
moment leaves either the old or the new complete file. Reading always uses
``torch.load(weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightkit.errors import CheckpointError

TMP_SUFFIX = ".tmp"


def atomic_save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically. Raises ``CheckpointError`` naming the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {exc}. The previous file (if any) is "
                f"unchanged.",
                code="checkpoint-write-failed",
            ) from exc
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
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


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}.", code="checkpoint-not-found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects that are not plain tensors and "
            f"containers ({exc}). lightkit never unpickles code from a checkpoint.",
            code="checkpoint-unsafe",
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        IndexError,
        KeyError,
    ) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}",
            code="checkpoint-corrupt",
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint: {type(exc).__name__}: {exc}",
            code="checkpoint-corrupt",
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint dict.",
            code="not-a-checkpoint",
        )
    return state
