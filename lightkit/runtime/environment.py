"""Read the cluster environment a process was started in: torchrun, SLURM, or none."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs


@attrs.frozen
class ClusterEnvironment:
    """Where this process sits in a job. ``kind`` is ``"local"``, ``"torchrun"`` or ``"slurm"``."""

    kind: str = "local"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int | None = None

    @property
    def joined(self) -> bool:
        """True when an outside launcher started this process as one rank of a job."""
        return self.kind != "local"


def detect(env: Mapping[str, str] | None = None) -> ClusterEnvironment:
    """Detect torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``) or SLURM.

    A SLURM allocation counts only for batch steps (``srun``), not an interactive shell.
    """
    env = os.environ if env is None else env
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")):
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        return ClusterEnvironment(
            kind="torchrun",
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env["LOCAL_RANK"]),
            node_rank=int(env.get("GROUP_RANK", int(env["RANK"]) // max(local_world, 1))),
            main_address=env["MASTER_ADDR"],
            main_port=int(env["MASTER_PORT"]) if "MASTER_PORT" in env else None,
        )
    if (
        "SLURM_NTASKS" in env
        and "SLURM_PROCID" in env
        and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    ):
        nodelist = env.get("SLURM_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        return ClusterEnvironment(
            kind="slurm",
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            node_rank=int(env.get("SLURM_NODEID", 0)),
            main_address=env.get("MASTER_ADDR", _first_host(nodelist)),
            main_port=int(env["MASTER_PORT"])
            if "MASTER_PORT" in env
            else 12910 + int(env.get("SLURM_JOB_ID", "0")[-4:] or 0) % 1000,
        )
    return ClusterEnvironment()


def _first_host(nodelist: str) -> str:
    """``node[01-04],other`` -> ``node01``."""
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        first = rest.rstrip("]").split(",")[0].split("-")[0]
        return prefix + first
    return head
