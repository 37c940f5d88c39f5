"""FSDP2 on two gloo ranks: trains like DDP (and one process), syncs once per accumulation
window, shards the layers its policy picks, and checkpoints sharded or full, resuming exactly.

float64 throughout: FSDP's reduce-scatter and DDP's all-reduce average the same gradients, so
the weights agree to rounding (``atol=1e-12, rtol=0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import lightkit as lk
from tests.distributed.support import ATOL, assert_same_weights, reference_flags


def test_fsdp_matches_ddp_and_one_process(
    spec: lk.TrainingSpec, flags: dict[str, Any], reference: dict[str, lk.Result]
) -> None:
    # With a sanity check first: evaluation must not turn FSDP's gathered parameters into
    # inference tensors (FSDP evaluates under no_grad), nor shift the random stream.
    result = lk.Trainer(
        **{**flags, "num_sanity_val_steps": 2},
        devices=2,
        strategy=lk.FSDPStrategy(start_method="fork"),
    ).fit(spec)
    single = reference["plain"]
    assert result.global_step == single.global_step
    assert_same_weights(result.models["net"], single.models["net"])
    assert type(result.models["net"]) is torch.nn.Sequential  # rebuilt, unsharded, on the CPU
    for name in ("train/loss", "val/mse", "val/max", "val/n"):
        assert result.metrics[name] == pytest.approx(single.metrics[name], abs=ATOL, rel=0)


def test_fsdp_accumulates_without_syncing(
    spec: lk.TrainingSpec, flags: dict[str, Any], reference: dict[str, lk.Result]
) -> None:
    result = lk.Trainer(
        **flags,
        devices=2,
        strategy=lk.FSDPStrategy(start_method="fork"),
        accumulate_grad_batches=4,
        check_val_every_n_epoch=None,
    ).fit(spec.with_hparams(batch_size=16))
    assert result.global_step == 4
    assert_same_weights(result.models["net"], reference["accumulated"].models["net"])


def test_the_default_policy_shards_each_block(spec: lk.TrainingSpec, flags: dict[str, Any]) -> None:
    strategy = lk.FSDPStrategy(start_method="fork")
    result = lk.Trainer(**flags, devices=2, strategy=strategy).fit(spec.with_hparams(blocks=3))
    assert result.metrics["fsdp_units"] == 3 + 1  # every Block, then the model itself
    only_root = lk.FSDPStrategy(start_method="fork", auto_wrap=set())
    result = lk.Trainer(**flags, devices=2, strategy=only_root).fit(spec.with_hparams(blocks=3))
    assert result.metrics["fsdp_units"] == 1


def test_bf16_mixed_trains_and_keeps_fp32_weights(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    flags = {**flags, "precision": "bf16-mixed"}
    result = lk.Trainer(**flags, devices=2, strategy=lk.FSDPStrategy(start_method="fork")).fit(
        spec.with_hparams(blocks=2)
    )
    assert result.metrics["param_dtype_bits"] == 32  # sharded master weights stay float32
    assert all(p.dtype == torch.float32 for p in result.models["net"].parameters())
    assert torch.isfinite(torch.tensor(result.metrics["train/loss"]))


@pytest.mark.parametrize("kind", ["sharded", "full"])
def test_checkpoints_resume_exactly(
    kind: str,
    spec: lk.TrainingSpec,
    flags: dict[str, Any],
    reference: dict[str, lk.Result],
    tmp_path: Path,
) -> None:
    flags = {**flags, "enable_checkpointing": True}
    strategy = lk.FSDPStrategy(start_method="fork", state_dict_type=kind)
    first = lk.Trainer(**flags, devices=2, strategy=strategy).fit(spec)
    ckpt = first.last_checkpoint
    assert ckpt is not None and ckpt.name.endswith(".ckpt")
    if kind == "sharded":  # a torch.distributed.checkpoint folder: one shard file per rank
        assert ckpt.is_dir() and (ckpt / ".metadata").is_file()
        assert len(list(ckpt.glob("*.distcp"))) == 2
    else:
        assert ckpt.is_file()
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # no temporaries
    # Every rank's metrics, whichever rank's copy of the plain values a sharded save kept.
    from lightkit.strategies.fsdp_checkpoint import load_sharded

    stored = load_sharded(ckpt) if ckpt.is_dir() else torch.load(ckpt, weights_only=True)
    zero, one = (set(rank["latest"]) for rank in stored["metrics"])
    assert zero == set(first.metrics) and one == zero - {"train/rank0"}  # rank_zero_only
    checked = lk.Trainer(**flags, devices=2, strategy=strategy).validate(spec, ckpt_path=ckpt)
    assert checked.metrics["val/mse"] == pytest.approx(first.metrics["val/mse"], abs=ATOL, rel=0)
    # Either kind is read as full tensors by anyone: load_models, and one plain process.
    loaded = lk.load_models(ckpt)["net"].state_dict()  # in the dtype it was trained in
    for key, value in first.models["net"].state_dict().items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value)
    alone = lk.Trainer(**flags).validate(spec, ckpt_path=ckpt)
    assert alone.metrics["val/mse"] == pytest.approx(first.metrics["val/mse"], abs=ATOL, rel=0)
    resumed = lk.Trainer(**{**flags, "max_epochs": 3}, devices=2, strategy=strategy).fit(
        spec, ckpt_path=ckpt
    )
    assert resumed.global_step == reference["three_epochs"].global_step
    assert_same_weights(resumed.models["net"], reference["three_epochs"].models["net"])


def test_a_stateless_optimizer_resumes_from_a_sharded_checkpoint(
    spec: lk.TrainingSpec, flags: dict[str, Any], tmp_path: Path
) -> None:
    # SGD without momentum keeps no state: a sharded save holds only its groups' settings,
    # which torch's loader could not read back.
    sgd = spec.with_hparams(momentum=0.0)
    flags = {**flags, "enable_checkpointing": True}
    strategy = lk.FSDPStrategy(start_method="fork")
    first = lk.Trainer(**flags, devices=2, strategy=strategy).fit(sgd)
    assert first.last_checkpoint is not None and first.last_checkpoint.is_dir()
    resumed = lk.Trainer(**{**flags, "max_epochs": 3}, devices=2, strategy=strategy).fit(
        sgd, ckpt_path=first.last_checkpoint
    )
    alone = lk.Trainer(**{**reference_flags(tmp_path / "alone"), "max_epochs": 3}).fit(
        sgd.with_hparams(reference=True, batch_size=64, val_batch_size=64)
    )
    assert resumed.global_step == alone.global_step
    assert_same_weights(resumed.models["net"], alone.models["net"])
    # The same sharded checkpoint resumes in one process too (the empty state comes back).
    single = lk.Trainer(**{**reference_flags(tmp_path / "single"), "max_epochs": 3}).fit(
        sgd.with_hparams(reference=True, batch_size=64, val_batch_size=64),
        ckpt_path=first.last_checkpoint,
    )
    assert single.global_step == alone.global_step
    assert_same_weights(single.models["net"], alone.models["net"])


def test_a_ddp_checkpoint_resumes_under_fsdp(
    spec: lk.TrainingSpec,
    flags: dict[str, Any],
    reference: dict[str, lk.Result],
    tmp_path: Path,
) -> None:
    """A DDP checkpoint's optimizer state numbers its parameters (``optimizer.state_dict()``);
    FSDP's loader reads names. The momentum buffers must land on their parameters."""
    flags = {**flags, "enable_checkpointing": True}
    ddp = lk.DDPStrategy(start_method="fork")
    ckpt = lk.Trainer(**flags, devices=2, strategy=ddp).fit(spec).last_checkpoint
    assert ckpt is not None
    assert isinstance(next(iter(torch.load(ckpt)["optimizers"][0]["state"])), int)
    fsdp = lk.FSDPStrategy(start_method="fork")
    resumed = lk.Trainer(**{**flags, "max_epochs": 3}, devices=2, strategy=fsdp).fit(
        spec, ckpt_path=ckpt
    )
    assert resumed.global_step == reference["three_epochs"].global_step
    assert_same_weights(resumed.models["net"], reference["three_epochs"].models["net"])


