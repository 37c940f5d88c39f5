"""Binders: each user function turned, once, into a positional caller.

A binder takes only the values that change per call (``batch``, ``batch_idx``, ...) and fills
in everything fixed for the run (models, optimizers, ``ctx``, hyperparameters) from constants
bound at compile time. The caller is generated source (as ``dataclasses`` and ``attrs``
generate ``__init__``), so a training step costs one extra Python call: no signature
inspection, no dict lookup, no ``**kwargs`` packing.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkit.errors import ConfigError, describe_function
from lightkit.spec.signature import FunctionPlan, read_signature


def make_binder(
    fn: Callable[..., Any],
    wanted: Sequence[str],
    dynamic: Sequence[str],
    constants: Mapping[str, Any],
) -> Callable[..., Any]:
    """A caller of ``fn`` taking ``dynamic`` values positionally.

    Args:
        fn: the user's function.
        wanted: the parameter names ``fn`` receives (others keep their defaults).
        dynamic: the names the loop passes at each call, in order.
        constants: every other name's value, fixed for the run.
    """
    sig = read_signature(fn)
    namespace: dict[str, Any] = {"__fn": fn}
    args: list[str] = []
    keyword_mode = False
    for param in sig.parameters.values():
        name = param.name
        if name not in wanted:
            keyword_mode = True  # a skipped parameter: the rest must go by keyword
            continue
        if name in dynamic:
            expr = f"__d{dynamic.index(name)}"
        else:
            expr = f"__c_{name}"
            namespace[expr] = constants[name]
        if keyword_mode or param.kind is param.KEYWORD_ONLY:
            args.append(f"{name}={expr}")
        else:
            args.append(expr)
    params = ", ".join(f"__d{i}" for i in range(len(dynamic)))
    label = getattr(fn, "__qualname__", "fn")
    source = f"def call({params}):\n    return __fn({', '.join(args)})\n"
    code = compile(source, f"<lightkit: calls {label}>", "exec")
    exec(code, namespace)
    call = namespace["call"]
    call.__qualname__ = call.__name__ = f"call_{getattr(fn, '__name__', 'fn')}"
    call.__wrapped_fn__ = fn
    call.__injects__ = tuple(n for n in sig.parameters if n in wanted)  # for `explain`
    return call  # type: ignore[no-any-return]


def bind_plan(
    plan: FunctionPlan,
    dynamic: Sequence[str],
    constants: Mapping[str, Any],
    hparams: Any,
) -> Callable[..., Any]:
    """Bind a collected function: models and loop values from ``constants``, hyperparameters
    from ``hparams``."""
    values = dict(constants)
    for p in plan.params:
        if p.kind == "hparam":
            value = getattr(hparams, p.name)
            # The function gets its own list or dict: changing it in place must not change
            # the spec, which is what checkpoints record and the next fit builds from.
            if isinstance(value, (list, dict, set)):
                value = copy.deepcopy(value)
            values[p.name] = value
    wanted = [p.name for p in plan.params]
    missing = [n for n in wanted if n not in values and n not in dynamic]
    if missing:  # the rule table in spec/roles.py and the engine disagree: a lightkit bug
        raise RuntimeError(f"lightkit cannot supply {missing} to {plan.where}")
    return make_binder(plan.fn, wanted, dynamic, values)


def bind_callback_method(
    method: Callable[..., Any],
    event: str,
    dynamic: Sequence[str],
    constants: Mapping[str, Any],
) -> Callable[..., Any]:
    """Bind a callback's ``on_<event>`` method by its parameter names, like a function hook.

    ``constants`` holds exactly what the event supplies besides ``dynamic``. Parameters with
    defaults that nothing supplies keep their defaults.
    """
    check_callback_parameters(method, event, {*constants, *dynamic})
    wanted = [
        p.name
        for p in inspect.signature(method).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and (p.name in constants or p.name in dynamic)
    ]
    return make_binder(method, wanted, dynamic, constants)


def check_callback_parameters(method: Callable[..., Any], event: str, supplied: set[str]) -> None:
    """Raise a ``ConfigError`` if a callback's ``on_<event>`` method needs a parameter (one
    without a default) that is not among the names ``supplied``, or takes ``*args`` or
    ``**kwargs`` (values go by name, so they would receive nothing)."""
    for param in inspect.signature(method).parameters.values():
        owner = type(getattr(method, "__self__", None)).__name__
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ConfigError(
                f"callback {owner}: {describe_function(method)}: {stars}{param.name} would "
                f"receive nothing: lightkit passes an event's values by name, to the "
                f"parameters that name them. List the ones you need; the '{event}' event "
                f"supplies: {', '.join(sorted(supplied))}.",
                code="variadic-parameter",
            )
        if param.name not in supplied and param.default is param.empty:
            lightning = (
                " Lightning's (trainer, pl_module) are not passed: ask for ctx and the models "
                "by name."
                if param.name in ("trainer", "pl_module")
                else ""
            )
            raise ConfigError(
                f"callback {owner}: {describe_function(method)}: parameter '{param.name}' "
                f"is not something the '{event}' event supplies. It supplies: "
                f"{', '.join(sorted(supplied))}.{lightning}",
                code="unknown-parameter",
            )
