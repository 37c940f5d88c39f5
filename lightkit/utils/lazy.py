"""Package attributes imported on first use (PEP 562): a run imports the modules it uses,
not every class a package exports."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, sources: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``sources`` maps each lazy name to the module
    defining it; the first lookup imports that module and stores the name in ``namespace``
    (the package's ``globals()``), so later lookups are plain attribute reads.

    It also sets the package's ``__dir__``: the public names (``__all__``, lazy ones included,
    for tab completion) and dunders, not the helpers the package imported for itself."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        public = set(namespace.get("__all__", ())) | set(sources)
        return sorted(public | {n for n in namespace if n.startswith("__")})

    namespace["__dir__"] = __dir__
    return __getattr__
