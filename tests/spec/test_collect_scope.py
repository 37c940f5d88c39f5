"""``lk.collect()`` in a function (a test) takes what the module registered at its top level
and while that function runs, not what other functions registered while they ran."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import torch

import lightkit as lk
from lightkit.spec.registry import registry_for

NAME = "tests.user_modules._scoped"


@pytest.fixture
def module(monkeypatch):
    """A fresh module with its own default registry, built from source text."""
    mod = types.ModuleType(NAME)
    monkeypatch.setitem(sys.modules, NAME, mod)

    def run(code: str) -> types.ModuleType:
        exec(compile(textwrap.dedent(code), "scoped.py", "exec"), mod.__dict__)
        return mod

    yield run
    registry_for(NAME).clear()


HEADER = """
import torch
import lightkit as lk
from torch import nn

def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
"""

TWO_TESTS = (
    HEADER
    + """
def first():
    @lk.model
    def net():
        torch.manual_seed(0)
        return nn.Linear(2, 1)

    @lk.training_step
    def train(net, batch):
        x, y = batch
        return nn.functional.mse_loss(net(x), y)

    @lk.configure_optimizers
    def optim(net, lr: float = 0.1):
        return torch.optim.SGD(net.parameters(), lr=lr)

    @lk.on("fit_end")
    def mark(net):
        calls.append("first")

    lk.train_data(loader)
    return lk.collect()

def second():
    @lk.model
    def net(width: int = 3):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(2, width), nn.Linear(width, 1))

    @lk.training_step
    def step(net, batch):
        x, y = batch
        return nn.functional.l1_loss(net(x), y)

    @lk.configure_optimizers
    def optim(net, lr: float = 0.01):
        return torch.optim.SGD(net.parameters(), lr=lr)

    @lk.train_data
    def data(batch_size: int = 2):
        return torch.utils.data.DataLoader(loader().dataset, batch_size=batch_size)

    return lk.collect()

calls = []
"""
)


def refs(spec):
    return [(e.role, e.fn.__qualname__) for e in spec.functions]


def test_each_function_collects_what_it_registered(module):
    mod = module(TWO_TESTS)
    one = mod.first()
    two = mod.second()
    # Before, `second()` collected `first`'s functions too: two training steps, two models
    # named `net`, two train_data and an `lr` declared twice, differently.
    assert refs(two) == [
        ("model", "second.<locals>.net"),
        ("training_step", "second.<locals>.step"),
        ("configure_optimizers", "second.<locals>.optim"),
        ("train_data", "second.<locals>.data"),
    ]
    assert two.hparams.as_dict() == {"width": 3, "lr": 0.01, "batch_size": 2}
    # `first` registered the top-level `loader` by a plain call: that is first's, not second's.
    assert ("train_data", "loader") in refs(one)
    assert refs(mod.first()) == refs(one)  # a test run again replaces its entries

    trainer = lk.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    result = trainer.fit(two)
    assert result.global_step == 4  # 8 samples, batch_size 2: second's loader, not first's
    assert mod.calls == []  # first's hook is not second's
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for x, y in torch.utils.data.DataLoader(mod.loader().dataset, batch_size=2):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    for got, want in zip(result.models["net"].parameters(), net.parameters(), strict=True):
        assert torch.equal(got, want)

    trainer.fit(mod.first())
    assert mod.calls == ["first"]


def test_a_nested_function_sees_the_functions_around_it(module):
    mod = module(
        HEADER
        + """
@lk.training_step
def train(net, batch):
    return net(batch[0]).sum()

@lk.on("fit_start")
def top_hook():
    pass

def outer():
    @lk.model
    def net():
        return nn.Linear(2, 1)

    def inner():
        @lk.training_step
        def train(net, batch):
            return net(batch[0]).mean()
        return lk.collect()

    return inner()

def other():
    @lk.model(name="other")
    def net():
        return nn.Linear(2, 1)
"""
    )
    mod.other()
    spec = mod.outer()
    assert refs(spec) == [
        ("on", "top_hook"),
        ("model", "outer.<locals>.net"),
        ("training_step", "outer.<locals>.inner.<locals>.train"),
    ]


def test_the_top_level_collects_the_whole_module_and_a_function_its_own(module):
    mod = module(
        HEADER
        + """
@lk.model
def net():
    return nn.Linear(2, 1)

def build():
    @lk.training_step
    def train(net, batch):
        return net(batch[0]).sum()

def watch():
    @lk.on("fit_end")
    def seen():
        pass

def use():
    return lk.collect()

