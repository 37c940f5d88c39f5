"""The one rule table that classifies every parameter, tested on its own."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import pytest
from pydantic import Field

import lightkit as lk
from lightkit.errors import describe_function
from lightkit.spec.roles import EVENT_SUPPLIES, EVENT_VALUES, EVENTS, LOOP_VALUES, ROLE_SUPPLIES
from lightkit.spec.signature import (
    Param,
    Unresolved,
    classify,
    hparam_annotation,
    read_signature,
)

MODELS = ("net", "critic")


def make(*params: str, defaults: dict[str, Any] | None = None):
    """A function with the given parameter names (and defaults), made with exec."""
    defaults = defaults or {}
    rendered = ", ".join(f"{p}=_defaults[{p!r}]" if p in defaults else p for p in params)
    namespace: dict[str, Any] = {"_defaults": defaults}
    exec(f"def fn({rendered}):\n    return None\n", namespace)
    return namespace["fn"]


def kinds(role: str, fn, event: str | None = None) -> dict[str, str]:
    plan, problems = classify(role, fn, "fn", MODELS, event=event)
    assert problems == [], problems
    assert plan is not None
    return {p.name: p.kind for p in plan.params}


def only_problem(role: str, fn, event: str | None = None):
    plan, problems = classify(role, fn, "fn", MODELS, event=event)
    assert plan is None
    assert len(problems) == 1, problems
    return problems[0]


# -- rule 1: a model name -> the model ---------------------------------------------------------


@pytest.mark.parametrize(
    "role", [r for r, (_, gets_models) in ROLE_SUPPLIES.items() if gets_models]
)
def test_model_names_are_models(role):
    assert kinds(role, make("net", "critic")) == {"net": "model", "critic": "model"}


def test_a_model_name_wins_over_a_default():
    assert kinds("training_step", make("net", defaults={"net": None})) == {"net": "model"}


@pytest.mark.parametrize("role", ["model", "train_data", "val_data", "test_data", "predict_data"])
def test_roles_without_models_refuse_model_names(role):
    fn = make("net")
    problem = only_problem(role, fn)
    assert problem.code == "model-not-available"
    assert problem.message.startswith(f"{describe_function(fn)}: parameter 'net' is a model, but ")
    assert problem.message.endswith(
        " do not receive models (they run before models exist or independently of them). "
        "They receive: ctx, hparams."
    )


def test_every_hook_receives_models():
    for event in EVENTS:
        assert kinds("on", make("net"), event=event) == {"net": "model"}


# -- rule 2: a loop value the role supplies -> injected ----------------------------------------


@pytest.mark.parametrize(
    ("role", "names"),
    [
        ("model", ["ctx", "hparams"]),
        (
            "training_step",
            [
                "batch",
                "batch_idx",
                "optimizer",
                "optimizers",
                "scheduler",
                "schedulers",
                "ctx",
                "hparams",
            ],
        ),
        ("validation_step", ["batch", "batch_idx", "dataloader_idx", "ctx", "hparams"]),
        ("test_step", ["batch", "batch_idx", "dataloader_idx", "ctx", "hparams"]),
        ("predict_step", ["batch", "batch_idx", "dataloader_idx", "ctx", "hparams"]),
        ("configure_optimizers", ["ctx", "hparams"]),
        ("train_data", ["ctx", "hparams"]),
        ("predict_data", ["ctx", "hparams"]),
    ],
)
def test_supplied_loop_values_are_injected(role, names):
    assert kinds(role, make(*names)) == dict.fromkeys(names, "loop")


def test_a_supplied_loop_value_with_a_default_is_still_injected():
    fn = make("batch", "ctx", defaults={"batch": None, "ctx": None})
    assert kinds("training_step", fn) == {"batch": "loop", "ctx": "loop"}


@pytest.mark.parametrize(
    ("event", "extra"),
    [
        ("train_batch_end", "outputs"),
        ("before_backward", "loss"),
        ("exception", "exception"),
        ("save_checkpoint", "checkpoint"),
        ("load_checkpoint", "checkpoint"),
    ],
)
def test_events_supply_their_extra_values(event, extra):
    assert kinds("on", make(extra, "ctx"), event=event) == {extra: "loop", "ctx": "loop"}


def test_every_event_supplies_only_known_loop_values():
    assert set(EVENT_SUPPLIES) == set(EVENTS)
    for supplied in EVENT_SUPPLIES.values():
        assert supplied <= set(LOOP_VALUES) | set(EVENT_VALUES)


# -- rule 3: a loop value the role never supplies -> error -------------------------------------


def test_optimizer_in_a_model_function():
    fn = make("optimizer", "hidden", defaults={"hidden": 4})
    problem = only_problem("model", fn)
    assert problem.code == "unsupplied-loop-value"
    assert problem.message == (
        f"{describe_function(fn)}: parameter 'optimizer' is a loop value that @model functions "
        "never receive. They receive: ctx, hparams. Remove 'optimizer' or rename it."
    )


def test_an_unsupplied_loop_value_with_a_default_is_not_a_hyperparameter():
    problem = only_problem("train_data", make("batch", defaults={"batch": None}))
    assert problem.code == "unsupplied-loop-value"


def test_batch_in_configure_optimizers_lists_models_too():
    fn = make("net", "batch")
    problem = only_problem("configure_optimizers", fn)
    assert problem.message == (
        f"{describe_function(fn)}: parameter 'batch' is a loop value that "
        "configure_optimizers functions never receive. They receive: ctx, hparams and the "
        "models (critic, net). Remove 'batch' or rename it."
    )


def test_hook_asking_for_what_its_event_does_not_supply_names_the_event():
    fn = make("net", "batch")
    problem = only_problem("on", fn, event="fit_start")
    assert problem.code == "unsupplied-loop-value"
    assert problem.message == (
        f"{describe_function(fn)}: parameter 'batch' is a loop value that 'fit_start' hooks "
        "never receive. They receive: ctx, hparams, optimizer, optimizers, scheduler, "
        "schedulers and the models (critic, net). Remove 'batch' or rename it."
    )


def test_outputs_only_in_train_batch_end():
    problem = only_problem("on", make("outputs"), event="train_batch_start")
    assert "'train_batch_start' hooks never receive" in problem.message


def test_dataloader_idx_is_not_given_to_training_steps():
    problem = only_problem("training_step", make("net", "batch", "dataloader_idx"))
    assert problem.code == "unsupplied-loop-value"
    assert "parameter 'dataloader_idx' is a loop value that training steps never" in problem.message


@pytest.mark.parametrize(
    ("role", "name"),
    [("training_step", "outputs"), ("predict_step", "checkpoint"), ("test_step", "loss")],
)
def test_a_hook_only_value_asked_by_a_role_is_unsupplied(role, name):
    problem = only_problem(role, make("net", "batch", name))
    assert problem.code == "unsupplied-loop-value"
    assert f"parameter '{name}' is a loop value that" in problem.message


def test_a_role_may_have_a_hyperparameter_named_like_a_hook_only_value():
    fn = make("net", "batch", "loss", defaults={"loss": "mse"})
    assert kinds("training_step", fn)["loss"] == "hparam"


# -- rule 4: a default -> a hyperparameter -----------------------------------------------------


def test_parameters_with_defaults_are_hyperparameters():
    def optim(net, lr: float = 1e-3, betas=(0.9, 0.99), name=None):
        return None

    plan, problems = classify("configure_optimizers", optim, "optim", MODELS)
    assert problems == []
    assert plan is not None
    assert plan.params == (
        Param("net", "model"),
        Param("lr", "hparam", float, 1e-3),
        Param("betas", "hparam", tuple[float, float], (0.9, 0.99)),
        Param("name", "hparam", Any, None),
    )
    assert plan.names("hparam") == ("lr", "betas", "name")
    assert plan.names("model") == ("net",)
    assert plan.names("loop") == ()
    assert (plan.role, plan.fn, plan.name, plan.event, plan.manual) == (
        "configure_optimizers",
        optim,
        "optim",
        None,
        False,
    )


def test_keyword_only_parameters_are_classified_too():
    def train(net, *, batch, lr: float = 0.1):
        return None

    assert kinds("training_step", train) == {"net": "model", "batch": "loop", "lr": "hparam"}


def test_field_default_is_a_hyperparameter_but_a_field_without_default_is_not():
    def optim(net, lr: float = Field(1e-3, gt=0), wd: float = Field(gt=0)):
        return None

    plan, problems = classify("configure_optimizers", optim, "optim", MODELS)
    assert plan is None
    assert [p.code for p in problems] == ["unknown-parameter"]
    assert "parameter 'wd' is not a model" in problems[0].message


# -- rule 5: anything else -> error ------------------------------------------------------------


def test_unknown_parameter_message():
    fn = make("net", "batch", "foo")
    problem = only_problem("training_step", fn)
    assert problem.code == "unknown-parameter"
    assert problem.message == (
        f"{describe_function(fn)}: parameter 'foo' is not a model (critic, net), a loop value "
        "(batch, batch_idx, ctx, hparams, optimizer, optimizers, scheduler, schedulers) or a "
        "hyperparameter (give it a default)."
    )


def test_unknown_parameter_without_any_model_says_how_to_make_one():
    fn = make("net", "batch")
    _, problems = classify("validation_step", fn, "fn", ())
    assert [p.code for p in problems] == ["unknown-parameter"]
    assert problems[0].message.endswith(
        "parameter 'net' is not a model (none here), a loop value (batch, batch_idx, ctx, "
        "dataloader_idx, hparams) or a hyperparameter (give it a default). To receive a model "
        "under this name, give an @lk.model function the name (def net(...), or "
        "@lk.model(name='net'))."
    )


def test_self_is_named_a_lightning_habit():
    fn = make("self", "batch", "batch_idx")
    problem = only_problem("training_step", fn)
    assert problem.message.endswith(
        "lightkit's functions are plain functions, not methods: drop `self` (a "
        "LightningModule's hook becomes a decorated function of its own)."
    )


@pytest.mark.parametrize(
    ("role", "event", "param", "hint"),
    [
        ("on", "train_batch_end", "trainer", "and the models by name."),
        ("on", "train_batch_end", "pl_module", "and the models by name."),
        ("training_step", None, "optimizer_idx", "receives `optimizers` (from_lightning.md)."),
        ("on", "validation_epoch_end", "outputs", "collect them in a validation_batch_end hook, which receives `outputs`."),
    ],
)  # fmt: skip
def test_lightnings_hook_parameters_get_their_port(role, event, param, hint):
    problem = only_problem(role, make("net", param), event=event)
    assert problem.message.endswith(hint)


def test_a_misnamed_single_model_is_named():
    _, problems = classify("training_step", make("model", "batch"), "fn", ("net",))
    assert problems[0].message.endswith(
        "The model here is 'net': name the parameter net, or name the model "
        "@lk.model(name='model')."
    )
    problem = classify("training_step", make("self", "batch"), "fn", ("net",))[1][0]
    assert "; self(x) becomes net(x))." in problem.message


def test_unknown_parameter_suggests_a_close_name():
    problem = only_problem("training_step", make("nett", "batch"))
    assert problem.message.endswith(" Did you mean 'net'?")
    problem = only_problem("validation_step", make("net", "bacth"))
    assert problem.message.endswith(" Did you mean 'batch'?")


def test_no_models_at_all():
    _, problems = classify("training_step", make("batch", "optimizer", "dataloader_idx"), "fn", ())
    assert problems[0].message.endswith(
        "parameter 'dataloader_idx' is a loop value that training steps never receive. They "
        "receive: batch, batch_idx, ctx, hparams, optimizer, optimizers, scheduler, schedulers. "
        "Remove 'dataloader_idx' or rename it."
    )


def test_event_values_are_plain_names_outside_hooks():
    plan, problems = classify("training_step", make("loss", defaults={"loss": "ce"}), "fn", ())
    assert problems == []
    assert plan is not None and plan.names("hparam") == ("loss",)


def test_unknown_parameter_where_models_are_not_received():
    problem = only_problem("train_data", make("root"))
    assert "parameter 'root' is not a model (none here), a loop value (ctx, hparams)" in (
        problem.message
    )


# -- parameters lightkit cannot pass by name ---------------------------------------------------


def test_varargs_and_kwargs_are_rejected():
    def train(net, batch, *args, **kwargs):
        return None

    plan, problems = classify("training_step", train, "train", MODELS)
    assert plan is None
    where = describe_function(train)
    assert where.startswith(
        "test_varargs_and_kwargs_are_rejected.<locals>.train(net, batch, *args, **kwargs) at "
    )
    assert [(p.code, p.message) for p in problems] == [
        (
            "variadic-parameter",
            f"{where}: parameter '*args' is not supported: lightkit passes every value by name, "
            "so it must know each name. List the parameters you need explicitly.",
        ),
        (
            "variadic-parameter",
            f"{where}: parameter '**kwargs' is not supported: lightkit passes every value by "
            "name, so it must know each name. List the parameters you need explicitly.",
        ),
    ]


def test_positional_only_is_rejected():
    def train(net, batch, /):
        return None

    plan, problems = classify("training_step", train, "train", MODELS)
    assert plan is None
    where = describe_function(train)
    assert [p.code for p in problems] == ["positional-only-parameter"] * 2
    assert problems[0].message == (
        f"{where}: parameter 'net' is positional-only (before '/'); lightkit passes values by "
        "name. Remove the '/'."
    )


def test_every_problem_of_one_function_is_reported():
    def step(net, bach, foo, *rest, optimizer=None):
        return None

    _, problems = classify("validation_step", step, "step", MODELS)
    assert [p.code for p in problems] == [
        "unknown-parameter",
        "unknown-parameter",
        "variadic-parameter",
        "unsupplied-loop-value",
    ]


class _NoSignature:
    __signature__ = "not a signature"

    def __call__(self):
        return None

    def __repr__(self):
        return "<no signature>"


def test_unreadable_signature():
    plan, problems = classify("model", _NoSignature(), "thing", MODELS)
    assert plan is None
    assert [p.code for p in problems] == ["unreadable-signature"]
    assert problems[0].message.startswith("<no signature>: cannot read its signature (")


def test_plan_where_and_manual():
    def train(net, batch):
        return None

    plan, _ = classify("training_step", train, "train", MODELS, manual=True)
    assert plan is not None
    assert plan.manual is True
    assert plan.where == describe_function(train)
    assert plan.where.endswith(f"tests/spec/test_signature.py:{train.__code__.co_firstlineno}")


# -- reading signatures and hyperparameter types -----------------------------------------------


def test_read_signature_evaluates_string_annotations():
    # This file has ``from __future__ import annotations``: every annotation is a string.
    def fn(lr: float = 0.1, steps: int = 3):
        return None

    assert fn.__annotations__ == {"lr": "float", "steps": "int"}
    sig = read_signature(fn)
    assert [p.annotation for p in sig.parameters.values()] == [float, int]


def test_read_signature_marks_only_the_annotations_it_cannot_resolve():
    def fn(net: NoSuchType, lr: float = 0.1, dropout: Optional[float] = None):  # noqa: F821
        return None

    sig = read_signature(fn)
    unresolved = sig.parameters["net"].annotation
    assert isinstance(unresolved, Unresolved) and unresolved.text == "NoSuchType"
    assert sig.parameters["lr"].annotation is float
    assert sig.parameters["dropout"].annotation == Optional[float]
    plan, problems = classify("configure_optimizers", fn, "fn", ("net",))
    assert problems == []
    assert plan is not None
    assert [(p.name, p.kind, p.annotation) for p in plan.params] == [
        ("net", "model", None),
        ("lr", "hparam", float),
        ("dropout", "hparam", Optional[float]),
    ]


def test_a_hyperparameter_whose_annotation_does_not_resolve_is_refused():
    # With `from __future__ import annotations` a typo stays a string: its type must not be
    # quietly taken from the default instead.
    def net(hidden: Itn = 4, width: int = 8):  # noqa: F821
        return None

    plan, problems = classify("model", net, "net", ())
    assert plan is None and [p.code for p in problems] == ["bad-hparam-type"]
    message = problems[0].message
    assert "net(hidden, width) at " in message
    assert "hyperparameter 'hidden' is annotated 'Itn', which does not evaluate" in message
    assert "NameError: name 'Itn' is not defined" in message


def _param(default: Any, annotation: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(
        "x", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        (_param(1), int),
        (_param(1.0), float),
        (_param("a"), str),
        (_param(None), Any),
        (_param(1, annotation=float), float),
        (_param(Field(0.5, gt=0)), float),
        (_param(Field(default_factory=list)), list),
    ],
)
def test_hparam_annotation(param, expected):
    assert hparam_annotation(param) is expected


def test_an_async_function_is_refused_since_its_body_would_never_run():
    reg = lk.Registry()

    @reg.model
    def net():
        return None

    @reg.on("fit_start")
    async def hook(ctx):
        return None

    @reg.training_step
    async def train(net, batch):
        yield None

    with pytest.raises(lk.SpecError) as info:
        lk.collect(reg)
    assert info.value.codes == ["async-function", "async-function"]
    assert (
        f"{describe_function(hook)} is an async function, but lightkit calls its functions "
        f"directly, inside the loop; its body would never run. Make it a plain `def`"
    ) in str(info.value)
