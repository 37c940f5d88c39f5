"""Hyperparameters: one pydantic model built from every signature, validated overrides."""

from __future__ import annotations

from typing import Annotated, List, Optional  # noqa: UP035 - List is tested

import pydantic
import pytest
import torch
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

import lightkit as lk
from lightkit.errors import describe_function
from lightkit.spec.hparams import type_name
from tests.user_modules import hparam_conflict, hparam_kinds, realistic, simple


@pytest.fixture(scope="module")
def kinds_spec() -> lk.TrainingSpec:
    return lk.collect(hparam_kinds)


def test_hparams_is_an_instance_of_one_model(kinds_spec):
    hp = kinds_spec.hparams
    assert isinstance(hp, lk.Hparams)
    assert isinstance(hp, pydantic.BaseModel)
    assert type(hp) is kinds_spec.hparams_model
    assert list(type(hp).model_fields) == [
        "hidden",
        "activation",
        "dropout",
        "sizes",
        "norm",
        "bias",
        "lr",
        "weight_decay",
        "betas",
        "momentum",
        "tag",
    ]


def test_defaults(kinds_spec):
    assert kinds_spec.hparams.as_dict() == {
        "hidden": 64,
        "activation": "relu",
        "dropout": None,
        "sizes": (32, 16),
        "norm": hparam_kinds.Norm.BATCH,
        "bias": True,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "betas": (0.9, 0.999),
        "momentum": 0.9,
        "tag": "run",
    }
    assert kinds_spec.hparams["lr"] == kinds_spec.hparams.lr == 1e-3


def test_types_come_from_annotations_or_defaults(kinds_spec):
    fields = kinds_spec.hparams_model.model_fields
    assert {name: type_name(f.annotation) for name, f in fields.items()} == {
        "hidden": "int",
        "activation": "Literal['relu', 'gelu']",
        "dropout": "Optional[float]",
        "sizes": "tuple[int, ...]",
        "norm": "Norm",
        "bias": "bool",  # from the default
        "lr": "float",
        "weight_decay": "float",
        "betas": "tuple[float, float]",
        "momentum": "float",  # from the Field's default
        "tag": "str",  # a string annotation, evaluated
    }


def test_field_descriptions_and_constraints_reach_the_schema(kinds_spec):
    props = kinds_spec.hparams_schema["properties"]
    assert props["lr"] == {
        "default": 1e-3,
        "description": "peak learning rate",
        "exclusiveMinimum": 0,
        "title": "Lr",
        "type": "number",
    }
    assert props["weight_decay"]["description"] == "AdamW weight decay"
    assert props["weight_decay"]["minimum"] == 0
    assert props["momentum"]["maximum"] == 1
    assert props["activation"]["enum"] == ["relu", "gelu"]
    assert kinds_spec.hparams_schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lr": "abc"}, "lr"),
        ({"lr": 0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum": 2}, "momentum"),
        ({"activation": "tanh"}, "activation"),
        ({"norm": "group"}, "norm"),
        ({"sizes": ["a"]}, "sizes"),
        ({"betas": (0.9,)}, "betas"),
        ({"hidden": 1.5}, "hidden"),
    ],
)
def test_bad_overrides_raise_pydantic_errors_naming_the_field(kinds_spec, overrides, field):
    with pytest.raises(pydantic.ValidationError) as info:
        kinds_spec.with_hparams(**overrides)
    assert [e["loc"][0] for e in info.value.errors()] == [field]
    assert str(info.value).splitlines()[1].split(".")[0] == field
    # ... which is lightkit's SpecError too, with a code, as every other spec problem.
    assert isinstance(info.value, lk.SpecError)
    assert info.value.codes == ["bad-hparam-value"]
    assert info.value.problems[0].message.startswith(f"{field}")


def test_a_refused_override_keeps_its_code_through_pickle(kinds_spec):
    import pickle

    with pytest.raises(lk.SpecError) as info:
        kinds_spec.with_hparams(lr="abc", hidden=1.5)
    err = info.value
    assert err.code == "bad-hparam-value" and len(err.problems) == 2
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.codes, str(copy)) == (type(err), err.codes, str(err))


def test_with_hparams_lr_abc_on_the_design_example():
    spec = lk.collect(simple)
    with pytest.raises(pydantic.ValidationError) as info:
        spec.with_hparams(lr="abc")
    assert str(info.value).startswith("1 validation error for Hparams\nlr\n")
    assert "Input should be a valid number" in str(info.value)


def test_good_overrides_are_coerced(kinds_spec):
    new = kinds_spec.with_hparams(norm="layer", sizes=[8, 4], dropout=0.5, lr=3e-4)
    assert new.hparams.norm is hparam_kinds.Norm.LAYER
    assert new.hparams.sizes == (8, 4)
    assert new.hparams.dropout == 0.5
    assert new.hparams.lr == 3e-4


