"""Hyperparameter values at the edges: they survive JSON, the spec does not change under a
function that changes its argument, and refusals say where each name is declared."""

from __future__ import annotations

import enum
import json
import pickle
from pathlib import Path

import pytest
import torch
from pydantic import Field
from torch import nn

import lightkit as lk
from tests.user_modules import edge_hparams


class Norm(enum.Enum):
    LAYER = "layer"


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture
def spec() -> lk.TrainingSpec:
    edge_hparams.BUILT.clear()
    return lk.collect(edge_hparams)


def test_infinity_and_nan_survive_the_spec_json(spec):
    spec = spec.with_hparams(lr=float("nan"))
    text = spec.model_dump_json()
    assert json.loads(text)["hparams"]["max_norm"] == float("inf")
    back = lk.TrainingSpec.model_validate_json(text)
    assert back.hparams.max_norm == float("inf")
    assert back.hparams.lr != back.hparams.lr  # NaN
    assert back.hparams_schema["properties"]["max_norm"]["default"] == float("inf")


def test_a_checkpoint_of_an_infinite_hparam_loads(spec, tmp_path, capfd, caplog):
    result = lk.Trainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(spec)
    out, err = capfd.readouterr()
    assert "NaN or Inf" not in out + err + caplog.text  # the HParams tab gets it as text
    stored = json.loads((result.log_dir / "spec.json").read_text())
    assert stored["hparams"]["max_norm"] == float("inf")
    models = lk.load_models(result.last_checkpoint)
    assert set(models) == {"net"}


def test_changing_a_list_hparam_in_place_leaves_the_spec_alone(spec, tmp_path):
    first = lk.Trainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(spec)
    assert spec.hparams.layers == [3]
    stored = json.loads((first.log_dir / "spec.json").read_text())
    assert stored["hparams"]["layers"] == [3]
    # The checkpoint rebuilds the model it holds, and a second fit builds the same one.
    models = lk.load_models(first.last_checkpoint)
    second = lk.Trainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(spec)
    assert edge_hparams.BUILT == [[3, 1], [3, 1], [3, 1]]
    shapes = [tuple(p.shape) for p in second.models["net"].parameters()]
    assert shapes == [tuple(p.shape) for p in models["net"].parameters()] == [
        (3, 2), (3,), (1, 3), (1,)
    ]  # fmt: skip


def test_an_int_and_a_float_default_of_one_float_hparam_agree(spec):
    assert spec.hparams.scale == 1.0
    assert spec.with_hparams(scale=2).hparams.scale == 2.0
    sources = spec.hparam_sources()["scale"]
    assert [s.split("(")[0] for s in sources] == ["step", "optim"], sources


def test_a_refused_value_says_which_function_declares_it(spec):
    with pytest.raises(lk.SpecError) as info:
        spec.with_hparams(lr="fast", layers=["x"])
    text = str(info.value)
    assert text.startswith("2 validation errors for Hparams\n")
    assert "input_value='fast'" in text
    assert (
        "\n'lr' is declared by optim(net, lr, max_norm, scale) at tests/user_modules/edge_hparams.py:"
    ) in text
    assert "\n'layers' is declared by net(layers) at tests/user_modules/edge_hparams.py:" in text
    assert text.endswith("give a value its annotation accepts.")
    again = pickle.loads(pickle.dumps(info.value))
    assert (type(again), str(again), again.codes) == (type(info.value), text, info.value.codes)


def test_a_default_its_annotation_converts_reaches_the_function_converted(tmp_path):
    got: dict[str, object] = {}
    reg = lk.Registry()
    reg.model(lambda: nn.Linear(2, 1), name="net")

    @reg.train_data
    def data(batch_size: int = "4", root: Path = "data"):  # type: ignore[assignment]
        got.update(batch_size=batch_size, root=root)
        return [(torch.ones(batch_size, 2), torch.ones(batch_size, 1))]

    @reg.training_step
    def step(net, batch, norm: Norm = "layer", scale: float = 1):  # type: ignore[assignment]
        got.update(norm=norm, scale=scale)
        return scale * net(batch[0]).mean()

    @reg.configure_optimizers
    def optim(net, lr: float = Field("0.1", ge=0)):  # type: ignore[assignment]
        got.update(lr=lr)
        return torch.optim.SGD(net.parameters(), lr=lr)

    spec = lk.collect(reg)
    lk.Trainer(max_steps=1, logger=False, enable_checkpointing=False, **QUIET).fit(spec)
    assert got == {
        "batch_size": 4, "root": Path("data"), "norm": Norm.LAYER, "scale": 1.0, "lr": 0.1
    }  # fmt: skip
    assert [type(got[k]) for k in ("batch_size", "scale", "lr")] == [int, float, float]
    assert spec.hparams_schema["properties"]["lr"]["minimum"] == 0  # the Field is kept
    assert json.loads(spec.model_dump_json())["hparams"]["batch_size"] == 4
