"""The order events fire in (as ``lightkit/engine/loops.py``'s docstring states it), and what
hooks receive."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import lightkit as lk
from lightkit.spec.roles import EVENTS
from tests.engine.engine_helpers import ce, make_net, registry, train_loader, trainer, val_loader


def record_everything(reg: lk.Registry, seq: list[str]) -> lk.Callback:
    """A function hook on every event of ``reg`` and a callback overriding every method; both
    append the event's name (``fn:`` / ``cb:``) to ``seq``."""

    def hook_for(event: str):
        def hook(ctx):
            seq.append(f"fn:{event}")

        hook.__qualname__ = hook.__name__ = f"on_{event}"
        return hook

    def method_for(event: str):
        def method(self, ctx):
            seq.append(f"cb:{event}")

        return method

    for event in EVENTS:
        reg.on(event)(hook_for(event))
    recorder = type("Recorder", (lk.Callback,), {f"on_{e}": method_for(e) for e in EVENTS})
    return recorder()


def both(*events: str) -> list[str]:
    return [f"{who}:{e}" for e in events for who in ("fn", "cb")]


def validation(batches: int) -> list[str]:
    return both(
        "validation_epoch_start",
        *(["validation_batch_start", "validation_batch_end"] * batches),
        "validation_epoch_end",
    )


TRAIN_BATCH = both(
    "train_batch_start",
    "before_backward",
    "after_backward",
    "before_optimizer_step",
    "train_batch_end",
)


def test_fit_event_order_is_the_documented_one():
    seq: list[str] = []
    reg = registry(val=True)
    callback = record_everything(reg, seq)
    trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        callbacks=[callback],
    ).fit(lk.collect(reg))
    epoch = both("train_epoch_start") + TRAIN_BATCH * 2 + validation(1) + both("train_epoch_end")
    expected = (
        both("fit_start")
        + both("sanity_check_start")
        + validation(1)
        + both("sanity_check_end")
        + both("train_start")
        + epoch * 2
        + both("train_end", "fit_end")
    )
    assert seq == expected


def test_train_start_and_end_fire_once_a_fit_and_not_when_no_epoch_can_run(tmp_path):
    # Lightning's on_train_start / on_train_end: after the sanity check, in a resumed fit
    # too, and not at all when the fit loop is skipped (max_steps reached, no batches).
    seq: list[str] = []
    reg = registry()
    flags = {"default_root_dir": tmp_path, "enable_checkpointing": True, "max_steps": 4}
    trainer(**flags, callbacks=[record_everything(reg, seq)]).fit(lk.collect(reg))
    outer = [s for s in seq if "train_start" in s or "train_end" in s or "fit_" in s]
    assert outer == both("fit_start", "train_start", "train_end", "fit_end")
    seq.clear()
    more = {**flags, "max_steps": 6}
    trainer(**more, callbacks=[record_everything(reg, seq)]).fit(lk.collect(reg), ckpt_path="last")
    assert seq.count("fn:train_start") == seq.count("cb:train_end") == 1
    assert seq.index("fn:train_start") < seq.index("fn:train_batch_start")
    seq.clear()  # resumed at max_steps: nothing to train
    trainer(**more, callbacks=[record_everything(reg, seq)]).fit(lk.collect(reg), ckpt_path="last")
    assert both("fit_start", "fit_end") == [s for s in seq if "_start" in s or "_end" in s]
    seq.clear()
    trainer(limit_train_batches=0, callbacks=[record_everything(reg, seq)]).fit(lk.collect(reg))
    assert "fn:train_start" not in seq and "cb:train_end" not in seq
    # Nor when the epochs are done (a fit resumed at max_epochs, max_epochs=0), or a stop was
    # asked before the first (in fit_start).
    epochs = {"default_root_dir": tmp_path / "e", "enable_checkpointing": True, "max_epochs": 1}
    trainer(**epochs).fit(lk.collect(reg))
    seq.clear()
    trainer(**epochs, callbacks=[record_everything(reg, seq)]).fit(
        lk.collect(reg), ckpt_path="last"
    )
    trainer(max_epochs=0, callbacks=[record_everything(reg, seq)]).fit(lk.collect(reg))
    stopper = registry()
    stopper.on("fit_start")(lambda ctx: setattr(ctx, "should_stop", True))
    trainer(max_epochs=2, callbacks=[record_everything(stopper, seq)]).fit(lk.collect(stopper))
    assert [s for s in seq if "train_" in s] == []
    assert seq.count("fn:fit_start") == 3


