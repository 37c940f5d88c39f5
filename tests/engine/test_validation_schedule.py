"""When validation runs: per epoch, mid-epoch, every n epochs, and the sanity check."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.engine.engine_helpers import (
    X_VAL,
    Y_VAL,
    assert_same_weights,
    ce,
    make_net,
    raw_fit,
    registry,
    train_loader,
    trainer,
    val_loader,
)

# 7 training batches per epoch; 3 validation batches (20 samples in batches of 8).


def recording_registry(seen: list[tuple[int, int, int]], **kwargs):
    """Validation records (epoch, global_step, batch_idx) of every batch it runs."""

    def val(net, batch, batch_idx, ctx):
        seen.append((ctx.epoch, ctx.global_step, batch_idx))
        lk.log("val/loss", ce(net, batch))

    return registry(val=val, **kwargs)


def validations(seen: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(epoch, global_step) at the start of each validation run."""
    return [(e, s) for e, s, b in seen if b == 0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, [(0, 7), (1, 14)]),
        ({"val_check_interval": 3}, [(0, 3), (0, 6), (1, 10), (1, 13)]),
        ({"val_check_interval": 0.5}, [(0, 3), (0, 6), (1, 10), (1, 13)]),  # int(7 * 0.5)
        ({"val_check_interval": 1.0}, [(0, 7), (1, 14)]),
        ({"val_check_interval": 7}, [(0, 7), (1, 14)]),
        # check_val_every_n_epoch=None: the interval counts batches across epochs.
        ({"val_check_interval": 5, "check_val_every_n_epoch": None}, [(0, 5), (1, 10)]),
    ],
    ids=["default", "every-3", "half-epoch", "fraction-1", "every-7", "across-epochs"],
)
def test_validation_timing(flags, expected):
    seen: list[tuple[int, int, int]] = []
    trainer(max_epochs=2, num_sanity_val_steps=0, **flags).fit(lk.collect(recording_registry(seen)))
    assert validations(seen) == expected
    assert len(seen) == 3 * len(expected)  # every validation runs all 3 batches


def test_check_val_every_n_epoch():
    seen: list[tuple[int, int, int]] = []
    reg = recording_registry(seen)
    trainer(max_epochs=5, num_sanity_val_steps=0, check_val_every_n_epoch=2).fit(lk.collect(reg))
    assert validations(seen) == [(1, 14), (3, 28)]


def test_validation_with_accumulation_counts_batches_not_steps():
    seen: list[tuple[int, int, int]] = []
    reg = recording_registry(seen)
    trainer(
        max_epochs=1, num_sanity_val_steps=0, accumulate_grad_batches=2, val_check_interval=4
    ).fit(lk.collect(reg))
    assert validations(seen) == [(0, 2)]  # after batch 4: two optimizer steps


@pytest.mark.parametrize(("sanity", "batches"), [(0, 0), (1, 1), (2, 2), (5, 3), (-1, 3)])
def test_sanity_check_runs_num_sanity_val_steps_batches(sanity, batches):
    seen: list[tuple[int, int, int]] = []
    reg = recording_registry(seen)
    result = trainer(max_epochs=1, num_sanity_val_steps=sanity).fit(lk.collect(reg))
    before_training = [b for e, s, b in seen[: len(seen) - 3]]
    assert before_training == list(range(batches))
    assert all(s == 0 for e, s, b in seen[:batches])
    assert result.global_step == 7


def test_sanity_check_metrics_are_seen_by_hooks_then_dropped():
    logged: list[dict[str, float]] = []
    reg = registry(val=True)

    @reg.on("validation_epoch_end")
    def read(ctx):
        logged.append(ctx.metrics)

    @reg.on("sanity_check_end")
    def after(ctx):
        logged.append(ctx.metrics)

    result = trainer(max_epochs=1, num_sanity_val_steps=2).fit(lk.collect(reg))
    sanity, after_sanity, real = logged
    assert set(sanity) == {"val/loss"}
    assert after_sanity == {}
    assert result.metrics["val/loss"] == real["val/loss"] != sanity["val/loss"]

    logged.clear()
    result = trainer(max_steps=3, num_sanity_val_steps=2).fit(lk.collect(reg))
    assert len(logged) == 2  # no validation after the sanity check
    assert "val/loss" not in result.metrics


def noisy_registry(sanity_draws: list[int]):
    """Validation that draws from the global generator: a shuffled loader and torch.rand."""

    def val(net, batch):
        x, y = batch
        x = x + 0.01 * torch.rand(x.shape)
        sanity_draws.append(1)
        lk.log("val/loss", nn.functional.cross_entropy(net(x), y))

    def vdata():
        return DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8, shuffle=True)

    return registry(val=val, val_data=vdata)


