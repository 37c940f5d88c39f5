"""``limit_*_batches`` (counts and fractions), ``fast_dev_run`` and ``overfit_batches``."""

from __future__ import annotations

import warnings

import pydantic
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk
from tests.engine.engine_helpers import (
    X_TRAIN,
    Y_TRAIN,
    assert_same_weights,
    ce,
    raw_fit,
    registry,
    train_loader,
    trainer,
    val_loader,
)

# 7 training batches per epoch, 3 validation batches.


def counting_registry(counts: dict[str, list[int]]):
    """Each step appends its batch index to ``counts[stage]``."""

    def train(net, batch, batch_idx):
        counts["train"].append(batch_idx)
        return ce(net, batch)

    def val(net, batch, batch_idx):
        counts["val"].append(batch_idx)

    def test(net, batch, batch_idx):
        counts["test"].append(batch_idx)

    def predict(net, batch, batch_idx):
        counts["predict"].append(batch_idx)
        return batch_idx

    reg = registry(step=train, val=val)
    reg.test_step(test)
    reg.predict_step(predict)
    reg.test_data(val_loader)
    reg.predict_data(val_loader)
    return reg


def fresh() -> dict[str, list[int]]:
    return {"train": [], "val": [], "test": [], "predict": []}


@pytest.mark.parametrize(("limit", "n"), [(3, 3), (0.5, 3), (0.1, 1), (100, 7), (1.0, 7)])
def test_limit_train_batches(limit, n):
    counts = fresh()
    result = trainer(max_epochs=2, seed=0, num_sanity_val_steps=0, limit_train_batches=limit).fit(
        lk.collect(counting_registry(counts))
    )
    assert counts["train"] == list(range(n)) * 2
    assert result.global_step == 2 * n
    assert counts["val"] == [0, 1, 2] * 2  # validation runs when the (shortened) epoch ends


def test_limit_train_batches_matches_a_loop_that_breaks_early():
    result = trainer(max_epochs=3, seed=0, limit_train_batches=3, accumulate_grad_batches=2).fit(
        lk.collect(registry())
    )
    assert result.global_step == 6  # windows of 2 and 1 per epoch
    assert_same_weights(result.models["net"], raw_fit(epochs=3, limit_batches=3, accumulate=2))


@pytest.mark.parametrize("zero", [0, 0.0])
def test_limit_train_batches_zero_trains_nothing(zero):
    epochs: list[int] = []
    reg = registry()
    reg.on("train_epoch_start")(lambda ctx: epochs.append(ctx.epoch))
    result = trainer(max_epochs=2, seed=0, limit_train_batches=zero).fit(lk.collect(reg))
    assert (result.global_step, result.epoch, epochs) == (0, 0, [])  # no epoch runs (Lightning)
    assert_same_weights(result.models["net"], raw_fit(epochs=0))


@pytest.mark.parametrize(("limit", "n"), [(2, 2), (0.5, 1), (0.7, 2), (0, 0), (1.0, 3)])
def test_limit_val_test_predict_batches(limit, n):
    counts = fresh()
    reg = counting_registry(counts)
    t = trainer(
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_val_batches=limit,
        limit_test_batches=limit,
        limit_predict_batches=limit,
    )
    t.fit(lk.collect(reg))
    t.test(lk.collect(reg))
    predictions = t.predict(lk.collect(reg))
    assert counts["val"] == list(range(n))
    assert counts["test"] == list(range(n))
    assert counts["predict"] == list(range(n))
    assert predictions == list(range(n))


def test_sanity_check_respects_limit_val_batches():
    counts = fresh()
    trainer(max_epochs=1, num_sanity_val_steps=-1, limit_val_batches=2).fit(
        lk.collect(counting_registry(counts))
    )
    assert counts["val"] == [0, 1, 0, 1]


def test_limit_flags_are_validated():
    with pytest.raises(pydantic.ValidationError, match=r"limit_train_batches=1\.5"):
        lk.TrainerConfig(limit_train_batches=1.5)
    with pytest.raises(pydantic.ValidationError, match="limit_val_batches=-1 must be >= 0"):
        lk.TrainerConfig(limit_val_batches=-1)


def test_a_fraction_of_an_unsized_loader_is_a_clear_error():
    def data():
        return iter([(X_TRAIN[:8], torch.zeros(8, dtype=torch.long))])

    with pytest.raises(lk.ConfigError, match=r"limit_train_batches=0\.5 is a fraction") as info:
        trainer(max_epochs=1, limit_train_batches=0.5).fit(lk.collect(registry(train_data=data)))
    assert info.value.code == "fraction-of-unsized-loader"
    assert str(info.value).startswith(
        "test_a_fraction_of_an_unsized_loader_is_a_clear_error.<locals>.data() at "
        "tests/engine/test_limits.py:"
    )
    assert "returned a loader that limit_train_batches does not fit" in str(info.value)
    reg = registry(train_data=data, val=True)
    with pytest.raises(lk.ConfigError, match=r"data\(\) at .*: val_check_interval=0\.5 is a"):
        trainer(max_epochs=1, val_check_interval=0.5).fit(lk.collect(reg))


