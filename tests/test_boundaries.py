"""The package's layering, checked by walking every module's imports.

- ``spec/`` imports neither the engine nor the runtime;
- plugins (strategies, precision, callbacks, loggers) import nothing from the engine;
- the engine touches devices only through the Runtime: no ``torch.cuda``/``torch.distributed``.

Imports under ``if TYPE_CHECKING:`` do not run, so they do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightkit"

RULES = {
    "spec": ("lightkit.engine", "lightkit.runtime", "lightkit.strategies", "lightkit.callbacks"),
    "strategies": ("lightkit.engine",),
    "precision": ("lightkit.engine", "lightkit.runtime", "lightkit.strategies"),
    "callbacks": ("lightkit.engine",),
    "loggers": ("lightkit.engine", "lightkit.runtime", "lightkit.strategies"),
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports when it runs (skipping ``if TYPE_CHECKING:`` blocks)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.lineno, child.module))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def test_the_walker_sees_lazy_imports_and_skips_type_checking(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lightkit.engine import x\n"
        "def f():\n    import lightkit.engine.loops\n"
    )
    assert [name for _, name in runtime_imports(module)] == ["typing", "lightkit.engine.loops"]


@pytest.mark.parametrize("area", sorted(RULES))
def test_layer_imports_stay_inside_their_bounds(area):
    forbidden = RULES[area]
    violations = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in sorted((PACKAGE / area).rglob("*.py"))
        for line, name in runtime_imports(path)
        if name.startswith(forbidden)
    ]
    assert violations == [], "\n".join(violations)


def test_the_engine_reaches_devices_only_through_the_runtime():
    device_apis = ("torch.cuda", "torch.distributed", "torch.backends.mps")
    violations = []
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        text = path.read_text()
        for line_no, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(api in code for api in device_apis) and "cudnn" not in code:
                violations.append(f"{path.name}:{line_no}: {line.strip()}")
        violations += [
            f"{path.name}:{line} imports {name}"
            for line, name in runtime_imports(path)
            if name.startswith(device_apis)
        ]
    assert violations == [], "\n".join(violations)
