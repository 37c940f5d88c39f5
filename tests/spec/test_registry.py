"""Registries: per module by default, explicit on request, replacing on redefinition."""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import warnings

import pytest

import lightkit as lk
from lightkit.spec.registry import has_registry, registry_for
from tests.user_modules import two_steps


def make_net(hidden: int = 8):
    return ("net", hidden)


def make_mlp(width: int = 4):
    return ("mlp", width)


def regress(net, batch):
    return batch


def loader(batch_size: int = 2):
    return [batch_size]


def test_explicit_registry_methods_are_the_decorators():
    reg = lk.Registry()

    @reg.model
    def net():
        return None

    @reg.model(name="head")
    def build_head():
        return None

    @reg.training_step(manual=True)
    def train(net, head, batch, optimizers):
        return None

    @reg.on("fit_end")
    def done(ctx):
        return None

    assert [(e.role, e.name) for e in reg.entries] == [
        ("model", "net"),
        ("model", "head"),
        ("training_step", "train"),
        ("on", "done"),
    ]
    assert reg.entries[2].manual is True
    assert reg.entries[3].event == "fit_end"
    assert len(reg) == 4
    assert repr(reg) == "Registry('registry', 4 functions)"
    # Explicit registries are not module registries: nothing leaked into this module's.
    assert not has_registry(__name__) or registry_for(__name__).entries == []


def test_explicit_registry_plain_calls():
    reg = lk.Registry("programmatic")
    assert reg.model(make_net, name="net") is make_net
    assert reg.training_step(regress) is regress
    assert reg.configure_optimizers(loader) is loader
    assert reg.on("train_epoch_end", loader) is loader
    assert [(e.role, e.fn, e.name) for e in reg.entries] == [
        ("model", make_net, "net"),
        ("training_step", regress, "regress"),
        ("configure_optimizers", loader, "loader"),
        ("on", loader, "loader"),
    ]
    spec = lk.collect(reg)
    assert spec.model_names == ("net",)
    assert spec.get("training_step").fn is regress


@pytest.mark.parametrize(
    "role",
    [
        "validation_step",
        "test_step",
        "predict_step",
        "configure_optimizers",
        "train_data",
        "val_data",
        "test_data",
        "predict_data",
    ],
)
def test_every_role_method_records_plainly(role):
    reg = lk.Registry()
    assert getattr(reg, role)(loader) is loader
    assert [(e.role, e.fn) for e in reg.entries] == [(role, loader)]


def test_one_function_can_back_two_models():
    reg = lk.Registry()
    reg.model(make_mlp, name="encoder")
    reg.model(make_mlp, name="decoder")
    spec = lk.collect(reg)
    assert spec.model_names == ("encoder", "decoder")
    assert [m.fn for m in spec.models] == [make_mlp, make_mlp]


def test_lambda_hooks_written_apart_are_two_hooks():
    reg = lk.Registry()
    reg.on("validation_epoch_start")(lambda ctx: None)
    reg.on("validation_epoch_end")(lambda ctx: None)
    reg.on("fit_start")(lambda ctx: None); reg.on("fit_end")(lambda ctx: None)  # noqa: E702  # fmt: skip
    hooks = [e for e in reg.entries if e.role == "on"]
    assert [h.event for h in hooks] == [
        "validation_epoch_start", "validation_epoch_end", "fit_start", "fit_end"
    ]  # fmt: skip


def test_a_lambda_registered_again_from_the_same_place_replaces_itself():
    reg = lk.Registry()
    cell = 'reg.on("{}")(\n    lambda ctx: None\n)'
    for event in ("fit_start", "fit_end"):  # a cell run twice, its event edited in between
        exec(compile(cell.format(event), "<cell-1>", "exec"), {"reg": reg})
    assert [e.event for e in reg.entries if e.role == "on"] == ["fit_end"]


def test_one_definition_registered_in_a_loop_keeps_every_entry():
    # Closures of one definition share their code: a factory, not a rerun cell.
    reg = lk.Registry()
    for event in ("fit_start", "fit_end"):
        reg.on(event)(lambda ctx: None)
    for name in ("encoder", "decoder"):
        reg.model(lambda: make_net(), name=name)
    assert [e.event for e in reg.entries if e.role == "on"] == ["fit_start", "fit_end"]
    assert [e.name for e in reg.entries if e.role == "model"] == ["encoder", "decoder"]


