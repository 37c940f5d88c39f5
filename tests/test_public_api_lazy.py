"""``import lightkit`` imports no public name's module until the name is used; every name in
``__all__`` still resolves, to the object its module defines, and the ``TYPE_CHECKING``
imports that type checkers read name exactly the lazily imported names."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lightkit as lk

ROOT = Path(__file__).resolve().parent.parent


def type_checking_imports() -> dict[str, str]:
    tree = ast.parse((ROOT / "lightkit" / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    names = {}
    for stmt in block.body:
        assert isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names:
            module = stmt.module if stmt.module != "lightkit" else f"lightkit.{alias.name}"
            names[alias.asname or alias.name] = module
    return names


def test_all_is_sorted_and_every_name_resolves_to_its_module_object():
    assert lk.__all__ == sorted(lk.__all__)
    for name in lk.__all__:
        value = getattr(lk, name)
        source = lk._SOURCE_OF.get(name)
        if source is not None:
            assert value is getattr(importlib.import_module(source), name), name
    assert set(dir(lk)) >= set(lk.__all__)


def test_the_table_the_type_checking_block_and_all_agree():
    declared = type_checking_imports()
    lazy = {name: module for name, module in lk._SOURCE_OF.items()}
    lazy["cli"] = "lightkit.cli"
    assert declared == lazy
    assert set(lk.__all__) == set(lazy) | {"__version__"}


def test_from_imports_and_subpackages_work():
    from lightkit import Trainer, cli

    assert Trainer is lk.engine.trainer.Trainer
    assert cli.__name__ == "lightkit.cli"
    assert lk.callbacks.EarlyStopping is lk.EarlyStopping
    try:
        lk.Trainr  # noqa: B018
    except AttributeError as exc:
        assert str(exc) == "module 'lightkit' has no attribute 'Trainr'"
    else:
        raise AssertionError("an unknown name must raise AttributeError")


PROBE = """
import json, sys
import torch
before = set(sys.modules)
import lightkit as lk
after_import = sorted(m for m in set(sys.modules) - before)
@lk.model
def net():
    return torch.nn.Linear(2, 2)
after_decorator = "lightkit.engine.trainer" in sys.modules
lk.Trainer
print(json.dumps({"import": after_import, "decorator_loads_engine": after_decorator,
                  "trainer_loads_engine": "lightkit.engine.trainer" in sys.modules}))
"""


def test_import_lightkit_alone_loads_no_public_module():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["import"] == ["lightkit"]
    assert got["decorator_loads_engine"] is False
    assert got["trainer_loads_engine"] is True


@pytest.mark.parametrize(
    "package", ["lightkit", "lightkit.callbacks", "lightkit.loggers", "lightkit.strategies"]
)
def test_dir_lists_the_public_names_not_the_packages_own_imports(package):
    # Tab completion in a notebook: every exported name, lazy ones included, and no helpers.
    module = importlib.import_module(package)
    listed = {n for n in dir(module) if not n.startswith("_")}
    assert listed >= {n for n in module.__all__ if not n.startswith("_")}
    assert not listed & {"Any", "TYPE_CHECKING", "annotations", "importlib", "lazy_attributes"}
