"""collect(): sources of every kind, merging, and every problem reported at once."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import lightkit as lk
from lightkit.spec.registry import registry_for
from tests.user_modules import (
    bad_params,
    conflicting,
    empty,
    realistic,
    simple,
    split_data,
    split_models,
)


def roles(spec: lk.TrainingSpec) -> list[tuple[str, str]]:
    return [(e.role, e.fn.__name__) for e in spec.functions]


SIMPLE_ROLES = [
    ("model", "net"),
    ("train_data", "train_loader"),
    ("val_data", "val_loader"),
    ("training_step", "train"),
    ("validation_step", "val"),
    ("configure_optimizers", "optim"),
]


@pytest.mark.parametrize(
    "source",
    [
        simple,
        "tests.user_modules.simple",
        "tests/user_modules/simple.py",
        Path("tests/user_modules/simple.py"),
        registry_for("tests.user_modules.simple"),
    ],
    ids=["module", "module-name", "file-path", "path-object", "registry"],
)
def test_every_kind_of_source(source):
    spec = lk.collect(source)
    assert roles(spec) == SIMPLE_ROLES
    assert spec.get("training_step").fn is simple.train
    spec.require("fit")


def test_a_file_outside_the_path_is_imported_by_its_folder(tmp_path):
    path = tmp_path / "lk_outside_module.py"
    path.write_text(
        "import lightkit as lk\n\n@lk.model\ndef net(width: int = 3):\n    return width\n"
    )
    try:
        spec = lk.collect(str(path))
        assert spec.model_names == ("net",)
        assert spec.models[0].fn.__module__ == "lk_outside_module"
        assert spec.hparams.width == 3
    finally:
        sys.modules.pop("lk_outside_module", None)
        registry_for("lk_outside_module").clear()
        sys.path.remove(str(tmp_path))


def test_no_argument_collects_the_calling_module(monkeypatch):
    name = "tests.user_modules._caller"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    code = (
        "import lightkit as lk\n"
        "@lk.model\ndef net():\n    return 1\n"
        "@lk.training_step\ndef train(net, batch):\n    return batch\n"
        "spec = lk.collect()\n"
    )
    try:
        exec(compile(code, "<caller>", "exec"), module.__dict__)
        assert [e.fn for e in module.spec.functions] == [module.net, module.train]
    finally:
        registry_for(name).clear()


def test_merging_a_model_module_and_a_data_module():
    spec = lk.collect(split_models, "tests.user_modules.split_data")
    assert roles(spec) == [
        ("model", "net"),
        ("training_step", "train"),
        ("configure_optimizers", "optim"),
        ("train_data", "train_loader"),
        ("val_data", "val_loader"),
    ]
    assert spec.hparams.as_dict() == {
        "hidden": 32,
        "label_smoothing": 0.0,
        "lr": 1e-2,
        "batch_size": 16,
        "shuffle": True,
    }
    spec.require("fit")


def test_merging_with_a_registry():
    reg = lk.Registry()
    reg.val_data(split_data.val_loader)
    reg.test_step(split_models.train)
    spec = lk.collect(split_models, reg)
    assert ("test_step", "train") in roles(spec)


def test_the_same_source_twice_counts_once():
    spec = lk.collect(simple, simple, "tests.user_modules.simple")
    assert roles(spec) == SIMPLE_ROLES


def test_conflicts_between_sources_are_all_reported():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(split_models, split_data, conflicting)
    err = info.value
    assert err.code == "invalid-spec"
    assert err.codes == ["duplicate-model", "duplicate-role", "duplicate-role", "hparam-conflict"]
    message = str(err)
    assert message.startswith(
        "4 problems in tests/user_modules/conflicting.py, "
        "tests/user_modules/split_data.py, tests/user_modules/split_models.py:\n\n"
    )
    assert (
        "  [duplicate-model] two models are named 'net':\n"
        "    net(hidden) at tests/user_modules/split_models.py:6\n"
        "    net(hidden) at tests/user_modules/conflicting.py:6\n"
    ) in message
    assert (
        "  [duplicate-role] 2 functions are marked @training_step, but a spec has at most one:\n"
        "    train(net, batch, label_smoothing) at tests/user_modules/split_models.py:11\n"
        "    regress(net, batch) at tests/user_modules/conflicting.py:11\n"
    ) in message
    assert "  [duplicate-role] 2 functions are marked @train_data" in message


def test_hparam_conflict_between_sources():
    reg = lk.Registry()

    @reg.test_data
    def test_loader(batch_size: int = 99):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(split_data, reg)
    assert info.value.code == "hparam-conflict"
    assert str(info.value).splitlines()[1] == (
        "  train_loader(batch_size, shuffle) at tests/user_modules/split_data.py:6: "
        "batch_size: int = 16"
    )


def test_all_problems_of_a_module_in_one_error():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(bad_params)
    err = info.value
    path = "tests/user_modules/bad_params.py"
    assert err.codes == [
        "unsupplied-loop-value",
        "unknown-parameter",
        "variadic-parameter",
        "variadic-parameter",
        "positional-only-parameter",
        "unsupplied-loop-value",
    ]
    assert err.code == "invalid-spec"
    assert str(err).startswith(f"6 problems in {path}:\n\n  [unsupplied-loop-value] net(")
    messages = [p.message for p in err.problems]
    assert messages[0] == (
        f"net(optimizer, hidden) at {path}:4: parameter 'optimizer' is a loop value that @model "
        "functions never receive. They receive: ctx, hparams. Remove 'optimizer' or rename it."
    )
    assert messages[1] == (
        f"train(net, batch, foo) at {path}:9: parameter 'foo' is not a model (net), a loop value "
        "(batch, batch_idx, ctx, hparams, optimizer, optimizers, scheduler, schedulers) or a "
        "hyperparameter (give it a default)."
    )
    assert messages[2].startswith(
        f"optim(net, *params, lr, **kwargs) at {path}:14: parameter '*params' is not supported"
    )
    assert messages[3].startswith(
        f"optim(net, *params, lr, **kwargs) at {path}:14: parameter '**kwargs' is not supported"
    )
    assert messages[4] == (
        f"loader(batch_size, shuffle) at {path}:19: parameter 'batch_size' is positional-only "
        "(before '/'); lightkit passes values by name. Remove the '/'."
    )
    assert messages[5] == (
        f"announce(net, batch) at {path}:24: parameter 'batch' is a loop value that 'fit_start' "
        "hooks never receive. They receive: ctx, hparams, optimizer, optimizers, scheduler, "
        "schedulers and the models (net). Remove 'batch' or rename it."
    )
    # Each problem is its own indented block.
    assert str(err).count("\n\n  [") == 6


def test_a_hook_on_a_misspelled_event_still_meets_the_other_hyperparameters():
    """One round of errors: the event's spelling and the conflict it would hit once fixed."""
    reg = lk.Registry()

    def net():
        return None

    def sgd(net, lr: float = 0.1):
        return None

    def warmup(optimizer, lr: float = 0.01, steps: int = 5):
        return None

    reg.model(net)
    reg.configure_optimizers(sgd)
    reg.on("train_epoch_strat")(warmup)
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["unknown-event", "hparam-conflict"]
    assert "Did you mean 'train_epoch_start'?" in info.value.problems[0].message
    assert "lr: float = 0.01" in info.value.problems[1].message
    # Fixed, the spelling finds the same hyperparameters.
    fixed = lk.Registry()
    fixed.model(net)
    fixed.configure_optimizers(sgd)
    fixed.on("train_epoch_start")(warmup)
    with pytest.raises(lk.SpecError) as again:
        lk.collect(fixed)
    assert again.value.codes == ["hparam-conflict"]