def test_one_name_defined_twice_in_one_file_keeps_the_later_with_a_warning(monkeypatch):
    # As Python keeps the later for the module's name; a pasted copy is pointed at, at its
    # line. Loading the file again (a reload) replaces each by its new self.
    source = """
import lightkit as lk

@lk.model
def net():
    return 0

@lk.training_step
def train(net, batch):
    return 1

@lk.training_step
def train(net, batch):
    return 2
"""
    name = "tests.user_modules._pasted"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        with pytest.warns(UserWarning) as caught:
            exec(compile(source, "/src/pasted.py", "exec"), module.__dict__)
        assert [(w.filename, w.lineno) for w in caught] == [("/src/pasted.py", 12)]
        assert str(caught[0].message) == (
            "train(net, batch) at /src/pasted.py:12 replaces train(net, batch) at "
            "/src/pasted.py:8 as @training_step: a file that defines one name twice keeps "
            "the later, as Python does. Rename one if both are meant."
        )
        with pytest.warns(UserWarning) as again:  # a reload: the file still has the copy
            exec(compile(source, "/src/pasted.py", "exec"), module.__dict__)
        assert [(w.filename, w.lineno) for w in again] == [("/src/pasted.py", 12)]
        spec = lk.collect(module)
        assert [e.fn for e in spec.functions] == [module.net, module.train]
        assert module.train(None, None) == 2
    finally:
        registry_for(name).clear()


def test_reregistration_keeps_the_build_order():
    reg = lk.Registry()

    def a():
        return "a"

    def b():
        return "b"

    reg.model(a)
    reg.model(b)
    order = [e.order for e in reg.entries]
    reg.model(a)  # redefinition of the first model
    assert [e.fn for e in reg.entries] == [a, b]
    assert [e.order for e in reg.entries] == order


CELL = """
import lightkit as lk

@lk.model
def net(hidden: int = 8):
    return hidden

@lk.training_step
def train(net, batch):
    return batch

@lk.on("train_epoch_end")
def report(ctx):
    return ctx
"""


def test_notebook_cell_executed_twice_registers_once(monkeypatch):
    name = "tests.user_modules._notebook"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    code = compile(CELL, "<cell>", "exec")
    try:
        exec(code, module.__dict__)
        first_train = module.train
        exec(code, module.__dict__)
        reg = registry_for(name)
        assert len(reg) == 3
        assert module.train is not first_train
        spec = lk.collect(module)
        assert spec.get("training_step").fn is module.train
        assert [e.fn for e in spec.models] == [module.net]
        assert [h.fn for h in spec.hooks] == [module.report]
    finally:
        registry_for(name).clear()


def test_a_hook_cell_run_again_with_another_event_replaces_the_old_hook(monkeypatch):
    # The same name and role (a hook) is a redefinition, whatever its event; one function
    # stacked under two @lk.on keeps both.
    name = "tests.user_modules._notebook_hooks"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    first = CELL
    edited = CELL.replace('@lk.on("train_epoch_end")', '@lk.on("train_epoch_start")')
    stacked = CELL.replace(
        '@lk.on("train_epoch_end")', '@lk.on("fit_start")\n@lk.on("train_epoch_end")'
    )
    try:
        exec(compile(first, "<cell 1>", "exec"), module.__dict__)
        exec(compile(edited, "<cell 2>", "exec"), module.__dict__)
        hooks = lk.collect(module).hooks
        assert [(h.event, h.fn) for h in hooks] == [("train_epoch_start", module.report)]
        exec(compile(stacked, "<cell 3>", "exec"), module.__dict__)
        hooks = lk.collect(module).hooks
        assert sorted(h.event for h in hooks) == ["fit_start", "train_epoch_end"]
        assert all(h.fn is module.report for h in hooks)
    finally:
        registry_for(name).clear()


def _run_cells(monkeypatch, name, *cells):
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    for i, cell in enumerate(cells):
        exec(compile(cell, f"<cell {i}>", "exec"), module.__dict__)
    return module


def test_a_cell_run_again_with_another_role_or_model_name_replaces_the_old_entry(monkeypatch):
    name = "tests.user_modules._notebook_roles"
    edited = CELL.replace("@lk.training_step", "@lk.validation_step").replace(
        "@lk.model\n", '@lk.model(name="backbone")\n'
    )
    try:
        module = _run_cells(monkeypatch, name, CELL, edited)
        entries = registry_for(name).entries
        assert [(e.role, e.name) for e in entries if e.role != "on"] == [
            ("model", "backbone"),
            ("validation_step", "train"),
        ]
        assert [e.fn for e in entries] == [module.net, module.train, module.report]
    finally:
        registry_for(name).clear()


