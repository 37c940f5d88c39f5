"""``compile=``: the models go through ``torch.compile``; bad options fail before any step; a
backend that cannot work here falls back to eager with a warning.

Inductor itself (a C++ build per graph) is too slow for the unit tests: it is exercised by
``bench/run.py`` (figure c-compile). Here dynamo runs with its ``eager`` backend, which traces
the model and runs the captured graph with the same kernels.
"""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

import lightkit as lk
from lightkit.engine import compiling
from tests.engine.engine_helpers import assert_same_weights, registry, trainer


def fit(**flags):
    """The result, and the model's type as the training step sees it (hooks always see the
    module the model function built)."""
    seen = {}

    def step(net, batch):
        seen["type"] = type(net).__name__
        return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])

    def peek(net):
        seen["hook"] = type(net).__name__

    reg = registry(step=step)
    reg.on("fit_start", peek)
    result = trainer(max_epochs=1, seed=0, **flags).fit(lk.collect(reg))
    assert seen["hook"] == "Sequential"
    return result, seen["type"]


def test_compiled_models_train_as_eager_ones_and_come_back_unwrapped():
    eager, eager_type = fit()
    compiled, compiled_type = fit(compile={"backend": "eager"})
    assert (eager_type, compiled_type) == ("Sequential", "OptimizedModule")
    assert type(compiled.models["net"]).__name__ == "Sequential"
    assert_same_weights(eager.models["net"], compiled.models["net"])


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"mod": "max-autotune"}, "'mod' is not an option of torch.compile. It takes: "),
        ({"mode": "fastest"}, "torch.compile refused it: Unrecognized mode=fastest"),
    ],
)
def test_bad_options_fail_before_any_step(options, text):
    with pytest.raises(lk.ConfigError, match=text) as info:
        fit(compile=options)
    assert info.value.code == "bad-compile-option"


def test_without_a_cpp_compiler_the_models_run_eagerly(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler.*run eagerly"):
        result, seen = fit(compile=True)
    assert seen == "Sequential"
    assert_same_weights(fit()[0].models["net"], result.models["net"])


def test_the_check_names_what_is_missing():
    cpu = torch.device("cpu")
    assert compiling.unavailable("eager", cpu) is None  # other backends check for themselves
    assert "mode" in compiling.compile_options()


def test_inductor_is_checked_for_the_compiler_it_will_use(monkeypatch):
    """Inductor compiles with $CXX alone when it is set: a g++ elsewhere on PATH does not
    help it, so the check must not count it either."""
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/g++-13"))
    monkeypatch.setattr(shutil, "which", lambda name: None if "nonexistent" in name else name)
    why = compiling.unavailable(None, torch.device("cpu"))
    assert why is not None and "/nonexistent/g++-13" in why and "CXX" in why


#: Exception notes (add_note) came with Python 3.11; on 3.10 torch's error stands alone.
NOTES = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need 3.11")


def failing_backend(gm, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


@NOTES
def test_a_compile_error_at_the_first_forward_is_torchs_with_a_note_naming_the_flag():
    from torch._dynamo.exc import BackendCompilerFailed

    with pytest.raises(BackendCompilerFailed, match="cannot compile anything") as info:
        fit(compile={"backend": failing_backend})
    (note,) = info.value.__notes__
    assert "compile={'backend': <function failing_backend" in note
    assert "compile=False runs them eagerly" in note


def passthrough_backend(gm, example_inputs):
    return gm.forward


def test_a_function_among_the_compile_options_survives_the_config_json():
    config = lk.TrainerConfig(compile={"backend": passthrough_backend, "dynamic": False})
    text = config.model_dump_json()
    path = f"{passthrough_backend.__module__}:passthrough_backend"
    assert f'"backend":{{"function":"{path}"}}' in text
    again = lk.TrainerConfig.model_validate_json(text)
    assert again.compile == {"backend": passthrough_backend, "dynamic": False}
    result, seen = fit(compile=again.compile)
    assert seen == "OptimizedModule"
    assert_same_weights(fit()[0].models["net"], result.models["net"])

    broken = text.replace("passthrough_backend", "no_such_backend")
    with pytest.raises(lk.ConfigError, match="cannot import") as info:
        lk.TrainerConfig.model_validate_json(broken)
    assert info.value.code == "bad-compile-option"
    assert "its module or name is not there" in str(info.value)
    assert "give compile={'backend': fn} in Python" in str(info.value)
    lambdas = lk.TrainerConfig(compile={"backend": lambda gm, inputs: gm.forward})
    with pytest.raises(lk.ConfigError, match="defined inside a function, or as a lambda"):
        lk.TrainerConfig.model_validate_json(lambdas.model_dump_json())
    earlier = text.replace(f'{{"function":"{path}"}}', '{"class_path":"builtins:function"}')
    with pytest.raises(lk.ConfigError, match="an earlier lightkit wrote as its class only"):
        lk.TrainerConfig.model_validate_json(earlier)


def test_a_partial_among_the_compile_options_is_refused_when_read_back():
    import functools

    config = lk.TrainerConfig(compile={"backend": functools.partial(passthrough_backend)})
    with pytest.raises(lk.ConfigError, match="a bound method, a partial, a callable object"):
        lk.TrainerConfig.model_validate_json(config.model_dump_json())


@NOTES
def test_the_command_line_shows_the_note_that_names_the_flag():
    from lightkit.cli import _message

    error = RuntimeError("backend broke")
    error.add_note("lightkit: this error came from torch.compile")
    code, text, _ = _message(error)
    assert code == 1 and text.startswith("RuntimeError: backend broke")
    assert text.endswith("\nlightkit: this error came from torch.compile")
