"""The documentation is tested: every ``python`` block in ``docs/*.md`` and ``README.md`` runs,
and the parts of the docs that restate the code are compared with the code.

- Each file's blocks run in order, in one namespace, in a fresh temporary working directory.
  The namespace's ``__name__`` is ``docs_<file>``, so ``lk.collect()`` collects what the
  file's blocks decorated. An HTML comment on the line(s) right before a block changes that:

  * ``<!-- skip: why -->``: never run here (several machines, torchrun, a long run);
  * ``<!-- needs: cuda -->``, ``<!-- needs: cuda:2 -->`` (two GPUs), ``<!-- needs: MODULE -->``
    (an importable module, e.g. ``pytorch_lightning``), or several, comma-separated: run
    only where all of them are available;
  * ``<!-- module: NAME -->``: this and later blocks define functions in module ``NAME``
    (a fresh registry: a second program in the same page);
  * ``<!-- reference: NAME -->``: a complete program, run in a module of its own.

- ``docs/trainer.md``'s event order is ``lightkit explain``'s output for the reference
  programs on that page (a block after ``<!-- reference: NAME -->``), regenerated here from
  the ``<!-- explain: NAME STAGE flag=value ... -->`` comments and compared.
- The injection tables in ``docs/concepts.md`` are generated from ``lightkit/spec/roles.py``.
- ``docs/trainer.md``'s table of flags lists exactly ``TrainerConfig``'s fields, with their
  defaults.
- ``docs/errors.md`` has a ``## code`` section for every error code used in ``lightkit/``,
  and none for a code that no longer exists.

After changing the loops or the role tables, rewrite the generated parts with::

    python tests/test_docs.py --update
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- reading Markdown ------------------------------------------------------------------------


@dataclass
class Block:
    """A fenced code block: its language, text, first line of code, and the markers before it."""

    lang: str
    code: str
    line: int  # 1-based line of the block's first code line
    end: int  # 1-based line of the closing fence
    markers: dict[str, str] = field(default_factory=dict)


_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*([\w-]+)\s*:\s*(.*?)\s*-->\s*$")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the ``<!-- key: value -->`` lines right above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        fence = _FENCE.match(line.strip())
        if marker:
            pending[marker.group(1)] = marker.group(2)
        elif fence:
            close = fence.group(1)
            j = i + 1
            while j < len(lines) and lines[j].strip() != close:
                j += 1
            code = "\n".join(lines[i + 1 : j]) + "\n"
            found.append(Block(fence.group(2).lower(), code, i + 2, j + 1, pending))
            pending = {}
            i = j
        elif line.strip():
            pending = {}
        i += 1
    return found


def skip_reason(block: Block) -> str | None:
    """Why ``block`` cannot run here, or ``None``."""
    if "skip" in block.markers:
        return block.markers["skip"] or "marked skip"
    for need in filter(None, (n.strip() for n in block.markers.get("needs", "").split(","))):
        if need.startswith("cuda"):
            import torch

            count = int(need.partition(":")[2] or 1)
            if not torch.cuda.is_available() or torch.cuda.device_count() < count:
                return f"needs {count} CUDA device(s)"
        elif importlib.util.find_spec(need) is None:
            return f"needs {need}"
    return None


def module_name(path: Path) -> str:
    return "docs_" + re.sub(r"\W", "_", path.stem.lower())


def run_blocks(path: Path) -> tuple[int, list[str]]:
    """Run ``path``'s python blocks in order in one namespace; return (ran, skipped reasons)."""
    from lightkit.spec.registry import registry_for

    name = module_name(path)
    registry_for(name).clear()
    namespace: dict[str, Any] = {"__name__": name, "__file__": str(path)}
    ran, skipped = 0, []
    for block in blocks(path):
        if block.lang != "python":
            continue
        if "module" in block.markers:
            name = block.markers["module"]
            registry_for(name).clear()
            namespace["__name__"] = name
        reason = skip_reason(block)
        if reason is not None:
            skipped.append(f"{path.name}:{block.line}: {reason}")
            continue
        target = namespace
        if "reference" in block.markers:  # a whole program of its own: its own module
            module = f"docs_reference_{block.markers['reference']}"
            registry_for(module).clear()
            target = {"__name__": module}
        # Padding keeps the Markdown's line numbers in tracebacks. Each block is a notebook
        # cell of its own file name: a function defined again in a later block redefines
        # it, as a reader's next cell would.
        source = "\n" * (block.line - 1) + block.code
        exec(compile(source, f"{path}#L{block.line}", "exec"), target)
        ran += 1
    return ran, skipped


# -- the blocks run --------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTKIT_DOCS_TEST", "1")
    ran, skipped = run_blocks(path)
    if skipped and not ran:
        pytest.skip("; ".join(skipped))


def test_every_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p.name not in index]
    assert not missing, f"docs/index.md links no {missing}"


def anchors(path: Path) -> set[str]:
    """The anchors a code host makes for ``path``'s headings (GitHub's rule)."""
    found = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_relative_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
    broken = []
    for path in DOC_FILES:
        for target, anchor in link.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            file = path.parent / target if target else path
            if not file.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{path.name}: {target}#{anchor}")
    assert not broken, broken