@pytest.mark.parametrize("limit", [1.0, 0])
def test_a_loader_with_no_batches_trains_nothing_and_says_so(limit):
    def data():
        return DataLoader(TensorDataset(X_TRAIN[:0], Y_TRAIN[:0]), batch_size=8)

    reg = registry(train_data=data)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = trainer(max_epochs=2, limit_train_batches=limit).fit(lk.collect(reg))
    said = [str(w.message) for w in record if "no batches" in str(w.message)]
    assert (result.global_step, result.epoch, result.stopped_by) == (0, 0, None)
    if limit == 0:  # asked for: nothing to say
        assert said == []
        return
    assert said == [
        f"{data.__qualname__}() at tests/engine/test_limits.py:{data.__code__.co_firstlineno} "
        "gave a loader with no batches, so fit trains nothing. Check the dataset's length (and "
        "drop_last with a batch size larger than it)."
    ]


@pytest.mark.parametrize(("flag", "n"), [(True, 1), (3, 3)])
def test_fast_dev_run(flag, n, tmp_path):
    counts = fresh()
    reg = counting_registry(counts)
    # Checkpointing, the summary and the logger stay on: fast_dev_run turns them off.
    t = lk.Trainer(
        fast_dev_run=flag, max_epochs=10, enable_progress_bar=False, default_root_dir=tmp_path
    )
    result = t.fit(lk.collect(reg))
    assert counts["train"] == list(range(n))
    assert counts["val"] == list(range(n))  # no sanity check, one validation
    assert (result.global_step, result.epoch) == (n, 1)
    assert result.log_dir is None and result.last_checkpoint is None
    assert list(tmp_path.iterdir()) == []
    t.test(lk.collect(reg))
    assert counts["test"] == list(range(n))


def test_overfit_batches_repeats_the_same_batches():
    seen: list[torch.Tensor] = []
    counts = fresh()

    def train(net, batch):
        seen.append(batch[0])
        return ce(net, batch)

    def val(net, batch, batch_idx):
        counts["val"].append(batch_idx)

    reg = registry(step=train, val=val)
    with pytest.warns(UserWarning, match="shuffling is turned off"):
        result = trainer(max_epochs=3, overfit_batches=2, num_sanity_val_steps=0).fit(
            lk.collect(reg)
        )
    assert result.global_step == 6
    assert len(seen) == 6
    for i, x in enumerate(seen):
        assert torch.equal(x, X_TRAIN[8 * (i % 2) : 8 * (i % 2 + 1)])  # unshuffled, in order
    assert counts["val"] == [0, 1] * 3


def test_overfit_batches_turns_off_a_batch_samplers_shuffling_or_says_it_cannot():
    from torch.utils.data import BatchSampler, RandomSampler, Sampler

    seen: list[torch.Tensor] = []

    def train(net, batch):
        seen.append(batch[0])
        return ce(net, batch)

    def shuffled_batches():
        sampler = BatchSampler(RandomSampler(range(48)), batch_size=8, drop_last=False)
        return DataLoader(TensorDataset(X_TRAIN[:48], Y_TRAIN[:48]), batch_sampler=sampler)

    reg = registry(step=train, train_data=shuffled_batches)
    with pytest.warns(lk.LightkitWarning, match="shuffling is turned off"):
        trainer(max_epochs=2, overfit_batches=2).fit(lk.collect(reg))
    assert [x.tolist() for x in seen] == [X_TRAIN[8 * i : 8 * i + 8].tolist() for i in (0, 1, 0, 1)]

    class Own(Sampler):  # a batch sampler of the user's own: it cannot be rebuilt
        def __len__(self):
            return 6

        def __iter__(self):
            yield from (list(range(8 * i, 8 * i + 8)) for i in torch.randperm(6).tolist())

    def own_batches():
        return DataLoader(TensorDataset(X_TRAIN[:48], Y_TRAIN[:48]), batch_sampler=Own())

    with pytest.warns(lk.LightkitWarning, match="custom batch_sampler \\(Own\\)") as info:
        trainer(max_epochs=1, overfit_batches=2).fit(lk.collect(registry(train_data=own_batches)))
    assert "sampler-not-replaced" in [getattr(w.message, "code", None) for w in info]


