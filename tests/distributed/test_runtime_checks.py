"""A user's own ``lk.Runtime`` on two ranks checks its arguments as one process does, so a
typo that passes a one-process test cannot first fail at scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lightkit as lk
from tests.distributed.support import run_torchrun


def _one_process(call_name: str) -> dict:
    rt = lk.Runtime(accelerator="cpu")
    calls = {
        "bad_op": lambda: rt.all_reduce(torch.tensor(1.0), op="bogus"),
        "not_a_tensor": lambda: rt.all_reduce(1.0),
    }
    try:
        calls[call_name]()
    except lk.LightkitError as exc:
        return {"type": type(exc).__name__, "code": exc.code, "msg": str(exc)}
    return {"type": None}


def test_two_ranks_refuse_a_bad_all_reduce_exactly_as_one_process(tmp_path: Path) -> None:
    proc = run_torchrun("runtime_checks.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("result-*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1]
    for r in results:
        assert r["world"] == 2 and r["sum"] == 3.0  # the group works: 1 + 2
        for name in ("bad_op", "not_a_tensor"):
            assert r[name]["type"] == "ConfigError"
            assert r[name] == _one_process(name)
    assert "op='bogus'; expected one of sum, mean, max, min" in results[0]["bad_op"]["msg"]


def test_a_runtime_of_several_processes_outside_a_job_says_how_to_start_one(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    runtime = lk.Runtime(accelerator="cpu", devices=2, strategy="ddp")
    try:
        runtime.launch()
    except lk.DistributedError as exc:
        assert exc.code == "not-launched"
        assert "a group of 2 processes was asked for, but this process is not a rank" in str(exc)
        assert "lk.Trainer(devices=2).fit(...)" in str(exc)
        assert "torchrun --nproc-per-node 2 your_script.py" in str(exc)
    else:
        raise AssertionError("a 2-process Runtime launched in a plain process")
    finally:
        runtime.teardown()


def test_before_launch_the_loader_is_split_and_collectives_reach_every_rank(tmp_path: Path) -> None:
    """Building the loader before the model is a natural order: it must not leave every rank
    reading the whole dataset because the group did not exist yet."""
    proc = run_torchrun("runtime_unlaunched.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {
        r["rank"]: r for r in (json.loads(f.read_text()) for f in tmp_path.glob("result-*.json"))
    }
    assert results[0]["seen"] == [0.0, 2.0, 4.0, 6.0] and results[1]["seen"] == [1.0, 3.0, 5.0, 7.0]
    for r in results.values():
        assert r["sum"] == 3.0 and r["gathered"] == [[0], [1]]
        assert r["broadcast"] == "from rank 0"
        assert r["own_path"]["code"] == "bad-runtime-argument"
        assert (
            "different paths on different ranks (rank 0: 'own-0.ckpt', rank 1: 'own-1.ckpt')"
            in r["own_path"]["msg"]
        )
        assert r["loaded"] == [1.0]
        assert r["after_teardown"] == "not-launched"
    assert not list(tmp_path.glob("own-*")) and not list(tmp_path.glob(".own-*"))


def test_a_reduction_named_as_elsewhere_gets_the_near_name() -> None:
    with pytest.raises(lk.ConfigError, match=r"op='avg'; .* Did you mean 'mean'\?$"):
        lk.Runtime(accelerator="cpu").all_reduce(torch.ones(1), op="avg")


def test_one_process_leaves_no_process_group_behind(tmp_path: Path) -> None:
    """Collectives, the loader split and save join a job of several processes on first use;
    one process needs no group, and must not be left holding one (a later devices=2 fit
    forked from it would find it)."""
    import torch.distributed as dist

    rt = lk.Runtime(accelerator="cpu", strategy="ddp")
    assert list(rt.setup_dataloader([torch.ones(1)])) == [torch.ones(1)]
    assert rt.all_reduce(torch.ones(1), op="sum").item() == 1.0
    rt.save({"x": torch.ones(1)}, tmp_path / "a.ckpt")
    assert not dist.is_initialized()
