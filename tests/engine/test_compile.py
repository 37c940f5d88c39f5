"""``compile=``: the models go through ``torch.compile``; bad options fail before any step; a
backend that cannot work here falls back to eager with a warning.

Inductor itself (a C++ build per graph) is too slow for the unit tests: it is exercised by
``bench/run.py`` (figure c-compile). Here dynamo runs with its ``eager`` backend, which traces
the model and runs the captured graph with the same kernels.
"""

from __future__ import annotations

import shutil

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