def test_a_single_problem_is_reported_plainly():
    reg = lk.Registry()

    @reg.training_step
    def train(batch, foo):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "unknown-parameter"
    assert info.value.codes == ["unknown-parameter"]
    assert not str(info.value).startswith("1 problem")
    assert "parameter 'foo' is not a model (none here), a loop value (batch, " in str(info.value)


def test_model_named_like_a_loop_value():
    reg = lk.Registry()
    reg.model(simple.net, name="batch")
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "model-name-clash"
    assert str(info.value).endswith(
        "the model name 'batch' is also a loop value, so functions could not ask for both. "
        'Name it otherwise: @lk.model(name="batch_model").'
    )


def test_a_module_that_registered_nothing():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(empty)
    assert info.value.code == "empty-source"
    assert str(info.value) == (
        "module 'tests.user_modules.empty' registered no functions. Decorate its functions "
        "with @lk.model, @lk.training_step, ... or pass the registry that holds them."
    )


REGMOD = """
import lightkit as lk

reg = lk.Registry()
same = reg


@reg.model
def net(width: int = 3):
    return width


@reg.training_step
def train(net, batch):
    return batch


@reg.configure_optimizers
def optim(net):
    return None
"""


@pytest.fixture
def regmod(tmp_path, monkeypatch):
    """A module ``lk_regmod`` in the working directory whose functions are on ``reg``."""

    def make(extra: str = "") -> types.ModuleType:
        (tmp_path / "lk_regmod.py").write_text(REGMOD + extra)
        module = types.ModuleType("lk_regmod")
        module.__file__ = str(tmp_path / "lk_regmod.py")
        exec(compile(REGMOD + extra, module.__file__, "exec"), module.__dict__)
        return module

    monkeypatch.chdir(tmp_path)
    return make