def test_with_hparams_returns_a_new_spec_and_leaves_the_old_one(kinds_spec):
    new = kinds_spec.with_hparams(lr=3e-4, hidden=128)
    assert new is not kinds_spec
    assert (new.hparams.lr, new.hparams.hidden) == (3e-4, 128)
    assert (kinds_spec.hparams.lr, kinds_spec.hparams.hidden) == (1e-3, 64)
    assert new.functions == kinds_spec.functions
    assert new.hparams.tag == kinds_spec.hparams.tag == "run"
    assert new.with_hparams(hidden=7).hparams.lr == 3e-4


def test_unknown_names_list_the_known_ones():
    spec = lk.collect(simple)
    with pytest.raises(lk.SpecError) as info:
        spec.with_hparams(learning_rate=0.1)
    assert info.value.code == "unknown-hparam"
    assert str(info.value) == (
        "unknown hyperparameter 'learning_rate'. Known hyperparameters: batch_size, hidden, lr."
    )
    with pytest.raises(lk.SpecError) as info:
        spec.with_hparams(lrr=0.1, hiden=3)
    assert str(info.value) == (
        "unknown hyperparameters 'lrr', 'hiden'. Did you mean 'lr'? "
        "Known hyperparameters: batch_size, hidden, lr."
    )


def test_hparams_are_frozen(kinds_spec):
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        kinds_spec.hparams.lr = 0.5
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        kinds_spec.hparams_model(nope=1)


def test_same_name_in_two_functions_is_one_hyperparameter():
    spec = lk.collect(realistic)
    fields = spec.hparams_model.model_fields
    assert list(fields).count("latent_dim") == 1
    assert spec.hparam_sources()["latent_dim"] == [
        describe_function(f)
        for f in (
            realistic.generator,
            realistic.noise_loader,
            realistic.adversarial,
            realistic.val,
            realistic.remember,
        )
    ]


def test_conflicting_declarations_name_both_functions():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(hparam_conflict)
    err = info.value
    assert err.codes == ["hparam-conflict", "hparam-conflict"]
    assert str(err).startswith("2 problems in tests/user_modules/hparam_conflict.py:\n\n")
    assert err.problems[0].message == (
        "hyperparameter 'batch_size' is declared twice, differently:\n"
        "  train_loader(batch_size, workers) at tests/user_modules/hparam_conflict.py:4: "
        "batch_size: int = 64\n"
        "  val_loader(batch_size, workers) at tests/user_modules/hparam_conflict.py:9: "
        "batch_size: int = 32\n"
        "The same name is one hyperparameter: give both the same type and default (and the same Field constraints), or rename one."
    )
    assert err.problems[1].message.splitlines()[1:3] == [
        "  train_loader(batch_size, workers) at tests/user_modules/hparam_conflict.py:4: "
        "workers: int = 2",
        "  val_loader(batch_size, workers) at tests/user_modules/hparam_conflict.py:9: "
        "workers: float = 2.0",
    ]


def test_agreeing_declarations_are_fine_even_when_one_is_unannotated():
    reg = lk.Registry()

    @reg.train_data
    def train_loader(batch_size: int = 8):
        return None

    @reg.val_data
    def val_loader(batch_size=8):
        return None

    assert list(lk.collect(reg).hparams_model.model_fields) == ["batch_size"]


def test_an_unannotated_none_default_takes_the_other_declarations_type():
    # ``limit=None`` says nothing of the type; ``limit: Optional[int] = None`` does.
    reg = lk.Registry()

    @reg.train_data
    def train_loader(limit: Optional[int] = None):
        return None

    @reg.val_data
    def val_loader(limit=None):
        return None

    spec = lk.collect(reg)
    assert spec.hparams_model.model_fields["limit"].annotation == Optional[int]
    assert spec.with_hparams(limit="3").hparams.limit == 3
    with pytest.raises(pydantic.ValidationError, match="limit"):
        spec.with_hparams(limit="many")


def test_an_unannotated_none_default_conflicts_with_a_different_default():
    reg = lk.Registry()

    @reg.train_data
    def train_loader(limit: Optional[int] = 4):
        return None

    @reg.val_data
    def val_loader(limit=None):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "hparam-conflict"
    assert "limit: Optional[int] = 4\n" in str(info.value)
    assert "limit: Any = None\n" in str(info.value)


def test_field_defaults_must_agree_too():
    reg = lk.Registry()

    @reg.model
    def net(dropout: float = Field(0.1, ge=0)):
        return None

    @reg.configure_optimizers
    def optim(net, dropout: float = Field(0.1, ge=0)):
        return None

    assert lk.collect(reg).hparams.dropout == 0.1

    @reg.train_data
    def loader(dropout: float = Field(0.2, ge=0)):
        return None

    with pytest.raises(lk.SpecError, match="hyperparameter 'dropout' is declared twice"):
        lk.collect(reg)