def test_the_optimizer_events_fire_when_a_window_ends():
    seq: list[str] = []
    reg = registry()
    callback = record_everything(reg, seq)
    trainer(
        max_epochs=1, limit_train_batches=3, accumulate_grad_batches=2, callbacks=[callback]
    ).fit(lk.collect(reg))
    inside_window = both(
        "train_batch_start", "before_backward", "after_backward", "train_batch_end"
    )
    expected = (
        both("fit_start", "train_start", "train_epoch_start")
        + inside_window
        + TRAIN_BATCH
        + TRAIN_BATCH  # the last, partial window still steps
        + both("train_epoch_end", "train_end", "fit_end")
    )
    assert seq == expected


def test_mid_epoch_validation_sits_after_train_batch_end():
    seq: list[str] = []
    reg = registry(val=True)
    record_everything(reg, seq)
    trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        val_check_interval=2,
    ).fit(lk.collect(reg))
    fn_only = [s[3:] for s in seq if s.startswith("fn:")]
    batch = [
        "train_batch_start",
        "before_backward",
        "after_backward",
        "before_optimizer_step",
        "train_batch_end",
    ]
    val = ["validation_epoch_start", "validation_batch_start", "validation_batch_end"]
    val += ["validation_epoch_end"]
    assert fn_only == (
        ["fit_start", "train_start", "train_epoch_start"]
        + (batch * 2 + val) * 2
        + ["train_epoch_end", "train_end", "fit_end"]
    )


def test_manual_optimization_event_order():
    seq: list[str] = []

    def train(net, batch, optimizer, ctx):
        optimizer.zero_grad()
        ctx.backward(ce(net, batch))
        optimizer.step()

    reg = registry(step=train, manual=True)
    record_everything(reg, seq)
    trainer(max_epochs=1, limit_train_batches=2).fit(lk.collect(reg))
    fn_only = [s[3:] for s in seq if s.startswith("fn:")]
    # ctx.backward fires the backward events (as manual_backward), the step's own
    # opt.step() before_optimizer_step.
    per_batch = ["before_backward", "after_backward", "before_optimizer_step"]
    assert fn_only == (
        ["fit_start", "train_start", "train_epoch_start"]
        + ["train_batch_start", *per_batch, "train_batch_end"] * 2
        + ["train_epoch_end", "train_end", "fit_end"]
    )


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_event_order(stage):
    seq: list[str] = []
    reg = registry(val=True)
    reg.test_step(lambda net, batch: None)
    reg.test_data(val_loader)
    reg.predict_step(lambda net, batch: 0)
    reg.predict_data(val_loader)
    callback = record_everything(reg, seq)
    getattr(
        trainer(
            limit_val_batches=2, limit_test_batches=2, limit_predict_batches=2, callbacks=[callback]
        ),
        stage,
    )(lk.collect(reg))
    prefix = "validation" if stage == "validate" else stage
    assert seq == both(
        f"{prefix}_epoch_start",
        *([f"{prefix}_batch_start", f"{prefix}_batch_end"] * 2),
        f"{prefix}_epoch_end",
    )


def test_hooks_receive_what_their_event_supplies():
    got: dict[str, list[Any]] = {}
    made: dict[str, Any] = {}

    def note(key: str, value: Any) -> None:
        got.setdefault(key, []).append(value)

    def optim(net):
        made["opt"] = torch.optim.SGD(net.parameters(), lr=0.1)
        return made["opt"]

    def train(net, batch, batch_idx):
        loss = ce(net, batch)
        out = {"loss": loss, "idx": batch_idx}
        made.setdefault("outputs", []).append(out)
        made.setdefault("batches", []).append(batch)
        return out

    def val(net, batch, batch_idx, dataloader_idx):
        return ("val", dataloader_idx, batch_idx)

    reg = registry(optim=optim, step=train, val=val)

    @reg.on("train_batch_start")
    def start(batch, batch_idx, net, ctx, hparams):
        note("start", (batch, batch_idx, net, ctx.batch_idx, hparams))

    @reg.on("before_backward")
    def before(loss, batch_idx):
        note("loss", loss.detach().clone())

    @reg.on("after_backward")
    def after(net):
        note("grad", net[0].weight.grad is not None)

    @reg.on("before_optimizer_step")
    def before_step(optimizer, optimizers, ctx):
        note("opt", (optimizer, optimizers, ctx.global_step))

    @reg.on("train_batch_end")
    def end(outputs, batch_idx):
        note("outputs", outputs)

    @reg.on("validation_batch_end")
    def vend(outputs, batch_idx, dataloader_idx, batch):
        note("val", outputs)

    trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        accumulate_grad_batches=2,
    ).fit(lk.collect(reg))
    net_seen = got["start"][0][2]
    assert [(i, ci) for _, i, _, ci, _ in got["start"]] == [(0, 0), (1, 1)]
    for (batch, *_), mine in zip(got["start"], made["batches"], strict=True):
        assert batch is mine
    assert isinstance(net_seen, torch.nn.Module)
    assert got["start"][0][4] is not None
    expected_losses = [o["loss"].detach() / 2 for o in made["outputs"]]  # divided by k = 2
    assert [torch.equal(a, b) for a, b in zip(got["loss"], expected_losses, strict=True)] == [
        True,
        True,
    ]
    assert got["grad"] == [True, True]
    assert got["opt"] == [(made["opt"], [made["opt"]], 0)]
    # outputs: what the step returned, its tensors detached (keeping them keeps no graph).
    assert [o["idx"] for o in got["outputs"]] == [o["idx"] for o in made["outputs"]]
    for seen, mine in zip(got["outputs"], made["outputs"], strict=True):
        assert mine["loss"].grad_fn is not None and seen["loss"].grad_fn is None
        assert torch.equal(seen["loss"], mine["loss"].detach())
    assert got["val"] == [("val", 0, 0), ("val", 0, 1)]


