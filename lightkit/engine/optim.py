"""Read what ``configure_optimizers`` returned, and step schedulers when they are due.

Accepted return forms (Lightning's): an optimizer; a list of optimizers; ``(optimizers,
schedulers)``; a dict ``{"optimizer": ..., "lr_scheduler": scheduler | {"scheduler": ...,
"interval": "step" | "epoch", "frequency": n, "monitor": "val/loss"}}``; a list of such dicts.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from lightkit.errors import ConfigError, LightkitWarning, StepError, sorted_list, user_stacklevel
from lightkit.utils.validators import at_least, one_of

_LR_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}


@attrs.define
class SchedulerConfig:
    """A scheduler and when it steps."""

    scheduler: Any
    interval: str = attrs.field(default="epoch", validator=one_of("step", "epoch"))
    frequency: int = attrs.field(default=1, validator=at_least(1))
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def is_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


@attrs.define
class OptimizerSetup:
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[SchedulerConfig]


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer)


def _scheduler(obj: Any, where: str) -> SchedulerConfig:
    if isinstance(obj, SchedulerConfig):
        return obj
    if isinstance(obj, Mapping):
        unknown = set(obj) - _LR_KEYS
        if "scheduler" not in obj or unknown:
            raise ConfigError(
                f"{where} returned the scheduler dict {dict(obj)!r}; it needs a 'scheduler' key "
                f"and may have only: {sorted_list(_LR_KEYS)}"
                + (f" (unknown: {sorted_list(unknown)})." if unknown else "."),
                code="bad-optimizer-config",
            )
        try:
            cfg = SchedulerConfig(**obj)
        except ConfigError as exc:  # say which function returned it
            raise ConfigError(
                f"{where} returned a scheduler dict that does not work: {exc} 'interval' is when "
                f"the scheduler steps ('step': after every optimizer step, 'epoch': after every "
                f"epoch), 'frequency' every how many of those.",
                code="bad-optimizer-config",
            ) from None
    else:
        cfg = SchedulerConfig(obj)
    if not hasattr(cfg.scheduler, "step"):
        raise ConfigError(
            f"{where} returned {cfg.scheduler!r} as a scheduler; it has no step() method.",
            code="bad-optimizer-config",
        )
    return cfg


def check_scheduler_use(schedulers: list[SchedulerConfig], manual: bool, where: str) -> None:
    """What the loop does with the schedulers: in automatic optimization it steps them, so a
    ``ReduceLROnPlateau`` needs its ``monitor``; in manual optimization the step does, so
    ``interval``, ``frequency`` and ``monitor`` do nothing (a warning, as Lightning's)."""
    for cfg in schedulers:
        if not manual and cfg.is_plateau and cfg.monitor is None:
            raise ConfigError(
                f"{where} returned ReduceLROnPlateau without a metric to watch. Return "
                f'{{"optimizer": opt, "lr_scheduler": {{"scheduler": sched, "monitor": '
                f'"val/loss"}}}}.',
                code="plateau-needs-monitor",
            )
        ignored = [
            key
            for key, given in (
                ("interval", cfg.interval != "epoch"),
                ("frequency", cfg.frequency != 1),
                ("monitor", cfg.monitor is not None),
            )
            if given
        ]
        if manual and ignored:
            warnings.warn(
                LightkitWarning(
                    f"{where} returned a scheduler dict with {', '.join(map(repr, ignored))}, "
                    f"which a manual-optimization fit ignores: the step steps its schedulers "
                    f"itself (ask for `schedulers`, call sched.step() when it should; "
                    f"sched.step(value) for ReduceLROnPlateau). Drop the keys to silence this.",
                    code="scheduler-keys-ignored",
                ),
                stacklevel=user_stacklevel(),
            )


def needs_closure(optimizer: Any) -> bool:
    """Whether ``optimizer.step`` requires a closure (``torch.optim.LBFGS``)."""
    try:
        params = inspect.signature(optimizer.step).parameters
    except (TypeError, ValueError):
        return False
    closure = params.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def _as_list(obj: Any) -> list[Any]:
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


def parse_optimizers(value: Any, where: str) -> OptimizerSetup:
    """Normalise ``configure_optimizers``'s return value. ``where`` names the function."""
    setup = _parse(value, where)
    returned = {id(opt) for opt in setup.optimizers}
    for cfg in setup.schedulers:
        owner = getattr(cfg.scheduler, "optimizer", None)
        if owner is not None and id(owner) not in returned:
            # Its steps would change the learning rate of an optimizer nobody steps.
            raise ConfigError(
                f"{where} returned a scheduler ({type(cfg.scheduler).__name__}) built on an "
                f"optimizer it did not return, so the optimizers it did return would keep "
                f"their learning rate. Build the scheduler on a returned optimizer, or return "
                f"that optimizer too (Lightning refuses this too).",
                code="bad-optimizer-config",
            )
    return setup


def _parse(value: Any, where: str) -> OptimizerSetup:
    bad = ConfigError(
        f"{where} returned {type(value).__name__} {value!r:.120}; expected an optimizer, a "
        f"list of optimizers, (optimizers, schedulers), or a dict "
        f'{{"optimizer": ..., "lr_scheduler": ...}} (or a list of such dicts).',
        code="bad-optimizer-config",
    )
    if _is_optimizer(value):
        return OptimizerSetup([value], [])
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        opts, scheds = [], []
        for d in value:
            if "optimizer" not in d or not _is_optimizer(d["optimizer"]):
                raise bad
            extra = set(d) - {"optimizer", "lr_scheduler", "monitor"}
            if extra:
                raise ConfigError(
                    f"{where} returned a dict with unknown keys {sorted_list(extra)}; allowed: "
                    f"optimizer, lr_scheduler, monitor.",
                    code="bad-optimizer-config",
                )
            opts.append(d["optimizer"])
            if d.get("lr_scheduler") is not None:
                sched = d["lr_scheduler"]
                if not isinstance(sched, Mapping) and "monitor" in d:
                    sched = {"scheduler": sched, "monitor": d["monitor"]}
                scheds.append(_scheduler(sched, where))
        return OptimizerSetup(opts, scheds)
    if isinstance(value, tuple) and len(value) == 2 and not all(_is_optimizer(v) for v in value):
        opts = _as_list(value[0])
        if not opts or not all(_is_optimizer(o) for o in opts):
            raise bad
        return OptimizerSetup(opts, [_scheduler(s, where) for s in _as_list(value[1])])
    if isinstance(value, Sequence) and value and all(_is_optimizer(v) for v in value):
        return OptimizerSetup(list(value), [])
    raise bad


class ManualOptimizer:
    """An optimizer handed to a manual-optimization step: ``step()`` goes through the
    precision plugin (unscale, skip on overflow); everything else is the optimizer's own."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        runtime: Any,
        before_step: Callable[[], Sequence[Callable[..., Any]]] = tuple,
    ) -> None:
        state = self.__dict__
        state["_optimizer"] = optimizer
        state["_runtime"] = runtime
        state["_before_step"] = before_step  # the before_optimizer_step listeners, when asked
        state["_backwards_seen"] = 0  # runtime.backwards when this optimizer last stepped
        state["_needs_closure"] = needs_closure(optimizer)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.__dict__["_optimizer"]  # type: ignore[no-any-return]

    def step(self, closure: Any = None) -> Any:
        state, optimizer, runtime = self.__dict__, self._optimizer, self._runtime
        if state["_needs_closure"]:
            raise ConfigError(
                f"{type(optimizer).__name__}.step() evaluates the loss again through a "
                f"closure, which the 16-mixed grad scaler cannot step (AMP and LBFGS do not "
                f"mix, in Lightning either). Train it with precision='32-true' or "
                f"'bf16-mixed'.",
                code="optimizer-needs-closure",
            )
        if closure is not None:
            with torch.enable_grad():
                closure()
        if runtime.backwards == state["_backwards_seen"]:
            raise StepError(
                f"{type(optimizer).__name__}.step() was called under 16-mixed with no "
                f"ctx.backward(loss) since its last step. A loss.backward() of the step's own "
                f"does not scale the loss, and the scaler would divide those gradients by its "
                f"scale (65536 at first). Backpropagate with ctx.backward(loss).",
                code="manual-backward-unscaled",
            )
        state["_backwards_seen"] = runtime.backwards
        listeners = state["_before_step"]()
        if listeners:  # a step the scaler skips (inf/NaN) fires the event too, as Lightning
            runtime.unscale_gradients(optimizer)  # they see the true gradients
            for call in listeners:
                call(optimizer)
        # The scaler updates when the training step ends (or at the next backward), so that
        # several optimizers stepped in one training step share one update.
        return runtime.optimizer_step(optimizer, update=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_optimizer"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_optimizer"], name, value)

    def __repr__(self) -> str:
        return f"ManualOptimizer({self._optimizer!r})"