def test_one_function_in_two_roles_is_not_a_conflict():
    reg = lk.Registry()
    reg.model(lambda: None, name="net")

    def evaluate(net, batch, threshold: float = 0.5):
        return None

    reg.validation_step(evaluate)
    reg.test_step(evaluate)
    spec = lk.collect(reg)
    assert spec.hparams.threshold == 0.5
    assert spec.hparam_sources() == {"threshold": [describe_function(evaluate)]}


@pytest.mark.parametrize("name", ["_private", "model_dump", "copy", "as_dict"])
def test_reserved_names_cannot_be_hyperparameters(name):
    reg = lk.Registry()
    namespace: dict = {}
    exec(f"def net({name}=1):\n    return None\n", namespace)
    reg.model(namespace["net"])
    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "bad-hparam-name"
    assert str(info.value).endswith(
        f": hyperparameter '{name}' cannot be a field name (reserved or private). "
        "Rename the parameter."
    )


def test_a_spec_without_hyperparameters():
    reg = lk.Registry()
    reg.model(lambda: None, name="net")
    spec = lk.collect(reg)
    assert spec.hparams.as_dict() == {}
    assert spec.with_hparams().hparams.as_dict() == {}


def test_type_name():
    assert type_name(int) == "int"
    assert type_name(Optional[float]) == "Optional[float]"
    assert type_name(list[int]) == "list[int]"
    assert type_name(hparam_kinds.Norm) == "Norm"


def test_sequence_defaults_type_their_elements():
    reg = lk.Registry()

    @reg.configure_optimizers
    def optim(betas=(0.9, 0.999), sizes=[64, 32], mixed=[1, 0.5], names=("a", 1)):  # noqa: B006
        return None

    spec = lk.collect(reg)
    fields = spec.hparams_model.model_fields
    assert fields["betas"].annotation == tuple[float, float]
    assert fields["sizes"].annotation == list[int]
    assert fields["mixed"].annotation == list[float]
    assert fields["names"].annotation == tuple[str, int]
    assert spec.with_hparams(betas=["0.8", "0.9"]).hparams.betas == (0.8, 0.9)
    with pytest.raises(pydantic.ValidationError, match="betas"):
        spec.with_hparams(betas=["a", "b"])
    with pytest.raises(pydantic.ValidationError, match="betas"):
        spec.with_hparams(betas=[0.1, 0.2, 0.3])  # two numbers, as the default has
    schema = spec.hparams_schema["properties"]["sizes"]
    assert schema["items"] == {"type": "integer"}


def test_a_parameter_without_default_receives_a_hyperparameter_declared_elsewhere():
    reg = lk.Registry()
    seen = []

    @reg.model
    def net(hidden: int = 4):
        return torch.nn.Linear(2, hidden)

    @reg.configure_optimizers
    def optim(net, lr: float = 0.5):
        return torch.optim.SGD(net.parameters(), lr=lr)

    @reg.train_data
    def data():
        return [torch.zeros(2, 2)]

    @reg.training_step
    def train(net, batch, lr, hidden: int):
        seen.append((lr, hidden))
        return net(batch).sum()

    spec = lk.collect(reg).with_hparams(lr=0.25)
    assert list(spec.hparams.as_dict()) == ["hidden", "lr"]
    assert any("train(" in s for s in spec.hparam_sources()["lr"])
    lk.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(spec)
    assert seen == [(0.25, 4)]


def test_a_hyperparameter_reference_must_agree_on_the_type():
    reg = lk.Registry()

    @reg.model
    def net():
        return None

    @reg.configure_optimizers
    def optim(net, lr: float = 0.5):
        return None

    @reg.training_step
    def train(net, batch, lr: int):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "hparam-conflict"
    assert (
        "parameter 'lr' is annotated int, but the hyperparameter it receives is declared "
        "as float in " in str(info.value)
    )


def test_field_conflicts_show_the_field_as_written():
    reg = lk.Registry()

    @reg.model
    def net(dropout: float = Field(0.1, ge=0)):
        return None

    @reg.configure_optimizers
    def optim(net, dropout: float = 0.1):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert "dropout: float = Field(0.1, ge=0)\n" in str(info.value)
    assert "dropout: float = 0.1\n" in str(info.value)


