"""``lk.Runtime`` on its own: moving batches, and a user's own loop on it."""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn

import lightkit as lk
from tests.engine.engine_helpers import assert_same_weights, ce, make_net, raw_fit, train_loader

Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Sample:
    image: torch.Tensor
    label: torch.Tensor
    name: str = "s"
    extra: Any = None


def nested_batch() -> dict[str, Any]:
    return {
        "pair": Pair(torch.ones(2, dtype=torch.float32), torch.tensor([1, 2])),
        "list": [torch.zeros(3), (torch.ones(1, dtype=torch.float16), "text")],
        "sample": Sample(torch.rand(2, 2), torch.tensor(3), extra={"deep": [torch.ones(1)]}),
        "plain": 5,
    }


def test_to_device_converts_every_floating_tensor_for_true_precisions():
    rt = lk.Runtime(accelerator="cpu", precision="64-true")
    batch = nested_batch()
    moved = rt.to_device(batch)
    assert type(moved["pair"]) is Pair
    assert moved["pair"].x.dtype == torch.float64
    assert moved["pair"].y.dtype == torch.int64  # integers untouched
    assert isinstance(moved["list"], list) and isinstance(moved["list"][1], tuple)
    assert moved["list"][0].dtype == torch.float64
    assert moved["list"][1][0].dtype == torch.float64
    assert moved["list"][1][1] == "text"
    assert type(moved["sample"]) is Sample
    assert moved["sample"].image.dtype == torch.float64
    assert moved["sample"].label.dtype == torch.int64
    assert moved["sample"].name == "s"
    assert moved["sample"].extra["deep"][0].dtype == torch.float64
    assert moved["plain"] == 5
    assert torch.equal(moved["sample"].image, batch["sample"].image.double())
    # The original batch is not mutated.
    assert batch["pair"].x.dtype == torch.float32


class Tokens:
    """A batch class of the user's that moves itself, as Lightning's transfer expects."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.moved_to: list[torch.device] = []

    def to(self, device: torch.device) -> Tokens:
        self.moved_to.append(torch.device(device))
        return self


def test_to_device_calls_the_to_method_of_other_objects():
    rt = lk.Runtime(accelerator="cpu", precision="64-true")  # a runtime that moves batches
    tokens = Tokens(torch.tensor([1, 2]))
    moved = rt.to_device({"tokens": tokens, "x": torch.ones(2), "name": "a", "cls": Tokens})
    assert moved["tokens"] is tokens and tokens.moved_to == [torch.device("cpu")]
    assert moved["x"].dtype == torch.float64
    assert moved["name"] == "a" and moved["cls"] is Tokens  # a class is not moved

    seen: list[Tokens] = []

    def train(net, batch):
        seen.append(batch)
        return net(torch.ones(1, 8, dtype=torch.float64)).sum()

    def tokens():
        return [Tokens(torch.tensor([i, i])) for i in range(3)]

    reg = lk.Registry()
    reg.model(make_net, name="net")
    reg.train_data(tokens)
    reg.training_step(train)
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    lk.Trainer(
        max_epochs=1,
        precision="64-true",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    ).fit(lk.collect(reg))
    assert [b.moved_to for b in seen] == [[torch.device("cpu")]] * 3


def test_to_device_on_cpu_in_fp32_is_free():
    rt = lk.Runtime(accelerator="cpu")
    batch = nested_batch()
    assert rt.to_device(batch) is batch


def test_apply_to_tensors_moves_nested_containers():
    from lightkit.utils.apply import apply_to_tensors, first_tensor

    batch = nested_batch()
    doubled = apply_to_tensors(batch, lambda t: t * 2)
    assert torch.equal(doubled["pair"].y, torch.tensor([2, 4]))
    assert torch.equal(doubled["sample"].extra["deep"][0], torch.tensor([2.0]))
    assert first_tensor(batch) is batch["pair"].x
    assert first_tensor({"a": "no", "b": [3, Sample(torch.ones(1), torch.ones(1))]}) is not None
    assert first_tensor(("x", 1)) is None


def test_a_packed_sequence_moves_through_its_own_to():
    # A namedtuple whose parts have rules of their own: batch_sizes must stay on the CPU, so
    # walking into it and moving each tensor would break it; its `.to` moves it right.
    from torch.nn.utils.rnn import pack_sequence

    from lightkit.utils.apply import apply_to_tensors

    packed = pack_sequence([torch.randn(3, 2), torch.randn(2, 2)])
    moved = apply_to_tensors({"p": packed}, lambda t: t.to("meta"), lambda o: o.to("meta"))
    assert moved["p"].data.device.type == "meta"
    assert moved["p"].batch_sizes.device.type == "cpu"
    converted = apply_to_tensors(packed, lambda t: t.double() if t.is_floating_point() else t)
    assert converted.data.dtype == torch.float64 and torch.equal(
        converted.batch_sizes, packed.batch_sizes
    )


def test_a_defaultdict_keeps_its_type_and_factory():
    from collections import defaultdict

    from lightkit.utils.apply import apply_to_tensors

    batch = {"dd": defaultdict(list, {"x": torch.ones(1)})}
    moved = lk.Runtime(accelerator="cpu", precision="64-true").to_device(batch)
    assert type(moved["dd"]) is defaultdict and moved["dd"].default_factory is list
    assert moved["dd"]["x"].dtype == torch.float64
    assert apply_to_tensors(batch, lambda t: t * 3)["dd"]["x"].item() == 3.0


def test_runtime_topology_on_one_process():
    rt = lk.Runtime(accelerator="cpu")
    assert (rt.rank, rt.local_rank, rt.world_size, rt.is_global_zero) == (0, 0, 1, True)
    assert rt.device == torch.device("cpu")
    assert rt.all_reduce(torch.tensor(3.0)).item() == 3.0
    assert rt.broadcast({"a": 1}) == {"a": 1}
    rt.barrier()
    assert "single_device" in repr(rt) and "32-true" in repr(rt)


def test_a_user_loop_on_the_runtime_matches_plain_pytorch():
    """The docstring's loop, with accumulation and clipping done by hand."""
    rt = lk.Runtime(accelerator="cpu", precision="32-true")
    torch.manual_seed(0)
    model = rt.setup(make_net())
    opt = rt.setup_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    loader = rt.setup_dataloader(train_loader())
    for _ in range(2):
        n = len(loader)
        for i, batch in enumerate(loader):
            batch = rt.to_device(batch)
            with rt.autocast():
                loss = ce(model, batch) / 3
            rt.backward(loss)
            if (i + 1) % 3 == 0 or i == n - 1:
                rt.clip_gradients(opt, 0.05)
                assert rt.optimizer_step(opt) is True
                opt.zero_grad()
    assert_same_weights(rt.unwrap(model), raw_fit(epochs=2, accumulate=3, clip=("norm", 0.05)))


