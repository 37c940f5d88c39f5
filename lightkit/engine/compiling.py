"""``compile=True``: ``torch.compile`` the models, or say why they run eagerly.

``torch.compile`` is lazy: it returns at once and compiles at the first forward, where a
missing C++ compiler (inductor on CPU) or a missing Triton (inductor on CUDA) fails deep inside
the first training step. So what the backend needs is checked here, before any step: if it
is missing, a warning names it and the models run eagerly (the same numbers, slower). Options
that ``torch.compile`` does not take, an unknown ``mode`` or ``backend``, are configuration
errors and raise.
"""

from __future__ import annotations

import inspect
import os
import shutil
import warnings
from typing import Any

import torch
from torch import nn

from lightkit.errors import ConfigError, LightkitWarning, user_stacklevel


def compile_options() -> list[str]:
    """The keyword arguments this torch's ``torch.compile`` takes (besides the model)."""
    return sorted(p for p in inspect.signature(torch.compile).parameters if p != "model")


def unavailable(backend: Any, device: torch.device) -> str | None:
    """Why ``backend`` cannot compile for ``device`` here; ``None`` when it can."""
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version or platform"
    except Exception as exc:  # an import error inside torch: no compiler stack at all
        return f"torch.compile cannot be imported ({type(exc).__name__}: {exc})"
    if backend not in (None, "inductor"):
        return None  # another backend checks for itself
    if device.type == "cpu":
        # Inductor compiles with the first of its own candidates that runs: $CXX when set
        # (then g++ is not tried), else g++; None stands for a conda download it makes only
        # when asked to.
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx
        listed = list(cxx) if isinstance(cxx, (list, tuple)) else [cxx]
        candidates = [c for c in listed if c]
        conda_gxx = None in listed and os.environ.get("TORCH_INDUCTOR_INSTALL_GXX")
        if not conda_gxx and not any(shutil.which(c) for c in candidates):
            named = " or ".join(candidates) or "none configured"
            return (
                f"inductor on CPU needs a C++ compiler and found none ({named}: $CXX when "
                f"it is set, else its platform's default); install one (e.g. `apt install "
                f"g++`) or point CXX at it"
            )
    elif device.type == "cuda":
        try:
            from torch.utils._triton import has_triton

            if not has_triton():
                return "inductor on CUDA needs Triton (`pip install triton`)"
        except ImportError:
            return "inductor on CUDA needs Triton (`pip install triton`)"
    return None


def compile_module(module: nn.Module, options: bool | dict[str, Any]) -> nn.Module:
    """``torch.compile(module, **options)``; the module itself, with a warning, where the
    backend cannot work on this machine.

    Raises:
        ConfigError: an option ``torch.compile`` does not take, or a value it refuses.
    """
    kwargs = dict(options) if isinstance(options, dict) else {}
    known = compile_options()
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(
            f"compile={options!r}: {', '.join(map(repr, unknown))} is not an option of "
            f"torch.compile. It takes: {', '.join(known)}; e.g. compile={{'mode': "
            f"'max-autotune'}}.",
            code="bad-compile-option",
        )
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    why = unavailable(kwargs.get("backend"), device)
    if why is not None:
        warnings.warn(
            LightkitWarning(
                f"compile=True: {why}. The models run eagerly (same results, without the compiled "
                f"speed-up); set compile=False to silence this.",
                code="compile-unavailable",
            ),
            stacklevel=user_stacklevel(),
        )
        return module
    try:
        return torch.compile(module, **kwargs)  # type: ignore[return-value]
    except (RuntimeError, ValueError, TypeError) as exc:  # an unknown mode or backend name
        raise ConfigError(
            f"compile={options!r}: torch.compile refused it: {exc}", code="bad-compile-option"
        ) from exc


def note_compile_failure(exc: BaseException, options: bool | dict[str, Any]) -> None:
    """Add a note naming the flag to an error ``torch.compile`` raised while compiling (at a
    model's first forward, after the check above passed): its type and message stay torch's."""
    module = type(exc).__module__
    if not module.startswith(("torch._dynamo", "torch._inductor")):
        return
    note = (
        f"lightkit: this error came from torch.compile, which the trainer's "
        f"compile={options!r} applied to the models; compile=False runs them eagerly."
    )
    add_note = getattr(exc, "add_note", None)  # Python 3.11+; 3.10 shows torch's error alone
    if add_note is not None and note not in getattr(exc, "__notes__", ()):
        add_note(note)
