"""``lk.collect()`` in a function (a test, a factory) takes the module's top-level functions
and those that function decorated, not what other functions decorated in theirs."""

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
def first(lr_value):
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


def test_each_function_collects_what_it_decorated(module, tmp_path):
    mod = module(TWO_TESTS)
    one = mod.first(0.1)
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
    # The top-level `loader` that `first` registered stays visible to both, but `second`'s
    # own train_data hides it, as a local name hides a global one.
    assert ("train_data", "loader") in refs(one)
    assert refs(mod.first(0.1)) == refs(one)  # a test run again replaces its entries

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

    trainer.fit(mod.first(0.1))
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


def test_a_missing_role_names_what_collect_left_out(module, tmp_path):
    mod = module(
        HEADER
        + """
def make_data():
    @lk.train_data
    def data():
        return loader()

def test_fit():
    make_data()

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
"""
    )
    spec = mod.test_fit()
    with pytest.raises(lk.SpecError) as info:
        lk.Trainer(max_epochs=1, default_root_dir=tmp_path).fit(spec)
    assert info.value.code == "missing-role"
    message = str(info.value)
    assert "needs @lk.train_data" in message
    assert "lk.collect() in test_fit() takes" in message
    assert "left out make_data.<locals>.data() at scoped.py:" in message
    assert "decorated in make_data()" in message
    assert "lk.Registry()" in message
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


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


def test_the_calling_function_is_found_without_co_qualname():
    # Python 3.10 code objects have no co_qualname: the function that runs the code says it.
    from lightkit.spec.collect import _function_qualname

    class Case:
        def method(self):
            return sys._getframe().f_code

    code = Case().method()
    here = "test_the_calling_function_is_found_without_co_qualname"
    assert _function_qualname(code) == f"{here}.<locals>.Case.method"
    assert _function_qualname(compile("x = 1", "<cell>", "exec")) == "<module>"