def test_a_user_loop_in_double_precision():
    rt = lk.Runtime(accelerator="cpu", precision="64-true")
    model = rt.setup(make_net())
    assert next(model.parameters()).dtype == torch.float64
    opt = rt.setup_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    for batch in rt.setup_dataloader(train_loader()):
        x, y = rt.to_device(batch)
        assert x.dtype == torch.float64 and y.dtype == torch.int64
        rt.backward(nn.functional.cross_entropy(model(x), y))
        rt.optimizer_step(opt)
        opt.zero_grad()


def test_save_and_load_through_the_runtime(tmp_path):
    rt = lk.Runtime(accelerator="cpu")
    net = make_net()
    opt = torch.optim.Adam(net.parameters())
    ce(net, next(iter(train_loader()))).backward()
    opt.step()
    path = tmp_path / "state.ckpt"
    rt.save({"net": net, "opt": opt, "step": 3}, path)

    other = make_net()
    other_opt = torch.optim.Adam(other.parameters())
    rest = rt.load(path, {"net": other, "opt": other_opt})
    assert rest == {"step": 3}
    assert_same_weights(other, net)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_unknown_precision_lists_the_available_ones():
    with pytest.raises(lk.LightkitError, match="32-true"):
        lk.Runtime(precision="float8")


# -- arguments are checked the same way in one process as in many ------------------------------