class _Payload:
    """Not a tensor or container: unpickling it could run code."""


def test_a_sharded_checkpoint_never_runs_code(tmp_path: Path) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    from lightkit.strategies.fsdp_checkpoint import load_sharded

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group: one process" warnings
        dcp.save({"w": torch.ones(2), "meta": {"epoch": 3}}, checkpoint_id=tmp_path / "ok.ckpt")
        dcp.save({"w": torch.ones(2), "evil": _Payload()}, checkpoint_id=tmp_path / "bad.ckpt")
        state = load_sharded(tmp_path / "ok.ckpt")
        assert torch.equal(state["w"], torch.ones(2)) and state["meta"] == {"epoch": 3}
        with pytest.raises(lk.CheckpointError, match="refused to load") as info:
            load_sharded(tmp_path / "bad.ckpt")
    assert info.value.code == "checkpoint-unsafe"


def test_in_one_process_the_result_holds_plain_modules(
    spec: lk.TrainingSpec, flags: dict[str, Any]
) -> None:
    # FSDP turns the user's modules into sharded ones in place; Result.models must not be those.
    fsdp = lk.Trainer(**flags, strategy="fsdp", devices=1).fit(spec)
    net = fsdp.models["net"]
    assert type(net) is torch.nn.Sequential
    assert all(type(p) is torch.nn.Parameter for p in net.parameters())
    assert all(type(t) is torch.Tensor for t in net.state_dict().values())
    plain = lk.Trainer(**flags).fit(spec)
    assert_same_weights(net, plain.models["net"])
