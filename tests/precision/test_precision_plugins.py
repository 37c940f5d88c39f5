"""Each plugin on its own: conversions, contexts, device checks, the scaler and its state."""

from __future__ import annotations

import re

import attrs
import pytest
import torch
from torch import nn

import lightkit as lk
from lightkit.precision import precision_from
from lightkit.runtime.connector import connect
from tests.precision.precision_helpers import QUIET, build_spec, ce, make_net, trainer


@pytest.mark.parametrize(
    ("name", "dtype"), [("64-true", torch.float64), ("16-true", torch.float16)]
)
def test_true_converts_floating_parameters_buffers_and_inputs_only(name, dtype):
    plugin = precision_from(name)
    module = plugin.convert_module(nn.BatchNorm1d(3))
    assert module.weight.dtype == dtype
    assert module.running_mean.dtype == dtype
    assert module.num_batches_tracked.dtype == torch.int64
    batch = {"x": torch.ones(2), "y": torch.tensor([1, 2]), "pair": (torch.zeros(1), "text")}
    out = plugin.convert_input(batch)
    assert out["x"].dtype == dtype
    assert out["pair"][0].dtype == dtype
    assert out["y"].dtype == torch.int64
    assert out["pair"][1] == "text"
    assert plugin.converts_input


@pytest.mark.parametrize("name", ["32-true", "16-mixed", "bf16-mixed"])
def test_float32_parameter_precisions_leave_modules_and_inputs_alone(name):
    plugin = precision_from(name)
    module = nn.Linear(2, 2)
    assert plugin.convert_module(module) is module
    assert module.weight.dtype == torch.float32
    batch = (torch.ones(2, dtype=torch.float64),)
    assert plugin.convert_input(batch) is batch
    assert not plugin.converts_input


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_true_steps_run_with_the_default_dtype_set_and_restored(dtype):
    plugin = lk.TruePrecision(dtype)
    with plugin.autocast():
        assert torch.zeros(1).dtype == dtype
        with plugin.autocast():  # re-entrant: eval inside a training step
            assert torch.get_default_dtype() == dtype
        assert torch.get_default_dtype() == dtype
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize(
    ("name", "dtype"), [("16-mixed", torch.float16), ("bf16-mixed", torch.bfloat16)]
)
def test_mixed_autocasts_on_the_setup_device(name, dtype):
    plugin = precision_from(name)
    plugin.setup(torch.device("cpu"))
    linear = nn.Linear(4, 4)
    with plugin.autocast():
        out = linear(torch.ones(1, 4))
        assert torch.get_default_dtype() == torch.float32
    assert out.dtype == dtype
    assert linear.weight.dtype == torch.float32
    assert (plugin.scaler is not None) == (dtype is torch.float16)


