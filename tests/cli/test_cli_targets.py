"""Targets as the command line finds them: module names from the working directory (as
``python -m`` does), files by their own module name whatever the working directory, and a
module whose functions are on an explicit ``lk.Registry``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightkit.spec.registry import has_registry, registry_for
from lightkit.utils import imports

MODEL = "import lightkit as lk\n\n\n@lk.model\ndef net(width: int = 3):\n    return width\n"
REGMOD = (
    "import lightkit as lk\n\nreg = lk.Registry()\n\n\n@reg.model\ndef net(width: int = 3):\n"
    "    return width\n\n\n@reg.training_step\ndef train(net, batch, lr: float = 0.1):\n"
    "    return batch\n"
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own ``sys.path``; the modules it imports are forgotten after it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
        if has_registry(name):
            registry_for(name).clear()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory, not on ``sys.path``, with a package, a module on a registry and a
    lone file, as a user's project folder."""
    (tmp_path / "lk_cli_pkg").mkdir()
    (tmp_path / "lk_cli_pkg" / "__init__.py").touch()
    (tmp_path / "lk_cli_pkg" / "model.py").write_text(MODEL)
    (tmp_path / "lk_cli_regmod.py").write_text(REGMOD)
    (tmp_path / "lk_cli_base.py").write_text(MODEL)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not imports.on_path(tmp_path)
    return tmp_path


def test_a_module_name_is_found_in_the_working_directory(run_cli, project):
    code, out, err = run_cli("hparams", "lk_cli_pkg.model")
    assert code == 0, err
    assert out.splitlines()[2].split() == ["width", "int", "3", "net"]
    assert imports.on_path(project)


def test_a_module_registry_target_is_found_in_the_working_directory(run_cli, project):
    code, out, err = run_cli("hparams", "lk_cli_regmod:reg", "--format", "json")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["width", "lr"]


def test_a_module_name_target_naming_a_function_says_it_wants_a_registry(run_cli, project):
    code, _, err = run_cli("hparams", "lk_cli_regmod:train")
    assert code == 1
    assert (
        "cannot collect 'lk_cli_regmod:train': `module:name` names an lk.Registry, and 'train' "
        "is function <function train at 0x"
    ) in err
    assert "Give the registry's name, or the module alone (lk_cli_regmod)" in err


def test_a_missing_module_says_where_it_was_looked_for(run_cli, project):
    code, _, err = run_cli("hparams", "lk_cli_nowhere.model")
    assert code == 1
    assert err == (
        "lightkit hparams: error: cannot import 'lk_cli_nowhere.model': there is no module named "
        f"'lk_cli_nowhere' in the working directory ({project}) or on the Python path. A TARGET "
        "is a .py file path or a module name; check the spelling, give the file's path, or add "
        "the folder that holds 'lk_cli_nowhere' to PYTHONPATH.\n"
    )


def test_a_file_target_has_the_same_import_path_from_any_folder(run_cli, project, monkeypatch):
    refs = []
    for cwd, target in [(project, "lk_cli_base.py"), (project / "sub", "../lk_cli_base.py")]:
        monkeypatch.chdir(cwd)
        code, out, err = run_cli("spec", target)
        assert code == 0, err
        refs.append([f["fn"] for f in json.loads(out)["functions"]])
        del sys.modules["lk_cli_base"]
        registry_for("lk_cli_base").clear()
    assert refs == [["lk_cli_base:net"], ["lk_cli_base:net"]]
    monkeypatch.chdir(project / "sub")
    code, out, err = run_cli("spec", "../lk_cli_pkg/model.py")
    assert code == 0, err
    assert [f["fn"] for f in json.loads(out)["functions"]] == ["lk_cli_pkg.model:net"]


def test_a_file_whose_functions_are_on_a_registry_names_the_target_to_give(run_cli, project):
    code, _, err = run_cli("hparams", "lk_cli_regmod.py")
    assert code == 1
    assert err == (
        "lightkit hparams: error: invalid spec [empty-source]: module 'lk_cli_regmod' registered "
        "no functions, but it defines Registry 'reg' with 2 functions: pass it "
        "(lk.collect(lk_cli_regmod.reg), or the target 'lk_cli_regmod.py:reg' on the command "
        "line).\n"
    )
    code, out, err = run_cli("hparams", "lk_cli_regmod.py:reg")
    assert code == 0, err
    assert "lr" in out
