"""DDP on two gloo ranks equals one process; accumulation syncs once per window; metrics
reduce across ranks; uneven loaders do not hang; the group is torn down with no thread left.

All runs are float64 (``precision="64-true"``): a 2-rank run and one process then agree to
rounding, and the tests use ``atol=1e-12, rtol=0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import lightkit as lk
from tests.distributed.programs import N_TRAIN, N_VAL, counting_comm_hook
from tests.distributed.support import ATOL, assert_same_weights


def test_two_ranks_of_32_equal_one_process_of_64(
    spec: lk.TrainingSpec, flags: dict[str, Any], reference: dict[str, lk.Result]
) -> None:
    # The default start method (spawn): the ranks unpickle the spec and run it.
    result = lk.Trainer(**flags, devices=2, strategy="ddp").fit(spec)
    single = reference["plain"]
    assert result.global_step == single.global_step == 2 * N_TRAIN // 64
    assert_same_weights(result.models["net"], single.models["net"])
    assert type(result.models["net"]) is torch.nn.Sequential  # the user's module, on the CPU
    assert result.models["net"][0].weight.device.type == "cpu"
    # Epoch metrics: batch-size weighted, reduced across ranks, equal to one process.
    assert set(result.metrics) == set(single.metrics)
    for name in ("train/loss", "val/mse", "val/max"):
        assert result.metrics[name] == pytest.approx(single.metrics[name], abs=ATOL, rel=0)
    assert result.metrics["train/seen"] == single.metrics["train/seen"] == N_TRAIN
    assert result.metrics["val/n"] == single.metrics["val/n"] == N_VAL
    assert (single.metrics["train/rank"], result.metrics["train/rank"]) == (0.0, 0.5)
    assert result.metrics["train/rank0"] == single.metrics["train/rank0"] == result.global_step + 6


def test_accumulation_all_reduces_once_per_window(
    spec: lk.TrainingSpec, flags: dict[str, Any], reference: dict[str, lk.Result]
) -> None:
    # 256 samples, 16 per rank per batch -> 8 batches per epoch; 4 per window -> 2 windows.
    strategy = lk.DDPStrategy(start_method="fork", comm_hook=counting_comm_hook)
    result = lk.Trainer(
        **flags,
        devices=2,
        strategy=strategy,
        accumulate_grad_batches=4,
        check_val_every_n_epoch=None,
    ).fit(spec.with_hparams(batch_size=16, count_comm=True))
    assert result.global_step == 4
    assert result.metrics["allreduces"] == 4  # one bucket, one all-reduce per window
    assert_same_weights(result.models["net"], reference["accumulated"].models["net"])


def test_a_checkpoint_inside_an_accumulation_window_resumes_each_ranks_gradients(
    spec: lk.TrainingSpec, flags: dict[str, Any], tmp_path: Path
) -> None:
    # 8 batches of 16 per rank and epoch, windows of 3, 3 and 2. SIGTERM on rank 0 at epoch
    # 1, batch 4: both ranks save after batch 4, two batches into the second window, where
    # each rank holds gradients of its own data that DDP has not averaged yet.
    config = {
        **flags,
        "devices": 2,
        "accumulate_grad_batches": 3,
        "log_every_n_steps": 1,
        "enable_checkpointing": True,
    }
    spec = spec.with_hparams(batch_size=16)

    def trainer(root: str) -> lk.Trainer:
        return lk.Trainer(
            **{**config, "default_root_dir": str(tmp_path / root)},
            strategy=lk.DDPStrategy(start_method="fork"),
        )

    with pytest.raises(SystemExit) as stopped:
        trainer("cut").fit(spec.with_hparams(sigterm_batch=4))
    assert stopped.value.code == 143
    (last,) = (tmp_path / "cut").rglob("last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["loop"]["batches_done"] == 5 and "grads" not in ckpt
    first, second = ckpt["rank_grads"]  # each rank's own, not averaged
    assert not torch.equal(first["net"]["0.weight"], second["net"]["0.weight"])
    resumed = trainer("cut").fit(spec, ckpt_path=last)
    whole = trainer("whole").fit(spec)
    assert resumed.global_step == whole.global_step == 6
    pairs = zip(resumed.models["net"].parameters(), whole.models["net"].parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    # Resumed in one process (batches of 32: the same 8 per epoch), the window starts from
    # the mean of the ranks' gradients.
    with pytest.warns(UserWarning, match="saved inside an accumulation window by 2 processes"):
        alone = lk.Trainer(**{**flags, "accumulate_grad_batches": 3}).fit(
            spec.with_hparams(batch_size=32), ckpt_path=last
        )
    assert alone.global_step == 6


def test_without_accumulation_every_batch_all_reduces(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    result = lk.Trainer(
        **flags,
        devices=2,
        strategy=lk.DDPStrategy(start_method="fork", comm_hook=counting_comm_hook),
        check_val_every_n_epoch=None,
    ).fit(spec.with_hparams(batch_size=16, count_comm=True))
    assert result.metrics["allreduces"] == result.global_step == 16


def test_uneven_batch_counts_are_cut_to_the_shortest_rank(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    # Rank 0 yields 4 batches, rank 1 five: both run 4 (agreeing before each batch), and
    # nothing waits forever for rank 1's fifth all-reduce.
    result = lk.Trainer(
        **flags,
        devices=2,
        strategy=lk.DDPStrategy(start_method="fork", timeout=30),
        check_val_every_n_epoch=None,
    ).fit(spec.with_hparams(uneven=True))
    assert result.global_step == 2 * 4


def test_validate_splits_the_data_and_reduces_the_metrics(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    trainer = lk.Trainer(**flags, devices=2, strategy=lk.DDPStrategy(start_method="fork"))
    single = lk.Trainer(**flags).validate(spec.with_hparams(val_batch_size=64))
    result = trainer.validate(spec)
    assert result.metrics["val/n"] == N_VAL
    assert result.metrics["val/mse"] == pytest.approx(single.metrics["val/mse"], abs=ATOL, rel=0)


def test_a_group_of_one_in_this_process_is_torn_down(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    """devices=1 with strategy='ddp' runs here: no process is started, and afterwards no
    group, no gloo thread is left, also after an error."""
    before = _threads()
    result = lk.Trainer(**flags, devices=1, strategy="ddp").fit(spec)
    assert result.global_step == 2 * N_TRAIN // 32
    assert not dist.is_initialized()
    assert _threads() == before
    with pytest.raises(ValueError, match="boom on rank 0 at step 3"):
        lk.Trainer(**flags, devices=1, strategy="ddp").fit(spec.with_hparams(fail_rank=0))
    assert not dist.is_initialized()
    assert _threads() == before


def _threads() -> int:
    """Threads of this process, native ones included (gloo's are not Python threads)."""
    return len(os.listdir("/proc/self/task"))


def test_after_a_two_rank_fit_validate_starts_from_the_trained_weights(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    # The launched ranks receive the weights the fit ended with, as one process would use them.
    trainer = lk.Trainer(**flags, devices=2, strategy=lk.DDPStrategy(start_method="fork"))
    fit = trainer.fit(spec)
    after = trainer.validate(spec)
    assert (after.global_step, after.epoch) == (fit.global_step, fit.epoch)  # where fit ended
    whole = spec.with_hparams(val_batch_size=64)  # one process sees both ranks' batches
    one = lk.Trainer(**flags)
    one._fitted = (whole, fit)  # as if this trainer had fitted those weights
    single = one.validate(whole)
    fresh = lk.Trainer(**flags).validate(whole)
    assert after.metrics["val/mse"] == pytest.approx(single.metrics["val/mse"], abs=ATOL, rel=0)
    assert abs(after.metrics["val/mse"] - fresh.metrics["val/mse"]) > 1e-3


def test_the_callers_callback_objects_end_as_rank_zeros(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    # A Lightning user reads checkpoint.best_model_path after fit; with devices=2 the objects
    # given to the Trainer never ran (the ranks had copies), so they take rank 0's state.
    checkpoint = lk.ModelCheckpoint(monitor="val/mse", save_top_k=2)
    stopping = lk.EarlyStopping(monitor="val/mse", patience=5)
    result = lk.Trainer(
        **{**flags, "enable_checkpointing": True, "max_epochs": 3},
        devices=2,
        strategy=lk.DDPStrategy(start_method="fork"),
        callbacks=[checkpoint, stopping],
    ).fit(spec)
    assert result.best_checkpoint is not None
    assert checkpoint.best_model_path == str(result.best_checkpoint)
    states = list(torch.load(result.best_checkpoint, weights_only=True)["callbacks"].values())
    assert checkpoint.best_model_score == states[0]["best_model_score"] is not None
    assert stopping.best_score == states[1]["best_score"] == checkpoint.best_model_score
    # The top k too, in the run's own folder, which the object adopts.
    folder = result.best_checkpoint.parent
    assert checkpoint.dirpath == folder
    assert len(checkpoint.best_k_models) == 2
    assert set(checkpoint.best_k_models) == {str(p) for p in folder.glob("epoch=*.ckpt")}
    assert checkpoint.kth_best_model_path in checkpoint.best_k_models


def test_the_callers_loggers_learn_the_folder_they_wrote(
    spec: lk.TrainingSpec, flags: dict[str, Any], tmp_path: Path
) -> None:
    # As in one process, `logger.log_dir` after fit names the version folder rank 0 chose,
    # also for a logger with a save_dir of its own (not the run folder); `experiment` opens
    # a writer there.
    own = lk.CSVLogger(save_dir=tmp_path / "exp", name="base")
    run = lk.TensorBoardLogger()
    result = lk.Trainer(
        **{**flags, "logger": [own, run]}, devices=2, strategy=lk.DDPStrategy(start_method="fork")
    ).fit(spec)
    assert own.log_dir == tmp_path / "exp" / "base" / "version_0"
    assert (own.log_dir / "metrics.csv").is_file()
    assert run.log_dir == result.log_dir
    run.experiment.add_scalar("after", 1.0, 0)
    run.experiment.close()
    assert len(list(result.log_dir.glob("events.out.tfevents.*"))) == 2


def linear_program(n: int, validate: bool = False) -> lk.Registry:
    """A registry with a Linear(3, 1) model, ``n`` random samples in batches of 2 (and of 4 to
    validate on) and SGD; the test adds its steps."""
    reg = lk.Registry()
    x, y = torch.randn(n, 3), torch.randn(n, 1)

    @reg.model
    def net():
        return torch.nn.Linear(3, 1)

    @reg.train_data
    def data():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)

    if validate:

        @reg.val_data
        def val_data():
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)

    @reg.configure_optimizers
    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.01)

    return reg