PARTIAL_CELL = """
import functools
import lightkit as lk

def sgd(net, lr: float = 0.1):
    return lr

class Report:
    def __call__(self, ctx):
        return ctx

lk.configure_optimizers(functools.partial(sgd, lr=0.5))
lk.on("train_epoch_end")(Report())
def build(width: int = 2):
    return width

lk.model(functools.partial(build, width=3), name="net")
"""


def test_a_cell_of_partials_and_callable_objects_run_again_registers_once(monkeypatch):
    name = "tests.user_modules._notebook_partials"
    try:
        module = _run_cells(monkeypatch, name, PARTIAL_CELL, PARTIAL_CELL)
        spec = lk.collect(module)  # no duplicate-role
        assert [e.role for e in spec.functions] == ["configure_optimizers", "on", "model"]
        assert len(registry_for(name)) == 3
    finally:
        registry_for(name).clear()


def test_partials_and_objects_that_differ_are_two_hooks():
    @dataclasses.dataclass
    class Report:
        tag: str

        def __call__(self, ctx):
            return self.tag

    def log(ctx, tag):
        return tag

    reg = lk.Registry()
    reg.on("fit_start")(Report("a"))
    reg.on("fit_start")(Report("b"))
    reg.on("fit_end")(functools.partial(log, tag="a"))
    reg.on("fit_end")(functools.partial(log, tag="b"))
    reg.on("fit_end")(functools.partial(log, tag="b"))  # the same again: replaced
    assert [e.fn(None) for e in reg.entries] == ["a", "b", "a", "b"]


TWO_OF_ONE_NAME = """
import lightkit as lk

@lk.train_data
def data():
    return "train"

@lk.val_data
def data():
    return "val"
"""


def test_a_cell_run_again_keeps_the_build_order(monkeypatch):
    name = "tests.user_modules._notebook_order"
    both = "import lightkit as lk\n\n@lk.model\ndef first():\n    return 1\n\n@lk.model\ndef second():\n    return 2\n"
    edited = "import lightkit as lk\n\n@lk.model\ndef first():\n    return 3\n"
    role_changed = "import lightkit as lk\n\n@lk.train_data\ndef first():\n    return 3\n"
    try:
        _run_cells(monkeypatch, name, both, edited)
        assert [e.name for e in registry_for(name).entries] == ["first", "second"]
        _run_cells(monkeypatch, name, both, role_changed)
        assert [e.name for e in registry_for(name).entries] == ["first", "second"]
    finally:
        registry_for(name).clear()


def test_one_name_defined_twice_in_one_file_keeps_both(monkeypatch):
    # Not a rerun cell: the two definitions start on different lines of one compile.
    name = "tests.user_modules._two_of_one_name"
    try:
        _run_cells(monkeypatch, name, TWO_OF_ONE_NAME)
        assert [e.role for e in registry_for(name).entries] == ["train_data", "val_data"]
    finally:
        registry_for(name).clear()


WRAPPED_CELL = """
import functools
import lightkit as lk

def timed(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper

@lk.on("train_epoch_end")
@timed
def report(ctx):
    return ctx
"""


def test_a_rerun_cell_replaces_a_hook_under_a_wraps_decorator(monkeypatch):
    # Every wrapper of one decorator shares its code: the wrapped function tells them apart.
    name = "tests.user_modules._notebook_wrapped"
    edited = WRAPPED_CELL.replace("train_epoch_end", "train_epoch_start")
    try:
        module = _run_cells(monkeypatch, name, WRAPPED_CELL, edited)
        entries = registry_for(name).entries
        assert [(e.event, e.fn) for e in entries] == [("train_epoch_start", module.report)]
    finally:
        registry_for(name).clear()


def test_two_partials_of_one_builder_are_two_models():
    reg = lk.Registry()
    reg.model(functools.partial(make_mlp, width=2), name="encoder")
    reg.model(functools.partial(make_mlp, width=8), name="decoder")
    assert [e.name for e in reg.entries] == ["encoder", "decoder"]


@pytest.mark.parametrize(
    "builder",
    [
        lambda: make_net(),
        functools.partial(make_net, hidden=2),
        type("Builder", (), {"__call__": lambda self: 1})(),
    ],
    ids=["lambda", "partial", "callable-object"],
)
def test_a_model_builder_without_a_usable_name_needs_name(builder):
    reg = lk.Registry()
    reg.model(builder)
    reg.training_step(regress)
    with pytest.raises(lk.SpecError) as info:  # at collect(), with the spec's other problems
        lk.collect(reg)
    assert set(info.value.codes) == {"bad-model-name", "unknown-parameter"}
    assert 'Give one: reg.model(builder, name="net")' in str(info.value)
    named = lk.Registry()
    named.model(builder, name="net")
    assert lk.collect(named).model_names == ("net",)