def test_overfit_batches_fraction():
    counts = fresh()
    with pytest.warns(UserWarning):
        result = trainer(max_epochs=1, overfit_batches=0.3, num_sanity_val_steps=0).fit(
            lk.collect(counting_registry(counts))
        )
    assert counts["train"] == [0, 1]  # int(7 * 0.3)
    assert result.global_step == 2


class Stream(torch.utils.data.IterableDataset):
    """An unsized dataset: ``n`` training samples, then it runs out."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield X_TRAIN[i], torch.tensor(i % 3)


def stream_registry(
    n: int, seen: list[tuple[int, int]], validated: list[int], sized: bool = False
) -> lk.Registry:
    """Batches of 2 from ``Stream(n)`` (``sized``: the same batches as a list)."""

    def data():
        loader = torch.utils.data.DataLoader(Stream(n), batch_size=2)
        return list(loader) if sized else loader

    def train(net, batch, ctx, batch_idx):
        seen.append((ctx.epoch, batch_idx))
        return ce(net, batch)

    reg = registry(step=train, train_data=data, val=True)
    reg.on("validation_epoch_start")(lambda ctx: validated.append(ctx.global_step))
    return reg


@pytest.mark.parametrize("flags", [{"limit_train_batches": 10}, {}])
def test_an_unsized_loader_shorter_than_its_limit_ends_its_epoch_when_it_runs_out(flags):
    # 5 samples, batches of 2: 3 batches an epoch, however high the limit. Each epoch ends
    # with its validation, as without a limit.
    seen: list[tuple[int, int]] = []
    validated: list[int] = []
    reg = stream_registry(5, seen, validated)
    result = trainer(max_epochs=2, num_sanity_val_steps=0, **flags).fit(lk.collect(reg))
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert (result.global_step, result.epoch, result.stopped_by) == (6, 2, "max_epochs")
    assert validated == [3, 6]


class KnownOnceIterated:
    """Batches whose length is an error until the first iteration, as Lightning's
    ``CombinedLoader``'s: an unsized loader to lightkit."""

    def __init__(self, loader):
        self.loader, self.started = loader, False

    def __iter__(self):
        self.started = True
        return iter(self.loader)

    def __len__(self):
        if not self.started:
            raise RuntimeError("Please call iter(combined_loader) first.")
        return len(self.loader)


def test_a_loader_whose_length_needs_an_iteration_first_trains_as_unsized():
    seen: list[tuple[int, int]] = []

    def data():
        return KnownOnceIterated(train_loader(batch_size=10))

    def train(net, batch, ctx, batch_idx):
        seen.append((ctx.epoch, batch_idx))
        return ce(net, batch)

    result = trainer(max_epochs=2).fit(lk.collect(registry(step=train, train_data=data)))
    assert seen == [(e, i) for e in range(2) for i in range(5)]
    assert result.global_step == 10


def test_a_datasets_own_length_error_is_not_taken_for_no_length():
    # A map-style dataset whose __len__ fails (a file it reads) raises as it is, where a
    # wrapper whose length needs an iteration first (above) is unsized.
    class Broken(torch.utils.data.Dataset):
        def __getitem__(self, i):
            return X_TRAIN[i], Y_TRAIN[i]

        def __len__(self):
            raise RuntimeError("cannot read the index file")

    def data():
        return torch.utils.data.DataLoader(Broken(), batch_size=10)

    with pytest.raises(RuntimeError, match=r"^cannot read the index file$"):
        trainer(max_epochs=1).fit(lk.collect(registry(train_data=data)))


def test_fast_dev_run_on_a_shorter_unsized_loader_runs_what_there_is():
    seen: list[tuple[int, int]] = []
    result = trainer(fast_dev_run=5).fit(lk.collect(stream_registry(4, seen, [])))
    assert seen == [(0, 0), (0, 1)]
    assert (result.global_step, result.epoch) == (2, 1)


@pytest.mark.parametrize("sized", [True, False])
def test_an_epoch_cut_short_by_max_steps_is_not_counted_sized_or_not(sized):
    # 6 samples, batches of 2: 3 batches an epoch; max_steps=4 stops inside the second.
    seen: list[tuple[int, int]] = []
    reg = stream_registry(6, seen, [], sized=sized)
    result = trainer(max_steps=4, num_sanity_val_steps=0).fit(lk.collect(reg))
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert (result.global_step, result.epoch, result.stopped_by) == (4, 1, "max_steps")


def test_overfit_batches_with_an_unsized_loader_repeats_its_first_batches():
    seen: list[tuple[int, int]] = []
    validated: list[int] = []
    reg = stream_registry(10, seen, validated)
    result = trainer(max_epochs=2, overfit_batches=2).fit(lk.collect(reg))
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert result.global_step == 4
