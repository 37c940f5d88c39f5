"""TrainingSpec: access, entry-point checks, JSON round trips, describe()."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

import lightkit as lk
from lightkit.spec.spec import function_ref, import_function
from tests.user_modules import eval_only, hparam_kinds, realistic, simple

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- access ------------------------------------------------------------------------------------


def test_access_by_role():
    spec = lk.collect(simple)
    assert spec.get("training_step").fn is simple.train
    assert spec.get("test_step") is None
    assert spec.plan("configure_optimizers").names("model") == ("net",)
    assert spec.plan("configure_optimizers").names("hparam") == ("lr",)
    assert spec.plan("predict_step") is None
    assert spec.model_names == ("net",)
    assert [m.fn for m in spec.models] == [simple.net]
    assert spec.hooks == ()
    assert [p.fn for p in spec.plans] == [e.fn for e in spec.functions]


def test_functions_keep_definition_order():
    spec = lk.collect(realistic)
    assert [e.fn.__name__ for e in spec.functions] == [
        "generator",
        "build_discriminator",
        "train_loader",
        "val_loader",
        "noise_loader",
        "adversarial",
        "val",
        "sample",
        "optim",
        "report",
        "every_n",
        "remember",
        "on_crash",
    ]
    assert spec.model_names == ("generator", "critic")


def test_spec_is_frozen():
    spec = lk.collect(simple)
    with pytest.raises(Exception, match="frozen"):
        spec.functions = ()  # type: ignore[misc]


# -- entry points --------------------------------------------------------------------------------


def test_a_spec_without_training_step_is_valid():
    spec = lk.collect(eval_only)
    assert spec.get("training_step") is None
    spec.require("validate")  # has everything validate needs


def test_require_fit_lists_every_missing_role():
    spec = lk.collect(eval_only)
    with pytest.raises(lk.SpecError) as info:
        spec.require("fit")
    assert info.value.code == "missing-role"
    assert str(info.value) == (
        "trainer.fit() needs @lk.training_step, @lk.configure_optimizers, @lk.train_data, "
        "which the spec does not have. Define them in a collected module "
        "(the spec has: model, val_data, validation_step)."
    )


def test_require_one_missing_role():
    spec = lk.collect(simple)
    spec.require("fit")
    spec.require("validate")
    with pytest.raises(lk.SpecError) as info:
        spec.require("test")
    assert str(info.value).startswith(
        "trainer.test() needs @lk.test_step, @lk.test_data, which the spec does not have. "
        "Define them"
    )
    reg = lk.Registry()
    reg.model(simple.net)
    reg.predict_data(simple.val_loader)
    with pytest.raises(lk.SpecError, match=r"needs @lk\.predict_step, which .* Define it in"):
        lk.collect(reg).require("predict")


def test_require_on_an_empty_spec():
    with pytest.raises(lk.SpecError) as info:
        lk.collect(lk.Registry()).require("fit")
    assert str(info.value).endswith("(the spec has: nothing).")
    assert "@lk.model, @lk.training_step" in str(info.value)


# -- the spec is data ------------------------------------------------------------------------------


def test_dump_writes_import_paths_hparams_and_schema():
    data = json.loads(lk.collect(simple).with_hparams(lr=3e-4).model_dump_json())
    assert data["functions"][0] == {
        "role": "model",
        "fn": "tests.user_modules.simple:net",
        "name": "net",
        "manual": False,
        "event": None,
    }
    assert [f["fn"] for f in data["functions"]] == [
        "tests.user_modules.simple:net",
        "tests.user_modules.simple:train_loader",
        "tests.user_modules.simple:val_loader",
        "tests.user_modules.simple:train",
        "tests.user_modules.simple:val",
        "tests.user_modules.simple:optim",
    ]
    assert data["hparams"] == {"hidden": 64, "batch_size": 64, "lr": 3e-4}
    assert data["hparams_schema"]["properties"]["lr"]["type"] == "number"


def test_a_hand_edited_unknown_role_is_named_with_a_did_you_mean():
    data = json.loads(lk.collect(simple).model_dump_json())
    data["functions"][0]["role"] = "modle"
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec.model_validate_json(json.dumps(data))
    assert info.value.code == "unknown-role"
    assert "role 'modle' is not a role. Did you mean 'model'?" in str(info.value)


def test_a_function_listed_twice_in_the_json_counts_once_as_collect_counts_it():
    spec = lk.collect(realistic)
    data = json.loads(spec.model_dump_json())
    hook = next(f for f in data["functions"] if f["role"] == "on")
    data["functions"] += [dict(data["functions"][0]), dict(hook)]  # the model, a hook again
    loaded = lk.TrainingSpec.model_validate_json(json.dumps(data))
    assert loaded.model_names == spec.model_names
    assert [(e.role, e.fn) for e in loaded.functions] == [(e.role, e.fn) for e in spec.functions]
    assert loaded.model_dump_json() == spec.model_dump_json()


def test_a_hand_edited_unknown_hparam_is_refused_as_with_hparams_refuses_it():
    data = json.loads(lk.collect(simple).model_dump_json())
    data["hparams"]["lrr"] = 0.1
    for load in (
        lambda: lk.TrainingSpec.model_validate_json(json.dumps(data)),
        lambda: lk.TrainingSpec.model_validate(data),
        lambda: lk.collect(simple).with_hparams(lrr=0.1),
    ):
        with pytest.raises(lk.SpecError) as info:
            load()
        assert info.value.code == "unknown-hparam"
        assert str(info.value) == (
            "unknown hyperparameter 'lrr'. Did you mean 'lr'? Known hyperparameters: "
            "batch_size, hidden, lr."
        )


def test_a_hand_edited_hparam_value_is_refused_as_with_hparams_refuses_it():
    # The same error from JSON as from with_hparams: a SpecError with its code that is also
    # pydantic's ValidationError naming the field; the message names the declaring function.
    data = json.loads(lk.collect(simple).model_dump_json())
    data["hparams"]["lr"] = "fast"
    for load in (
        lambda: lk.TrainingSpec.model_validate_json(json.dumps(data)),
        lambda: lk.TrainingSpec.model_validate(data),
    ):
        with pytest.raises(pydantic.ValidationError) as info:
            load()
        assert isinstance(info.value, lk.SpecError)
        assert info.value.code == "bad-hparam-value"
        assert [e["loc"] for e in info.value.errors()] == [("lr",)]
        assert "'lr' is declared by optim" in info.value.problems[0].message
    spec = lk.collect(simple)
    with pytest.raises(lk.SpecError) as direct:
        lk.TrainingSpec(functions=spec.functions, hparams={**dict(spec.hparams), "lr": "fast"})
    assert direct.value.code == "bad-hparam-value"
    assert direct.value.problems[0].message.startswith("lr: Input should be a valid number")


@pytest.mark.parametrize("module", [simple, realistic, hparam_kinds])
def test_json_round_trip_in_process(module):
    spec = lk.collect(module)
    text = spec.model_dump_json()
    loaded = lk.TrainingSpec.model_validate_json(text)
    assert loaded.model_dump_json() == text
    assert [e.fn for e in loaded.functions] == [e.fn for e in spec.functions]
    assert loaded.hparams.as_dict() == spec.hparams.as_dict()
    assert [p.params for p in loaded.plans] == [p.params for p in spec.plans]


def test_round_trip_keeps_overridden_hparams_and_options():
    spec = lk.collect(hparam_kinds).with_hparams(norm="layer", sizes=(4,), lr=0.5)
    loaded = lk.TrainingSpec.model_validate_json(spec.model_dump_json())
    assert loaded.hparams.norm is hparam_kinds.Norm.LAYER
    assert loaded.hparams.sizes == (4,)
    assert loaded.hparams.lr == 0.5
    manual = lk.TrainingSpec.model_validate_json(lk.collect(realistic).model_dump_json())
    assert manual.get("training_step").manual is True
    assert [(h.event, h.fn) for h in manual.hooks][:2] == [
        ("train_epoch_end", realistic.report),
        ("train_batch_end", realistic.every_n),
    ]


def test_loading_validates_the_hparams():
    import pydantic

    data = json.loads(lk.collect(simple).model_dump_json())
    data["hparams"]["lr"] = "fast"
    with pytest.raises(pydantic.ValidationError) as info:
        lk.TrainingSpec.model_validate_json(json.dumps(data))
    assert [e["loc"] for e in info.value.errors()] == [("lr",)]


def test_json_round_trip_in_a_fresh_process():
    spec = lk.collect(hparam_kinds, "tests.user_modules.split_data")
    text = spec.with_hparams(norm="layer", betas=(0.5, 0.6), batch_size=3).model_dump_json()
    result = run_python(
        f"""
        import lightkit as lk
        spec = lk.TrainingSpec.model_validate_json({text!r})
        print(spec.hparams.norm, spec.hparams.betas, spec.hparams.batch_size, spec.model_names)
        print(spec.get("train_data").fn.__module__, spec.get("configure_optimizers").fn.__name__)
        print(spec.model_dump_json() == {text!r})
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Norm.LAYER (0.5, 0.6) 3 ('net',)",
        "tests.user_modules.split_data optim",
        "True",
    ]


