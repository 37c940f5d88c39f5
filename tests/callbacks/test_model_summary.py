"""ModelSummary: per-model tables with the right counts, shapes, totals and size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightkit as lk
from lightkit.callbacks.model_summary import _count, summarize
from tests.callbacks.cb_helpers import spec, trainer


def net_with_example() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 1), nn.Tanh()))
    net[0].weight.requires_grad_(False)  # 32 frozen parameters
    net.example_input_array = torch.zeros(5, 4)
    return net


def test_counts_shapes_and_totals():
    s = summarize(net_with_example(), 1, torch.zeros(5, 4), name="net")
    assert [(r.name, r.type, r.params, r.trainable, r.out_shape) for r in s.rows] == [
        ("0", "Linear", 40, 8, "[5, 8]"),
        ("1", "ReLU", 0, 0, "[5, 8]"),
        ("2", "Sequential", 9, 9, "[5, 1]"),
    ]
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (49, 17, 32)
    assert s.size_mb == 49 * 4 / 1e6
    text = str(s)
    assert "Out shape" in text and "[5, 8]" in text
    assert "17         Trainable params" in text and "32         Non-trainable params" in text


def test_max_depth():
    net = net_with_example()
    assert [r.name for r in summarize(net, 2).rows] == ["0", "1", "2", "2.0", "2.1"]
    assert [r.name for r in summarize(net, -1).rows] == ["0", "1", "2", "2.0", "2.1"]
    assert not summarize(net, 1).has_shapes


def test_forward_pass_leaves_modes_and_random_state_alone():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    net.train()
    state = torch.get_rng_state()
    s = summarize(net, 1, torch.ones(2, 4))
    assert s.rows[1].out_shape == "[2, 4]"
    assert net.training and net[1].training
    assert torch.equal(torch.get_rng_state(), state)


def test_big_counts_are_abbreviated_and_lazy_ones_unknown():
    s = summarize(nn.Sequential(nn.Linear(1000, 1500), nn.LazyLinear(3)), 1)
    assert "1.5 M" in str(s)
    assert s.rows[1].params is None and s.total_params is None
    assert "?          Total params" in str(s)


@pytest.mark.parametrize(
    ("n", "text"),
    [(999, "999"), (1234, "1.2 K"), (99_949, "99.9 K"), (122_303, "122 K"), (2 * 10**6, "2.0 M"),
     (5 * 10**15, "5,000 T")],
)  # fmt: skip
def test_counts_read_as_lightnings(n, text):
    # The figures of Lightning's get_human_readable_count, which pads the small ones with a
    # blank unit: a decimal only below 100 of a unit.
    assert _count(n) == text


def test_parameters_of_the_model_itself_get_a_row_of_their_own():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(3, 2)
            self.scale = nn.Parameter(torch.ones(4))
            self.frozen = nn.Parameter(torch.ones(5), requires_grad=False)

    for depth in (1, -1):
        s = summarize(Scaled(), depth)
        assert [(r.name, r.type, r.params, r.trainable) for r in s.rows] == [
            ("layer", "Linear", 8, 8),
            ("other params", "n/a", 9, 4),
        ]
        assert s.total_params == sum(r.params for r in s.rows) == 17
        assert "\n  | other params | n/a " in str(s)  # no row number: it is no layer


def test_printed_at_fit_start_for_every_model(capsys):
    def critic() -> nn.Module:
        return nn.Linear(4, 1)

    summary = lk.ModelSummary()
    trainer(max_epochs=1, callbacks=[summary]).fit(
        spec(net=net_with_example, more_models={"critic": critic})
    )
    out = capsys.readouterr().out
    assert "Model 'net'" in out and "Model 'critic'" in out
    assert "[5, 1]" in out  # from net.example_input_array
    assert set(summary.summaries) == {"net", "critic"}
    assert summary.summaries["critic"].total_params == 5


def test_on_by_default_and_off_with_the_flag(capsys):
    trainer(max_epochs=1, enable_model_summary=True).fit(spec())
    assert "Total params" in capsys.readouterr().out
    trainer(max_epochs=1, enable_model_summary=False).fit(spec())
    assert "Total params" not in capsys.readouterr().out


def test_example_inputs_argument_and_depth_zero(capsys):
    summary = lk.ModelSummary(example_inputs={"net": torch.zeros(7, 4)})
    trainer(max_epochs=1, callbacks=[summary]).fit(spec())
    assert summary.summaries["net"].rows[0].out_shape == "[7, 8]"
    capsys.readouterr()
    trainer(max_epochs=1, callbacks=[lk.ModelSummary(max_depth=0)]).fit(spec())
    assert "Total params" not in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_the_example_input_is_cast_as_batches_are(capsys, precision):
    """Under a ``-true`` precision the model's parameters are float64 (bfloat16); the float32
    example input is cast as each batch is, so the forward pass works and shapes are shown."""
    summary = lk.ModelSummary()
    trainer(max_epochs=1, precision=precision, callbacks=[summary]).fit(spec(net=net_with_example))
    assert [r.out_shape for r in summary.summaries["net"].rows] == ["[5, 8]", "[5, 8]", "[5, 1]"]
