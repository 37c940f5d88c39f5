"""``collect()``: gather registries and modules into one validated ``TrainingSpec``."""

from __future__ import annotations

import sys
from types import ModuleType

from lightkit.errors import SpecError
from lightkit.spec.registry import Entry, Registry, has_registry, registry_for
from lightkit.spec.spec import SpecEntry, TrainingSpec, analyse, source_files
from lightkit.utils.imports import import_target, shown_path

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
        if not has_registry(source.__name__) or not len(registry_for(source.__name__)):
            raise SpecError(_empty_module(source), code="empty-source")
        return registry_for(source.__name__)
    raise SpecError(
        f"collect() takes modules, module names, file paths and lk.Registry objects; "
        f"got {type(source).__name__} {source!r}.",
        code="unknown-source",
    )


def _empty_module(module: ModuleType) -> str:
    """Why ``module`` gives nothing to collect, naming the ``lk.Registry`` objects it defines
    (its functions are often registered on one of those, not on the module)."""
    name = module.__name__
    found: dict[int, tuple[str, Registry]] = {}
    for attr, value in vars(module).items():
        if isinstance(value, Registry) and id(value) not in found:
            found[id(value)] = (attr, value)
    full = [(attr, reg) for attr, reg in found.values() if len(reg)]
    text = f"module {name!r} registered no functions"
    if not full:
        empty = [repr(attr) for attr, _ in found.values()]
        also = ""
        if empty:
            also = f" (nor does its Registry {empty[0]})"
            if len(empty) > 1:
                also = f" (nor do its Registries {', '.join(empty)})"
        return (
            f"{text}{also}. Decorate its functions with @lk.model, @lk.training_step, ... or "
            f"pass the registry that holds them."
        )

    def count(reg: Registry) -> str:
        return f"{len(reg)} function{'' if len(reg) == 1 else 's'}"

    file = getattr(module, "__file__", None)
    where = shown_path(file) if file else name
    calls = ", ".join(f"{name}.{attr}" for attr, _ in full)
    targets = " ".join(f"{where}:{attr}" for attr, _ in full)
    if len(full) == 1:
        attr, reg = full[0]
        return (
            f"{text}, but it defines Registry {attr!r} with {count(reg)}: pass it "
            f"(lk.collect({calls}), or the target {targets!r} on the command line)."
        )
    listed = ", ".join(f"{attr!r} ({count(reg)})" for attr, reg in full)
    return (
        f"{text}, but it defines Registries {listed}: pass the ones you mean "
        f"(lk.collect({calls}), or the targets {targets!r} on the command line)."
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
    plans, model, problems = analyse(spec_entries)
    if problems:
        raise SpecError(problems, where=source_files(spec_entries))
    assert model is not None
    return TrainingSpec._analysed(spec_entries, plans, model)