def test_sanity_check_does_not_shift_the_random_stream():
    with_sanity: list[int] = []
    without: list[int] = []
    a = trainer(max_epochs=3, seed=0, num_sanity_val_steps=2).fit(
        lk.collect(noisy_registry(with_sanity))
    )
    b = trainer(max_epochs=3, seed=0, num_sanity_val_steps=0).fit(
        lk.collect(noisy_registry(without))
    )
    assert len(with_sanity) == len(without) + 2  # the sanity check did run, and drew
    assert_same_weights(a.models["net"], b.models["net"])
    assert a.metrics["val/loss"] == b.metrics["val/loss"]


def test_validation_draws_like_a_hand_written_loop():
    """Validation is not isolated from the random generators: it draws what the same
    hand-written loop draws, so training after it matches that loop."""
    result = trainer(max_epochs=3, seed=0, num_sanity_val_steps=0).fit(
        lk.collect(noisy_registry([]))
    )

    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = train_loader()
    vloader = DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=8, shuffle=True)
    for _ in range(3):
        for batch in loader:
            ce(net, batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        net.eval()
        with torch.inference_mode():
            for x, _y in vloader:
                net(x + 0.01 * torch.rand(x.shape))
        net.train()
    assert_same_weights(result.models["net"], net)
    # ...and differs from training without the validation's draws.
    plain = raw_fit(epochs=3)
    assert any(
        not torch.equal(p, q) for p, q in zip(plain.parameters(), net.parameters(), strict=True)
    )


def test_no_validation_without_val_data_or_step():
    seen: list[tuple[int, int, int]] = []
    reg = registry()  # no validation step, no val data
    assert trainer(max_epochs=1).fit(lk.collect(reg)).global_step == 7

    calls: list[int] = []

    def counted_val_data():  # limit_val_batches=0: not even called, as in Lightning
        calls.append(1)
        return val_loader()

    reg = recording_registry(seen, val_data=counted_val_data)
    trainer(max_epochs=1, limit_val_batches=0).fit(lk.collect(reg))
    assert seen == [] and calls == []
    trainer(max_epochs=1).fit(lk.collect(reg))
    assert calls == [1]


def test_models_are_in_eval_mode_and_grad_free_during_validation_only():
    modes: list[tuple[str, bool, bool]] = []

    def train(net, batch):
        modes.append(("train", net.training, torch.is_grad_enabled()))
        return ce(net, batch)

    def val(net, batch):
        modes.append(("val", net.training, torch.is_grad_enabled()))

    reg = registry(step=train, val=val)
    trainer(max_epochs=1, val_check_interval=3, num_sanity_val_steps=1).fit(lk.collect(reg))
    assert {m for m in modes if m[0] == "train"} == {("train", True, True)}
    assert {m for m in modes if m[0] == "val"} == {("val", False, False)}
    kinds = [m[0] for m in modes]
    assert kinds == ["val"] + ["train"] * 3 + ["val"] * 3 + ["train"] * 3 + ["val"] * 3 + ["train"]


def test_inference_mode_false_uses_no_grad():
    seen: list[bool] = []

    def val(net, batch):
        seen.append(torch.is_inference_mode_enabled())

    trainer(max_epochs=1, inference_mode=False, num_sanity_val_steps=0).fit(
        lk.collect(registry(val=val))
    )
    assert seen == [False] * 3


def test_an_interval_longer_than_the_epoch_is_an_error():
    reg = recording_registry([])
    with pytest.raises(lk.ConfigError, match="val_check_interval=8 is more than the 7") as info:
        trainer(max_epochs=1, val_check_interval=8).fit(lk.collect(reg))
    assert info.value.code == "val-check-interval-too-long"
    # Counting across epochs, it is fine.
    seen: list[tuple[int, int, int]] = []
    trainer(
        max_epochs=2, val_check_interval=8, check_val_every_n_epoch=None, num_sanity_val_steps=0
    ).fit(lk.collect(recording_registry(seen)))
    assert validations(seen) == [(1, 8)]


def test_a_fraction_counted_across_epochs_is_refused_as_lightning_refuses_it():
    # Across epochs, a fraction has no epoch to be a fraction of; the default 1.0 still means
    # each epoch's end.
    with pytest.raises(lk.ConfigError) as info:
        lk.Trainer(val_check_interval=0.5, check_val_every_n_epoch=None)
    assert info.value.code == "fraction-across-epochs"
    assert "int number of batches" in str(info.value)
    seen: list[tuple[int, int, int]] = []
    trainer(max_epochs=2, check_val_every_n_epoch=None, num_sanity_val_steps=0).fit(
        lk.collect(recording_registry(seen))
    )
    assert validations(seen) == [(0, 7), (1, 14)]


@pytest.mark.parametrize("has", ["validation_step", "val_data"])
def test_half_a_validation_setup_warns_that_fit_skips_validation(has):
    # Lightning warns too ("Skipping val loop"): half of it is most likely a mistake.
    reg = registry()
    if has == "validation_step":
        reg.validation_step(lambda net, batch: None)
    else:
        reg.val_data(val_loader)
    lack = "@val_data" if has == "validation_step" else "@validation_step"
    with pytest.warns(UserWarning, match=f"^the spec has a @{has} but no {lack}: fit skips ") as w:
        trainer(max_epochs=1).fit(lk.collect(reg))
    assert w[0].filename == __file__


def test_no_warning_when_validation_is_switched_off():
    reg = registry()
    reg.val_data(val_loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer(max_epochs=1, limit_val_batches=0).fit(lk.collect(reg))


class Batches(torch.utils.data.IterableDataset):
    """Training batches of 8 from the training data; ``length``: what ``len()`` says
    (``None``: no ``__len__``), right or not."""

    def __init__(self, count: int, length: int | None = None) -> None:
        self.count, self.length = count, length
        if length is not None:
            self.__class__ = SizedBatches

    def __iter__(self):
        from tests.engine.engine_helpers import X_TRAIN, Y_TRAIN

        for i in range(self.count):
            yield X_TRAIN[8 * i : 8 * i + 8], Y_TRAIN[8 * i : 8 * i + 8]


class SizedBatches(Batches):
    def __len__(self) -> int:
        return self.length


def batches_registry(seen, count: int, length: int | None = None):
    def data():
        return DataLoader(Batches(count, length), batch_size=None)

    return recording_registry(seen, train_data=data)


def test_an_unsized_loader_stopped_by_max_steps_inside_an_epoch_does_not_validate_there():
    # 6 batches an epoch: validation at 6 (the epoch's end); max_steps=8 ends inside epoch 1,
    # which validates nothing, as with a sized loader (and as Lightning).
    for length in (None, 6):
        seen: list[tuple[int, int, int]] = []
        spec = lk.collect(batches_registry(seen, 6, length))
        trainer(max_steps=8, num_sanity_val_steps=0).fit(spec)
        assert validations(seen) == [(0, 6)], length


def test_a_loader_that_gives_more_than_its_len_ends_its_epoch_at_len_and_says_so():
    # len() says 3, it gives 4: as Lightning, the epoch is 3 batches, validation follows the
    # third, and accumulation windows keep their shape (2 + 1 a epoch: 2 steps).
    seen: list[tuple[int, int, int]] = []
    trained: list[tuple[int, int]] = []

    def count(ctx):
        trained.append((ctx.epoch, ctx.batch_idx))

    reg = batches_registry(seen, 4, 3)
    reg.on("train_batch_end", count)
    with pytest.warns(lk.LightkitWarning, match=r"more batches than its len\(\) of 3") as info:
        result = trainer(max_epochs=2, num_sanity_val_steps=0, accumulate_grad_batches=2).fit(
            lk.collect(reg)
        )
    assert [w.message.code for w in info if isinstance(w.message, lk.LightkitWarning)] == [
        "loader-length-mismatch"
    ]  # once a run
    assert trained == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert validations(seen) == [(0, 2), (1, 4)]
    assert result.global_step == 4


def test_a_loader_that_gives_fewer_than_its_len_validates_as_its_epoch_ends_and_says_so():
    seen: list[tuple[int, int, int]] = []
    with pytest.warns(lk.LightkitWarning, match=r"gave 3 batches, fewer than its len\(\) of 5"):
        result = trainer(max_epochs=2, num_sanity_val_steps=0).fit(
            lk.collect(batches_registry(seen, 3, 5))
        )
    assert validations(seen) == [(0, 3), (1, 6)]
    assert result.global_step == 6


def test_a_loader_with_a_true_len_is_read_to_its_end_as_a_for_loop_reads_it():
    # The epoch takes len() batches, then one more read finds the end, as `for` does: no
    # warning, and the loader's iterator is exhausted (a sampler's stream ends the same).
    ends: list[int] = []

    class Counted(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            from tests.engine.engine_helpers import X_TRAIN, Y_TRAIN

            return X_TRAIN[i], Y_TRAIN[i]

    class Sampler(torch.utils.data.Sampler):
        def __len__(self):
            return 16

        def __iter__(self):
            yield from range(16)
            ends.append(1)

    def data():
        return DataLoader(Counted(), batch_size=8, sampler=Sampler())

    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LightkitWarning)
        trainer(max_epochs=2).fit(lk.collect(registry(train_data=data)))
    assert ends == [1, 1]


def test_an_empty_validation_loader_runs_no_validation_and_fires_no_event():
    # As Lightning: a loader with no batches skips the loop, its epoch events included.
    fired: list[str] = []
    reg = registry(val=True, val_data=lambda: DataLoader(TensorDataset(X_VAL[:0], Y_VAL[:0])))
    reg.on("validation_epoch_start", lambda: fired.append("start"))
    reg.on("validation_epoch_end", lambda: fired.append("end"))
    result = trainer(max_epochs=2).fit(lk.collect(reg))
    assert fired == [] and result.global_step == 14
    assert "val/loss" not in result.metrics


def test_a_generator_used_up_by_the_first_epoch_is_named_when_the_next_gets_nothing():
    from tests.engine.engine_helpers import X_TRAIN, Y_TRAIN

    def data():
        return ((X_TRAIN[i : i + 8], Y_TRAIN[i : i + 8]) for i in range(0, 48, 8))

    with pytest.warns(lk.LightkitWarning, match="gave no batches in epoch 1") as info:
        result = trainer(max_epochs=3).fit(lk.collect(registry(train_data=data)))
    assert result.global_step == 6
    said = [w for w in info if getattr(w.message, "code", None) == "empty-loader"]
    assert len(said) == 1  # once a run


def test_an_unsized_epoch_that_ends_at_max_steps_still_validates_as_it_ends():
    # One pass over a stream of 6 batches with max_steps=6: the stream ended there too, so
    # its end validates, as Lightning's look-ahead knows (and as a sized loader does).
    seen: list[tuple[int, int, int]] = []
    result = trainer(max_steps=6, num_sanity_val_steps=0).fit(lk.collect(batches_registry(seen, 6)))
    assert validations(seen) == [(0, 6)]
    assert (result.global_step, result.epoch) == (6, 1)


def test_an_unsized_loader_under_an_int_limit_that_runs_out_is_not_a_wrong_len():
    seen: list[tuple[int, int, int]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LightkitWarning)
        result = trainer(max_epochs=2, limit_train_batches=10, num_sanity_val_steps=0).fit(
            lk.collect(batches_registry(seen, 4))
        )
    assert result.global_step == 8


def test_no_loader_worker_outlives_a_fit_stopped_inside_an_epoch():
    import multiprocessing

    from tests.engine.engine_helpers import X_TRAIN, Y_TRAIN

    def data():
        return DataLoader(TensorDataset(X_TRAIN, Y_TRAIN), batch_size=8, num_workers=2)

    trainer(max_steps=3).fit(lk.collect(registry(train_data=data)))
    assert multiprocessing.active_children() == []


def test_an_unsized_epoch_whose_last_batch_asks_to_stop_is_a_complete_epoch():
    # should_stop on the stream's last batch: the stream ended too, so the epoch counts as
    # complete (as Lightning's look-ahead knows), validates once, and a resume starts after it.
    seen: list[tuple[int, int, int]] = []
    reg = batches_registry(seen, 4)

    @reg.on("train_batch_end")
    def stop_at_the_end(ctx, batch_idx):
        if batch_idx == 3:
            ctx.should_stop = True

    result = trainer(max_epochs=3, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert (result.epoch, result.global_step, result.stopped_by) == (1, 4, "should_stop")
    assert validations(seen) == [(0, 4)]


@pytest.mark.parametrize("stop", ["should_stop", "max_steps"])
def test_a_stream_stopped_on_its_last_batch_saves_a_finished_epoch_and_resumes_after_it(
    tmp_path, stop
):
    # The checkpoint written at the stop records the epoch as done, so a resume starts the
    # next epoch: no second validation of the first, and the weights of a run that never
    # stopped.
    import torch as _torch

    def spec(seen):
        reg = batches_registry(seen, 4)
        if stop == "should_stop":

            @reg.on("train_batch_end")
            def stop_at_the_end(ctx, batch_idx):
                if ctx.epoch == 0 and batch_idx == 3:
                    ctx.should_stop = True

        return lk.collect(reg)

    flags = dict(num_sanity_val_steps=0, seed=0, enable_checkpointing=True)
    whole_seen: list[tuple[int, int, int]] = []
    whole = trainer(max_epochs=3, default_root_dir=tmp_path / "whole", **flags).fit(
        lk.collect(batches_registry(whole_seen, 4))
    )
    seen: list[tuple[int, int, int]] = []
    first = trainer(
        max_epochs=3, default_root_dir=tmp_path / "parts", **flags,
        **({"max_steps": 4} if stop == "max_steps" else {}),
    ).fit(spec(seen))  # fmt: skip
    loop = _torch.load(first.last_checkpoint, weights_only=True)["loop"]
    assert (loop["epochs_done"], loop["batches_done"]) == (1, 0)
    resumed = trainer(max_epochs=3, default_root_dir=tmp_path / "parts", **flags).fit(
        spec(seen), ckpt_path="last"
    )
    assert validations(seen) == validations(whole_seen) == [(0, 4), (1, 8), (2, 12)]
    assert_same_weights(whole.models["net"], resumed.models["net"])
