"""``FSDPStrategy``: parameters, gradients and optimizer state sharded across ranks (FSDP2).

Each model gets ``torch.distributed.fsdp.fully_shard`` on every layer the wrap policy picks
(bottom-up), then on the model itself. A ``-mixed`` precision becomes FSDP's
``MixedPrecisionPolicy`` (parameters gathered and computed in the low dtype, gradients reduced
in float32); ``-true`` precisions convert the model before sharding. Launching, data and
collectives are those of DDP (:mod:`lightkit.strategies.process_group`).

Checkpoints: ``state_dict_type="sharded"`` (the default) writes a ``torch.distributed.checkpoint``
folder named like the file (``epoch=1.ckpt/``), every rank its own shard, renamed into place
once complete. ``"full"`` gathers full state dicts and rank 0 writes one ordinary file. Either
loads into any number of ranks; non-tensor values in a sharded checkpoint are read with
``weights_only=True`` too.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.errors import CheckpointError
from lightkit.runtime.environment import ClusterEnvironment
from lightkit.strategies.base import Strategy
from lightkit.strategies.process_group import ProcessGroup, make_launcher, to_timedelta

WrapPolicy = set[type[nn.Module]] | tuple[type[nn.Module], ...] | Callable[[nn.Module], bool]


def default_layers(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of the repeated blocks: the items of every ``nn.ModuleList``, and torch's
    transformer layers."""
    classes: set[type[nn.Module]] = {nn.TransformerEncoderLayer, nn.TransformerDecoderLayer}
    for sub in model.modules():
        if isinstance(sub, nn.ModuleList):
            classes.update(type(item) for item in sub)
    return classes