@pytest.mark.parametrize(("log_every", "steps"), [(1, 3), (50, 4)])
def test_a_stop_one_rank_asks_for_stops_every_rank_after_the_same_batch(log_every, steps):
    """Rank 1 alone sets ctx.should_stop in the step of global step 2. The ranks agree on it
    every log_every_n_steps batches and at the epoch's end (4 batches): all stop together."""
    reg = linear_program(16)

    @reg.training_step
    def train(net, batch, ctx):
        if ctx.rank == 1 and ctx.global_step == 2:
            ctx.should_stop = True
        return torch.nn.functional.mse_loss(net(batch[0]), batch[1])

    result = lk.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=lk.DDPStrategy(start_method="fork", timeout=30),
        max_epochs=3,
        log_every_n_steps=log_every,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(lk.collect(reg))
    assert (result.global_step, result.stopped_by) == (steps, "should_stop")


def test_a_top_k_file_is_saved_only_when_every_rank_finds_it_better(tmp_path: Path) -> None:
    """As Lightning's ModelCheckpoint: with a monitor logged without sync_dist, the ranks'
    values differ, and a file is kept only when all of them call it better."""
    reg = linear_program(8, validate=True)
    values = {0: [3.0, 2.0, 1.0, 0.5], 1: [3.0, 4.0, 2.0, 5.0]}  # per rank, per epoch

    @reg.training_step
    def train(net, batch):
        return torch.nn.functional.mse_loss(net(batch[0]), batch[1])

    @reg.validation_step
    def val(net, batch, ctx):
        lk.log("v_mon", torch.tensor(values[ctx.rank][ctx.epoch]))

    checkpoint = lk.ModelCheckpoint(monitor="v_mon", save_top_k=1)
    result = lk.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=lk.DDPStrategy(start_method="fork", timeout=30),
        max_epochs=4,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(lk.collect(reg))
    # Epoch 1 (rank 1: 4 > 3) and epoch 3 (rank 1: 5 > 2) are not unanimous.
    assert result.best_checkpoint is not None
    assert result.best_checkpoint.name == "epoch=2-step=6.ckpt"
    assert checkpoint.best_model_score == 1.0
    assert [p.name for p in result.best_checkpoint.parent.glob("epoch=*.ckpt")] == [
        "epoch=2-step=6.ckpt"
    ]


