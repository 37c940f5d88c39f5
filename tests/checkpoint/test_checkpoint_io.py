"""Writing and reading checkpoint files: atomic, verified, never running code."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys

import pytest
import torch

import lightkit as lk
from lightkit.checkpoint import io


def test_atomic_save_leaves_only_the_final_file(tmp_path):
    path = io.atomic_save({"a": torch.arange(3)}, tmp_path / "x.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]
    assert torch.equal(io.safe_load(path)["a"], torch.arange(3))


def test_write_error_keeps_the_previous_file_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io.atomic_save({"w": torch.ones(100)}, path)
    before = path.read_bytes()

    def half_then_disk_full(state, f):
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write", half_then_disk_full)
    with pytest.raises(lk.CheckpointError) as info:
        io.atomic_save({"w": torch.zeros(100)}, path)
    assert info.value.code == "checkpoint-write-failed"
    assert str(path) in str(info.value) and "No space left" in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["torch.save", "pickle-2", "pickle-4"])
def test_a_pickle_that_runs_a_command_is_refused(tmp_path, form):
    import pickle

    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    payload = {"models": RunsACommand(marker)}
    if form == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(form[-1])))
    with pytest.raises(lk.CheckpointError) as info:
        io.safe_load(path)
    assert str(path) in str(info.value)
    if form == "pickle-4":  # its opcodes are refused before any global is looked at
        assert info.value.code == "checkpoint-corrupt"
        assert "refused it (Unsupported operand" in str(info.value)
    else:
        assert info.value.code == "checkpoint-unsafe"
        assert "GLOBAL posix.system" in str(info.value)
    assert not marker.exists()


def _saved(tmp_path):
    state = {"models": {"net": {"w": torch.randn(32, 16), "b": torch.randn(16)}}, "epoch": 3}
    return io.atomic_save(state, tmp_path / "good.ckpt").read_bytes()


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -22, -1])
def test_truncated_files_raise_one_error_naming_the_file(tmp_path, cut):
    data = _saved(tmp_path)
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data) if cut else 0
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[:n])
    with pytest.raises(lk.CheckpointError) as info:
        io.safe_load(path)
    assert info.value.code == "checkpoint-corrupt" and str(path) in str(info.value)


def test_bit_flips_never_load_silently(tmp_path):
    """torch.load does not check the CRC32s torch writes; safe_load does. Every flip either
    raises CheckpointError or leaves what is loaded identical (alignment padding)."""
    data = _saved(tmp_path)
    good = io.safe_load(tmp_path / "good.ckpt")
    path = tmp_path / "flipped.ckpt"
    rng = random.Random(0)
    raised = 0
    for pos in rng.sample(range(len(data)), 150):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            loaded = io.safe_load(path)
        except lk.CheckpointError as exc:
            assert str(path) in str(exc)
            raised += 1
            continue
        assert loaded["epoch"] == 3
        for k in ("w", "b"):
            assert torch.equal(loaded["models"]["net"][k], good["models"]["net"][k])
    assert raised > 100


def test_not_a_dict_and_missing_file(tmp_path):
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(lk.CheckpointError, match="holds a list") as info:
        io.safe_load(tmp_path / "list.ckpt")
    assert info.value.code == "not-a-checkpoint"
    with pytest.raises(lk.CheckpointError, match="no checkpoint file at") as info:
        io.safe_load(tmp_path / "nope.ckpt")
    assert info.value.code == "checkpoint-not-found"


def test_unloadable_values_are_refused_at_save_time_with_their_key(tmp_path):
    with pytest.raises(lk.CheckpointError) as info:
        io.atomic_save({"callbacks": {"Mine": {"fn": print}}}, tmp_path / "x.ckpt")
    assert info.value.code == "checkpoint-unserializable"
    assert "checkpoint['callbacks']['Mine']['fn'] is a builtins.builtin_function_or_method" in str(
        info.value
    )
    assert list(tmp_path.iterdir()) == []
    # Everything torch.load(weights_only=True) accepts passes.
    ok = {
        "t": torch.ones(2),
        "p": torch.nn.Parameter(torch.ones(1)),
        "n": [1, 2.5, True, None, "s", b"b", 1j, (torch.Size([2]), torch.float16)],
        "d": {1: {torch.device("cpu")}},
    }
    io.atomic_save(ok, tmp_path / "ok.ckpt")
    assert io.safe_load(tmp_path / "ok.ckpt")["n"][7] == (torch.Size([2]), torch.float16)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    host = io._HOST
    stale = tmp_path / f".last.ckpt.abc123.{dead_pid}@{host}.tmp"
    live = tmp_path / f".last.ckpt.def456.{os.getppid()}@{host}.tmp"
    mine = tmp_path / f".x.ckpt.ghi789.{os.getpid()}@{host}.tmp"
    other = tmp_path / "notes.tmp"
    final = tmp_path / "last.ckpt"
    for p in (stale, live, mine, other, final):
        p.write_bytes(b"x")
    assert io.clean_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, mine, other, final)
    )
