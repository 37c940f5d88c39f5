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
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.errors import CheckpointError, LightkitWarning, user_stacklevel
from lightkit.strategies.fsdp_checkpoint import is_sharded
from lightkit.strategies.parallel import ParallelStrategy
from lightkit.utils.modules import optimizer_owner
from lightkit.utils.validators import one_of

WrapPolicy = set[type[nn.Module]] | tuple[type[nn.Module], ...] | Callable[[nn.Module], bool]


def _numbered(state: dict[str, Any]) -> bool:
    """An optimizer state dict whose parameters are numbers, not names."""
    groups = state.get("param_groups") or []
    return any(isinstance(n, int) for g in groups for n in g.get("params", ()))


def default_layers(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of the repeated blocks: the items of every ``nn.ModuleList``, and torch's
    transformer layers."""
    classes: set[type[nn.Module]] = {nn.TransformerEncoderLayer, nn.TransformerDecoderLayer}
    for sub in model.modules():
        if isinstance(sub, nn.ModuleList):
            classes.update(type(item) for item in sub)
    return classes


@attrs.define
class FSDPStrategy(ParallelStrategy):
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
    state_dict_type: str = attrs.field(default="sharded", validator=one_of("sharded", "full"))
    _models: list[nn.Module] = attrs.field(init=False, factory=list, repr=False)

    @property
    def name(self) -> str:
        return "fsdp"

    @property
    def allows_inference_mode(self) -> bool:
        """Evaluation runs under ``no_grad``: parameters FSDP gathers under
        ``inference_mode`` would become inference tensors that training cannot update."""
        return False

    def teardown(self) -> None:
        self._models.clear()
        super().teardown()

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
            "offload_policy": CPUOffloadPolicy() if self._offloads() else OffloadPolicy(),
        }
        wrap = self._policy(module)
        # Bottom-up: a layer is sharded before any module that contains it.
        for sub in reversed(list(module.modules())):
            if sub is not module and wrap(sub) and any(p.requires_grad for p in sub.parameters()):
                fully_shard(sub, **options)
        fully_shard(module, **options)
        self._models.append(module)
        return module

    def _offloads(self) -> bool:
        if self.cpu_offload and self.device.type == "cpu":
            if self.rank == 0:
                warnings.warn(
                    LightkitWarning(
                        "FSDPStrategy(cpu_offload=True) on the CPU: the parameters are in CPU "
                        "memory already, so nothing is offloaded.",
                        code="nothing-to-offload",
                    ),
                    stacklevel=user_stacklevel(),
                )
            return False
        return self.cpu_offload

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

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return _no_gradient_sync(module)

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

        set_model_state_dict(module, state, options=self._options(not is_sharded(state), strict))

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
        if not state.get("state"):
            # A stateless optimizer (SGD without momentum): only its groups' settings to set,
            # which the optimizer's own loader does. torch's distributed loader cannot: it
            # reads a missing "state" (a sharded save drops an empty dict) as a flattened
            # state, and finds no tensor to tell its device by.
            _check_group_sizes(state["param_groups"], optimizer.param_groups)
            optimizer.load_state_dict({"state": {}, "param_groups": state["param_groups"]})
            return
        if _numbered(state):  # from one process or DDP: optimizer.state_dict() as it is
            state = self._named(owner, optimizer, state)
        set_optimizer_state_dict(
            owner, optimizer, state, options=self._options(not is_sharded(state))
        )

    def _named(
        self, owner: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> dict[str, Any]:
        """``state`` with its parameter numbers (their order in the optimizer's groups, as
        ``optimizer.state_dict()`` writes them) replaced by the names FSDP's loader reads."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        ours: dict[str, Any] = dict(
            get_optimizer_state_dict(owner, optimizer, options=self._options(False))
        )
        names: list[list[str]] = [list(g["params"]) for g in ours["param_groups"]]
        numbers = [g["params"] for g in state["param_groups"]]
        _check_group_sizes(state["param_groups"], ours["param_groups"])
        name_of = {
            n: name
            for g, h in zip(numbers, names, strict=True)
            for n, name in zip(g, h, strict=True)
        }
        return {
            "state": {name_of[n]: v for n, v in state["state"].items()},
            "param_groups": [
                {**g, "params": [name_of[n] for n in g["params"]]} for g in state["param_groups"]
            ],
        }

    def _owner(self, optimizer: torch.optim.Optimizer) -> nn.Module:
        owner = optimizer_owner(optimizer, self._models)
        if owner is None:
            raise CheckpointError(
                "this optimizer updates no model the FSDP strategy set up; pass the model.",
                code="optimizer-without-model",
            )
        return owner

    def save_checkpoint(self, state: dict[str, Any], path: str | Path) -> None:
        if self.state_dict_type == "full":
            super().save_checkpoint(state, path)
            return
        from lightkit.strategies.fsdp_checkpoint import save_sharded

        save_sharded(self, state, Path(path))

    # -- the result ------------------------------------------------------------------------
    def finish_result(self, result: Any, engine: Any) -> Any:
        """Before teardown: rank 0's metrics on every rank, and plain modules for
        ``Result.models`` where that is cheap. Under lightkit's launcher every rank gathers
        the full states to rank 0's CPU, for the calling process to rebuild the models from.
        In a job of one process (``devices=1``) the process rebuilds them itself. Under
        torchrun with several processes the modules stay sharded: gathering a model FSDP
        was needed for onto every rank could run out of memory after training finished.
        Save a checkpoint to get the full weights there."""
        if not self.group.active:
            return result
        result = super().finish_result(result, engine)
        launched = self.group.env.kind == "launched"
        if engine is None or not (launched or self.world_size == 1):
            return result
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = {
            name: get_model_state_dict(m, options=self._options(True))
            for name, m in engine.unwrapped_models().items()
        }
        if not launched:
            result.models = engine.rebuilt_models(full)
        elif self.rank == 0:
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


def _check_group_sizes(stored: list[dict[str, Any]], ours: list[dict[str, Any]]) -> None:
    sizes = [len(g["params"]) for g in stored]
    if sizes != [len(g["params"]) for g in ours]:
        raise CheckpointError(
            f"the checkpoint's optimizer has parameter groups of sizes {sizes}, this one "
            f"{[len(g['params']) for g in ours]}.",
            code="checkpoint-mismatch",
        )
