"""The error hierarchy, problem rendering, and the message helpers every spec error uses."""

from __future__ import annotations

import ast
import functools
import pickle
import sys
import warnings
from pathlib import Path

import pytest
import torch

import lightkit as lk
from lightkit.errors import (
    DistributedError,
    MisconfigurationError,
    Problem,
    describe_function,
    did_you_mean,
    sorted_list,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("cls", "base", "code"),
    [
        (lk.SpecError, ValueError, "invalid-spec"),
        (lk.ConfigError, ValueError, "invalid-config"),
        (lk.StepError, TypeError, "bad-step-output"),
        (lk.CheckpointError, RuntimeError, "bad-checkpoint"),
        (lk.DistributedError, RuntimeError, "distributed-failure"),
    ],
)
def test_hierarchy_and_default_codes(cls, base, code):
    assert issubclass(cls, lk.LightkitError)
    assert issubclass(cls, base)
    assert cls.code == code
    err = cls("what happened")
    assert err.code == code
    assert str(err) == "what happened"


def test_code_override():
    err = lk.ConfigError("no such strategy", code="unknown-strategy")
    assert err.code == "unknown-strategy"
    assert lk.ConfigError.code == "invalid-config"
    assert MisconfigurationError is lk.ConfigError


def test_spec_error_from_a_string():
    err = lk.SpecError("bad", code="unknown-event")
    assert err.code == "unknown-event"
    assert err.codes == ["unknown-event"]
    assert str(err) == "bad"


def test_spec_error_with_one_problem_is_just_its_message():
    err = lk.SpecError([Problem("duplicate-role", "two steps")], where="x.py")
    assert str(err) == "two steps"
    assert err.code == "duplicate-role"


def test_spec_error_with_many_problems():
    err = lk.SpecError(
        [
            Problem("unknown-parameter", "f(a) at x.py:1: parameter 'a' ..."),
            Problem("duplicate-role", "2 functions are marked @training_step:\n  f\n  g"),
            Problem("unknown-parameter", "g(b) at x.py:5: parameter 'b' ..."),
        ],
        where="x.py",
    )
    assert str(err) == (
        "3 problems in x.py:\n"
        "\n"
        "  [unknown-parameter] f(a) at x.py:1: parameter 'a' ...\n"
        "\n"
        "  [duplicate-role] 2 functions are marked @training_step:\n"
        "    f\n"
        "    g\n"
        "\n"
        "  [unknown-parameter] g(b) at x.py:5: parameter 'b' ..."
    )
    assert err.codes == ["unknown-parameter", "duplicate-role", "unknown-parameter"]
    assert err.code == "invalid-spec"  # mixed codes
    same = lk.SpecError([Problem("hparam-conflict", "a"), Problem("hparam-conflict", "b")])
    assert same.code == "hparam-conflict"
    assert str(same).startswith("2 problems:\n\n  [hparam-conflict] a")


def test_spec_error_survives_pickling():
    # Errors cross process boundaries when a rank fails.
    err = lk.SpecError([Problem("a-code", "one"), Problem("b-code", "two")], where="x.py")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is lk.SpecError
    assert str(back) == str(err)
    assert back.codes == ["a-code", "b-code"]
    assert back.code == "invalid-spec"


def test_problem_repr():
    assert repr(Problem("x", "y")) == "Problem('x', 'y')"


def sample(net, batch, lr=0.1):
    return None


def test_describe_function_relative_to_the_working_directory(monkeypatch):
    monkeypatch.chdir(ROOT)
    line = sample.__code__.co_firstlineno
    assert describe_function(sample) == f"sample(net, batch, lr) at tests/test_errors.py:{line}"
    monkeypatch.chdir("/")
    assert describe_function(sample).endswith(
        f" at {ROOT.relative_to('/')}/tests/test_errors.py:{line}"
    )


def test_describe_function_marks_variadics_and_keeps_qualnames():
    def step(net, *args, key, **kwargs):
        return None

    assert describe_function(step).startswith(
        "test_describe_function_marks_variadics_and_keeps_qualnames.<locals>.step"
        "(net, *args, key, **kwargs) at "
    )


class _Step:
    def __call__(self, net, batch):
        return None


def test_describe_function_of_odd_callables(monkeypatch):
    monkeypatch.chdir(ROOT)
    line = sample.__code__.co_firstlineno
    part = functools.partial(sample, lr=0.5)
    assert (
        describe_function(part) == f"partial(sample)(net, batch, lr) at tests/test_errors.py:{line}"
    )
    call_line = _Step.__call__.__code__.co_firstlineno
    assert describe_function(_Step()) == f"_Step(net, batch) at tests/test_errors.py:{call_line}"
    assert describe_function(len) == "len(obj) at builtins"


def test_sorted_list():
    assert sorted_list(["b", "a", "b"]) == "a, b"
    assert sorted_list([]) == "(none)"


def test_did_you_mean():
    assert did_you_mean("bach", ["batch", "ctx"]) == " Did you mean 'batch'?"
    assert did_you_mean("zzz", ["batch", "ctx"]) == ""