MAIN_SCRIPT = """
import os

import lightkit as lk

@lk.model
def net(hidden: int = 4):
    return hidden

@lk.training_step
def train(net, batch):
    return batch

text = lk.collect().model_dump_json()
print(os.getpid())
print(text)
# The same process loads it back, to its own functions.
assert lk.TrainingSpec.model_validate_json(text).get("model").fn is net
"""


def test_main_functions_load_back_in_their_process_only(tmp_path):
    dumped = run_python(MAIN_SCRIPT, cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    pid, text = dumped.stdout.strip().splitlines()
    refs = [f["fn"] for f in json.loads(text)["functions"]]
    assert refs == [f"__main__@{pid}:net", f"__main__@{pid}:train"]

    # Another script with functions of the same names: its __main__ is another program.
    loaded = run_python(
        f"""
        import lightkit as lk

        def net(hidden: int = 4):
            return hidden

        def train(net, batch):
            return batch

        try:
            lk.TrainingSpec.model_validate_json({text!r})
        except lk.SpecError as e:
            print(e.codes)
            print(e)
        """,
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr
    out = loaded.stdout
    assert out.startswith("['unimportable-function', 'unimportable-function']\n2 problems:\n")
    assert (
        f"cannot import function '__main__@{pid}:net': it was defined in a script run directly "
        f"or in a notebook (process {pid}), and this process's __main__ is another program. "
        f"Move it to an importable module"
    ) in out
    assert f"cannot import function '__main__@{pid}:train'" in out


def test_locally_defined_functions_cannot_be_imported_back():
    reg = lk.Registry()

    @reg.model
    def net():
        return None

    text = lk.collect(reg).model_dump_json()
    assert function_ref(net) == (
        f"{__name__}:test_locally_defined_functions_cannot_be_imported_back.<locals>.net"
    )
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec.model_validate_json(text)
    assert info.value.code == "unimportable-function"
    # Whose function it is, and no word of Python's own attribute error.
    assert str(info.value).startswith(
        f"model 'net': cannot import function '{function_ref(net)}'. It was defined inside "
        f"another function or as a lambda, so no process can import it."
    )
    assert "has no attribute" not in str(info.value)

    reg.training_step(lambda net, batch: None)
    reg.on("fit_end", lambda ctx: None)
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec.model_validate_json(lk.collect(reg).model_dump_json())
    message = str(info.value)
    assert "the @training_step function: cannot import function" in message
    assert "the @lk.on('fit_end') hook: cannot import function" in message


class _Stepper:
    def step(self, net, batch):
        return None

    def __call__(self, net, batch):
        return None


def _optim(net, lr: float = 0.1):
    return None


def test_callables_no_import_path_reaches_are_refused_when_loaded_with_the_fix():
    reg = lk.Registry()
    reg.model(simple.net)
    reg.training_step(_Stepper().step)
    reg.configure_optimizers(functools.partial(_optim, lr=0.5))
    reg.validation_step(_Stepper())
    spec = lk.collect(reg)
    assert spec.hparams.lr == 0.5  # the partial's keyword is the default
    refs = [e["fn"] for e in json.loads(spec.model_dump_json())["functions"]]
    assert refs == [
        "tests.user_modules.simple:net",
        f"<bound method {__name__}:_Stepper.step>",
        f"<partial of {__name__}:_optim>",
        f"<_Stepper object from {__name__}>",
    ]
    assert "lr: float = 0.5  (used by partial(_optim))" in str(spec)
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec.model_validate_json(spec.model_dump_json())
    assert info.value.codes == ["unimportable-function"] * 3
    assert (
        f"<partial of {__name__}:_optim> cannot be loaded: it was registered as a callable "
        f"object, not a function defined with `def` at the top of a module" in str(info.value)
    )
    assert "`lk.load_models(path, spec=lk.collect(...))`" in str(info.value)


def test_a_classmethod_and_a_class_are_stored_by_import_path():
    class_ref = function_ref(_Stepper)
    assert class_ref == f"{__name__}:_Stepper"
    assert import_function(class_ref) is _Stepper


def test_import_function():
    assert import_function("tests.user_modules.simple:train") is simple.train
    assert import_function("tests.user_modules.hparam_kinds:Norm") is hparam_kinds.Norm
    with pytest.raises(lk.SpecError, match=r"^'nocolon' is not a function reference; expected"):
        import_function("nocolon")
    with pytest.raises(lk.SpecError, match=r"^cannot import function 'no_such_module_xyz:f': "):
        import_function("no_such_module_xyz:f")
    with pytest.raises(lk.SpecError, match=r"^'tests.user_modules.realistic:FEATURES' is not "):
        import_function("tests.user_modules.realistic:FEATURES")


def test_loading_a_spec_whose_functions_clash_is_a_spec_error():
    data = json.loads(lk.collect(simple).model_dump_json())
    data["functions"].append(
        {"role": "training_step", "fn": "tests.user_modules.simple:val", "name": "val"}
    )
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec.model_validate_json(json.dumps(data))
    assert info.value.code == "duplicate-role"
    assert "2 functions are marked @training_step" in str(info.value)


def test_text_that_is_not_a_spec_is_a_pydantic_error():
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        lk.TrainingSpec.model_validate_json('{"functions": 3}')


def test_a_spec_can_be_built_directly():
    spec = lk.TrainingSpec(
        functions=(
            lk.SpecEntry(role="model", fn=simple.net, name="net"),
            lk.SpecEntry(role="training_step", fn="tests.user_modules.simple:train", name="train"),
        ),
        hparams={"hidden": 3},
    )
    assert spec.hparams.hidden == 3
    assert spec.get("training_step").fn is simple.train
    with pytest.raises(lk.SpecError) as info:
        lk.TrainingSpec(functions=[{"role": "model", "fn": "__main__:nothing", "name": "x"}])
    assert info.value.code == "unimportable-function"


# -- describe ------------------------------------------------------------------------------------


def test_describe():
    text = lk.collect(realistic).with_hparams(optimizer_name="rmsprop").describe()
    lines = text.splitlines()
    assert lines[0] == "TrainingSpec"
    assert "  model 'generator'            tests.user_modules.realistic:generator" in lines
    assert (
        "  model 'critic'               tests.user_modules.realistic:build_discriminator" in lines
    )
    assert (
        "  training_step                tests.user_modules.realistic:adversarial [manual]" in lines
    )
    assert "  on(train_batch_end)          tests.user_modules.realistic:every_n" in lines
    assert lines.index("  hyperparameters:") == 14
    assert (
        "    latent_dim: int = 16  (used by generator, noise_loader, adversarial, val, remember)"
        in lines
    )
    assert "    optimizer_name: Literal['adam', 'rmsprop'] = 'rmsprop'  (used by optim)" in lines
    assert "    hidden: int = 64  (used by generator, build_discriminator)" in lines
    assert str(lk.collect(realistic)) == lk.collect(realistic).describe()
    # A notebook cell ending in `spec` shows the same table (IPython's pretty printer).
    from IPython.lib.pretty import pretty

    assert pretty(lk.collect(realistic)) == lk.collect(realistic).describe()


def test_describe_without_hparams():
    reg = lk.Registry()
    reg.model(lambda: None, name="net")
    assert lk.collect(reg).describe().splitlines()[-2:] == ["  hyperparameters:", "    (none)"]


def test_specs_and_hparams_compare_by_value():
    from tests.user_modules import simple

    a, b = lk.collect(simple), lk.collect(simple)
    assert a == b and a.hparams == b.hparams and hash(a) == hash(b)
    assert lk.TrainingSpec.model_validate_json(a.model_dump_json()) == a
    name, value = next(iter(a.hparams.as_dict().items()))
    changed = a.with_hparams(**{name: value * 2 + 1})
    assert changed != a and changed.hparams != a.hparams


@pytest.mark.parametrize("module", [simple, hparam_kinds])
def test_a_spec_pickles_with_plain_pickle(module):
    # A process pool (a sweep with ProcessPoolExecutor) pickles its arguments with plain
    # pickle; the hyperparameter model is built at run time, so it travels as its fields.
    import pickle

    spec = lk.collect(module)
    spec = spec.with_hparams(hidden=7)
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and hash(back) == hash(spec)
    assert back.hparams.hidden == 7
    assert back.hparam_sources() == spec.hparam_sources()
    assert back.hparams_schema == spec.hparams_schema
    hp = pickle.loads(pickle.dumps(spec.hparams))
    assert hp == spec.hparams and hp.as_dict() == spec.hparams.as_dict()
    with pytest.raises(pydantic.ValidationError):  # the constraints came along
        back.with_hparams(hidden="many")


def _with_options(options: dict[str, int] = {"a": 1}, sizes: list[int] = [1]):  # noqa: B006
    return None


def test_equal_hyperparameters_hash_alike():
    reg = lk.Registry()
    reg.model(_with_options)
    spec = lk.collect(reg)
    a = spec.with_hparams(options={"a": 1, "b": 2}, sizes=[3, 4])
    b = spec.with_hparams(options={"b": 2, "a": 1}, sizes=[3, 4])  # the same dict, other order
    assert a.hparams == b.hparams and hash(a.hparams) == hash(b.hparams)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, spec}) == 2
    kinds = lk.collect(hparam_kinds).hparams
    assert hash(kinds) == hash(pickle_copy(kinds))


