"""``collect()``: gather registries and modules into one validated ``TrainingSpec``."""

from __future__ import annotations

import os
import types
from types import ModuleType

from lightkit.errors import SpecError, describe_function, user_frame
from lightkit.spec.registry import (
    Entry,
    Registry,
    has_registry,
    origin,
    registry_for,
    running_functions,
)
from lightkit.spec.roles import SINGLE_ROLES
from lightkit.spec.spec import SpecEntry, TrainingSpec, analyse, source_files
from lightkit.utils.imports import import_target, shown_path

Source = ModuleType | str | os.PathLike[str] | Registry


def _registry(source: Source) -> Registry:
    if isinstance(source, Registry):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
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


def _in_scope(
    entries: list[Entry], running: tuple[types.CodeType, ...]
) -> tuple[list[Entry], list[Entry]]:
    """The entries a no-argument ``collect()`` takes when ``running`` are the functions it is
    called in (innermost first), and those it leaves out.

    The module's registry also holds what other functions registered while they ran
    (another test's training step, or a hook it added to watch its own run). It takes what
    was registered at the module's top level, and what was registered while the calling
    function ran (in its body or in a helper it called) or by a function the call runs in
    (an enclosing test, for a nested function). Those hide a top-level function of the same
    single role or model name, as a local name hides a global one."""
    caller = running[0]

    def visible(entry: Entry) -> bool:
        where = entry.registered_in
        return (
            not where
            or any(code is caller for code in where)
            or any(code is where[0] for code in running)
        )

    kept = [e for e in entries if visible(e)]
    local = {_slot(e) for e in kept if e.registered_in}
    kept = [e for e in kept if e.registered_in or _slot(e) is None or _slot(e) not in local]
    left_out = [e for e in entries if not visible(e)]
    return kept, left_out


def _latest(entries: list[Entry]) -> list[Entry]:
    """Of one registry's functions of the same name and role (a model: and model name), the
    one registered last: registering a function of the same name and role again replaces it,
    wherever each is defined (a test overriding a helper-built registry's step). Two
    functions of other names claiming one role or model name stay, for analyse() to report.
    Hooks add up."""

    def key(entry: Entry) -> tuple[str, str, str]:
        return (entry.role, entry.name, getattr(origin(entry.fn), "__name__", entry.name))

    last = {key(e): e for e in entries if e.role != "on"}  # registration order: last wins
    return [e for e in entries if e.role == "on" or last[key(e)] is e]


def _slot(entry: Entry) -> tuple[str, ...] | None:
    """What a nearer definition hides: the role of a single-function role, a model's name."""
    if entry.role == "model":
        return ("model", entry.name)
    return (entry.role,) if entry.role in SINGLE_ROLES else None


def _name(code: types.CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))  # co_qualname: Python 3.11+


def left_out_note(running: tuple[types.CodeType, ...], left_out: list[Entry]) -> str:
    """Why a no-argument ``collect()`` in ``running[0]`` did not take ``left_out``."""
    caller = _name(running[0])
    shown = [
        f"{describe_function(e.fn)}, registered in {_name(e.registered_in[0])}()"
        for e in left_out[:5]
    ]
    if len(left_out) > 5:
        shown.append(f"and {len(left_out) - 5} more")
    return (
        f"lk.collect() in {caller}() takes the module's top-level functions and those "
        f"registered while {caller}() runs, and left out {'; '.join(shown)}. Decorate "
        f"{'it' if len(left_out) == 1 else 'them'} in {caller}() or at the top level, or "
        f"register {'it' if len(left_out) == 1 else 'them'} on a lk.Registry() and pass that "
        f"to lk.collect()."
    )


def collect(*sources: Source) -> TrainingSpec:
    """Collect decorated functions into a validated :class:`TrainingSpec`.

    With no argument, collects the calling module; called in a function (a test), it takes
    what the module registered at its top level and while that function runs, not what
    other functions registered while they ran. Otherwise each source is a module, a module
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
    running: tuple[types.CodeType, ...] = ()
    if not sources:
        frame = user_frame()
        module = frame.f_globals.get("__name__", "__main__") if frame else "__main__"
        groups = [registry_for(module).entries]
        running = running_functions(frame)
        if running:
            groups[0], left_out = _in_scope(groups[0], running)
    else:
        groups = [_registry(source).entries for source in sources]
    entries: list[Entry] = []
    seen: set[tuple[tuple[str, str, str], int]] = set()
    for group in groups:
        for entry in _latest(group):
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
        models = [e for e in left_out if e.role == "model"]
        for p in problems:
            if p.code == "unknown-parameter" and any(f"'{e.name}'" in p.message for e in models):
                p.message += "\n" + left_out_note(running, models)
        raise SpecError(problems, where=source_files(spec_entries, problems))
    assert model is not None
    spec = TrainingSpec._analysed(spec_entries, plans, model)
    if left_out:
        spec._left_out = (running, tuple(left_out))
    return spec
