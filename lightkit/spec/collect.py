"""``collect()``: gather registries and modules into one validated ``TrainingSpec``."""

from __future__ import annotations

import sys
from types import ModuleType

from lightkit.errors import SpecError
from lightkit.spec.registry import Entry, Registry, has_registry, registry_for
from lightkit.spec.spec import SpecEntry, TrainingSpec, analyse, source_files
from lightkit.utils.imports import import_target

Source = ModuleType | str | Registry


def _registry(source: Source) -> Registry:
    if isinstance(source, Registry):
        return source
    if isinstance(source, str):
        try:
            source = import_target(source)
        except SyntaxError:
            raise
        except (ImportError, FileNotFoundError) as exc:
            raise SpecError(
                f"cannot collect {source!r}: {exc}. Pass a module, a module name that imports "
                f"(e.g. 'examples.digits'), a .py file path, or a lk.Registry.",
                code="unknown-source",
            ) from exc
    if isinstance(source, ModuleType):
        if not has_registry(source.__name__):
            raise SpecError(
                f"module {source.__name__!r} registered no functions. Decorate its functions "
                f"with @lk.model, @lk.training_step, ... or pass the registry that holds them.",
                code="empty-source",
            )
        return registry_for(source.__name__)
    raise SpecError(
        f"collect() takes modules, module names, file paths and lk.Registry objects; "
        f"got {type(source).__name__} {source!r}.",
        code="unknown-source",
    )


def _caller_module(depth: int) -> str:
    name: str = sys._getframe(depth + 1).f_globals.get("__name__", "__main__")
    return name


def collect(*sources: Source) -> TrainingSpec:
    """Collect decorated functions into a validated :class:`TrainingSpec`.

    With no argument, collects the calling module. Otherwise each source is a module, a module
    name or ``.py`` path, or an explicit :class:`Registry`; several sources merge (a model
    module and a data module), and conflicts between them are errors.

    Raises:
        SpecError: every problem found, together (duplicate roles, unknown parameters,
            conflicting hyperparameters, hooks asking for what their event cannot give).

    Example::

        spec = lk.collect()                         # this module
        spec = lk.collect(models, "pkg.data", reg)  # several sources
    """
    if not sources:
        sources = (registry_for(_caller_module(1)),)
    entries: list[Entry] = []
    seen: set[tuple[tuple[str, str, str], int]] = set()
    for source in sources:
        for entry in _registry(source).entries:
            # The same function reached through two sources counts once; two different
            # functions are both kept, and analyse() reports them if they clash.
            if (entry.key, id(entry.fn)) in seen:
                continue
            seen.add((entry.key, id(entry.fn)))
            entries.append(entry)
    spec_entries = tuple(
        SpecEntry(role=e.role, fn=e.fn, name=e.name, manual=e.manual, event=e.event)
        for e in entries
    )
    analysis = analyse(spec_entries)
    if analysis[2]:
        raise SpecError(analysis[2], where=source_files(spec_entries))
    return TrainingSpec.model_validate({"functions": spec_entries}, context={"analysis": analysis})
