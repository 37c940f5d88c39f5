"""What a training step may return, what a model function must return, and user errors."""

from __future__ import annotations

import pytest
import torch

import lightkit as lk
from tests.engine.engine_helpers import (
    assert_same_weights,
    ce,
    make_net,
    raw_fit,
    registry,
    train_loader,
    trainer,
    val_loader,
)


def fit_with_step(step) -> lk.Result:
    return trainer(max_epochs=1, seed=0).fit(lk.collect(registry(step=step)))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda loss: loss,
        lambda loss: {"loss": loss, "extra": 1},
        lambda loss: loss.reshape(1),  # one element counts as a scalar
    ],
    ids=["tensor", "dict", "one-element"],
)
def test_accepted_outputs_train_the_same(wrap):
    def train(net, batch):
        return wrap(ce(net, batch))

    result = fit_with_step(train)
    assert result.global_step == 7
    assert_same_weights(result.models["net"], raw_fit(epochs=1))


def test_none_skips_the_batch():
    def train(net, batch, batch_idx):
        return None if batch_idx % 2 else ce(net, batch)

    result = fit_with_step(train)
    assert result.global_step == 4  # batches 0, 2, 4, 6


@pytest.mark.parametrize("skipped", [{1}, {0, 1}, {6}])
def test_a_window_ending_in_none_steps_what_its_other_batches_accumulated(skipped):
    # accumulate_grad_batches=2 over 7 batches: windows (0, 1), (2, 3), (4, 5), (6). A window
    # steps what its batches that returned a loss accumulated (as Lightning does), nothing
    # leaks into the next one, and a window of None alone takes no step.
    def train(net, batch, batch_idx):
        return None if batch_idx in skipped else ce(net, batch)

    result = trainer(max_epochs=1, seed=0, accumulate_grad_batches=2).fit(
        lk.collect(registry(step=train))
    )
    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    steps = 0
    for i, batch in enumerate(train_loader()):
        if i not in skipped:
            (ce(net, batch) / 2).backward()
        if (i % 2 == 1 or i == 6) and any(p.grad is not None for p in net.parameters()):
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
    assert result.global_step == steps == 4 - (skipped == {0, 1}) - (skipped == {6})
    assert_same_weights(result.models["net"], net)


def test_none_everywhere_never_steps():
    torch.manual_seed(0)
    untouched = make_net()
    with pytest.warns(
        lk.LightkitWarning, match="returned None for every batch of the first"
    ) as seen:
        result = fit_with_step(lambda net, batch: None)
    assert [w.message.code for w in seen] == ["nothing-trained"]
    assert all("lightkit/engine" not in w.filename for w in seen)  # the user's line
    assert result.global_step == 0
    assert_same_weights(result.models["net"], untouched)


@pytest.mark.parametrize(
    ("output", "problem", "fix"),
    [
        (lambda loss, logits: logits, r"returned a tensor of shape \(8, 3\)", "Reduce the loss to one number"),
        (lambda loss, logits: {"logits": logits, "aux": 1}, "a dict without a 'loss' key", "Put the loss under 'loss'."),
        (lambda loss, logits: {"log": {"l": loss}}, "a dict without a 'loss' key", "log values with lk.log (Lightning 1.x's 'log' key is gone)."),
        (lambda loss, logits: "done", "returned str 'done'", "Return the loss tensor."),
        (lambda loss, logits: [loss], "returned a list of 1", "Return {'loss': loss, ...}"),
        (lambda loss, logits: (loss, logits), "returned a tuple of 2", "to pass other values to train_batch_end."),
        (lambda loss, logits: loss.item(), "returned the number ", "`.item()` cuts it from the graph."),
        (lambda loss, logits: {"loss": logits}, r"returned a tensor of shape \(8, 3\)", "Reduce"),
    ],
    ids=["non-scalar", "dict-without-loss", "log-dict", "string", "list", "tuple", "item", "dict-non-scalar"],
)  # fmt: skip
def test_bad_outputs_are_clear_errors(output, problem, fix):
    def train(net, batch):
        x, y = batch
        logits = net(x)
        return output(torch.nn.functional.cross_entropy(logits, y), logits)

    with pytest.raises(lk.StepError, match=problem) as info:
        fit_with_step(train)
    message = str(info.value)
    assert info.value.code == "bad-step-output"
    assert "train(net, batch) at tests/engine/test_step_output.py:" in message.replace("\\", "/")
    assert "expected a scalar loss tensor, a dict with a 'loss' key, or None" in message
    assert fix in message