# -- generated sections ----------------------------------------------------------------------

_GENERATED = re.compile(
    r"(<!-- generated: (?P<what>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def role_tables() -> str:
    """The injection tables, from ``lightkit/spec/roles.py``."""
    from lightkit.spec.roles import EVENT_ARGS, EVENT_SUPPLIES, ROLE_ARGS, ROLE_SUPPLIES

    def names(items: Any) -> str:
        return ", ".join(f"`{n}`" for n in sorted(items)) or "—"

    out = [
        "| role | receives by name | models | passed per call |",
        "|---|---|---|---|",
    ]
    for role, (values, models) in ROLE_SUPPLIES.items():
        per_call = ", ".join(f"`{n}`" for n in ROLE_ARGS.get(role, ())) or "—"
        out.append(f"| `{role}` | {names(values)} | {'yes' if models else 'no'} | {per_call} |")
    out += [
        "",
        "| event | receives by name (besides the models) | passed when it fires |",
        "|---|---|---|",
    ]
    for event, values in EVENT_SUPPLIES.items():
        per_call = ", ".join(f"`{n}`" for n in EVENT_ARGS[event]) or "—"
        out.append(f"| `{event}` | {names(values)} | {per_call} |")
    return "\n".join(out) + "\n"


def reference_programs(path: Path) -> dict[str, Any]:
    """Run each ``<!-- reference: NAME -->`` block of ``path`` in a module of its own; return
    NAME -> its ``spec``."""
    from lightkit.spec.registry import registry_for

    programs = {}
    for block in blocks(path):
        name = block.markers.get("reference")
        if name is None:
            continue
        module = f"docs_reference_{name}"
        registry_for(module).clear()
        namespace: dict[str, Any] = {"__name__": module}
        exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), namespace)
        programs[name] = namespace["spec"]
    return programs


def explain_order(spec: Any, stage: str, flags: dict[str, Any]) -> str:
    """``lightkit explain``'s order and evaluation runs (without the header and the
    who-runs-where part, which names files on this machine)."""
    import lightkit as lk
    from lightkit.engine.schedule import explain

    config = lk.TrainerConfig(**flags)
    text = explain(spec, config, stage).render()
    lines = text.splitlines()
    start = lines.index("order:")
    end = next((i for i, line in enumerate(lines) if line.startswith("who runs where")), len(lines))
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body) + "\n"


def explain_command(name: str, stage: str, flags: dict[str, Any]) -> str:
    parts = [f"lightkit explain {name}.py"]
    if stage != "fit":
        parts.append(f"--stage {stage}")
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(option if value else "--no-" + option[2:])
        else:
            parts.append(f"{option} {value}")
    return " ".join(parts)


def parse_explain(what: str) -> tuple[str, str, dict[str, Any]]:
    """``explain: NAME STAGE key=value ...`` -> (NAME, STAGE, flags)."""
    words = what.split()
    assert words[0] == "explain", what
    name, stage = words[1], words[2]
    flags = {}
    for word in words[3:]:
        key, _, value = word.partition("=")
        flags[key] = ast.literal_eval(value)
    return name, stage, flags


def generate(path: Path, what: str, programs: dict[str, Any] | None = None) -> str:
    """The text a ``<!-- generated: WHAT -->`` section of ``path`` must hold."""
    if what == "role-tables":
        return role_tables()
    if what.startswith("explain "):
        name, stage, flags = parse_explain(what)
        programs = programs if programs is not None else reference_programs(path)
        order = explain_order(programs[name], stage, flags)
        return f"```text\n$ {explain_command(name, stage, flags)}\n{order}```\n"
    raise AssertionError(f"{path.name}: unknown generated section {what!r}")


def generated_sections(path: Path) -> Iterator[tuple[str, str]]:
    for match in _GENERATED.finditer(path.read_text(encoding="utf-8")):
        yield match.group("what"), match.group("body")


