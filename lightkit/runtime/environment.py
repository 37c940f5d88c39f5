"""Read the cluster environment a process was started in: torchrun, SLURM, lightkit's own
launcher, or none.

lightkit never re-implements rendezvous: under ``torchrun`` (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or an ``srun`` step of more than one task, a
process joins the job it is part of. Only a plain process (``kind="local"``) starts ranks
itself, on this machine, with the rendezvous bound to ``127.0.0.1``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

import attrs

#: Set by lightkit's launcher in the processes it starts (besides torchrun's variables).
LAUNCHED_VAR = "LIGHTKIT_LAUNCHED"


@attrs.frozen
class ClusterEnvironment:
    """Where this process sits in a job.

    ``kind`` is ``"local"`` (a plain process), ``"torchrun"``, ``"slurm"``, or ``"launched"``
    (a rank that lightkit's launcher started for ``devices=N``).
    """

    kind: str = "local"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int | None = None

    @property
    def joined(self) -> bool:
        """True when a launcher started this process as one rank of a job."""
        return self.kind != "local"

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(self.local_world_size, 1))

    @property
    def init_method(self) -> str:
        """Where the process group meets: torchrun's store (``env://``) or ``tcp://host:port``."""
        if self.kind in ("torchrun", "launched"):
            return "env://"
        return f"tcp://{self.main_address}:{self.main_port}"


def detect(env: Mapping[str, str] | None = None) -> ClusterEnvironment:
    """Detect torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``) or SLURM.

    A SLURM allocation counts only for a step of more than one task (``srun``), not for an
    interactive shell or a one-task batch script (there lightkit launches the ranks itself).
    """
    env = os.environ if env is None else env
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")):
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        return ClusterEnvironment(
            kind="launched" if env.get(LAUNCHED_VAR) == "1" else "torchrun",
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env["LOCAL_RANK"]),
            local_world_size=local_world,
            node_rank=int(env.get("GROUP_RANK", int(env["RANK"]) // max(local_world, 1))),
            main_address=env["MASTER_ADDR"],
            main_port=int(env["MASTER_PORT"]) if "MASTER_PORT" in env else None,
        )
    if (
        "SLURM_NTASKS" in env
        and "SLURM_PROCID" in env
        and int(env["SLURM_NTASKS"]) > 1
        and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    ):
        nodelist = env.get("SLURM_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        world = int(env["SLURM_NTASKS"])
        nodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")) or 1)
        return ClusterEnvironment(
            kind="slurm",
            rank=int(env["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            local_world_size=int(env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or 0)
            or max(1, world // max(nodes, 1)),
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_interface() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), for gloo to bind to."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return None


def local_rank_env(
    rank: int, world_size: int, port: int, *, launched: bool = True
) -> dict[str, str]:
    """The variables torchrun would set for local rank ``rank`` of a one-machine job."""
    env = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "GROUP_RANK": "0",
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    if launched:
        env[LAUNCHED_VAR] = "1"
    if "GLOO_SOCKET_IFNAME" not in os.environ and sys.platform != "win32":
        # One machine: gloo talks over loopback, whatever the hostname resolves to.
        iface = loopback_interface()
        if iface is not None:
            env["GLOO_SOCKET_IFNAME"] = iface
    return env
