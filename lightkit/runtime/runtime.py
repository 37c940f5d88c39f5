"""``Runtime``: strategy + precision + device, the one door to hardware.

The Engine's loops touch devices only through it, and a user who wants their own loop uses it
directly (the dial, not the wall)::

    rt = lk.Runtime(precision="bf16-mixed")
    model = rt.setup(model)
    opt = rt.setup_optimizer(torch.optim.AdamW(model.parameters()))
    for batch in rt.setup_dataloader(loader):
        batch = rt.to_device(batch)
        with rt.autocast():
            loss = model(batch).mean()
        rt.backward(loss)
        rt.optimizer_step(opt)
        opt.zero_grad()
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightkit.errors import CheckpointError, ConfigError, DistributedError
from lightkit.precision.base import Precision, unwrap_optimizer
from lightkit.strategies.base import Strategy
from lightkit.utils.apply import apply_to_tensors

#: The reductions ``all_reduce`` takes (the same in one process as in many).
REDUCE_OPS = ("sum", "mean", "max", "min")


class Runtime:
    """The device layer: where modules and batches live, how backward and steps run.

    Build it from flags (``lk.Runtime(accelerator="cpu", precision="bf16-mixed")``) or from
    plugin instances (``lk.Runtime(strategy=DDPStrategy(), precision=MixedPrecision())``).
    """

    def __init__(
        self,
        accelerator: str = "auto",
        devices: Any = "auto",
        strategy: str | Strategy = "auto",
        precision: Any = "32-true",
        num_nodes: int = 1,
        *,
        _strategy: Strategy | None = None,
    ) -> None:
        if _strategy is None:
            from lightkit.runtime.connector import connect

            _strategy = connect(accelerator, devices, strategy, precision, num_nodes)
        self.strategy: Strategy = _strategy
        self.precision: Precision = _strategy.precision
        self.device: torch.device = _strategy.device
        self._transfer = self._make_transfer()
        self._launched = False
        self._ever_launched = False
        #: Backward passes run through :meth:`backward` (a manual 16-mixed step checks it).
        self.backwards = 0
        # The loops call these every step: skip the plugin layers that would only forward to
        # the plain PyTorch call (a few Python calls per step on a tiny model).
        precision_type = type(self.precision)
        self._plain_backward = (
            type(_strategy).backward is Strategy.backward
            and precision_type.backward is Precision.backward
        )
        self._plain_step = (
            precision_type.optimizer_step is Precision.optimizer_step
            and precision_type.update is Precision.update
        )
        self._unscales = self.precision.unscales
        # The optimizers unscaled in this step (since the last backward or their own step): a
        # plugin's unscale_gradients runs once per step however many callers (clipping, a
        # gradient monitor, the loop) ask for it.
        self._unscaled: set[int] = set()
        #: True when :meth:`backward`, :meth:`unscale_gradients` and :meth:`optimizer_step`
        #: come down to ``loss.backward()``, nothing and ``optimizer.step()``: the fit loop
        #: then makes those calls itself. Whoever replaces these methods sets it to False.
        self.plain_steps = self._plain_backward and self._plain_step and not self._unscales

    @property
    def moves_batches(self) -> bool:
        """Whether :meth:`to_device` changes anything (a loop may skip calling it when not)."""
        return self._transfer is not _unchanged

    @classmethod
    def from_strategy(cls, strategy: Strategy) -> Runtime:
        """A runtime over an already configured strategy (used by the Trainer)."""
        return cls(_strategy=strategy)

    def __repr__(self) -> str:
        return (
            f"Runtime(strategy={self.strategy.name!r}, precision={self.precision.name!r}, "
            f"device={self.device}, rank={self.rank}/{self.world_size})"
        )

    # -- topology ---------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.strategy.rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.rank == 0

    def launch(self) -> None:
        """Join or create the process group (a no-op for one process). Idempotent."""
        if not self._launched:
            self.strategy.setup_environment()
            self._launched = self._ever_launched = True

    def teardown(self) -> None:
        self.strategy.teardown()
        self._launched = False

    def _joined(self) -> None:
        """Launch on first use, as :meth:`setup` does: a collective or a loader split before
        the group exists would quietly act as one process (every rank reading all the data).
        After :meth:`teardown` the group is gone on purpose: nothing joins it again, and a
        use refuses to act alone. One process needs no group for these (nor a group of one
        left behind)."""
        if self.world_size == 1 or self._launched:
            return
        if not self._ever_launched:
            self.launch()
            return
        raise DistributedError(
            f"this Runtime's process group was left with teardown(), so this process cannot "
            f"reach the other {self.world_size - 1} (a collective, a loader split or a save "
            f"would act as one process). Call it before teardown(), or join again with "
            f"rt.launch().",
            code="not-launched",
        )

    # -- objects ----------------------------------------------------------------------------
    def setup(self, module: nn.Module) -> nn.Module:
        """Convert ``module`` to the precision's dtype, move it to the device, wrap it.

        Raises:
            ConfigError: ``bad-runtime-argument`` if ``module`` is not a ``torch.nn.Module``.
        """
        if not isinstance(module, nn.Module):
            hint = (
                " An optimizer goes to setup_optimizer()."
                if isinstance(module, torch.optim.Optimizer)
                else ""
            )
            raise _bad_argument("setup(module)", "a torch.nn.Module", module, hint)
        self.launch()
        return self.strategy.setup_module(self.precision.convert_module(module))

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Prepare ``optimizer`` (built over the parameters of a module from :meth:`setup`).

        Raises:
            ConfigError: ``bad-runtime-argument`` if ``optimizer`` is not a
                ``torch.optim.Optimizer``.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            hint = " A module goes to setup()." if isinstance(optimizer, nn.Module) else ""
            raise _bad_argument(
                "setup_optimizer(optimizer)", "a torch.optim.Optimizer", optimizer, hint
            )
        return self.strategy.setup_optimizer(optimizer)

    def setup_dataloader(
        self, loader: Any, *, shuffle_default: bool = True, name: str | None = None
    ) -> Any:
        """Give each rank its share of ``loader`` (a ``DistributedSampler`` when distributed).

        ``loader`` is a ``DataLoader`` or any other iterable of batches (a list of ready
        batches, a generator); only a ``DataLoader`` over a map-style dataset can be split
        across ranks. ``name`` says whose loader it is in a warning (``"val_data() at
        x.py:12"``): inside a rank process no frame is the caller's.

        Raises:
            ConfigError: ``bad-runtime-argument`` for what cannot be iterated as batches: a
                non-iterable (a map-style ``Dataset`` included), a string, a dict, a module.
        """
        problem = not_batches(loader)
        if problem is not None:
            raise _bad_argument(
                "setup_dataloader(loader)",
                "a DataLoader or another iterable of batches (a list of batches works)",
                loader,
                problem,
            )
        self._joined()
        method = self.strategy.setup_dataloader
        # A Strategy of one's own written before `name` existed still works.
        if name is not None and "name" in inspect.signature(method).parameters:
            return method(loader, shuffle_default=shuffle_default, name=name)
        return method(loader, shuffle_default=shuffle_default)

    def unwrap(self, module: nn.Module) -> nn.Module:
        return self.strategy.unwrap(module)

    def _make_transfer(self) -> Callable[[Any], Any]:
        device = self.device
        non_blocking = device.type == "cuda"
        convert = self.precision.convert_input if self.precision.converts_input else None

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        def move_object(obj: Any) -> Any:
            # A batch class of the user's with its own `.to(device)` (Lightning calls it too).
            to = getattr(obj, "to", None)
            return to(device) if callable(to) and not isinstance(obj, type) else obj

        if device.type == "cpu" and convert is None:
            # A CPU batch is already where it must be: the cheapest transfer is none.
            return _unchanged
        if convert is None:
            return lambda batch: apply_to_tensors(batch, move, move_object)
        return lambda batch: convert(apply_to_tensors(batch, move, move_object))

    def to_device(self, batch: Any) -> Any:
        """Move every tensor of ``batch`` (nested tuples, lists, dicts, dataclasses) to the
        device, converting floating tensors for ``-true`` precisions; any other object with a
        ``to`` method is moved by ``obj.to(device)``. On the CPU without a ``-true`` precision
        nothing moves, and the batch comes back as it is (no ``.to`` is called)."""
        return self._transfer(batch)

    def prefetch(
        self, batches: Iterator[tuple[int, Any]], loader: Any
    ) -> Iterator[tuple[int, Any]]:
        """``batches`` (``(batch_idx, batch)`` pairs read from ``loader``), with each batch's
        copy to the device started one batch ahead, on a side stream, so it overlaps the
        current step. Only on CUDA and only for a ``DataLoader`` with worker processes (reading
        ahead there draws nothing from this process's random generators); anywhere else the
        pairs come back untouched and :meth:`to_device` copies each batch when it is used.
        See ``lightkit/runtime/prefetch.py``."""
        if self.device.type != "cuda":
            return batches
        from lightkit.runtime.prefetch import cuda_prefetch, reads_ahead_safely

        if not reads_ahead_safely(loader):
            return batches
        return cuda_prefetch(batches, self.device)

    # -- compute ----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.precision.autocast()

    @property
    def autocasts(self) -> bool:
        """Whether :meth:`autocast` does anything (a loop may skip entering it when not)."""
        return type(self.precision).autocast is not Precision.autocast

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward(*args, **kwargs)`` through the strategy and precision plugins."""
        if not isinstance(loss, torch.Tensor):
            raise _bad_argument("backward(loss)", "a torch.Tensor", loss, " Pass the loss tensor.")
        if self._unscaled:  # new gradients: what was unscaled is history
            self._unscaled.clear()
        self.backwards += 1
        if self._plain_backward:
            loss.backward(*args, **kwargs)
        else:
            self.strategy.backward(loss, *args, **kwargs)

    def no_backward_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient sync of ``module`` (what :meth:`setup` returned) in the backward
        passes inside: the accumulation steps before the one that syncs."""
        if not isinstance(module, nn.Module):
            raise _bad_argument(
                "no_backward_sync(module)", "the module setup() returned", module, ""
            )
        return self.strategy.no_backward_sync(module)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the loss scale (16-mixed; a no-op otherwise).
        Once per step: later calls, and the step itself, do not unscale again."""
        if self._unscales:
            key = id(unwrap_optimizer(optimizer))  # a manual step's wrapper is the same one
            if key not in self._unscaled:
                self.precision.unscale_gradients(optimizer)
                self._unscaled.add(key)

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer,
        max_value: float,
        algorithm: str = "norm",
    ) -> torch.Tensor | None:
        """Clip the gradients of ``optimizer``'s parameters (unscaled first under 16-mixed) to
        ``max_value``: their total norm (``algorithm="norm"``) or each element
        (``"value"``); return the total norm before clipping (``"norm"``), else ``None``.

        Raises:
            ConfigError: ``bad-runtime-argument`` for an unknown ``algorithm`` or a
                ``max_value`` that is not a number >= 0.
        """
        if not hasattr(optimizer, "param_groups"):
            hint = (
                " A module's gradients are clipped through its optimizer."
                if isinstance(optimizer, nn.Module)
                else ""
            )
            raise _bad_argument(
                "clip_gradients(optimizer, max_value)", "a torch.optim.Optimizer", optimizer, hint
            )
        if algorithm not in ("norm", "value"):
            raise ConfigError(
                f"Runtime.clip_gradients got algorithm={algorithm!r}; expected 'norm' or 'value'.",
                code="bad-runtime-argument",
            )
        if (
            isinstance(max_value, bool)
            or not isinstance(max_value, numbers.Real)  # numpy's float32 too
            or not (max_value >= 0)
        ):
            raise ConfigError(
                f"Runtime.clip_gradients got max_value={_short(max_value)}; expected a number "
                f">= 0 (the largest gradient norm, or element, to keep).",
                code="bad-runtime-argument",
            )
        self.unscale_gradients(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        return self.strategy.clip_gradients(params, max_value, algorithm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, *, update: bool = True) -> bool:
        """Step ``optimizer`` through the precision plugin (a scaler may skip the step); return
        whether it really stepped. With several optimizers per iteration pass ``update=False``
        to all but the last, so the loss scale updates once."""
        if not hasattr(optimizer, "param_groups"):
            raise _bad_argument(
                "optimizer_step(optimizer)", "a torch.optim.Optimizer", optimizer, ""
            )
        if self._unscales:
            self._unscaled.discard(id(unwrap_optimizer(optimizer)))
        if self._plain_step:
            optimizer.step()
            return True
        stepped = self.precision.optimizer_step(optimizer)
        if update:
            self.precision.update()
        return stepped

    # -- collectives ------------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced across processes with ``op`` (``sum``, ``mean``, ``max``, ``min``).

        The arguments are checked in every process count alike, so a typo fails in a one-process
        test, not first at scale.

        Raises:
            ConfigError: ``bad-runtime-argument`` for an unknown ``op`` or a non-tensor.
        """
        if op not in REDUCE_OPS:
            near = " Did you mean 'mean'?" if op in ("avg", "average", "AVG", "MEAN") else ""
            raise ConfigError(
                f"Runtime.all_reduce got op={op!r}; expected one of {', '.join(REDUCE_OPS)}.{near}",
                code="bad-runtime-argument",
            )
        if not isinstance(tensor, torch.Tensor):
            raise _bad_argument(
                "all_reduce(tensor)", "a torch.Tensor", tensor, " Wrap a number: torch.tensor(x)."
            )
        self._joined()
        return self.strategy.all_reduce(tensor, op)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape on each), stacked: ``(world_size, *shape)``.

        Raises:
            ConfigError: ``bad-runtime-argument`` if ``tensor`` is not a tensor.
        """
        if not isinstance(tensor, torch.Tensor):
            raise _bad_argument(
                "all_gather(tensor)", "a torch.Tensor", tensor, " Wrap a number: torch.tensor(x)."
            )
        self._joined()
        return self.strategy.all_gather(tensor)

    def barrier(self, name: str | None = None) -> None:
        self._joined()
        self.strategy.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as rank ``src`` has it, on every rank. ``src`` is checked in one process as
        in many, so a wrong rank fails in a one-process test, not first at scale."""
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ConfigError(
                f"Runtime.broadcast got src={src!r}; expected a rank, an int from 0 to "
                f"{self.world_size - 1} (world_size={self.world_size}).",
                code="bad-runtime-argument",
            )
        self._joined()
        return self.strategy.broadcast(obj, src)

    # -- state ------------------------------------------------------------------------------
    def save(self, state: dict[str, Any], path: str | Path) -> None:
        """Write ``state`` atomically (rank 0; every rank its shard under FSDP), then wait for
        every rank: a ``load`` right after it reads the file just written, on every rank.

        Modules, optimizers and anything else with ``state_dict``/``load_state_dict`` (a
        scheduler, ``rt.precision``'s loss scale) are replaced by their state dicts.

        Raises:
            ConfigError: ``bad-runtime-argument`` if ``state`` is not a dict or ``path`` not a
                path.
        """
        _check_state_and_path("save(state, path)", state, path, required=True)
        self._joined()
        if self.world_size > 1:
            # Every rank must name one file: under FSDP each writes its shard into it, and a
            # load right after reads it on every rank. Agreed by all, so all raise together.
            first = self.strategy.broadcast(str(path), 0)
            if self.strategy.reduce_any(str(path) != first):
                # Every rank learns every path (one broadcast each, on every rank alike).
                paths = [self.strategy.broadcast(str(path), r) for r in range(self.world_size)]
                differ = ", ".join(
                    f"rank {r}: {p!r}" for r, p in enumerate(paths) if r == 0 or p != first
                )
                raise ConfigError(
                    f"Runtime.save got different paths on different ranks ({differ}); every "
                    f"rank must pass the same path (only rank 0 writes it; under FSDP each "
                    f"rank adds its shard). Build it from values every rank shares, not from "
                    f"the rank or the time.",
                    code="bad-runtime-argument",
                )
        self.strategy.save_checkpoint(self._to_state(state), path)
        self.barrier()  # rank 0 wrote it: the others may read it now (Fabric's save waits too)

    def load(
        self, path: str | Path, state: dict[str, Any] | None = None, strict: bool = True
    ) -> dict[str, Any]:
        """Read a checkpoint (``weights_only``). Modules/optimizers in ``state`` are loaded in
        place; the rest of the file is returned.

        Args:
            path: a file written by :meth:`save`.
            state: name -> module, optimizer or other object with ``load_state_dict`` (a
                scheduler) to load in place (other values are left as they are; the file's
                value is in the returned dict).
            strict: every key of ``state`` must be in the file, and each module's parameter
                names must match the file's (``load_state_dict(strict=True)``). With
                ``strict=False`` keys the file lacks are skipped and modules load what
                matches.

        Raises:
            CheckpointError: ``checkpoint-missing-key`` (``strict``) when a key of ``state`` is
                not in the file; nothing is loaded then.
            ConfigError: ``bad-runtime-argument`` if ``state`` is not a dict or ``path`` not a
                path.
        """
        _check_state_and_path("load(path, state)", state, path, required=False)
        loaded = self.strategy.load_checkpoint(path)
        state = state or {}
        missing = [key for key in state if key not in loaded]
        if missing and strict:
            raise CheckpointError(
                f"Runtime.load({str(path)!r}, state): the file has no "
                f"{', '.join(repr(k) for k in missing)}; it holds "
                f"{', '.join(repr(k) for k in sorted(loaded, key=str)) or 'nothing'}. Fix the "
                f"key, or pass strict=False to load the keys it has and skip the rest.",
                code="checkpoint-missing-key",
            )
        for key, obj in state.items():
            if key not in loaded:
                continue
            if isinstance(obj, nn.Module):
                self.strategy.load_module_state_dict(obj, loaded.pop(key), strict=strict)
            elif isinstance(obj, torch.optim.Optimizer):
                self.strategy.load_optimizer_state_dict(None, obj, loaded.pop(key))
            elif _has_state(obj):
                obj.load_state_dict(loaded.pop(key))
        return loaded

    def _to_state(self, state: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, obj in state.items():
            if isinstance(obj, nn.Module):
                out[key] = self.strategy.module_state_dict(obj)
            elif isinstance(obj, torch.optim.Optimizer):
                out[key] = self.strategy.optimizer_state_dict(None, obj)
            elif _has_state(obj):
                out[key] = obj.state_dict()
            else:
                out[key] = obj
        return out


def _has_state(obj: Any) -> bool:
    """A scheduler, a loss scaler, a metric: an object (not a class) that saves and loads its
    state."""
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "state_dict", None))
        and callable(getattr(obj, "load_state_dict", None))
    )


def _unchanged(batch: Any) -> Any:
    return batch


def given(obj: Any) -> str:
    """``str 'notamodule'``: the type and a short repr of what a method was given (the type
    alone when the repr is long, spans lines or says nothing)."""
    text = repr(obj)
    if len(text) > 60 or "\n" in text or text.startswith("<"):
        return f"{type(obj).__name__} object"
    return f"{type(obj).__name__} {text}"


def _bad_argument(call: str, expected: str, got: Any, hint: str = "") -> ConfigError:
    return ConfigError(
        f"Runtime.{call} expects {expected}, got {given(got)}.{hint}",
        code="bad-runtime-argument",
    )


def not_batches(loader: Any) -> str | None:
    """Why iterating ``loader`` cannot give batches (a hint for the error), or ``None``."""
    if isinstance(loader, (str, bytes)):
        return " Iterating a string gives characters, not batches."
    if isinstance(loader, Mapping):
        return (
            " Iterating a dict gives its keys, not batches: pass one loader (for several "
            "evaluation loaders, set each up on its own)."
        )
    if isinstance(loader, nn.Module):
        return " A module goes to setup()."
    if isinstance(loader, Iterable):
        return None
    if isinstance(loader, torch.utils.data.Dataset):
        return " A map-style dataset gives samples, not batches: wrap it in a DataLoader."
    return ""


def _check_state_and_path(call: str, state: Any, path: Any, *, required: bool) -> None:
    """``state`` is a dict of name -> module/optimizer/value and ``path`` a file path."""
    is_path = isinstance(path, (str, os.PathLike))
    if isinstance(state, Mapping) and is_path:
        return
    if state is None and not required and is_path:
        return
    swapped = isinstance(state, (str, os.PathLike)) and isinstance(path, Mapping)
    hint = (
        f" The arguments are {call.partition('(')[2].rstrip(')')}, in that order."
        if swapped
        else ""
    )
    if not isinstance(state, Mapping) and not (state is None and not required):
        raise _bad_argument(
            call, "state to be a dict such as {'model': model, 'optimizer': opt}", state, hint
        )
    raise _bad_argument(call, "path to be a file path (str or pathlib.Path)", path, hint)


def _short(value: Any) -> str:
    """``repr`` of a number or string; a type name for anything longer (an optimizer's repr
    runs to a dozen lines)."""
    plain = value is None or isinstance(value, (int, float, str))
    return repr(value) if plain else f"a {type(value).__name__}"
