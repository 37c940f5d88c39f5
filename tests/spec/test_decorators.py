"""The module-level decorators: they record (role, options) and return the function itself."""

from __future__ import annotations

import inspect
import warnings

import pytest
from torch import nn

import lightkit as lk
from lightkit.spec.registry import registry_for
from lightkit.spec.roles import ROLES

#: The decorators without options.
SIMPLE_ROLES = [r for r in ROLES if r not in ("model", "training_step", "on")]


@pytest.fixture(autouse=True)
def registry():
    """This test module's default registry, emptied around each test."""
    reg = registry_for(__name__)
    reg.clear()
    yield reg
    reg.clear()


def only_entry(reg):
    assert len(reg.entries) == 1, reg.entries
    return reg.entries[0]


def test_model_bare(registry):
    def net(hidden: int = 8):
        return hidden

    decorated = lk.model(net)
    assert decorated is net
    assert not hasattr(decorated, "__wrapped__")
    entry = only_entry(registry)
    assert (entry.role, entry.fn, entry.name) == ("model", net, "net")


def test_model_with_name(registry):
    @lk.model(name="net")
    def make_net(hidden: int = 8):
        return hidden

    assert make_net.__name__ == "make_net"
    assert not hasattr(make_net, "__wrapped__")
    entry = only_entry(registry)
    assert (entry.role, entry.fn, entry.name) == ("model", make_net, "net")


def test_model_with_empty_parentheses(registry):
    @lk.model()
    def net():
        return None

    assert only_entry(registry).name == "net"


#: The decorators without options.
SIMPLE_ROLES = [r for r in ROLES if r not in ("model", "training_step", "on")]


@pytest.mark.parametrize("role", SIMPLE_ROLES)
def test_every_decorator_takes_empty_parentheses_too(registry, role):
    # As @lk.model() does: a user who writes @lk.train_data() gets what @lk.train_data gives.
    def fn():
        return None

    assert getattr(lk, role)()(fn) is fn
    entry = only_entry(registry)
    assert (entry.role, entry.fn) == (role, fn)
    reg = lk.Registry()
    assert getattr(reg, role)()(fn) is fn
    assert [(e.role, e.fn) for e in reg.entries] == [(role, fn)]


def test_training_step_bare_and_manual(registry):
    def train(net, batch):
        return batch

    assert lk.training_step(train) is train
    assert only_entry(registry).manual is False

    registry.clear()

    def manual_train(net, batch, optimizers):
        return None

    decorated = lk.training_step(manual=True)(manual_train)
    assert decorated is manual_train
    assert not hasattr(decorated, "__wrapped__")
    entry = only_entry(registry)
    assert (entry.role, entry.fn, entry.manual) == ("training_step", manual_train, True)


@pytest.mark.parametrize("role", SIMPLE_ROLES)
def test_simple_roles_record_and_return_the_function(role, registry):
    def fn(batch_size: int = 4):
        return batch_size

    decorated = getattr(lk, role)(fn)
    assert decorated is fn
    assert not hasattr(decorated, "__wrapped__")
    entry = only_entry(registry)
    assert (entry.role, entry.fn, entry.name, entry.event) == (role, fn, "fn", None)


def test_on_records_the_event(registry):
    def report(ctx):
        return ctx

    decorated = lk.on("train_epoch_end")(report)
    assert decorated is report
    assert not hasattr(decorated, "__wrapped__")
    entry = only_entry(registry)
    assert (entry.role, entry.event, entry.fn) == ("on", "train_epoch_end", report)


def test_decorated_functions_stay_plain_callables():
    @lk.model
    def net(hidden: int = 8):
        return hidden * 2

    @lk.training_step(manual=True)
    def train(net, batch):
        return net + batch

    @lk.on("fit_start")
    def hello(net):
        return f"hello {net}"

    assert net(hidden=3) == 6
    assert train(1, 2) == 3
    assert hello("net") == "hello net"
    assert list(inspect.signature(net).parameters) == ["hidden"]
    assert inspect.signature(train).parameters["batch"].default is inspect.Parameter.empty