def update(paths: list[Path]) -> None:
    """Rewrite every generated section of ``paths`` from the code."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        programs: dict[str, Any] | None = None
        if "<!-- reference:" in text:
            programs = reference_programs(path)

        def fill(
            match: re.Match[str], path: Path = path, programs: dict[str, Any] | None = programs
        ) -> str:
            body = generate(path, match.group("what"), programs)
            return match.group(1) + body + match.group(4)

        new = _GENERATED.sub(fill, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")


GENERATED_FILES = [p for p in DOC_FILES if "<!-- generated:" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", GENERATED_FILES, ids=lambda p: p.name)
def test_generated_sections_match_the_code(path: Path) -> None:
    programs = reference_programs(path) if "<!-- reference:" in path.read_text() else None
    sections = list(generated_sections(path))
    assert sections
    for what, body in sections:
        expected = generate(path, what, programs)
        assert body == expected, (
            f"{path.name}: the section '{what}' is out of date with the code; run "
            f"`python tests/test_docs.py --update` and review the diff.\n"
            f"--- in the docs\n{body}\n--- from the code\n{expected}"
        )


def test_trainer_page_shows_the_event_order_of_every_entry_point() -> None:
    whats = [w for w, _ in generated_sections(DOCS / "trainer.md")]
    stages = {parse_explain(w)[1] for w in whats if w.startswith("explain ")}
    assert stages == {"fit", "validate", "test", "predict"}


# -- the flags table -------------------------------------------------------------------------


def flag_rows() -> dict[str, str]:
    """``name -> default`` from the rows of trainer.md's flag tables (``| `name` | type |
    `default` | meaning |``)."""
    rows = {}
    row = re.compile(r"^\|\s*`(\w+)`\s*\|(?:\\\||[^|])*\|\s*`([^`]*)`\s*\|")
    for line in (DOCS / "trainer.md").read_text(encoding="utf-8").splitlines():
        match = row.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_every_trainer_flag_is_documented_with_its_default() -> None:
    from lightkit.engine.config import TrainerConfig

    rows = flag_rows()
    fields = TrainerConfig.model_fields
    assert sorted(set(fields) - set(rows)) == [], "flags missing from docs/trainer.md"
    assert sorted(set(rows) - set(fields)) == [], "docs/trainer.md documents unknown flags"
    wrong = {
        name: (rows[name], repr(f.get_default(call_default_factory=True)))
        for name, f in fields.items()
        if rows[name] != repr(f.get_default(call_default_factory=True))
    }
    assert not wrong, f"documented default != real default: {wrong}"


# -- from Lightning ---------------------------------------------------------------------------


def test_from_lightning_maps_every_lightning_hook_and_flag() -> None:
    """Every ``pl.Trainer`` argument and every LightningModule/Callback hook is in a table of
    docs/from_lightning.md: supported (with its lightkit form) or not (with the reason)."""
    pl = pytest.importorskip("pytorch_lightning")
    import inspect

    from pytorch_lightning.core.hooks import CheckpointHooks, DataHooks, ModelHooks

    rows = [
        line
        for line in (DOCS / "from_lightning.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("|")
    ]
    first_column = " ".join(r.split("|")[1] for r in rows)
    mentioned = set(re.findall(r"`(?:\w+\.)*(\w+)", first_column))
    flags = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    hooks = [
        name
        for cls in (ModelHooks, DataHooks, CheckpointHooks, pl.Callback)
        for name in vars(cls)
        if not name.startswith("_")
    ]
    missing = sorted({n for n in flags + hooks if n not in mentioned})
    assert not missing, f"Lightning names docs/from_lightning.md does not map: {missing}"


def test_from_lightning_lists_every_lightkit_flag() -> None:
    from lightkit.engine.config import TrainerConfig

    text = (DOCS / "from_lightning.md").read_text(encoding="utf-8")
    table = text[text.index("## Trainer flags") : text.index("## Trainer methods")]
    missing = [f for f in TrainerConfig.model_fields if f"`{f}`" not in table]
    assert not missing, f"TrainerConfig fields missing from the flag table: {missing}"


# -- error codes -----------------------------------------------------------------------------


def codes_in_code() -> dict[str, set[str]]:
    """Every error code ``lightkit/`` uses -> the files using it: ``code="..."`` arguments,
    ``Problem("...", ...)`` and ``code = "..."`` (or ``default_code``) in class bodies."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "lightkit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                        found.setdefault(str(kw.value.value), set()).add(where)
                func = node.func
                called = getattr(func, "id", None) or getattr(func, "attr", None)
                if called == "Problem" and node.args and isinstance(node.args[0], ast.Constant):
                    found.setdefault(str(node.args[0].value), set()).add(where)
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = value = None
                    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                        target, value = stmt.targets[0], stmt.value
                    elif isinstance(stmt, ast.AnnAssign):
                        target, value = stmt.target, stmt.value
                    if (
                        isinstance(target, ast.Name)
                        and target.id in ("code", "default_code")
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.setdefault(value.value, set()).add(where)
    return {c: w for c, w in found.items() if c is not None and c != "None"}


def codes_in_docs() -> list[str]:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    return re.findall(r"^## `?([a-z0-9-]+)`?\s*$", text, re.M)


def test_every_error_code_has_a_section() -> None:
    documented = set(codes_in_docs())
    missing = {c: sorted(w) for c, w in codes_in_code().items() if c not in documented}
    assert not missing, f"error codes without a '## code' section in docs/errors.md: {missing}"


def test_no_section_for_a_code_that_does_not_exist() -> None:
    used = set(codes_in_code())
    stale = [c for c in codes_in_docs() if c not in used]
    assert not stale, f"docs/errors.md documents codes lightkit no longer uses: {stale}"


def test_error_sections_are_sorted_and_unique() -> None:
    documented = codes_in_docs()
    assert len(documented) == len(set(documented))
    assert documented == sorted(documented)


# -- public names ---------------------------------------------------------------------------
def test_every_public_name_is_in_the_index():
    import lightkit as lk

    index = (ROOT / "docs" / "index.md").read_text()
    missing = [name for name in lk.__all__ if f"`lk.{name}`" not in index]
    assert not missing, f"public names not in docs/index.md's table: {missing}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        update(GENERATED_FILES)
    else:
        sys.exit("usage: python tests/test_docs.py --update")