def test_16_mixed_on_a_device_without_autocast_fails_at_connect(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(lk.ConfigError, match=r"needs torch\.autocast on 'cpu'") as info:
        connect("cpu", 1, "auto", "16-mixed")
    assert info.value.code == "precision-unsupported"


def test_16_mixed_without_a_grad_scaler_fails_at_connect(monkeypatch):
    def no_scaler(*args, **kwargs):
        raise RuntimeError("GradScaler is not supported here")

    monkeypatch.setattr(torch.amp, "GradScaler", no_scaler)
    with pytest.raises(lk.ConfigError, match="needs a gradient scaler on 'cpu'") as info:
        connect("cpu", 1, "auto", "16-mixed")
    assert "bf16-mixed" in str(info.value)
    assert info.value.code == "precision-unsupported"
    connect("cpu", 1, "auto", "bf16-mixed")  # needs no scaler


def test_64_true_on_mps_is_refused_before_running():
    with pytest.raises(lk.ConfigError, match="no float64") as info:
        lk.TruePrecision(torch.float64).setup(torch.device("mps"))
    assert info.value.code == "precision-unsupported"


def test_precision_is_checked_when_the_trainer_compiles_not_mid_run(monkeypatch):
    built: list[str] = []

    def net():
        built.append("net")
        return make_net()

    spec = build_spec(model=net)
    lk.Trainer(max_steps=1, precision="16-mixed", **QUIET).fit(spec)
    assert built == ["net"]
    built.clear()
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(lk.ConfigError, match=r"precision='16-mixed' needs torch\.autocast"):
        lk.Trainer(max_steps=1, precision="16-mixed", **QUIET).fit(spec)
    assert built == []  # nothing of the user's ran


def _scaled_step(runtime: lk.Runtime, net: nn.Module, opt: torch.optim.Optimizer, inf: bool):
    with runtime.autocast():
        loss = net(torch.ones(2, 8)).sum()
    runtime.backward(loss)
    if inf:
        net[0].weight.grad[0, 0] = float("inf")
    stepped = runtime.optimizer_step(opt)
    opt.zero_grad()
    return stepped


def test_runtime_step_reports_whether_the_scaler_stepped():
    plugin = lk.MixedPrecision(torch.float16, scaler_kwargs={"init_scale": 256.0})
    runtime = lk.Runtime(accelerator="cpu", precision=plugin)
    net = runtime.setup(make_net())
    opt = runtime.setup_optimizer(torch.optim.SGD(net.parameters(), lr=0.1))
    before = net[0].weight.detach().clone()
    assert _scaled_step(runtime, net, opt, inf=True) is False
    assert torch.equal(net[0].weight, before)
    assert plugin.scale == 128.0
    assert _scaled_step(runtime, net, opt, inf=False) is True
    assert not torch.equal(net[0].weight, before)
    assert plugin.scale == 128.0


def test_unscale_is_idempotent_within_a_step():
    plugin = lk.MixedPrecision(torch.float16, scaler_kwargs={"init_scale": 256.0})
    runtime = lk.Runtime(accelerator="cpu", precision=plugin)
    net = runtime.setup(make_net())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with runtime.autocast():
        loss = net(torch.ones(2, 8)).sum()
    runtime.backward(loss)
    runtime.unscale_gradients(opt)
    once = net[0].weight.grad.clone()
    runtime.unscale_gradients(opt)
    runtime.clip_gradients(opt, 1e9)  # unscales first, but not twice
    assert torch.equal(net[0].weight.grad, once)
    assert torch.isfinite(once).all()
    # the true gradient: what float32 backward of the same autocast forward gives
    net.zero_grad()
    with runtime.autocast():
        loss = net(torch.ones(2, 8)).sum()
    loss.backward()
    assert torch.allclose(once, net[0].weight.grad)


def test_scaler_state_round_trips_before_and_after_setup():
    source = lk.MixedPrecision(torch.float16, scaler_kwargs={"init_scale": 512.0})
    assert source.state_dict() == {}  # no scaler before setup
    source.setup(torch.device("cpu"))
    state = source.state_dict()
    assert state["scaler"]["scale"] == 512.0
    state["scaler"]["scale"] = 8.0
    state["scaler"]["_growth_tracker"] = 3

    target = lk.MixedPrecision(torch.float16)
    target.load_state_dict(state)
    assert target.state_dict()["scaler"]["scale"] == 8.0  # pending until setup
    target.setup(torch.device("cpu"))
    assert target.state_dict()["scaler"]["scale"] == 8.0
    assert target.state_dict()["scaler"]["_growth_tracker"] == 3

    target.load_state_dict({"scaler": {**state["scaler"], "scale": 4.0}})
    assert target.scale == 4.0
    target.load_state_dict({})  # nothing stored: nothing changes
    assert target.scale == 4.0


@pytest.mark.parametrize("name", ["32-true", "64-true", "bf16-mixed", "16-true", "bf16-true"])
def test_precisions_without_a_scaler_have_no_state(name):
    plugin = precision_from(name)
    plugin.setup(torch.device("cpu"))
    assert plugin.state_dict() == {}
    plugin.load_state_dict({"scaler": {"scale": 2.0}})  # ignored, as Lightning does
    assert plugin.state_dict() == {}


def test_a_loaded_scale_is_the_scale_training_starts_from():
    plugin = lk.MixedPrecision(torch.float16)
    plugin.load_state_dict(
        {
            "scaler": {
                "scale": 64.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
                "_growth_tracker": 0,
            }
        }
    )
    lk.Trainer(max_steps=2, precision=plugin, **QUIET).fit(build_spec())
    assert plugin.scale == 64.0
    assert plugin.scaler.state_dict()["_growth_tracker"] == 2


@attrs.define
class TimesEight(lk.Precision):
    """A plugin written to the documented order: backward scales by 8, unscale divides in
    place (not idempotent by itself), and every call is recorded."""

    calls: list[str] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        return "x8"

    def backward(self, loss: torch.Tensor) -> None:
        self.calls.append("backward")
        (loss * 8).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append("unscale")
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(8)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        self.calls.append("step")
        return super().optimizer_step(optimizer)


@pytest.mark.parametrize("monitor", [False, True])
def test_a_plugin_unscales_once_per_step_however_many_ask(monitor):
    # Clipping and a gradient-norm monitor both ask for true gradients: the plugin's
    # unscale runs once per step, so dividing in place gives the float32 run's weights.
    flags = {"max_epochs": 2, "gradient_clip_val": 0.5, "seed": 0}
    callbacks = [lk.GradientNormMonitor()] if monitor else []
    plugin = TimesEight()
    scaled = trainer(**flags, precision=plugin, callbacks=callbacks).fit(build_spec())
    plain = trainer(**flags, callbacks=callbacks).fit(build_spec())
    for key, value in plain.models["net"].state_dict().items():
        assert torch.equal(scaled.models["net"].state_dict()[key], value), key
    assert plugin.calls == ["backward", "unscale", "step"] * 8


def test_runtime_clip_gradients_checks_its_arguments():
    rt = lk.Runtime(accelerator="cpu")
    net = rt.setup(nn.Linear(2, 1, bias=False))
    opt = rt.setup_optimizer(torch.optim.SGD(net.parameters(), lr=0.1))
    rt.backward(net(torch.ones(3, 2)).sum())
    for bad, text in [
        ({"algorithm": "Value"}, "algorithm='Value'; expected 'norm' or 'value'"),
        ({"max_value": -1.0}, "max_value=-1.0; expected a number >= 0"),
        ({"max_value": float("nan")}, "max_value=nan"),
        ({"max_value": "1"}, "max_value='1'"),
        ({"max_value": None}, "max_value=None;"),
    ]:
        args = {"max_value": 1.0, **bad}
        with pytest.raises(lk.ConfigError, match=re.escape(text)) as info:
            rt.clip_gradients(opt, **args)
        assert info.value.code == "bad-runtime-argument"
    assert torch.equal(net.weight.grad, torch.full((1, 2), 3.0))  # untouched by the refusals
    norm = rt.clip_gradients(opt, 1.0)
    assert norm is not None and norm.item() == pytest.approx(18**0.5)
    assert net.weight.grad.norm().item() == pytest.approx(1.0)


def test_a_manual_step_unscales_each_step_though_its_optimizer_bypasses_the_runtime():
    # Without a scaler the manual step gets the raw optimizer: its step() never reaches the
    # Runtime, and the next backward is what starts a new step's unscaling.
    def manual(net, batch, optimizer, ctx):
        ctx.backward(ce(net, batch))
        ctx.runtime.clip_gradients(optimizer, 1e9)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flags = {"max_epochs": 2, "seed": 0}
    plugin = TimesEight()
    scaled = trainer(**flags, precision=plugin).fit(build_spec(step=manual, manual=True))
    plain = trainer(**flags).fit(build_spec(step=manual, manual=True))
    for key, value in plain.models["net"].state_dict().items():
        assert torch.equal(scaled.models["net"].state_dict()[key], value), key
    assert plugin.calls.count("unscale") == 8


def test_bf16_mixed_has_nothing_to_unscale():
    assert not precision_from("bf16-mixed").unscales
    rt = lk.Runtime(accelerator="cpu", precision="bf16-mixed")
    assert not rt._unscales  # no per-step bookkeeping for a scale that does not exist


def test_clip_gradients_names_a_module_given_for_the_optimizer():
    rt = lk.Runtime(accelerator="cpu")
    net = rt.setup(nn.Linear(2, 1))
    opt = rt.setup_optimizer(torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(lk.ConfigError, match="through its optimizer") as info:
        rt.clip_gradients(net, 1.0)
    assert info.value.code == "bad-runtime-argument"
    with pytest.raises(lk.ConfigError, match=r"got max_value=a SGD; expected a number >= 0"):
        rt.clip_gradients(opt, opt)  # Fabric's (module, optimizer) order, half fixed


def test_mixed_precision_in_float32_or_float64_points_at_the_true_precisions():
    for dtype in (torch.float32, torch.float64, "float32"):
        with pytest.raises(lk.ConfigError, match="'32-true'; for float64, '64-true'"):
            lk.MixedPrecision(dtype)