def test_outputs_are_detached_only_for_listeners_that_take_them(monkeypatch):
    # Detaching allocates a tensor per batch: a train_batch_end listener that does not ask
    # for `outputs` (the progress bar's) must not pay for it, one that asks still gets them.
    import lightkit.engine.loops as loops

    calls: list[Any] = []
    real = loops.detached
    monkeypatch.setattr(loops, "detached", lambda out: calls.append(out) or real(out))

    class Counter(lk.Callback):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_train_batch_end(self, batch_idx):
            self.seen.append(batch_idx)

    counter = Counter()
    trainer(max_epochs=1, limit_train_batches=3, callbacks=[counter]).fit(lk.collect(registry()))
    assert counter.seen == [0, 1, 2]
    assert calls == []

    reg = registry()
    got: list[Any] = []

    @reg.on("train_batch_end")
    def end(outputs):
        got.append(outputs)

    trainer(max_epochs=1, limit_train_batches=3, callbacks=[Counter()]).fit(lk.collect(reg))
    assert len(calls) == 3
    assert [o.grad_fn for o in got] == [None, None, None]
    assert all(o.dim() == 0 and torch.isfinite(o) for o in got)


def test_exception_hooks_see_the_error_that_then_propagates():
    seen: list[BaseException] = []

    class Boom(Exception):
        pass

    def train(net, batch, batch_idx):
        if batch_idx == 2:
            raise Boom("step 2 failed")
        return ce(net, batch)

    reg = registry(step=train)

    @reg.on("exception")
    def on_error(exception, ctx):
        seen.append(exception)

    class Watch(lk.Callback):
        def on_exception(self, exception):
            seen.append(exception)

    with pytest.raises(Boom, match=r"^step 2 failed$") as info:
        trainer(max_epochs=1, callbacks=[Watch()]).fit(lk.collect(reg))
    assert seen == [info.value, info.value]


def test_a_failing_exception_hook_does_not_mask_the_error():
    def train(net, batch):
        raise KeyError("mine")

    reg = registry(step=train)

    @reg.on("exception")
    def on_error(exception):
        raise RuntimeError("hook failed")

    with pytest.warns(UserWarning, match="an exception hook raised"):
        with pytest.raises(KeyError, match="mine"):
            trainer(max_epochs=1).fit(lk.collect(reg))


def setup_registry(failing: str) -> lk.Registry:
    """The helper's pieces, with the set-up function ``failing`` raising."""

    def fails():
        raise RuntimeError(f"{failing} failed")

    pieces = {
        "model": make_net,
        "configure_optimizers": lambda net: torch.optim.SGD(net.parameters(), lr=0.1),
        "train_data": train_loader,
    }
    reg = lk.Registry()
    reg.model(fails if failing == "model" else pieces["model"], name="net")
    reg.configure_optimizers(
        fails if failing == "configure_optimizers" else pieces["configure_optimizers"]
    )
    reg.train_data(fails if failing == "train_data" else pieces["train_data"])
    reg.training_step(ce)
    return reg


@pytest.mark.parametrize("failing", ["model", "configure_optimizers", "train_data"])
def test_exception_hooks_fire_when_set_up_fails(failing):
    # A @model, configure_optimizers or data function that raises is an error of the run too.
    seen: list[BaseException] = []
    reg = setup_registry(failing)

    @reg.on("exception")
    def on_error(exception, ctx, hparams):
        seen.append(exception)

    with pytest.raises(RuntimeError, match=f"^{failing} failed$") as info:
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert seen == [info.value]


def test_an_exception_hook_asking_for_a_model_never_built_is_skipped_with_a_warning():
    seen: list[BaseException] = []
    reg = setup_registry("model")

    @reg.on("exception")
    def on_error(exception, net):
        seen.append(exception)

    with (
        pytest.warns(UserWarning, match=r"on_error\(exception, net\) at .* not called: it asks "),
        pytest.raises(RuntimeError, match=r"^model failed$"),
    ):
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert seen == []