def test_a_module_whose_functions_are_on_a_registry_names_it(regmod):
    module = regmod()
    with pytest.raises(lk.SpecError) as info:
        lk.collect(module)
    assert info.value.code == "empty-source"
    assert str(info.value) == (
        "module 'lk_regmod' registered no functions, but it defines Registry 'reg' with 3 "
        "functions: pass it (lk.collect(lk_regmod.reg), or the target 'lk_regmod.py:reg' on the "
        "command line)."
    )
    assert lk.collect(module.reg).model_names == ("net",)


def test_a_module_with_several_registries_names_each(regmod):
    module = regmod("\nother = lk.Registry()\nother.train_data(lambda: [])\nnone = lk.Registry()\n")
    with pytest.raises(lk.SpecError) as info:
        lk.collect(module)
    assert str(info.value) == (
        "module 'lk_regmod' registered no functions, but it defines Registries 'reg' "
        "(3 functions), 'other' (1 function): pass the ones you mean (lk.collect(lk_regmod.reg, "
        "lk_regmod.other), or the targets 'lk_regmod.py:reg lk_regmod.py:other' on the command "
        "line)."
    )


def test_a_module_whose_registry_is_empty_too():
    module = types.ModuleType("lk_empty_registry")
    module.reg = lk.Registry()  # type: ignore[attr-defined]
    with pytest.raises(lk.SpecError) as info:
        lk.collect(module)
    assert str(info.value) == (
        "module 'lk_empty_registry' registered no functions (nor does its Registry 'reg'). "
        "Decorate its functions with @lk.model, @lk.training_step, ... or pass the registry that "
        "holds them."
    )


def test_a_module_name_that_does_not_import():
    with pytest.raises(lk.SpecError) as info:
        lk.collect("tests.user_modules.no_such_module")
    assert info.value.code == "unknown-source"
    assert str(info.value) == (
        "cannot collect 'tests.user_modules.no_such_module': No module named "
        "'tests.user_modules.no_such_module'. Pass a module, a module name that imports "
        "(e.g. 'examples.digits'), a .py file path, or a lk.Registry."
    )


def test_a_missing_file():
    with pytest.raises(lk.SpecError, match=r"^cannot collect 'nowhere/x\.py': no such file: "):
        lk.collect("nowhere/x.py")


def test_something_that_is_not_a_source():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(simple.train)  # type: ignore[arg-type]
    assert info.value.code == "unknown-source"
    assert str(info.value).startswith(
        "collect() takes modules, module names, file paths and lk.Registry objects; "
        "got function <function train at "
    )


def test_an_empty_registry_is_a_valid_empty_spec():
    spec = lk.collect(lk.Registry())
    assert spec.functions == ()
    assert spec.describe() == "TrainingSpec\n  hyperparameters:\n    (none)"


def test_a_realistic_module():
    spec = lk.collect(realistic)
    assert spec.model_names == ("generator", "critic")
    assert spec.get("training_step").manual is True
    assert [(h.event, h.fn.__name__) for h in spec.hooks] == [
        ("train_epoch_end", "report"),
        ("train_batch_end", "every_n"),
        ("save_checkpoint", "remember"),
        ("exception", "on_crash"),
    ]
    assert spec.hparams.as_dict() == {
        "latent_dim": 16,
        "hidden": 64,
        "dropout": 0.1,
        "batch_size": 32,
        "num_samples": 256,
        "lr": 2e-4,
        "optimizer_name": "adam",
        "log_every": 10,
    }
    step = spec.plan("training_step")
    assert [(p.name, p.kind) for p in step.params] == [
        ("generator", "model"),
        ("critic", "model"),
        ("batch", "loop"),
        ("optimizers", "loop"),
        ("ctx", "loop"),
        ("latent_dim", "hparam"),
    ]
    hook = next(p for p in spec.plans if p.event == "train_batch_end")
    assert hook.names("loop") == ("outputs", "batch_idx", "ctx")
    assert hook.names("hparam") == ("log_every",)
    for entry_point in ("fit", "validate", "predict"):
        spec.require(entry_point)
    with pytest.raises(lk.SpecError, match=r"needs @lk\.test_step, @lk\.test_data"):
        spec.require("test")
    with pytest.raises(Exception, match="dropout"):
        spec.with_hparams(dropout=1.0)


