"""``collect()``: gather registries and modules into one validated ``TrainingSpec``."""

from __future__ import annotations

import gc
import sys
import types
from types import ModuleType

from lightkit.errors import SpecError, describe_function
from lightkit.spec.registry import Entry, Registry, has_registry, origin, registry_for
from lightkit.spec.roles import SINGLE_ROLES
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


def _caller(depth: int) -> tuple[str, str]:
    """The calling frame's module name and the qualified name of the code it runs
    (``"<module>"`` at a module's top level)."""
    frame = sys._getframe(depth + 1)
    return frame.f_globals.get("__name__", "__main__"), _qualname(frame.f_code)


def _qualname(code: types.CodeType) -> str:
    qualname = getattr(code, "co_qualname", None)  # Python 3.11+
    return _function_qualname(code) if qualname is None else str(qualname)


def _function_qualname(code: types.CodeType) -> str:
    """The qualified name of the function that runs ``code`` (before Python 3.11)."""
    for obj in gc.get_referrers(code):
        if isinstance(obj, types.FunctionType) and obj.__code__ is code:
            return obj.__qualname__
    return code.co_name


def _scope(entry: Entry) -> str | None:
    """The function whose body decorated ``entry``'s function (``test_a`` for
    ``test_a.<locals>.net``); ``None`` for a module's top-level function."""
    qualname = getattr(origin(entry.fn), "__qualname__", "")
    scope, sep, _ = qualname.rpartition(".<locals>.")
    return scope if sep else None


def _in_scope(entries: list[Entry], caller: str) -> tuple[list[Entry], list[Entry]]:
    """The entries a no-argument ``collect()`` in function ``caller`` takes, and those it
    leaves out.

    The module's registry also holds what other functions decorated in their bodies
    (another test's training step, or a hook it added to watch its own run), which it leaves
    out. It takes the module's top-level functions and those decorated in ``caller`` or in
    the functions around it, where a nearer one of a role (or a model name) hides a farther
    one, as a local name hides a global."""

    def visible(scope: str | None) -> bool:
        return scope is None or caller == scope or caller.startswith(scope + ".<locals>.")

    scopes = [_scope(e) for e in entries]
    nearest: dict[tuple[str, ...], int] = {}
    for entry, scope in zip(entries, scopes, strict=True):
        if visible(scope) and (slot := _slot(entry)) is not None:
            nearest[slot] = max(nearest.get(slot, -1), len(scope or ""))
    kept: list[Entry] = []
    left_out: list[Entry] = []
    for entry, scope in zip(entries, scopes, strict=True):
        if not visible(scope):
            left_out.append(entry)
        elif (slot := _slot(entry)) is None or nearest[slot] == len(scope or ""):
            kept.append(entry)
    return kept, left_out


def _slot(entry: Entry) -> tuple[str, ...] | None:
    """What a nearer definition hides: the role of a single-function role, a model's name."""
    if entry.role == "model":
        return ("model", entry.name)
    return (entry.role,) if entry.role in SINGLE_ROLES else None


def _left_out_note(caller: str, left_out: list[Entry]) -> dict[str, str]:
    """Per role, why a no-argument ``collect()`` in ``caller`` did not take the functions of
    that role decorated inside other functions: for ``spec.require()``'s error."""
    notes: dict[str, str] = {}
    for role in dict.fromkeys(e.role for e in left_out):
        listed = "; ".join(
            f"{describe_function(e.fn)}, decorated in {_scope(e)}()"
            for e in left_out
            if e.role == role
        )
        notes[role] = (
            f"lk.collect() in {caller}() takes the module's top-level functions and those "
            f"decorated in {caller}(), and left out {listed}. Decorate it in {caller}() or at "
            f"the top level, or register it on a lk.Registry() and pass that to lk.collect()."
        )
    return notes


def collect(*sources: Source) -> TrainingSpec:
    """Collect decorated functions into a validated :class:`TrainingSpec`.

    With no argument, collects the calling module; called in a function (a test), it takes
    the module's top-level functions and those decorated in that function, not what other
    functions decorated in theirs. Otherwise each source is a module, a module
    name or ``.py`` path, or an explicit :class:`Registry`; several sources merge (a model
    module and a data module), and conflicts between them are errors.

    Raises:
        SpecError: every problem found, together (duplicate roles, unknown parameters,
            conflicting hyperparameters, hooks asking for what their event cannot give).

    Example::

        spec = lk.collect()                         # this module
        spec = lk.collect(models, "pkg.data", reg)  # several sources
    """
    left_out: list[Entry] = []
    notes: dict[str, str] = {}
    if not sources:
        module, caller = _caller(1)
        groups = [registry_for(module).entries]
        if caller != "<module>":
            groups[0], left_out = _in_scope(groups[0], caller)
            notes = _left_out_note(caller, left_out)
    else:
        groups = [_registry(source).entries for source in sources]
    entries: list[Entry] = []
    seen: set[tuple[tuple[str, str, str], int]] = set()
    for group in groups:
        for entry in group:
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
    spec = TrainingSpec._analysed(spec_entries, plans, model)
    spec._left_out = notes
    return spec