def test_equal_declarations_written_differently_are_one_hyperparameter():
    reg = lk.Registry()

    @reg.model
    def net(hidden: Annotated[int, Field(gt=0)] = 8, sizes: List[int] = [4]):  # noqa: B006, UP006
        return None

    @reg.train_data
    def data(hidden: Annotated[int, Field(gt=0)] = 8, sizes: list[int] = [4], p: int = None):  # noqa: B006, RUF013
        return None

    @reg.configure_optimizers
    def optim(net, p: Optional[int] = None):
        return None

    spec = lk.collect(reg)
    assert spec.hparams.as_dict() == {"hidden": 8, "sizes": [4], "p": None}
    with pytest.raises(pydantic.ValidationError, match="hidden"):
        spec.with_hparams(hidden=0)  # the Field constraint still holds


def test_different_field_constraints_still_conflict():
    reg = lk.Registry()

    @reg.model
    def net(hidden: Annotated[int, Field(gt=0)] = 8):
        return None

    @reg.train_data
    def data(hidden: Annotated[int, Field(gt=1)] = 8):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.code == "hparam-conflict"
    # Written as the user wrote them, not as pydantic's FieldInfo repr.
    assert "hidden: Annotated[int, Field(gt=0)] = 8\n" in str(info.value)
    assert "hidden: Annotated[int, Field(gt=1)] = 8\n" in str(info.value)


def test_a_none_default_makes_the_type_optional():
    reg = lk.Registry()

    @reg.model
    def net(hidden: int = None, act: str = None):  # noqa: RUF013
        return None

    spec = lk.collect(reg)
    assert spec.hparams.as_dict() == {"hidden": None, "act": None}
    assert spec.with_hparams(hidden=3).hparams.hidden == 3
    assert type_name(spec.hparams_model.model_fields["hidden"].annotation) == "Optional[int]"
    with pytest.raises(pydantic.ValidationError, match="hidden"):
        spec.with_hparams(hidden="x")


def test_a_default_its_own_type_refuses_is_a_spec_error_naming_the_function():
    reg = lk.Registry()

    @reg.model
    def net(hidden: int = 8.5, lr: float = "fast", ok: int = 3):
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["bad-hparam-default", "bad-hparam-default"]
    text = str(info.value)
    where = describe_function(net)
    assert (
        f"{where}: hyperparameter 'hidden': the default 8.5 does not fit its type int (Input "
        f"should be a valid integer, got a number with a fractional part). Change the default "
        f"or the annotation." in text
    )
    assert f"{where}: hyperparameter 'lr': the default 'fast' does not fit its type float" in text


class Opaque:
    """A class pydantic can check but not write as JSON."""


def test_an_annotation_without_a_json_form_is_refused_at_collect():
    # The spec is data: spec.json and every checkpoint hold it with its JSON schema.
    reg = lk.Registry()

    @reg.model
    def net(thing: Opaque = None, width: int = 3, act: object = None):  # object: any JSON
        return None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["bad-hparam-type"]
    message = str(info.value)
    assert "hyperparameter 'thing'" in message and "Opaque" in message
    assert "test_hparams.py:" in message and "width" not in message.split("'thing'")[1]


def test_an_unannotated_default_without_a_json_form_is_named_as_the_default():
    # Lightning's save_hyperparameters takes `act=nn.ReLU`; here the default is the type's
    # only source, so the message speaks of the default, not of an annotation never written.
    reg = lk.Registry()

    @reg.model
    def net(act=torch.nn.ReLU):
        return torch.nn.Sequential(torch.nn.Linear(1, 1), act())

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["bad-hparam-type"]
    message = str(info.value)
    assert "hyperparameter 'act' has no annotation, and its default <class " in message
    assert "ReLU'> (a class) has no JSON form" in message and " is annotated" not in message
    assert "act: Literal['relu', 'gelu'] = 'relu'" in message


class Coded(ValueError):
    code = "E42"


def check_lr(v: float) -> float:
    if v < 0:
        raise PydanticCustomError("negative_lr", "lr {lr} must be >= 0", {"lr": v})
    if v > 1:
        raise Coded("too big")
    return v


def test_a_validators_own_error_type_and_code_make_a_bad_hparam_value():
    # A hyperparameter's validator may raise pydantic's custom error or an error with a
    # code of its own: the override is still refused as bad-hparam-value, naming its function.
    reg = lk.Registry()

    @reg.configure_optimizers
    def optim(lr: Annotated[float, AfterValidator(check_lr)] = 0.1):
        return None

    spec = lk.collect(reg)
    for value, text in ((-1.0, "lr -1.0 must be >= 0"), (2.0, "too big")):
        with pytest.raises(lk.SpecError) as info:
            spec.with_hparams(lr=value)
        assert info.value.codes == ["bad-hparam-value"]
        message = info.value.problems[0].message
        assert message.startswith("lr: ") and text in message
        assert f"'lr' is declared by {describe_function(optim)}" in message
