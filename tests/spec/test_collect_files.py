"""collect() of a ``.py`` file: the module name comes from the file alone (pytest's "prepend"
rule), never from the working directory, so the spec's import paths load back anywhere."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lightkit as lk
from lightkit.spec.registry import has_registry, registry_for
from lightkit.utils.imports import file_module_name, file_target, import_file
from tests.user_modules import simple

ROOT = Path(__file__).resolve().parents[2]

MODEL = "import lightkit as lk\n\n\n@lk.model\ndef net(width: int = 3):\n    return width\n"


def forget(names: set[str]) -> None:
    """Un-import modules and empty their registries, as in a new process."""
    for name in names:
        sys.modules.pop(name, None)
        if has_registry(name):
            registry_for(name).clear()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own ``sys.path``; the modules it imports are forgotten after it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    forget(set(sys.modules) - before)


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write("a/b.py", text)``: a file under ``tmp_path``; ``packages=n`` adds an
    ``__init__.py`` to the n folders above it."""

    def make(rel: str, text: str = MODEL, *, packages: int = 0) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.parents[:packages]:
            (folder / "__init__.py").touch()
        path.write_text(text)
        return path

    return make


def collected_module(path: str | Path) -> str:
    """The module of the model ``lk.collect(path)`` finds, imported afresh."""
    spec = lk.collect(str(path))
    name: str = spec.models[0].fn.__module__
    forget({name})
    return name


def test_a_file_outside_any_package_is_named_by_its_stem_from_any_folder(
    write, tmp_path, monkeypatch
):
    path = write("probe_spec/base.py")
    (tmp_path / "probe_spec" / "sub").mkdir()
    for cwd, target in [
        (tmp_path, "probe_spec/base.py"),
        (tmp_path / "probe_spec", "base.py"),
        (tmp_path / "probe_spec" / "sub", "../base.py"),
        (Path("/"), str(path)),
    ]:
        monkeypatch.chdir(cwd)
        assert collected_module(target) == "base", cwd
    assert sys.path[0] == str(path.parent)


def test_a_file_in_a_package_is_named_from_the_first_folder_without_init(
    write, tmp_path, monkeypatch
):
    write("proj/pkg/data.py", packages=1)
    (tmp_path / "proj" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "proj" / "sub")
    assert collected_module("../pkg/data.py") == "pkg.data"
    assert sys.path[0] == str(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    assert collected_module("proj/pkg/data.py") == "pkg.data"
    assert sys.path.count(str(tmp_path / "proj")) == 1  # put on the path once


def test_nested_packages_and_a_package_target(write, tmp_path):
    write("outer/inner/mod.py", packages=2)
    (tmp_path / "outer" / "inner" / "__init__.py").write_text(MODEL)
    assert file_module_name(tmp_path / "outer" / "inner" / "mod.py") == (
        tmp_path,
        "outer.inner.mod",
    )
    assert collected_module(tmp_path / "outer" / "inner" / "mod.py") == "outer.inner.mod"
    assert collected_module(tmp_path / "outer" / "inner" / "__init__.py") == "outer.inner"


def test_a_folder_whose_name_is_not_an_identifier_is_the_import_root(write, tmp_path):
    write("my-proj/pkg/mod.py", packages=2)
    assert file_module_name(tmp_path / "my-proj" / "pkg" / "mod.py") == (
        tmp_path / "my-proj",
        "pkg.mod",
    )


def test_the_examples_keep_their_package_name():
    # examples/ has an __init__.py and the repository root has none: the docs rely on this.
    assert file_module_name(ROOT / "examples" / "digits.py") == (ROOT, "examples.digits")


def test_the_spec_of_a_file_loads_back_from_another_folder(write, tmp_path, monkeypatch):
    write("run/base.py", MODEL + "\n\n@lk.training_step\ndef train(net, batch):\n    return 1\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    text = lk.collect("run/base.py").model_dump_json()
    assert [f["fn"] for f in json.loads(text)["functions"]] == ["base:net", "base:train"]
    forget({"base"})  # a new process, with the import root on its path
    monkeypatch.chdir(tmp_path / "elsewhere")
    same = lk.TrainingSpec.model_validate_json(text)
    assert [f.fn.__module__ for f in same.functions] == ["base", "base"]
    assert Path(sys.modules["base"].__file__ or "") == tmp_path / "run" / "base.py"


def test_a_module_already_imported_from_the_file_is_reused():
    # tests/ has no __init__.py, so the file's own name is user_modules.simple; the module
    # imported as tests.user_modules.simple is the same file and is used, not imported twice.
    assert file_module_name("tests/user_modules/simple.py")[1] == "user_modules.simple"
    assert import_file("tests/user_modules/simple.py") is simple
    assert "user_modules.simple" not in sys.modules
    assert lk.collect("tests/user_modules/simple.py").get("training_step").fn is simple.train


def test_a_script_run_directly_is_not_reused(write, monkeypatch):
    path = write("script/train_script.py")
    main = types.ModuleType("__main__")
    main.__file__ = str(path)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert import_file(path) is sys.modules["train_script"]


def test_a_name_taken_by_another_file_is_an_error(write, tmp_path):
    import_file(write("a/lk_same_name.py"))
    with pytest.raises(lk.SpecError) as info:
        lk.collect(str(write("b/lk_same_name.py")))
    assert info.value.code == "unknown-source"
    assert (
        f"as module 'lk_same_name': module 'lk_same_name' is already imported from "
        f"{tmp_path / 'a' / 'lk_same_name.py'}. A file is imported under its dotted path from "
        f"the first folder above it without an __init__.py ({tmp_path / 'b'}); rename the file "
        f"(or its package) so that its name is unique."
    ) in str(info.value)


def test_a_file_named_like_an_imported_module_is_an_error(write):
    with pytest.raises(ImportError, match=r"as module 'json': module 'json' is already imported"):
        import_file(write("shadow/json.py"))


def test_a_package_name_taken_by_another_folder_is_an_error(write, tmp_path):
    import_file(write("a/lk_pkg/one.py", packages=1))
    with pytest.raises(ImportError) as info:
        import_file(write("b/lk_pkg/two.py", packages=1))
    assert (
        "as module 'lk_pkg.two': module 'lk_pkg' is already imported from "
        f"{tmp_path / 'a' / 'lk_pkg' / '__init__.py'}."
    ) in str(info.value)


def test_a_file_name_with_a_dot_is_an_error(write):
    with pytest.raises(ImportError, match=r"'model\.v2' is not a module name .* model_v2\.py"):
        import_file(write("dotted/model.v2.py"))


def test_a_file_target_is_remembered_for_run_configurations(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import_file(write("run/lk_remembered.py"))
    assert file_target("lk_remembered") == str(Path("run/lk_remembered.py"))
    import_file(ROOT / "tests" / "user_modules" / "simple.py")  # imported by name before
    assert file_target("tests.user_modules.simple") is None
    import_file(write("lk_here.py"))  # its import root is the working directory: the name will do
    assert file_target("lk_here") is None
    assert file_target("json") is None  # the standard library, installed packages