def test_the_realistic_module_builds_what_it_declares():
    torch = pytest.importorskip("torch")
    spec = lk.collect(realistic)
    hp = spec.hparams
    generator = realistic.generator(latent_dim=hp.latent_dim, hidden=hp.hidden)
    critic = realistic.build_discriminator(hidden=hp.hidden, dropout=hp.dropout)
    loader = realistic.train_loader(batch_size=hp.batch_size, num_samples=hp.num_samples)
    (real,) = next(iter(loader))
    assert real.shape == (32, realistic.FEATURES)
    assert critic(generator(torch.zeros(2, hp.latent_dim))).shape == (2, 1)


def test_a_hyperparameter_named_like_a_model_is_refused():
    # The model would be passed where the function expects its default (a learning rate):
    # said at collect(), not as a TypeError from inside torch at the first step.
    reg = lk.Registry()
    reg.model(simple.net, name="lr")
    reg.model(simple.net, name="net")

    def optim(net, lr: float = 0.1):
        return torch.optim.SGD(net.parameters(), lr=lr)

    def train(net, batch, lr=None):  # a None default still asks for the model
        assert isinstance(lr, torch.nn.Module)
        return net(batch[0]).sum()

    reg.configure_optimizers(optim)
    reg.training_step(train)
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["model-name-clash"]
    message = str(info.value)
    assert "optim(net, lr) at " in message
    assert "parameter 'lr' has a default (0.1), as a hyperparameter has" in message
    assert '@lk.model(name="lr_model")' in message


def test_a_function_registered_again_under_its_name_and_role_replaces_the_first():
    # A helper builds a registry; a test overrides one of its functions by defining its own
    # of the same name. Another name for the same role is still a conflict.
    def base() -> lk.Registry:
        reg = lk.Registry()
        reg.model(simple.net)

        @reg.training_step
        def step(net, batch):
            return 1

        return reg

    reg = base()

    @reg.training_step
    def step(net, batch):
        return 2

    spec = lk.collect(reg)
    assert [e.fn for e in spec.functions] == [simple.net, step]

    @reg.training_step
    def other_step(net, batch):
        return 3

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "duplicate-role"
    assert "other_step" in str(info.value) and ".step(net, batch)" in str(info.value)


def test_a_conflict_is_reported_with_the_other_problems_of_its_function():
    # optim has an unknown parameter and declares lr unlike val: both problems at once, not
    # the conflict only after the parameter is fixed.
    reg = lk.Registry()
    reg.model(simple.net)

    @reg.configure_optimizers
    def optim(net, bar, lr: float = 0.1):
        return None

    @reg.validation_step
    def val(net, batch, lr: float = 0.5):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["unknown-parameter", "hparam-conflict"]
    assert "parameter 'bar'" in str(info.value) and "lr: float = 0.5" in str(info.value)


def test_two_steps_from_two_notebook_cells_get_the_notebook_fix():
    # A function renamed in a cell and run again: the old name stays registered.
    reg = lk.Registry()
    for cell, name in (("<ipython-input-1-aa>", "train_a"), ("<ipython-input-2-bb>", "train_b")):
        source = f"@reg.training_step\ndef {name}(batch):\n    return batch\n"
        exec(compile(source, cell, "exec"), {"__name__": "__main__", "reg": reg})
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "duplicate-role"
    assert "In a notebook, a function renamed and run again stays registered" in str(info.value)
    assert "restart the kernel" in str(info.value)


def test_two_steps_of_one_file_do_not_get_the_notebook_fix():
    reg = lk.Registry()
    reg.model(simple.net)
    reg.training_step(simple.train)

    @reg.training_step
    def other(net, batch):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["duplicate-role"]
    assert str(info.value).endswith("Keep one, or collect them into separate specs.")