def test_a_distributed_error_always_has_its_attributes():
    # Every path that raises one reads the same way, also those without a failing rank.
    err = DistributedError("the group could not form", code="group-failed")
    assert (err.rank, err.exception_type, dict(err.exitcodes)) == (None, None, {})


# -- warnings ---------------------------------------------------------------------------------------
def _warning_calls() -> list[tuple[str, int, ast.Call]]:
    found = []
    for path in sorted((ROOT / "lightkit").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("warn", "warn_explicit")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "warnings"
            ):
                found.append((str(path.relative_to(ROOT)), node.lineno, node))
    return found


def test_every_warning_is_a_lightkit_warning_with_a_code():
    calls = _warning_calls()
    assert len(calls) > 40  # the scan sees the package
    plain = []
    for where, line, call in calls:
        first = call.args[0] if call.args else None
        ok = (
            isinstance(first, ast.Call)
            and isinstance(first.func, ast.Name)
            and first.func.id == "LightkitWarning"
            and any(
                kw.arg == "code" and isinstance(kw.value, ast.Constant) for kw in first.keywords
            )
        )
        if not ok:
            plain.append(f"{where}:{line}")
    assert not plain, f"warnings that are not LightkitWarning(..., code=...): {plain}"


def test_every_warning_points_at_the_users_code():
    # A fixed stacklevel lands in lightkit whenever the call chain changes; the first frame
    # outside lightkit is the line a user can act on.
    fixed = [
        where
        for where, _, call in _warning_calls()
        for kw in call.keywords
        if kw.arg == "stacklevel"
        and not (
            isinstance(kw.value, ast.Call) and getattr(kw.value.func, "id", "") == "user_stacklevel"
        )
    ]
    assert fixed == ["lightkit/spec/decorators.py"]  # its depth is computed


def _validation_without_data() -> lk.Registry:
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    reg = lk.Registry()

    def net():
        return nn.Linear(3, 1)

    def data():
        return DataLoader(TensorDataset(torch.ones(4, 3), torch.zeros(4, 1)), batch_size=2)

    def step(net, batch):
        x, y = batch
        return nn.functional.mse_loss(net(x), y)

    def val(net, batch):
        lk.log("val/loss", step(net, batch))

    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.1)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(step)
    reg.validation_step(val)
    reg.configure_optimizers(optim)
    return reg


QUIET = {
    "max_epochs": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def test_a_warning_carries_its_code_and_the_category_silences_it():
    spec = lk.collect(_validation_without_data())
    with pytest.warns(lk.LightkitWarning, match="fit skips validation") as record:
        lk.Trainer(**QUIET).fit(spec)
    codes = [w.message.code for w in record if isinstance(w.message, lk.LightkitWarning)]
    assert codes == ["validation-skipped"]
    assert record[0].filename == __file__  # pointed at the user's call
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=lk.LightkitWarning)
        result = lk.Trainer(**QUIET).fit(spec)
    assert result.global_step == 2
    assert [str(w.message) for w in seen] == []


def test_a_notebook_functions_place_reads_as_ipythons_cell(monkeypatch):
    # A cell's code has a kernel's temporary file name; IPython's tracebacks say
    # "Cell In[5], line 2", and so do lightkit's messages.
    import types

    cell_file = "/tmp/ipykernel_4242/2718281828.py"
    namespace: dict = {}
    exec(compile("\n\ndef val(net, batch):\n    pass\n", cell_file, "exec"), namespace)
    assert describe_function(namespace["val"]) == f"val(net, batch) at {cell_file}:3"
    shell = types.SimpleNamespace(compile=types.SimpleNamespace(_filename_map={cell_file: 5}))
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert describe_function(namespace["val"]) == "val(net, batch) at Cell In[5], line 3"
    # A SpecError's head names the cell once, as the file it stands for.
    exec(compile("def train(net, batch, foo):\n    pass\n", cell_file, "exec"), namespace)
    reg = lk.Registry()
    reg.model(lambda: torch.nn.Linear(1, 1), name="net")
    reg.training_step(namespace["train"])
    reg.validation_step(lambda net, batch, bar: None)
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert str(info.value).startswith("2 problems in Cell In[5], tests/test_errors.py:\n")
    shell.compile._filename_map = {}  # another cell's file: the path as it is
    assert describe_function(namespace["val"]) == f"val(net, batch) at {cell_file}:3"


def test_a_lightkit_warning_survives_pickling_and_copying():
    # Under -W error it is raised, and may cross to another process.
    import copy

    warning = lk.LightkitWarning("the loader is rebuilt", code="loader-rebuilt")
    for back in (pickle.loads(pickle.dumps(warning)), copy.copy(warning)):
        assert (type(back), str(back), back.code) == (
            lk.LightkitWarning,
            "the loader is rebuilt",
            "loader-rebuilt",
        )


def test_a_spec_errors_head_names_only_the_files_with_problems():
    from tests.engine.engine_helpers import registry

    reg = registry()  # good functions, defined in engine_helpers.py

    @reg.on("train_batch_end")
    def hook(trainer, pl_module):
        pass

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert str(info.value).startswith("2 problems in tests/test_errors.py:\n")
