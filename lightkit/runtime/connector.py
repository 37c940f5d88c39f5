"""Resolve the trainer's flags into one configured ``Strategy``: a pure function.

Impossible combinations fail here, at compile time, before any process or tensor exists.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lightkit.errors import ConfigError, LightkitWarning, user_stacklevel
from lightkit.precision import precision_from
from lightkit.runtime.environment import ClusterEnvironment, detect
from lightkit.strategies import Strategy, strategy_class
from lightkit.utils.devices import check_accelerator, parse_devices


def _available(accelerator: str) -> bool:
    if accelerator == "cpu":
        return True
    if accelerator == "cuda":
        # Counted through NVML: unlike is_available(), this leaves CUDA uninitialized here,
        # so ranks forked from this process can still use it.
        return torch.cuda.device_count() > 0
    if accelerator == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return False


def resolve_accelerator(accelerator: str) -> str:
    accelerator = check_accelerator(accelerator)
    if accelerator == "auto":
        return next(a for a in ("cuda", "mps", "cpu") if _available(a))
    if not _available(accelerator):
        raise ConfigError(
            f"accelerator={accelerator!r} was asked for, but this machine has none "
            f"(torch {torch.__version__}). Use accelerator='auto' or 'cpu'.",
            code="accelerator-unavailable",
        )
    return accelerator


def resolve_devices(devices: Any, accelerator: str) -> list[int]:
    """Device indices for this machine: ``2`` -> ``[0, 1]``, ``[1, 3]`` stays, ``"auto"``.

    Raises:
        ConfigError: ``bad-devices``: a malformed value (see :func:`parse_devices`), or more
            GPUs than this machine has.
    """
    count = torch.cuda.device_count() if accelerator == "cuda" else 1
    parsed = parse_devices(devices)
    if isinstance(parsed, str) or parsed == -1:  # "auto" or -1: every device
        return list(range(count)) if accelerator == "cuda" else [0]
    if isinstance(parsed, int):
        if accelerator == "cuda" and parsed > count:
            raise ConfigError(
                f"devices={devices!r} asks for more GPUs than this machine has ({count}).",
                code="bad-devices",
            )
        return list(range(parsed))
    if accelerator == "cuda" and max(parsed) >= count:
        raise ConfigError(
            f"devices={devices!r} names GPU {max(parsed)}, but this machine has {count} "
            f"(indices 0 to {count - 1}).",
            code="bad-devices",
        )
    return parsed


def connect(
    accelerator: str = "auto",
    devices: Any = "auto",
    strategy: str | Strategy = "auto",
    precision: Any = "32-true",
    num_nodes: int = 1,
    env: ClusterEnvironment | None = None,
) -> Strategy:
    """Turn flags into a configured strategy (not yet set up: no process group exists)."""
    # 1. Flags: a Strategy instance carries its own device and precision unless given here.
    plugin = precision_from(precision)

    # 2. Device kind and the indices on this machine.
    accel = resolve_accelerator(accelerator)
    indices = resolve_devices(devices, accel)

    # 3. Environment: under torchrun/SLURM we join the job; its size wins over `devices`.
    env = detect() if env is None else env
    if env.joined:
        world = env.world_size
        asked = parse_devices(devices)
        if asked not in ("auto", -1) and len(indices) != env.local_world_size and env.rank == 0:
            warnings.warn(
                LightkitWarning(
                    f"devices={devices!r} asks for {len(indices)} process(es) per machine, but this "
                    f"{env.kind} job runs {env.local_world_size} per machine ({env.world_size} in "
                    f"all), and the job's size wins. Set the processes in the launcher "
                    f"(torchrun --nproc-per-node), or leave devices='auto'.",
                    code="devices-ignored",
                ),
                stacklevel=user_stacklevel(),
            )
        local_index = indices[env.local_rank % len(indices)] if accel == "cuda" else 0
    else:
        world = len(indices) * num_nodes
        local_index = indices[0]
    device = torch.device(accel, local_index) if accel != "cpu" else torch.device("cpu")

    # 4. Strategy.
    if isinstance(strategy, Strategy):
        chosen = strategy
        if world > 1 and not chosen.is_distributed:
            raise ConfigError(
                f"strategy={type(chosen).__name__}() runs one process, but {world} were asked "
                f"for (devices={devices!r}, num_nodes={num_nodes}). Use lk.DDPStrategy() or "
                f"devices=1.",
                code="impossible-config",
            )
        if chosen.device.type != device.type and chosen.device == torch.device("cpu"):
            chosen.device = device
        chosen.precision = plugin if precision not in (None, "32-true") else chosen.precision
        if hasattr(chosen, "configure"):
            chosen.configure(env=env, indices=indices, num_nodes=num_nodes, accelerator=accel)
    else:
        name = strategy
        if name == "auto":
            name = "ddp" if world > 1 else "single_device"
        if name in ("dp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
            raise ConfigError(
                f"strategy={strategy!r} is not offered; use strategy='ddp' (lightkit starts "
                f"the processes itself, in scripts and notebooks alike).",
                code="unknown-strategy",
            )
        cls = strategy_class(name)
        if name == "single_device" and world > 1:
            raise ConfigError(
                f"strategy='single_device' runs one process, but {world} were asked for "
                f"(devices={devices!r}, num_nodes={num_nodes}). Use strategy='ddp' or devices=1.",
                code="impossible-config",
            )
        chosen = cls(device=device, precision=plugin)
        if hasattr(chosen, "configure"):
            chosen.configure(env=env, indices=indices, num_nodes=num_nodes, accelerator=accel)

    # 5. The backend and the precision: checked against the device now, not in the ranks.
    backend = getattr(chosen, "backend", None)
    if backend == "nccl" and chosen.device.type != "cuda":
        raise ConfigError(
            f"{type(chosen).__name__}(backend='nccl') needs CUDA devices, but this run is on "
            f"{chosen.device.type}. Use backend='gloo' on CPU, or leave backend=None (nccl on "
            f"CUDA, gloo elsewhere).",
            code="impossible-config",
        )
    chosen.precision.setup(chosen.device)
    return chosen