def test_decorators_record_in_the_registry_of_the_functions_module():
    namespace = {"__name__": "tests._decorated_elsewhere"}
    exec("import lightkit as lk\n@lk.model\ndef other():\n    return 1\n", namespace)
    try:
        reg = registry_for("tests._decorated_elsewhere")
        assert [e.fn for e in reg.entries] == [namespace["other"]]
        assert registry_for(__name__).entries == []
    finally:
        reg.clear()


def test_a_plain_call_on_an_imported_function_says_where_it_went(registry):
    # DESIGN keys the registry by the function's module; lk.collect() in the calling module
    # would not see it. The call sits at a module's top level, as in a script.
    from tests.user_modules import simple

    own = registry_for(simple.__name__)
    before = list(own.entries)
    caller = "tests._registers_elsewhere"
    try:
        with pytest.warns(UserWarning) as caught:
            code = compile(
                "import lightkit as lk\n"
                "from tests.user_modules import simple\n"
                "lk.val_data(simple.val_loader)\n",
                "script.py",
                "exec",
            )
            exec(code, {"__name__": caller})
        assert str(caught[0].message) == (
            f"lk.val_data(val_loader) called in {caller!r} records val_loader in the registry "
            f"of 'tests.user_modules.simple', the module that defines it, so lk.collect() in "
            f"{caller!r} does not see it. Collect that module too "
            f"(lk.collect('tests.user_modules.simple', ...)), or register on an explicit "
            f"registry: reg = lk.Registry(); reg.val_data(val_loader); lk.collect(reg)."
        )
        assert (caught[0].filename, caught[0].lineno) == ("script.py", 3)  # the call
        assert registry_for(caller).entries == []
    finally:
        own._entries = {e.key: e for e in before}
        registry_for(caller).clear()


def test_a_users_own_decorator_around_ours_does_not_warn(registry):
    # `def my_data(fn): return lk.train_data(fn)` in a helper module, applied where fn is
    # defined: the function goes to its own module, as it should, with nothing to warn about.
    namespace = {"__name__": "tests._helpers_module"}
    exec("import lightkit as lk\ndef my_data(fn):\n    return lk.train_data(fn)\n", namespace)

    def loader():
        return []

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert namespace["my_data"](loader) is loader
    assert [e.fn for e in registry.entries] == [loader]


def test_a_callable_object_goes_to_the_module_that_registers_it(registry):
    # A functools.partial "belongs" to functools: it is recorded where it was registered.
    import functools

    def loader(batch_size=2):
        return []

    part = functools.partial(loader, batch_size=4)
    assert lk.train_data(part) is part
    assert [e.fn for e in registry.entries] == [part]


def test_bare_on_is_an_error():
    with pytest.raises(lk.SpecError) as info:

        @lk.on  # type: ignore[arg-type]
        def report(ctx):
            return ctx

    assert info.value.code == "unknown-event"
    assert str(info.value) == (
        '@lk.on needs an event name: write `@lk.on("train_epoch_end")` above '
        "`def report`, not bare `@lk.on`."
    )


def test_unknown_events_are_reported_by_collect_with_the_other_problems(registry):
    # Like every other spec problem, a misspelt event is found by collect(), named with its
    # function, and reported together with the rest: not one at a time at import.
    @lk.on("train_epoch_ends")
    def report(ctx):
        return ctx

    @lk.on("fit_started")
    def start(ctx):
        return ctx

    @lk.training_step
    def train(net, batch):
        return batch

    with pytest.raises(lk.SpecError) as info:
        lk.collect(registry)
    message = str(info.value)
    assert info.value.codes.count("unknown-event") == 2
    assert "unknown-parameter" in info.value.codes  # 'net' is no model: reported alongside
    line = inspect.getsourcelines(report)[1]
    assert (
        f"report(ctx) at tests/spec/test_decorators.py:{line}: @on('train_epoch_ends'): "
        "unknown event. Did you mean 'train_epoch_end'?"
    ) in message
    assert "start(ctx) at tests/spec/test_decorators.py:" in message
    assert "@on('fit_started'): unknown event. Did you mean 'fit_start'?" in message
    assert "Available events: after_backward, before_backward, before_optimizer_step, " in message