build()
watch()
at_top = lk.collect()
"""
    )
    everything = [
        ("model", "net"),
        ("training_step", "build.<locals>.train"),
        ("on", "watch.<locals>.seen"),
    ]
    assert refs(mod.at_top) == everything
    # A test that decorates nothing itself does not get the hook another test added.
    assert refs(mod.use()) == [("model", "net")]
    # An explicit module is the whole registry, wherever collect() is called.
    assert refs(lk.collect(mod)) == everything


def test_what_a_helper_registers_for_the_caller_is_the_callers(module, tmp_path):
    mod = module(
        HEADER
        + """
def make_data():
    @lk.train_data
    def data():
        return loader()

def make_model(width):
    def net():
        return nn.Linear(2, width)
    return net

lk.model(make_model(1), name="net")  # a factory's closure, registered at the top level

def test_fit():
    make_data()

    @lk.training_step
    def train(net, batch):
        return net(batch[0]).sum()

    @lk.configure_optimizers
    def optim(net, lr: float = 0.1):
        return torch.optim.SGD(net.parameters(), lr=lr)

    return lk.collect()
"""
    )
    spec = mod.test_fit()
    assert refs(spec) == [
        ("model", "make_model.<locals>.net"),
        ("train_data", "make_data.<locals>.data"),
        ("training_step", "test_fit.<locals>.train"),
        ("configure_optimizers", "test_fit.<locals>.optim"),
    ]
    result = lk.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False).fit(spec)
    assert result.global_step == 2


def test_a_missing_role_names_what_collect_left_out(module, tmp_path):
    mod = module(
        HEADER
        + """
def make_data():
    @lk.train_data
    def data():
        return loader()

def test_fit():
    @lk.model
    def net():
        return nn.Linear(2, 1)

    @lk.training_step
    def train(net, batch):
        return net(batch[0]).sum()

    @lk.configure_optimizers
    def optim(net, lr: float = 0.1):
        return torch.optim.SGD(net.parameters(), lr=lr)

    return lk.collect().with_hparams(lr=0.2)

def test_step_only():
    @lk.training_step
    def train(net, batch):
        return net(batch[0]).sum()

    return lk.collect()
"""
    )
    mod.make_data()  # run before, not from test_fit: another test's data
    spec = mod.test_fit()
    with pytest.raises(lk.SpecError) as info:
        lk.Trainer(max_epochs=1, default_root_dir=tmp_path).fit(spec)
    assert info.value.code == "missing-role"
    message = str(info.value)
    assert "needs @lk.train_data" in message
    assert "lk.collect() in test_fit() takes" in message
    assert "left out make_data.<locals>.data() at scoped.py:" in message
    assert "registered in make_data()" in message
    assert "lk.Registry()" in message
    assert list(tmp_path.iterdir()) == []  # refused before anything was written

    # A model left out shows in collect()'s own error, where `net` is an unknown name.
    with pytest.raises(lk.SpecError) as info:
        mod.test_step_only()
    assert info.value.codes == ["unknown-parameter"]
    assert "left out test_fit.<locals>.net() at scoped.py:" in str(info.value)


def test_a_hook_registered_by_a_plain_call_in_one_test_stays_out_of_the_next(module):
    mod = module(
        HEADER
        + """
import functools

@lk.model
def net():
    return nn.Linear(2, 1)

def report(name):
    pass

def test_a():
    lk.on("fit_end")(functools.partial(report, "a"))
    return lk.collect()

def test_b():
    return lk.collect()

def build():
    lk.train_data(loader)

build()

class Holder:
    in_a_class_body = lk.collect()

in_a_comprehension = [lk.collect() for _ in range(1)][0]
"""
    )
    assert [e.role for e in mod.test_a().functions] == ["model", "on"]
    assert [e.role for e in mod.test_b().functions] == ["model"]
    # A class body or a comprehension at the top level is the top level: the whole module.
    assert [e.role for e in mod.Holder.in_a_class_body.functions] == ["model", "train_data"]
    assert [e.role for e in mod.in_a_comprehension.functions] == ["model", "train_data"]


def test_two_definitions_in_one_function_are_still_reported(module):
    mod = module(
        HEADER
        + """
def test_twice():
    @lk.training_step
    def a(batch):
        return batch

    @lk.training_step
    def b(batch):
        return batch

    return lk.collect()
"""
    )
    with pytest.raises(lk.SpecError) as info:
        mod.test_twice()
    assert info.value.code == "duplicate-role"
    assert "test_twice.<locals>.a" in str(info.value)
    assert "test_twice.<locals>.b" in str(info.value)