@attrs.define
class FSDPStrategy(Strategy):
    """Fully sharded data parallelism (FSDP2).

    Args:
        auto_wrap: which submodules are sharded on their own: a set of classes, or a function
            ``module -> bool``; default: the items of ``nn.ModuleList``s and transformer layers.
        reshard_after_forward: free gathered parameters after forward (less memory, one more
            all-gather in backward).
        cpu_offload: keep sharded parameters, gradients and optimizer state on the CPU.
        state_dict_type: ``"sharded"`` (distributed checkpoint folders) or ``"full"``.
        backend, timeout, start_method, failure_timeout, seed: as :class:`DDPStrategy`.

    Example::

        lk.Trainer(strategy=FSDPStrategy(auto_wrap={Block}), devices=8, precision="bf16-mixed")
    """

    auto_wrap: WrapPolicy | None = None
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    state_dict_type: str = attrs.field(
        default="sharded", validator=attrs.validators.in_(("sharded", "full"))
    )
    backend: str | None = None
    timeout: timedelta = attrs.field(default=timedelta(minutes=30), converter=to_timedelta)
    start_method: str = attrs.field(
        default="spawn", validator=attrs.validators.in_(("spawn", "fork"))
    )
    failure_timeout: float = 10.0
    seed: int | None = None
    group: ProcessGroup = attrs.field(init=False, factory=ProcessGroup, repr=False)
    launcher: Any = attrs.field(init=False, default=None, repr=False)
    _models: list[nn.Module] = attrs.field(init=False, factory=list, repr=False)

    @property
    def name(self) -> str:
        return "fsdp"

    def configure(
        self,
        env: ClusterEnvironment,
        indices: list[int],
        num_nodes: int = 1,
        accelerator: str = "cpu",
    ) -> None:
        self.group = ProcessGroup(backend=self.backend, timeout=self.timeout)
        self.launcher = make_launcher(self, self.group, env, len(indices), num_nodes)

    # -- topology --------------------------------------------------------------------------
    @property
    def is_distributed(self) -> bool:
        return True

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def local_rank(self) -> int:
        return self.group.local_rank

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def setup_environment(self) -> None:
        self.group.setup(self.device, self.seed)

    def teardown(self) -> None:
        self._models.clear()
        self.group.destroy()

    # -- objects ---------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

        module = module.to(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        options: dict[str, Any] = {
            "mesh": mesh,
            "reshard_after_forward": self.reshard_after_forward,
            "mp_policy": self._mixed_precision(),
            "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        }
        wrap = self._policy(module)
        # Bottom-up: a layer is sharded before any module that contains it.
        for sub in reversed(list(module.modules())):
            if sub is not module and wrap(sub) and any(p.requires_grad for p in sub.parameters()):
                fully_shard(sub, **options)
        fully_shard(module, **options)
        self._models.append(module)
        return module

    def _policy(self, module: nn.Module) -> Callable[[nn.Module], bool]:
        policy = self.auto_wrap
        if callable(policy) and not isinstance(policy, (set, tuple, type)):
            return policy
        classes = tuple(default_layers(module) if policy is None else policy)  # type: ignore[arg-type]
        return lambda sub: isinstance(sub, classes)

    def _mixed_precision(self) -> Any:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        from lightkit.precision.mixed import MixedPrecision

        if isinstance(self.precision, MixedPrecision):
            return MixedPrecisionPolicy(
                param_dtype=self.precision.dtype, reduce_dtype=torch.float32
            )
        return MixedPrecisionPolicy()

    def setup_dataloader(self, loader: Any, *, shuffle_default: bool = True) -> Any:
        return self.group.distribute(loader, shuffle_default=shuffle_default)

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return _no_gradient_sync(module)

    # -- collectives -----------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return self.group.all_reduce(tensor, op)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.group.all_gather(tensor)

    def barrier(self, name: str | None = None) -> None:
        self.group.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self.group.broadcast(obj, src)

    def reduce_any(self, flag: bool) -> bool:
        return self.group.reduce_any(flag)

    # -- state -----------------------------------------------------------------------------
    def _options(self, full: bool, strict: bool = True) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full, strict=strict)

    def module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """Sharded (DTensor) states, or under ``"full"`` the full state on rank 0 (``{}``
        elsewhere). A collective: every rank calls it."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = self.state_dict_type == "full"
        return get_model_state_dict(module, options=self._options(full))

    def load_module_state_dict(
        self, module: nn.Module, state: dict[str, Any], strict: bool = True
    ) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(module, state, options=self._options(not _sharded(state), strict))

    def optimizer_state_dict(
        self, module: nn.Module | None, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = self.state_dict_type == "full"
        owner = module if module is not None else self._owner(optimizer)
        return get_optimizer_state_dict(owner, optimizer, options=self._options(full))

    def load_optimizer_state_dict(
        self, module: nn.Module | None, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        owner = module if module is not None else self._owner(optimizer)
        set_optimizer_state_dict(
            owner, optimizer, state, options=self._options(not _sharded(state))
        )

    def _owner(self, optimizer: torch.optim.Optimizer) -> nn.Module:
        ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for module in self._models:
            if any(id(p) in ids for p in module.parameters()):
                return module
        raise CheckpointError(
            "this optimizer updates no model the FSDP strategy set up; pass the model.",
            code="optimizer-without-model",
        )

    def save_checkpoint(self, state: dict[str, Any], path: str | Path) -> None:
        if self.state_dict_type == "full":
            super().save_checkpoint(state, path)
            return
        _save_sharded(self, state, Path(path))

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if path.is_dir():
            return _load_sharded(path)
        return super().load_checkpoint(path)

    # -- the result ------------------------------------------------------------------------
    def finish_result(self, result: Any, engine: Any) -> Any:
        """Before teardown: rank 0's metrics on every rank; under lightkit's launcher, the
        models' full states for the calling process (gathered by every rank)."""
        if not self.group.active:
            return result
        result.metrics = self.group.broadcast(result.metrics)
        if self.group.env.kind == "launched" and engine is not None:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            full = {
                name: get_model_state_dict(m, options=self._options(True))
                for name, m in engine.unwrapped_models().items()
            }
            if self.rank == 0:
                result.extras["full_model_states"] = full
        return result


@contextlib.contextmanager
def _no_gradient_sync(module: nn.Module) -> Iterator[None]:
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(module, FSDPModule):
        yield
        return
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _sharded(state: dict[str, Any]) -> bool:
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


def _save_sharded(strategy: FSDPStrategy, state: dict[str, Any], path: Path) -> None:
    """Every rank writes its shard into a temporary folder; rank 0 renames it into place."""
    import torch.distributed.checkpoint as dcp

    tmp = path.with_name(f".{path.name}.partial")
    old = path.with_name(f".{path.name}.old")
    if strategy.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    strategy.barrier()
    try:
        dcp.save(state, checkpoint_id=tmp)
    except OSError as exc:
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


def _load_sharded(path: Path) -> dict[str, Any]:
    """A sharded checkpoint as full tensors (every rank reads what it needs to reshard)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    class SafePlanner(_EmptyStateDictLoadPlanner):
        """DCP unpickles non-tensor values with weights_only=False; a checkpoint must not run
        code, so read them as torch.load(weights_only=True) does."""

        def load_bytes(self, read_item: Any, value: Any) -> None:
            from torch.distributed.checkpoint._traverse import set_element

            try:
                obj = torch.load(value, weights_only=True)
            except Exception as exc:
                raise CheckpointError(
                    f"refused to load {path}: {read_item.dest_index.fqn} holds objects that are "
                    f"not plain tensors and containers ({exc}).",
                    code="checkpoint-unsafe",
                ) from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    state: dict[str, Any] = {}
    try:
        # dcp.load() fills only keys the given dict has; the loader under it fills an empty one.
        _load_state_dict(
            state,
            storage_reader=FileSystemReader(path),
            no_dist=not (dist.is_available() and dist.is_initialized()),
            planner=SafePlanner(),  # type: ignore[no-untyped-call]  # torch's __init__, unannotated
        )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable sharded checkpoint: {type(exc).__name__}: {exc}",
            code="checkpoint-corrupt",
        ) from None
    return state