def test_functions_besides_the_steps_get_the_module_their_function_built() -> None:
    """Scaling changes a flag, never the functions: configure_optimizers indexing the model,
    hooks reading its attributes and calling its methods run under DDP as in one process.
    The training step gets DDP's wrapper (its forward syncs the gradients)."""
    reg = lk.Registry()
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    class Net(torch.nn.Sequential):
        def first(self, inputs: torch.Tensor) -> torch.Tensor:
            return self[0](inputs)

    @reg.model
    def net():
        return Net(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))

    @reg.train_data
    def data():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)

    @reg.configure_optimizers
    def optim(net):
        return torch.optim.SGD(
            [{"params": net[0].parameters(), "lr": 0.1}, {"params": net[1].parameters()}],
            lr=0.01,
        )

    @reg.training_step
    def train(net, batch):
        return torch.nn.functional.mse_loss(net(batch[0]), batch[1])

    @reg.on("fit_end")
    def check(net, ctx):
        assert type(net) is Net, type(net)
        assert net.first(x).shape == (8, 2) and net[1].weight.shape == (1, 2)
        ctx.log("fit_end/checked", 1.0)

    @reg.val_data
    def val_data():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)

    @reg.validation_step
    def val(net, batch):  # evaluation syncs no gradients: it gets the module itself
        lk.log("val/first", net.first(batch[0]).sum() * 0 + 1.0)

    flags = {
        "accelerator": "cpu",
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    one = lk.Trainer(**flags, seed=0).fit(lk.collect(reg))
    two = lk.Trainer(
        **flags, seed=0, devices=2, strategy=lk.DDPStrategy(start_method="fork", timeout=30)
    ).fit(lk.collect(reg))
    assert one.metrics["fit_end/checked"] == two.metrics["fit_end/checked"] == 1.0
    assert one.metrics["val/first"] == two.metrics["val/first"] == 1.0
    assert two.global_step == 2  # 8 samples, 2 ranks, batches of 2
    validated = lk.Trainer(
        **flags, devices=2, strategy=lk.DDPStrategy(start_method="fork", timeout=30)
    ).validate(lk.collect(reg))
    assert validated.metrics["val/first"] == 1.0