def test_dict_without_loss_lists_its_keys():
    with pytest.raises(lk.StepError, match=r"\(keys: aux, logits\)"):
        fit_with_step(lambda net, batch: {"logits": 1, "aux": 2})


def test_a_model_function_must_return_a_module():
    def net():
        return "not a module"

    reg = lk.Registry()
    reg.model(net)
    reg.train_data(lambda: None)
    reg.training_step(lambda net, batch: None)
    reg.configure_optimizers(lambda net: None)
    with pytest.raises(lk.StepError, match="returned str; a @model function must return") as info:
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert info.value.code == "bad-model"
    assert "net() at tests/engine/test_step_output.py:" in str(info.value).replace("\\", "/")


class UserError(Exception):
    pass


@pytest.mark.parametrize("where", ["model", "data", "optim", "step", "val", "hook"])
def test_the_users_own_exception_propagates_unchanged(where):
    error = UserError(f"broken in {where}")

    def hook(ctx):
        raise error

    def net():
        if where == "model":
            raise error
        return make_net()

    def data():
        if where == "data":
            raise error
        return train_loader()

    def optim(net):
        if where == "optim":
            raise error
        return torch.optim.SGD(net.parameters(), lr=0.1)

    def train(net, batch, batch_idx):
        if where == "step" and batch_idx == 3:
            raise error
        return ce(net, batch)

    def val(net, batch):
        if where == "val":
            raise error

    reg = lk.Registry()
    reg.model(net)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    reg.validation_step(val)
    reg.val_data(val_loader)
    if where == "hook":
        reg.on("train_epoch_end")(hook)
    with pytest.raises(UserError) as info:
        trainer(max_epochs=1, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert info.value is error
    assert str(info.value) == f"broken in {where}"


def test_the_run_context_is_released_after_an_error():
    with pytest.raises(ZeroDivisionError):
        fit_with_step(lambda net, batch: 1 / 0)
    with pytest.warns(lk.LightkitWarning, match="outside a run"):
        lk.log("x", 1.0)


def test_a_step_that_never_returns_a_loss_warns_after_the_first_epoch():
    # Forgetting `return loss` trains nothing; None is a legal "skip this batch", so a whole
    # epoch of it is said once, not raised.
    def train(net, batch):
        lk.log("train/loss", ce(net, batch))

    with pytest.warns(UserWarning, match=r"returned None for every batch of the first epoch"):
        result = trainer(max_epochs=2).fit(lk.collect(registry(step=train)))
    assert result.global_step == 0


@pytest.mark.parametrize(
    "flags", [{}, {"callbacks": [lk.LearningRateMonitor()]}], ids=["plain-epoch", "general-loop"]
)
def test_a_detached_loss_names_the_step_and_the_fix(flags):
    def train(net, batch):
        return ce(net, batch).detach()

    with pytest.raises(lk.StepError) as info:
        trainer(max_epochs=1, **flags).fit(lk.collect(registry(step=train)))
    assert info.value.code == "loss-without-graph"
    assert str(info.value).startswith(
        "test_a_detached_loss_names_the_step_and_the_fix.<locals>.train(net, batch) at "
    )
    assert "returned a loss with no graph to backpropagate" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # autograd's own error, kept


def test_a_step_that_backpropagates_itself_in_automatic_mode_is_told_the_fix():
    # A Lightning manual-optimization step pasted into an automatic one.
    def train(net, batch, optimizer):
        loss = ce(net, batch)
        loss.backward()
        optimizer.step()
        return loss

    with pytest.raises(lk.StepError) as info:
        trainer(max_epochs=1).fit(lk.collect(registry(step=train)))
    assert info.value.code == "step-backpropagated"
    assert "returned a loss whose graph was already backpropagated" in str(info.value)
    assert "@lk.training_step(manual=True)" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # autograd's own error, kept
