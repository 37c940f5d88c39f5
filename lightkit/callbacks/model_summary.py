"""``ModelSummary``: a table of each model's layers when fitting starts.

Per model: the layers down to ``max_depth`` with their type, parameters and trainable
parameters, their output shape when an example input is known (a module attribute
``example_input_array``, as in Lightning, or ``ModelSummary(example_inputs={"net": x})``),
then the totals and the parameters' size in MB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from lightkit.callbacks.base import Callback
from lightkit.errors import LightkitWarning, user_stacklevel
from lightkit.utils.validators import at_least


@attrs.define
class LayerRow:
    """One line of a summary table."""

    name: str
    type: str
    params: int | None  # None: lazy parameters not materialized yet
    trainable: int | None
    out_shape: str = "?"
    numbered: bool = True  # False: the "other params" row, which is no layer


@attrs.define
class Summary:
    """A model's summary: its rows and totals. ``str(summary)`` is the printed table."""

    model_name: str
    rows: list[LayerRow]
    total_params: int | None  # None: some parameters are lazy (not materialized yet)
    trainable_params: int | None
    size_mb: float
    has_shapes: bool = False

    @property
    def non_trainable_params(self) -> int | None:
        if self.total_params is None or self.trainable_params is None:
            return None
        return self.total_params - self.trainable_params

    def __str__(self) -> str:
        header = ["", "Name", "Type", "Params", "Trainable"]
        if self.has_shapes:
            header.append("Out shape")
        lines = [
            [str(i) if r.numbered else "", r.name, r.type, _count(r.params), _count(r.trainable)]
            + ([r.out_shape] if self.has_shapes else [])
            for i, r in enumerate(self.rows)
        ]
        widths = [max([len(h), *(len(x[c]) for x in lines)]) for c, h in enumerate(header)]

        def fmt(cells: list[str]) -> str:
            return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        rule = "-" * (sum(widths) + 3 * (len(widths) - 1))
        out = [f"Model '{self.model_name}'", fmt(header), rule]
        out += [fmt(cells) for cells in lines]
        out += [
            rule,
            f"{_count(self.trainable_params):<10} Trainable params",
            f"{_count(self.non_trainable_params):<10} Non-trainable params",
            f"{_count(self.total_params):<10} Total params",
            f"{self.size_mb:<10.3f} Total estimated model params size (MB)",
        ]
        return "\n".join(out)


def _count(n: int | None) -> str:
    """``1234567`` → ``1.2 M``, ``122303`` → ``122 K``: a decimal below 100 of a unit, as
    Lightning's ``get_human_readable_count``; small numbers as they are."""
    if n is None:
        return "?"
    for scale, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= scale:
            value = n / scale
            return f"{int(value):,d} {unit}" if value >= 100 else f"{value:,.1f} {unit}"
    return str(n)


def _param_counts(params: list[nn.Parameter]) -> tuple[int | None, int | None]:
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in params):
        return None, None
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _shape_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shape_of(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape_of(v)}" for k, v in value.items()) + "}"
    return "?"


def _layers(module: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    """Named submodules down to ``max_depth`` (``-1``: all), in definition order."""
    out = []
    for name, sub in module.named_modules():
        if not name:
            continue
        depth = name.count(".") + 1
        if max_depth == -1 or depth <= max_depth:
            out.append((name, sub))
    return out


def summarize(
    module: nn.Module,
    max_depth: int = 1,
    example_input: Any = None,
    name: str = "model",
    convert: Callable[[Any], Any] | None = None,
) -> Summary:
    """Summarize ``module``; with ``example_input``, run one forward pass (eval mode, no
    grad, random generators restored) to record each layer's output shape. ``convert``: what
    the precision does to a batch (``-true`` precisions cast its floating tensors)."""
    layers = _layers(module, max_depth) or [(name, module)]  # a bare layer: one row
    shapes: dict[str, str] = {}
    if example_input is not None:
        if convert is not None:
            example_input = convert(example_input)
        shapes = _output_shapes(module, layers, example_input)
    rows = []
    for layer_name, sub in layers:
        params, trainable = _param_counts(list(sub.parameters()))
        rows.append(
            LayerRow(layer_name, type(sub).__name__, params, trainable, shapes.get(layer_name, "?"))
        )
    own = list(module.parameters(recurse=False))
    if own and layers[0][1] is not module:  # parameters of the model itself, in no layer
        params, trainable = _param_counts(own)
        rows.append(LayerRow("other params", "n/a", params, trainable, "n/a", numbered=False))
    all_params = list(module.parameters())
    total, trainable = _param_counts(all_params)
    size = sum(
        p.numel() * p.element_size()
        for p in all_params
        if not isinstance(p, nn.parameter.UninitializedParameter)
    )
    return Summary(name, rows, total, trainable, size / 1e6, bool(shapes))


def _output_shapes(
    module: nn.Module, layers: list[tuple[str, nn.Module]], example_input: Any
) -> dict[str, str]:
    from lightkit.utils.seed import isolate_rng

    shapes: dict[str, str] = {}
    handles = []
    for layer_name, sub in layers:

        def hook(_m: nn.Module, _inp: Any, out: Any, _name: str = layer_name) -> None:
            shapes.setdefault(_name, _shape_of(out))

        handles.append(sub.register_forward_hook(hook))
    modes = [(m, m.training) for m in module.modules()]
    device = next((p.device for p in module.parameters()), None)
    try:
        from lightkit.utils.apply import apply_to_tensors

        x = example_input
        if device is not None:
            x = apply_to_tensors(x, lambda t: t.to(device))
        module.eval()
        with isolate_rng(), torch.no_grad():
            if isinstance(x, (list, tuple)):
                module(*x)
            elif isinstance(x, dict):
                module(**x)
            else:
                module(x)
    except Exception as exc:  # a summary must never stop training
        import warnings

        warnings.warn(
            LightkitWarning(
                f"ModelSummary: the forward pass on the example input failed ({exc!r}); output "
                f"shapes are not shown.",
                code="summary-forward-failed",
            ),
            stacklevel=user_stacklevel(),
        )
        shapes = {}
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return shapes


@attrs.define
class ModelSummary(Callback):
    """Print a table of each model's layers when ``fit`` starts (global rank 0 only).

    Args:
        max_depth: layer depth to show: ``1`` the top-level layers, ``-1`` all, ``0`` none.
        example_inputs: an input per model name, to show output shapes (a model's own
            ``example_input_array`` attribute works too).

    Example::

        lk.Trainer(callbacks=[lk.ModelSummary(max_depth=2)])
    """

    max_depth: int = attrs.field(default=1, validator=at_least(-1))
    example_inputs: dict[str, Any] = attrs.field(factory=dict)
    #: The summaries of the last run, by model name.
    summaries: dict[str, Summary] = attrs.field(factory=dict, init=False, repr=False)

    def on_fit_start(self, ctx: Any) -> None:
        if self.max_depth == 0 or not ctx.is_global_zero:
            return
        engine = ctx._engine
        models = engine.unwrapped_models() if engine is not None else {}
        convert = engine.runtime.precision.convert_input if engine is not None else None
        self.summaries = {}
        for name, module in models.items():
            example = self.example_inputs.get(name, getattr(module, "example_input_array", None))
            self.summaries[name] = summarize(module, self.max_depth, example, name, convert)
        if self.summaries:
            text = "\n\n".join(str(s) for s in self.summaries.values())
            print(text, file=sys.stdout, flush=True)