def test_default_registries_are_keyed_by_the_functions_module():
    names = ["tests._registry_a", "tests._registry_b"]
    spaces = [{"__name__": n} for n in names]
    try:
        for ns in spaces:
            exec("import lightkit as lk\n@lk.model\ndef net():\n    return 1\n", ns)
        for n, ns in zip(names, spaces, strict=True):
            assert [e.fn for e in registry_for(n).entries] == [ns["net"]]
        assert registry_for(names[0]) is registry_for(names[0])
        assert registry_for(names[0]) is not registry_for(names[1])
    finally:
        for n in names:
            registry_for(n).clear()


def test_two_training_steps_are_an_error_naming_both():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(two_steps)
    assert info.value.code == "duplicate-role"
    assert str(info.value) == (
        "2 functions are marked @training_step, but a spec has at most one:\n"
        "  train(net, batch) at tests/user_modules/two_steps.py:9\n"
        "  train_again(net, batch) at tests/user_modules/two_steps.py:14\n"
        "Keep one, or collect them into separate specs."
    )


def test_two_functions_claiming_one_model_name_are_an_error():
    reg = lk.Registry()
    reg.model(make_net, name="net")

    def net():
        return None

    reg.model(net)
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "duplicate-model"
    message = str(info.value)
    assert message.startswith("two models are named 'net':\n  make_net(hidden) at tests/spec/")
    assert (
        "\n  test_two_functions_claiming_one_model_name_are_an_error.<locals>.net() at " in message
    )
    assert message.endswith('Give one another name: @lk.model(name="...").')


def test_a_partial_can_be_registered():
    reg = lk.Registry()
    reg.model(make_net, name="net")
    reg.train_data(functools.partial(loader, batch_size=3))
    spec = lk.collect(reg)
    assert spec.get("train_data").name.startswith("functools.partial(")
    assert spec.hparams.batch_size == 3


def test_clear_forgets_everything():
    reg = lk.Registry()
    reg.model(make_net)
    reg.clear()
    assert len(reg) == 0 and reg.entries == []


def test_unknown_event_on_registry_is_reported_by_collect():
    reg = lk.Registry()
    reg.on("epoch_end", loader)
    with pytest.raises(
        lk.SpecError,
        match=r"^loader\(batch_size\) at tests/spec/test_registry.py:\d+: "
        r"@on\('epoch_end'\): unknown event\.",
    ):
        lk.collect(reg)


def test_bare_on_on_a_registry_is_an_error():
    reg = lk.Registry()
    with pytest.raises(lk.SpecError) as info:

        @reg.on  # type: ignore[arg-type]
        def report(ctx):
            return ctx

    assert str(info.value) == (
        '@reg.on needs an event name: write `@reg.on("train_epoch_end")` above '
        "`def report`, not bare `@reg.on`."
    )
    assert len(reg) == 0


def test_a_module_reloaded_after_an_edit_that_moved_a_function_replaces_it(monkeypatch):
    # Another compile of the file, not a second definition in one: no warning.
    name = "tests.user_modules._moved"
    first = "import lightkit as lk\n\n@lk.training_step\ndef train(batch):\n    return 1\n"
    moved = "import lightkit as lk\n\n\n\n\n@lk.training_step\ndef train(batch):\n    return 2\n"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(first, "/src/moved.py", "exec"), module.__dict__)
            exec(compile(moved, "/src/moved.py", "exec"), module.__dict__)
        assert [e.fn for e in registry_for(name).entries] == [module.train]
        assert module.train(None) == 2
    finally:
        registry_for(name).clear()


def test_alternatives_of_one_name_in_a_function_body_replace_without_a_warning(monkeypatch):
    # Two definitions of `step` in one function are branches of an `if`, not a pasted copy.
    name = "tests.user_modules._alternatives"
    source = """
import lightkit as lk

def make(kind):
    if kind == "mse":
        @lk.training_step
        def step(batch):
            return 1
    else:
        @lk.training_step
        def step(batch):
            return 2
    return step
"""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(source, "/src/alternatives.py", "exec"), module.__dict__)
            module.make("mse")
            last = module.make("l1")
        assert [e.fn for e in registry_for(name).entries] == [last]
    finally:
        registry_for(name).clear()