@pytest.mark.parametrize("strategy", ["single_device", "ddp"])
def test_all_reduce_refuses_an_unknown_op_in_any_process_count(strategy):
    # ddp with one device: the distributed strategy, no process group. The check must not
    # depend on either (it used to pass in one process and fail with two).
    rt = lk.Runtime(accelerator="cpu", strategy=strategy, devices=1)
    with pytest.raises(lk.ConfigError) as info:
        rt.all_reduce(torch.tensor(1.0), op="bogus")
    assert info.value.code == "bad-runtime-argument"
    assert str(info.value) == (
        "Runtime.all_reduce got op='bogus'; expected one of sum, mean, max, min."
    )
    with pytest.raises(lk.ConfigError, match=r"all_reduce\(tensor\) expects a torch.Tensor"):
        rt.all_reduce(3.0)  # type: ignore[arg-type]
    with pytest.raises(lk.ConfigError, match=r"all_gather\(tensor\) expects a torch.Tensor"):
        rt.all_gather([1.0])  # type: ignore[arg-type]
    for op in ("sum", "mean", "max", "min"):
        assert rt.all_reduce(torch.tensor(2.0), op=op).item() == 2.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda rt: rt.setup("notamodule"),
            "Runtime.setup(module) expects a torch.nn.Module, got str 'notamodule'.",
        ),
        (
            lambda rt: rt.setup(torch.optim.SGD(make_net().parameters(), lr=0.1)),
            "Runtime.setup(module) expects a torch.nn.Module, got SGD object. An optimizer "
            "goes to setup_optimizer().",
        ),
        (
            lambda rt: rt.setup_optimizer("x"),
            "Runtime.setup_optimizer(optimizer) expects a torch.optim.Optimizer, got str 'x'.",
        ),
        (
            lambda rt: rt.setup_optimizer(nn.Linear(1, 1)),
            "got Linear Linear(in_features=1, out_features=1, bias=True). A module goes to setup().",
        ),
        (
            lambda rt: rt.setup_dataloader(3),
            "Runtime.setup_dataloader(loader) expects a DataLoader or another iterable of "
            "batches (a list of batches works), got int 3.",
        ),
        (lambda rt: rt.setup_dataloader(None), "got NoneType None."),
        (lambda rt: rt.setup_dataloader("abc"), "Iterating a string gives characters"),
        (lambda rt: rt.setup_dataloader({"a": train_loader()}), "Iterating a dict gives its keys"),
        (
            lambda rt: rt.setup_dataloader(train_loader().dataset),
            "got TensorDataset object. A map-style dataset gives samples, not batches: wrap it "
            "in a DataLoader.",
        ),
        (lambda rt: rt.setup_dataloader(nn.Sequential()), "A module goes to setup()."),
        (
            lambda rt: rt.save([1, 2], "x.ckpt"),
            "Runtime.save(state, path) expects state to be a dict such as {'model': model, "
            "'optimizer': opt}, got list [1, 2].",
        ),
        (
            lambda rt: rt.save("x.ckpt", {"model": make_net()}),
            "got str 'x.ckpt'. The arguments are state, path, in that order.",
        ),
        (
            lambda rt: rt.save({"step": 1}, 5),
            "Runtime.save(state, path) expects path to be a file path (str or pathlib.Path), "
            "got int 5.",
        ),
        (
            lambda rt: rt.load({"model": make_net()}, "x.ckpt"),
            "Runtime.load(path, state) expects state to be a dict such as {'model': model, "
            "'optimizer': opt}, got str 'x.ckpt'. The arguments are path, state, in that order.",
        ),
        (lambda rt: rt.load("x.ckpt", make_net()), "got Sequential object."),
    ],
)
def test_a_wrong_argument_names_the_method_what_it_expects_and_what_it_got(
    call, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rt = lk.Runtime(accelerator="cpu")
    with pytest.raises(lk.ConfigError) as info:
        call(rt)
    assert info.value.code == "bad-runtime-argument"
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_setup_dataloader_takes_any_iterable_of_batches():
    rt = lk.Runtime(accelerator="cpu")
    batches = list(train_loader())
    assert rt.setup_dataloader(batches) is batches  # a list of ready batches
    generator = (b for b in batches)
    assert rt.setup_dataloader(generator) is generator
    loader = train_loader()
    assert rt.setup_dataloader(loader) is loader


# -- load(strict=...) ------------------------------------------------------------------------


def test_load_refuses_a_key_the_file_lacks_and_loads_nothing(tmp_path):
    rt = lk.Runtime(accelerator="cpu")
    path = tmp_path / "own.ckpt"
    rt.save({"model": make_net(), "step": 3}, path)
    model, other = make_net(), nn.Linear(1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(lk.CheckpointError) as info:
        rt.load(path, {"model": model, "modelx": other, "opt": torch.optim.SGD(model.parameters())})
    assert info.value.code == "checkpoint-missing-key"
    assert str(info.value) == (
        f"Runtime.load({str(path)!r}, state): the file has no 'modelx', 'opt'; it holds "
        f"'model', 'step'. Fix the key, or pass strict=False to load the keys it has and skip "
        f"the rest."
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_with_strict_false_skips_missing_keys_and_loads_modules_leniently(tmp_path):
    rt = lk.Runtime(accelerator="cpu")
    path = tmp_path / "own.ckpt"
    saved = make_net()
    rt.save({"model": saved, "step": 3}, path)

    model, skipped = make_net(), nn.Linear(1, 1)
    skipped_before = skipped.weight.clone()
    rest = rt.load(path, {"model": model, "modelx": skipped}, strict=False)
    assert rest == {"step": 3}
    assert_same_weights(model, saved)
    assert torch.equal(skipped.weight, skipped_before)

    # A module with a parameter the file lacks: strict refuses, strict=False loads the rest.
    bigger = nn.Sequential(*make_net(), nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="Missing key"):
        rt.load(path, {"model": bigger})
    rt.load(path, {"model": bigger}, strict=False)
    assert torch.equal(bigger[0].weight, saved[0].weight)


# -- devices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "why"),
    [
        ("x", "is not a device setting"),
        ("", "is not a device setting"),
        (2.0, "is not a device setting"),
        (True, "is not a device setting"),
        (None, "is not a device setting"),
        ([], "selects no device"),
        ("1,a", "holds something that is not an index"),
        (["0"], "holds something that is not an index"),
        ([-1], "holds a negative index"),
        ([0, 0], "names a device twice"),
        (0, "asks for no device"),
        ("0", "asks for no device"),
        (-3, "is below -1"),
    ],
    ids=repr,
)
def test_malformed_devices_name_the_value_and_the_accepted_forms(devices, why):
    with pytest.raises(lk.ConfigError) as info:
        lk.Runtime(accelerator="cpu", devices=devices)
    assert info.value.code == "bad-devices"
    assert str(info.value) == (
        f"devices={devices!r} {why}: expected 'auto', a count (1, 2, ...; -1 for all), a list "
        f"of indices ([0, 1]) or a string of them ('0,1')."
    )


@pytest.mark.parametrize(
    ("devices", "parsed"),
    [
        ("auto", "auto"),
        (" Auto ", "auto"),
        (-1, -1),
        ("-1", -1),
        (2, 2),
        (" 2 ", 2),
        ([0, 1], [0, 1]),
        ((1, 3), [1, 3]),
        ("0,1", [0, 1]),
        ("1,", [1]),
    ],
    ids=repr,
)
def test_parse_devices_accepts_every_form_lightning_takes(devices, parsed):
    from lightkit.utils.devices import parse_devices

    assert parse_devices(devices) == parsed


def test_save_holds_a_schedulers_state_and_waits_for_every_rank(tmp_path, monkeypatch):
    # As Fabric: a scheduler (anything with state_dict/load_state_dict) is saved as its
    # state and loaded in place; every rank waits for the file before going on.
    import numpy as np

    rt = lk.Runtime(accelerator="cpu")
    waited: list[int] = []
    monkeypatch.setattr(rt, "barrier", lambda *a, **k: waited.append(1))
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    rt.save({"model": net, "optimizer": opt, "scheduler": sched}, tmp_path / "s.ckpt")
    assert waited == [1]
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    rest = rt.load(tmp_path / "s.ckpt", {"optimizer": opt2, "scheduler": sched2})
    assert set(rest) == {"model"}
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == 0.125
    assert rt.clip_gradients(opt, np.float32(1.0)) is not None  # numpy numbers are numbers


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rt: rt.optimizer_step(torch.nn.Linear(1, 1)), "Runtime.optimizer_step(optimizer) expects a torch.optim.Optimizer, got Linear"),
        (lambda rt: rt.backward(3.0), "Runtime.backward(loss) expects a torch.Tensor, got float 3.0. Pass the loss tensor."),
        (lambda rt: rt.no_backward_sync(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)), "Runtime.no_backward_sync(module) expects the module setup() returned, got SGD"),
    ],
)  # fmt: skip
def test_runtime_methods_name_what_they_expect(call, message):
    with pytest.raises(lk.ConfigError) as info:
        call(lk.Runtime(accelerator="cpu"))
    assert info.value.code == "bad-runtime-argument"
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("src", [3, -1, "0"])
def test_broadcast_checks_its_source_rank_in_one_process_too(src):
    rt = lk.Runtime(accelerator="cpu")
    assert rt.broadcast({"a": 1}, src=0) == {"a": 1}
    with pytest.raises(lk.ConfigError) as info:
        rt.broadcast({"a": 1}, src=src)
    assert info.value.code == "bad-runtime-argument"
    assert f"Runtime.broadcast got src={src!r}; expected a rank, an int from 0 to 0" in str(
        info.value
    )