@pytest.mark.parametrize(
    ("event", "hint"),
    [
        ("test_end", "Lightning's on_test_end is test_epoch_end here."),
        ("on_before_zero_grad", "Lightning's on_before_zero_grad is before_optimizer_step here."),
        ("setup", "Lightning's setup has no event here: build things in the @lk.model and data "
                  "functions, which run once per entry point; an lk.Callback has setup(ctx, stage)."),
        ("prepare_data", "Lightning's prepare_data has no event here: download inside the data "
                         "function on one process: if ctx.local_rank == 0: download(), then "
                         "ctx.runtime.barrier()."),
        ("validation_start", "Lightning's on_validation_start is validation_epoch_start here."),
    ],
)  # fmt: skip
def test_a_lightning_hook_name_gets_the_event_it_maps_to(event, hint):
    # Not the closest spelling: on_test_end is once a run, test_epoch_end once an epoch.
    registry = lk.Registry()
    registry.on(event)(lambda: None)
    with pytest.raises(lk.SpecError) as info:
        lk.collect(registry)
    assert f"@on({event!r}): unknown event. {hint} Available events:" in str(info.value)


def test_event_must_be_a_string():
    with pytest.raises(lk.SpecError, match=r"^@lk.on\(3\): the event must be a string"):
        lk.on(3)  # type: ignore[arg-type]


def test_model_name_must_be_an_identifier():
    with pytest.raises(lk.SpecError) as info:

        @lk.model(name="my net")
        def make_net():
            return None

    assert info.value.code == "bad-model-name"
    assert str(info.value) == (
        "@model(name='my net'): a model's name must be a Python identifier, since other "
        "functions receive the model through a parameter of that name. Use e.g. "
        "name='my_net'."
    )


def test_decorating_something_that_is_not_a_function():
    with pytest.raises(lk.SpecError) as info:
        lk.train_data(42)  # type: ignore[arg-type]
    assert info.value.code == "not-a-function"
    assert str(info.value) == (
        "@train_data expects a function, got int 42. Decorate a function "
        "(`@lk.train_data` above `def ...`), or pass one: `reg.train_data(my_function)`."
    )


def test_stacked_decorators_give_one_function_two_roles(registry):
    @lk.validation_step
    @lk.test_step
    def evaluate(net, batch):
        return batch

    assert [(e.role, e.fn) for e in registry.entries] == [
        ("test_step", evaluate),
        ("validation_step", evaluate),
    ]


def test_registering_a_module_instance_asks_for_the_function_that_builds_it():
    reg = lk.Registry()
    with pytest.raises(lk.SpecError) as info:
        reg.model(nn.Linear(2, 2))
    assert info.value.code == "not-a-function"
    assert "got the Linear module itself" in str(info.value)
    assert 'reg.model(lambda: module, name="net")' in str(info.value)
    assert len(reg) == 0  # nothing half-registered


def test_hooks_of_one_name_from_two_modules_are_two_hooks():
    import types

    reg = lk.Registry()
    for module in ("lib_a", "lib_b"):
        ns: dict = {"__name__": module}
        exec("def report(ctx):\n    pass\n", ns)
        reg.on("fit_start", ns["report"])
    assert [e.fn.__module__ for e in reg.entries] == ["lib_a", "lib_b"]
    assert isinstance(reg.entries[0].fn, types.FunctionType)
