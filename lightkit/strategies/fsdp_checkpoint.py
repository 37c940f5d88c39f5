"""FSDP's sharded checkpoints: ``torch.distributed.checkpoint`` folders, written atomically and
read without running code.

A sharded checkpoint is a folder named like a checkpoint file (``epoch=1.ckpt/``): every rank
writes its shard into ``.epoch=1.ckpt.partial/``, rank 0 renames it into place once every
rank is done, so a crash never leaves a half-written folder under the final name. Reading
gives full tensors on every rank (any number of ranks can then reshard them), and non-tensor
values are unpickled as ``torch.load(weights_only=True)`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lightkit.errors import CheckpointError


def save_sharded(strategy: Any, state: dict[str, Any], path: Path) -> None:
    """Every rank writes its shard into a temporary folder; rank 0 renames it into place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    tmp = path.with_name(f".{path.name}.partial")
    old = path.with_name(f".{path.name}.old")
    if strategy.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    strategy.barrier()
    try:
        dcp.save(state, checkpoint_id=tmp)
    except (OSError, CheckpointException) as exc:  # DCP's is a BaseException
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc}", code="checkpoint-write-failed"
        ) from exc
    strategy.barrier()
    if strategy.rank == 0:
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():
            old.unlink()
    strategy.barrier()


def load_sharded(path: Path) -> dict[str, Any]:
    """A sharded checkpoint as full tensors (every rank reads what it needs to reshard)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    class SafePlanner(_EmptyStateDictLoadPlanner):
        """DCP unpickles non-tensor values with weights_only=False; a checkpoint must not run
        code, so read them as torch.load(weights_only=True) does."""

        refused: CheckpointError | None = None

        def load_bytes(self, read_item: Any, value: Any) -> None:
            from torch.distributed.checkpoint._traverse import set_element

            try:
                obj = torch.load(value, weights_only=True)
            except Exception as exc:
                self.refused = CheckpointError(
                    f"refused to load {path}: {read_item.dest_index.fqn} holds objects that are "
                    f"not plain tensors and containers ({exc}). lightkit never unpickles code "
                    f"from a checkpoint.",
                    code="checkpoint-unsafe",
                )
                raise self.refused from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    state: dict[str, Any] = {}
    planner = SafePlanner()  # type: ignore[no-untyped-call]  # torch's __init__, unannotated
    try:
        # dcp.load() fills only keys the given dict has; the loader under it fills an empty one.
        _load_state_dict(
            state,
            storage_reader=FileSystemReader(path),
            no_dist=not (dist.is_available() and dist.is_initialized()),
            planner=planner,
        )
    except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
        if planner.refused is not None:  # DCP wraps what the planner raised
            raise planner.refused from None
        raise CheckpointError(
            f"{path} is not a readable sharded checkpoint: {type(exc).__name__}: {exc}",
            code="checkpoint-corrupt",
        ) from None
    # A stateless optimizer's (SGD without momentum) empty "state" is not saved by DCP: put it
    # back, so that any strategy's optimizer.load_state_dict takes the dict.
    for optimizer_state in state.get("optimizers") or []:
        if isinstance(optimizer_state, dict) and "param_groups" in optimizer_state:
            optimizer_state.setdefault("state", {})
    return state


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Any checkpoint lightkit writes, as full tensors: a file, or a sharded folder (FSDP's
    default), which any strategy and any number of processes can then load."""
    from lightkit.checkpoint.io import safe_load

    path = Path(path)
    if path.is_dir() and (path / ".metadata").is_file():
        return load_sharded(path)
    return safe_load(path, map_location=map_location)


def is_sharded(state: dict[str, Any]) -> bool:
    """Whether ``state`` holds DTensors (sharded), not full tensors."""
    from torch.distributed.tensor import DTensor

    def walk(value: Any) -> bool:
        if isinstance(value, DTensor):
            return True
        if isinstance(value, dict):
            return any(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return any(walk(v) for v in value)
        return False

    return walk(state)