def pickle_copy(value):
    import pickle

    return pickle.loads(pickle.dumps(value))


def test_a_scripts_spec_reaches_another_process_with_its_types(tmp_path):
    # devices=N pickles the spec with cloudpickle: a script's functions travel by value with
    # only the globals their bodies use, so the string annotations of
    # `from __future__ import annotations` could not be evaluated there. The analysis travels
    # with the spec instead of being redone.
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from __future__ import annotations
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from pathlib import Path
            from typing import Literal, Optional
            import lightkit as lk
            from lightkit.runtime.pickling import dumps

            @lk.model
            def net(act: Literal["relu", "tanh"] = "relu", root: Path = Path("data"),
                    dropout: Optional[float] = 0.1):
                return None

            spec = lk.collect().with_hparams(root="other", dropout=None)
            open(sys.argv[1], "wb").write(dumps(spec))
            """
        )
    )
    blob = tmp_path / "spec.pkl"
    made = subprocess.run(
        [sys.executable, str(script), str(blob)], capture_output=True, text=True, cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    loaded = run_python(
        f"""
        import pickle
        spec = pickle.loads(open({str(blob)!r}, "rb").read())
        fields = spec.hparams_model.model_fields
        print({{k: str(f.annotation) for k, f in fields.items()}}, spec.hparams.as_dict())
        print(spec.with_hparams(act="tanh").hparams.act)
        """
    )
    assert loaded.returncode == 0, loaded.stderr
    types, act = loaded.stdout.splitlines()
    assert types == (
        "{'act': \"typing.Literal['relu', 'tanh']\", 'root': \"<class 'pathlib.Path'>\", "
        "'dropout': 'typing.Optional[float]'} {'act': 'relu', 'root': PosixPath('other'), "
        "'dropout': None}"
    )
    assert act == "tanh"
