"""``validate``/``test``/``predict``: what each needs, what each returns, and the modes
models run in."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.engine.engine_helpers import (
    X_VAL,
    Y_VAL,
    ce,
    make_net,
    registry,
    train_loader,
    trainer,
    val_loader,
)


def counted_model(calls: list[int]):
    def net():
        calls.append(1)
        return make_net()

    return net


@pytest.mark.parametrize(
    ("stage", "missing"),
    [
        ("fit", "@lk.training_step, @lk.configure_optimizers, @lk.train_data"),
        ("validate", "@lk.validation_step, @lk.val_data"),
        ("test", "@lk.test_step, @lk.test_data"),
        ("predict", "@lk.predict_step, @lk.predict_data"),
    ],
)
def test_each_entry_point_names_every_missing_role_before_any_compute(stage, missing):
    calls: list[int] = []
    reg = lk.Registry()
    reg.model(counted_model(calls), name="net")
    with pytest.raises(lk.SpecError, match=f"trainer.{stage}\\(\\) needs {missing}, which") as info:
        getattr(trainer(), stage)(lk.collect(reg))
    assert info.value.code == "missing-role"
    assert "(the spec has: model)" in str(info.value)
    assert calls == []  # no model was built


def test_fit_without_a_model():
    reg = lk.Registry()
    reg.train_data(train_loader)
    with pytest.raises(lk.SpecError, match=r"needs @lk.model, @lk.training_step"):
        trainer().fit(lk.collect(reg))


def test_entry_points_take_a_spec():
    with pytest.raises(lk.ConfigError, match=r"trainer.fit\(\) takes a TrainingSpec") as info:
        trainer().fit(registry())  # type: ignore[arg-type]
    assert info.value.code == "not-a-spec"


def eval_registry(record: list[tuple[str, bool, bool]]):
    def mark(stage, net):
        record.append((stage, net.training, torch.is_grad_enabled()))

    def val(net, batch):
        mark("val", net)
        lk.log("val/loss", ce(net, batch))

    def test(net, batch):
        mark("test", net)
        x, y = batch
        lk.log("test/acc", (net(x).argmax(1) == y).float().mean())

    def predict(net, batch):
        mark("predict", net)
        return net(batch[0])

    reg = registry(val=val)
    reg.test_step(test)
    reg.test_data(val_loader)
    reg.predict_step(predict)
    reg.predict_data(val_loader)
    return reg


def test_validate_test_and_predict_on_fresh_models():
    record: list[tuple[str, bool, bool]] = []
    spec = lk.collect(eval_registry(record))
    t = trainer(seed=0)
    torch.manual_seed(0)
    net = make_net().eval()
    with torch.no_grad():
        logits = torch.cat([net(x) for x, _ in val_loader()])  # batch by batch, bitwise

    validated = t.validate(spec)
    assert validated.metrics["val/loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, Y_VAL)), rel=1e-6
    )
    assert (validated.global_step, validated.epoch, validated.stopped_by) == (0, 0, None)

    tested = t.test(spec)
    accuracy = float((logits.argmax(1) == Y_VAL).float().mean())
    assert tested.metrics["test/acc"] == pytest.approx(accuracy, rel=1e-6)

    predictions = t.predict(spec)
    assert isinstance(predictions, list) and len(predictions) == 3
    assert torch.equal(torch.cat(predictions), logits)

    assert set(record) == {("val", False, False), ("test", False, False), ("predict", False, False)}


@pytest.mark.parametrize(
    "container", [list, lambda loaders: dict(zip("ab", loaders, strict=True))], ids=["list", "dict"]
)
def test_predict_with_several_loaders_returns_a_list_per_loader(container):
    reg = registry()
    reg.predict_step(lambda batch, dataloader_idx: (dataloader_idx, batch[0].shape[0]))
    reg.predict_data(
        lambda: container([val_loader(), DataLoader(TensorDataset(X_VAL[:5]), batch_size=5)])
    )
    predictions = trainer().predict(lk.collect(reg))
    assert predictions == [[(0, 8), (0, 8), (0, 4)], [(1, 5)]]


def test_train_mode_is_restored_after_validation_submodule_by_submodule():
    modes: list[tuple[bool, bool]] = []

    def train(net, batch):
        modes.append((net.training, net[1].training))
        return ce(net, batch)

    reg = registry(step=train, val=True)

    @reg.on("train_epoch_start")
    def freeze(net):
        net[1].eval()  # a submodule the user keeps in eval mode

    trainer(max_epochs=2, val_check_interval=3, num_sanity_val_steps=1).fit(lk.collect(reg))
    assert modes == [(True, False)] * 14


def test_an_error_in_validation_leaves_the_modes_as_it_found_them():
    held = make_net()  # a module the user keeps a reference to

    def val(net, batch, batch_idx):
        raise KeyError("no such column")

    reg = lk.Registry()
    reg.model(lambda: held, name="net")
    reg.train_data(train_loader)
    reg.training_step(lambda net, batch: ce(net, batch))
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    reg.validation_step(val)
    reg.val_data(val_loader)
    with pytest.raises(KeyError, match="no such column"):
        trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert [m.training for m in held.modules()] == [True] * len(list(held.modules()))


def test_evaluation_inside_fit_leaves_training_gradients_alone():
    grads: list[bool] = []

    def val(net, batch):
        grads.append(net[0].weight.requires_grad)

    result = trainer(max_epochs=1, num_sanity_val_steps=1).fit(lk.collect(registry(val=val)))
    assert result.global_step == 7
    assert all(p.requires_grad for p in result.models["net"].parameters())


def _outputs_of(net: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net.eval()(x) for x, _ in val_loader()])


def test_after_fit_validate_test_and_predict_use_the_weights_fit_ended_with():
    # As Lightning's `trainer.fit(model); trainer.test(model)`: no ckpt_path, the trained weights.
    record: list[tuple[str, bool, bool]] = []
    spec = lk.collect(eval_registry(record))
    t = trainer(seed=0, max_epochs=2, num_sanity_val_steps=0)
    fitted = t.fit(spec).models["net"]
    expected = _outputs_of(fitted)
    torch.manual_seed(0)
    assert not torch.equal(_outputs_of(make_net()), expected)  # training changed the weights

    assert torch.equal(torch.cat(t.predict(spec)), expected)
    loss = float(torch.nn.functional.cross_entropy(expected, Y_VAL))
    assert t.validate(spec).metrics["val/loss"] == pytest.approx(loss, rel=1e-6)
    accuracy = float((expected.argmax(1) == Y_VAL).float().mean())
    assert t.test(spec).metrics["test/acc"] == pytest.approx(accuracy, rel=1e-6)
    # The trained modules themselves are not touched by the evaluation runs.
    assert torch.equal(_outputs_of(fitted), expected)


def test_after_an_interrupted_fit_evaluation_starts_where_it_stopped():
    # A LightningModule keeps what it learned when Ctrl-C stops fit; so does the trainer.
    record: list[tuple[str, bool, bool]] = []
    reg = eval_registry(record)
    stopped: dict[str, Any] = {}

    def interrupt(net, ctx):
        if ctx.global_step == 5:
            stopped["net"] = copy.deepcopy(net)
            raise KeyboardInterrupt

    reg.on("train_batch_start")(interrupt)
    spec = lk.collect(reg)
    t = trainer(seed=0, max_epochs=3, num_sanity_val_steps=0)
    with pytest.raises(KeyboardInterrupt):
        t.fit(spec)
    expected = _outputs_of(stopped["net"])
    torch.manual_seed(0)
    assert not torch.equal(_outputs_of(make_net()), expected)
    after = t.validate(spec)
    assert (after.global_step, after.epoch) == (5, 0)
    loss = float(torch.nn.functional.cross_entropy(expected, Y_VAL))
    assert after.metrics["val/loss"] == pytest.approx(loss, rel=1e-6)
    assert torch.equal(torch.cat(t.predict(spec)), expected)


def test_evaluation_reports_the_step_its_weights_come_from(tmp_path):
    # Lightning's trainer.global_step after fit stays the fit's during validate; a checkpoint
    # judged later is at the step it was saved at. Fresh models are at step 0.
    record: list[tuple[str, bool, bool]] = []
    spec = lk.collect(eval_registry(record))
    t = trainer(
        seed=0,
        max_epochs=2,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        enable_checkpointing=True,
    )
    fit = t.fit(spec)
    assert (fit.global_step, fit.epoch) == (14, 2)
    after = t.validate(spec)
    assert (after.global_step, after.epoch) == (14, 2)
    t2 = trainer(default_root_dir=tmp_path, logger=lk.CSVLogger())
    judged = t2.validate(spec, ckpt_path=fit.last_checkpoint)
    assert (judged.global_step, judged.epoch) == (14, 2)
    row = (judged.log_dir / "metrics.csv").read_text().splitlines()[1]
    # At the weights' step, as Lightning writes a validate after fit (fit's own validation
    # rows sit at the step of the batch that triggered them, 13).
    assert row.startswith("14,") and row.endswith(",2")
    fresh = trainer().validate(spec)
    assert (fresh.global_step, fresh.epoch) == (0, 0)
    # A weights-only checkpoint knows its step too.
    light = trainer(
        seed=0, max_epochs=1, default_root_dir=tmp_path / "w",
        callbacks=[lk.ModelCheckpoint(save_weights_only=True)],
    ).fit(spec)  # fmt: skip
    judged = trainer().validate(spec, ckpt_path=light.best_checkpoint)
    assert (judged.global_step, judged.epoch) == (7, 1)


def test_other_hyperparameters_or_another_trainer_build_fresh_models():
    def sgd(net, lr: float = 0.5):
        return torch.optim.SGD(net.parameters(), lr=lr)

    reg = registry(optim=sgd)
    reg.predict_step(lambda net, batch: net(batch[0]))
    reg.predict_data(val_loader)
    spec = lk.collect(reg)
    t = trainer(seed=0, max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    t.fit(spec)
    torch.manual_seed(0)
    fresh = _outputs_of(make_net())
    assert torch.equal(torch.cat(t.predict(spec.with_hparams(lr=0.1))), fresh)
    assert torch.equal(torch.cat(trainer(seed=0).predict(spec)), fresh)


def test_a_data_function_returning_a_dataset_is_named():
    # A map-style dataset gives samples, not batches: an error naming the function.
    def data():
        return TensorDataset(X_VAL, Y_VAL)

    with pytest.raises(lk.ConfigError) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(train_data=data)))
    assert info.value.code == "bad-data"
    message = str(info.value)
    assert message.startswith("test_a_data_function_returning_a_dataset_is_named.<locals>.data() ")
    assert " returned something that is not batches: TensorDataset object; expected a " in message
    assert "wrap it in a DataLoader" in message
    assert "Runtime." not in message  # the user called no Runtime method


def net_registry(net, step=None, val: bool = False) -> lk.Registry:
    """A registry around the model function ``net``."""
    reg = lk.Registry()
    reg.model(net)
    reg.train_data(lambda: train_loader())
    reg.training_step(step or (lambda net, batch: ce(net, batch)))
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    if val:
        reg.validation_step(lambda net, batch: lk.log("val/loss", ce(net, batch)))
        reg.val_data(lambda: val_loader())
    return reg


def frozen_registry(seen: list[tuple[bool, bool, bool]], *, freeze_in_hook: bool = False):
    """A model with a dropout frozen in eval mode, by its @model function or by a hook."""

    def net():
        model = torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            torch.nn.Dropout(0.5),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(16, 3),
        )
        if not freeze_in_hook:
            model[1].eval()
        return model

    def step(net, batch):
        seen.append((net.training, net[1].training, net[2].training))
        return ce(net, batch)

    reg = net_registry(net, step, val=True)
    if freeze_in_hook:
        reg.on("fit_start")(lambda net: net[1].eval())
    return reg


@pytest.mark.parametrize("freeze_in_hook", [False, True])
def test_a_submodule_frozen_in_eval_mode_stays_so_through_fit(freeze_in_hook):
    # As in Lightning: fit does not call train() on the models, and validation (the sanity
    # check and each epoch's) gives every submodule its mode back.
    seen: list[tuple[bool, bool, bool]] = []
    trainer(seed=0, max_epochs=2).fit(
        lk.collect(frozen_registry(seen, freeze_in_hook=freeze_in_hook))
    )
    assert len(seen) == 14 and set(seen) == {(True, False, True)}


def test_a_model_in_eval_mode_at_the_start_of_training_warns():
    def net():
        return make_net().eval()

    with pytest.warns(lk.LightkitWarning, match=r"model 'net' \(built by .*net\(\) at") as seen:
        trainer(seed=0, max_epochs=1).fit(lk.collect(net_registry(net)))
    message = str(seen[0].message)
    assert "is in eval mode as training starts" in message
    # The filter the message offers silences it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="model 'net'", category=lk.LightkitWarning)
        assert """warnings.filterwarnings('ignore', message="model 'net'", """ in message
        trainer(seed=0, max_epochs=1).fit(lk.collect(net_registry(net)))


def test_a_notebooks_runs_are_named_after_its_file_where_jupyter_says_it(monkeypatch):
    from lightkit.engine.engine import _main_name

    namespace: dict[str, Any] = {}
    exec(compile("def step(net, batch): pass", "/tmp/ipykernel_4242/123456.py", "exec"), namespace)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert _main_name(namespace["step"]) == "default"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/work/sweep 3.ipynb")
    assert _main_name(namespace["step"]) == "sweep 3"
    assert _main_name(test_a_notebooks_runs_are_named_after_its_file_where_jupyter_says_it) == (
        "test_entry_points"  # a script's function: its file's name
    )


@pytest.mark.parametrize("entry", ["fit", "predict"])
def test_a_loader_in_ckpt_paths_place_is_refused_before_any_model_is_built(entry):
    # Lightning's trainer.fit(model, train_loader): the second argument here is ckpt_path.
    built: list[int] = []

    def net():
        built.append(1)
        return make_net()

    reg = eval_registry([])
    spec = lk.collect(net_registry(net) if entry == "fit" else reg)
    with pytest.raises(lk.CheckpointError) as info:
        getattr(trainer(max_epochs=1), entry)(spec, train_loader())
    assert info.value.code == "not-a-checkpoint"
    assert f"trainer.{entry}(spec, ckpt_path=...) takes a checkpoint" in str(info.value)
    assert "got DataLoader. Data comes from the spec's @lk." in str(info.value)
    assert built == []


def test_what_splitting_a_loader_finds_names_the_data_function(monkeypatch):
    # Under DDP the split warns from inside the rank (where no frame is the user's): the
    # engine names each loader's data function, which the warnings then carry.
    from types import SimpleNamespace

    from lightkit.runtime.runtime import Runtime
    from lightkit.strategies.data_split import distribute

    names: list[str | None] = []
    split = Runtime.setup_dataloader

    def record(self, loader, *, shuffle_default=True, name=None):
        names.append(name)
        return split(self, loader, shuffle_default=shuffle_default, name=name)

    monkeypatch.setattr(Runtime, "setup_dataloader", record)
    trainer().validate(lk.collect(eval_registry([])))
    assert len(names) == 1 and names[0].startswith("registry.<locals>.vdata() at tests/engine/")
    group = SimpleNamespace(world_size=2, rank=0, active=True, seed=0)
    with pytest.warns(lk.LightkitWarning) as seen:
        odd = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(11)))
        distribute(group, odd, evaluation=True, name=names[0])  # type: ignore[arg-type]
    assert str(seen[0].message).startswith(f"{names[0]}: 11 evaluation samples over 2 ranks")


def test_a_script_that_imports_a_shared_step_is_named_after_itself(tmp_path):
    # a.py and b.py import one training step from a shared module: each keeps its own runs,
    # named after the module that defines most of the spec's functions.
    from lightkit.engine.engine import run_name
    from tests.engine.engine_helpers import ce as shared_step

    script = tmp_path / "a.py"
    script.write_text(
        "def net():\n    pass\n\ndef data():\n    pass\n\ndef optim(net):\n    pass\n"
    )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    reg = lk.Registry()
    reg.model(namespace["net"])
    reg.train_data(namespace["data"])
    reg.configure_optimizers(namespace["optim"])
    reg.training_step(shared_step)
    assert run_name(lk.collect(reg)) == "a"
    assert run_name(lk.collect(registry())) == "engine_helpers"
