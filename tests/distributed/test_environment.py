"""Where a process sits (torchrun, SLURM, lightkit's launcher, none) and what the connector
makes of it; the pieces of the launcher that need no process."""

from __future__ import annotations

import warnings

import pytest

import lightkit as lk
from lightkit.runtime.connector import connect
from lightkit.runtime.environment import ClusterEnvironment, detect, local_rank_env
from lightkit.runtime.launch import Launcher
from lightkit.runtime.rank import is_peer_failure
from lightkit.utils.data import EvenBatches

TORCHRUN = {
    "RANK": "3",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29500",
}


def test_torchrun_variables_make_a_torchrun_rank() -> None:
    env = detect(TORCHRUN)
    assert env == ClusterEnvironment(
        kind="torchrun",
        rank=3,
        world_size=8,
        local_rank=1,
        local_world_size=2,
        node_rank=1,
        main_address="10.0.0.1",
        main_port=29500,
    )
    assert env.joined and env.num_nodes == 4 and env.init_method == "env://"


def test_lightkit_launched_ranks_look_like_torchrun_with_a_marker() -> None:
    env = detect(local_rank_env(1, 2, 12345))
    assert (env.kind, env.rank, env.world_size, env.main_address) == (
        "launched",
        1,
        2,
        "127.0.0.1",
    )


def test_slurm_steps_of_several_tasks_are_jobs() -> None:
    slurm = {
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "2",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NAME": "train",
    }
    env = detect(slurm)
    assert (env.kind, env.rank, env.world_size, env.local_world_size) == ("slurm", 2, 4, 2)
    assert env.main_address == "gpu07" and env.init_method.startswith("tcp://gpu07:")
    assert detect({**slurm, "SLURM_NTASKS": "1"}).kind == "local"  # launch ranks ourselves
    assert detect({**slurm, "SLURM_JOB_NAME": "interactive"}).kind == "local"


def test_a_joined_process_starts_nothing() -> None:
    strategy = connect("cpu", "auto", "ddp", "32-true", env=detect(TORCHRUN))
    assert isinstance(strategy, lk.DDPStrategy)
    assert (strategy.rank, strategy.local_rank, strategy.world_size) == (3, 1, 8)
    assert strategy.launcher is None


def test_devices_that_disagree_with_the_job_warn_on_rank_zero() -> None:
    # torchrun's size wins; Lightning reports the mismatch, and so does lightkit.
    job = ClusterEnvironment(kind="torchrun", rank=0, world_size=4, local_world_size=2)
    with pytest.warns(UserWarning, match=r"^devices=3 asks for 3 process\(es\) per machine, "):
        connect("cpu", 3, "ddp", "32-true", env=job)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        connect("cpu", 2, "ddp", "32-true", env=job)  # agrees
        connect("cpu", "auto", "ddp", "32-true", env=job)
        connect(
            "cpu",
            3,
            "ddp",
            "32-true",
            env=ClusterEnvironment(kind="torchrun", rank=1, world_size=4, local_world_size=2),
        )  # rank 0 says it


def test_a_one_process_strategy_instance_refuses_several_devices() -> None:
    # As strategy="single_device" does: the instance must not silently run one process.
    with pytest.raises(
        lk.ConfigError, match=r"^strategy=SingleDevice\(\) runs one process, but 2 "
    ):
        connect("cpu", 2, lk.SingleDevice(), "32-true", env=ClusterEnvironment())


def test_nccl_on_cpu_is_refused_before_any_rank_starts() -> None:
    with pytest.raises(lk.ConfigError) as info:
        connect("cpu", 2, lk.DDPStrategy(backend="nccl"), "32-true", env=ClusterEnvironment())
    assert info.value.code == "impossible-config"
    assert "DDPStrategy(backend='nccl') needs CUDA devices" in str(info.value)
    assert "Use backend='gloo' on CPU" in str(info.value)
    gloo = connect("cpu", 2, lk.DDPStrategy(backend="gloo"), "32-true", env=ClusterEnvironment())
    assert gloo.backend == "gloo"


def test_devices_n_in_a_plain_process_launches() -> None:
    strategy = connect("cpu", 2, "auto", "32-true", env=ClusterEnvironment())
    assert isinstance(strategy, lk.DDPStrategy)
    assert strategy.launcher == Launcher(nprocs=2, start_method="spawn", failure_timeout=10.0)
    mine = lk.FSDPStrategy(start_method="fork", failure_timeout=3)
    strategy = connect("cpu", 4, mine, "32-true", env=ClusterEnvironment())
    assert strategy.launcher == Launcher(nprocs=4, start_method="fork", failure_timeout=3)


def test_several_nodes_need_an_outside_launcher() -> None:
    with pytest.raises(lk.ConfigError, match="torchrun --nnodes 2") as info:
        connect("cpu", 2, "ddp", "32-true", num_nodes=2, env=ClusterEnvironment())
    assert info.value.code == "impossible-config"


def test_a_run_that_cannot_be_pickled_fails_before_any_process(tmp_path) -> None:
    from tests.distributed import programs

    pending = (i for i in range(3))  # a generator: no pickler can send it to a rank
    extra = lk.Registry()

    @extra.on("fit_start")
    def take_one() -> None:
        next(pending)

    trainer = lk.Trainer(accelerator="cpu", devices=2, strategy="ddp")
    with pytest.raises(lk.ConfigError, match="cannot be sent to the rank processes") as info:
        trainer.fit(lk.collect(programs, extra))
    assert info.value.code == "unpicklable-run"
    # It names the culprit: the function (file:line) and the variable it uses.
    line = take_one.__code__.co_firstlineno
    assert (
        f"take_one() at tests/distributed/test_environment.py:{line} uses the variable "
        f"'pending' (a generator) of the function around it, which cannot be sent."
    ) in str(info.value)
    # A global of a script or notebook (an open file, say) is named the same way.
    namespace: dict = {"__name__": "__main__", "lk": lk}
    source = "log = open(LOG, 'w')\n\ndef write_log(ctx):\n    log.write('x')\n"
    namespace["LOG"] = str(tmp_path / "hook.log")
    exec(compile(source, "notebook_cell.py", "exec"), namespace)
    other = lk.Registry()
    other.on("fit_start")(namespace["write_log"])
    try:
        with pytest.raises(lk.ConfigError) as info:
            trainer.fit(lk.collect(programs, other))
    finally:
        namespace["log"].close()
    assert "write_log(ctx) at notebook_cell.py:3 uses the global 'log' (a TextIOWrapper)" in str(
        info.value
    )


def test_even_batches() -> None:
    assert list(EvenBatches(range(5), length=3)) == [0, 1, 2]
    assert len(EvenBatches(range(5), length=3)) == 3
    # Agreeing batch by batch: stop as soon as any rank (here: after 2) is done.
    seen: list[bool] = []

    def any_done(done: bool) -> bool:
        seen.append(done)
        return done or len(seen) > 2

    assert list(EvenBatches(iter(range(5)), any_done=any_done)) == [0, 1]
    with pytest.raises(TypeError):
        len(EvenBatches(range(5), any_done=any_done))


def test_peer_failures_are_told_apart_from_root_causes() -> None:
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]")
    assert is_peer_failure(gloo)
    try:
        try:
            raise gloo
        except RuntimeError as inner:
            raise lk.StepError("while reducing a metric") from inner
    except lk.StepError as outer:
        assert is_peer_failure(outer)
    assert not is_peer_failure(ValueError("boom"))


class _Counter(lk.Callback):
    """A plain subclass of a slotted attrs plugin: its state lives in a __dict__."""

    def __init__(self) -> None:
        self.epochs = 3


def test_plain_subclasses_of_plugins_travel_whole() -> None:
    import pickle

    from lightkit.runtime.pickling import dumps as _dumps

    sent = pickle.loads(_dumps(_Counter()))
    assert type(sent) is _Counter and sent.epochs == 3


def test_functions_sent_by_value_keep_their_file_for_tracebacks(tmp_path):
    # A script's function travels by value; a rank's traceback must still show its file and
    # line, not cloudpickle's "<dynamic-code>".
    import pickle

    from lightkit.runtime.pickling import dumps

    script = tmp_path / "script.py"
    script.write_text("def step():\n    raise ValueError('in the step')\n")
    namespace = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    received = pickle.loads(dumps(namespace["step"]))
    assert received.__code__.co_filename == str(script)
    with pytest.raises(ValueError, match="in the step") as info:
        received()
    assert info.traceback[-1].path == script


def test_a_notebook_cells_lines_travel_with_its_function(tmp_path):
    # A cell's "file" lives only in the kernel's line cache: a rank (a fresh process) gets
    # the lines with the function, so its traceback shows the failing line.
    import linecache
    import subprocess
    import sys

    from lightkit.runtime.pickling import dumps

    cell = "/tmp/ipykernel_4242/98765.py"  # no such file
    source = "def step():\n    raise ValueError('bad batch on rank 1')\n"
    linecache.cache[cell] = (len(source), None, source.splitlines(True), cell)
    try:
        namespace = {"__name__": "__main__"}
        exec(compile(source, cell, "exec"), namespace)
        (tmp_path / "job.pkl").write_bytes(dumps(namespace["step"]))
    finally:
        del linecache.cache[cell]
    rank = (
        "import pickle, sys, traceback\n"
        "step = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "try:\n    step()\nexcept ValueError:\n    print(traceback.format_exc())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", rank, str(tmp_path / "job.pkl")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f'File "{cell}", line 2, in step' in out
    assert "raise ValueError('bad batch on rank 1')" in out


def test_only_a_full_line_cache_entry_travels(tmp_path):
    # A lazy entry (a loader to call) holds objects that need not pickle: it stays behind.
    import linecache
    import pickle
    import threading

    from lightkit.runtime.pickling import dumps

    name = str(tmp_path / "archive.zip" / "train.py")  # no such file
    linecache.cache[name] = (threading.Lock(),)  # a 1-tuple, as linecache.lazycache makes
    try:
        namespace = {"__name__": "__main__"}
        exec(compile("def step():\n    return 1\n", name, "exec"), namespace)
        assert pickle.loads(dumps(namespace["step"]))() == 1
    finally:
        del linecache.cache[name]


def test_a_global_used_in_a_nested_function_is_named_as_the_culprit(tmp_path) -> None:
    from lightkit.runtime.launch import Job, _culprit

    namespace: dict = {"__name__": "__main__", "LOG": str(tmp_path / "x.log")}
    source = (
        "log = open(LOG, 'w')\n\ndef hook(ctx):\n    return [log.write(str(i)) for i in range(2)]\n"
    )
    exec(compile(source, "cell.py", "exec"), namespace)
    reg = lk.Registry()
    reg.on("fit_start")(namespace["hook"])
    try:
        found = _culprit(Job(lk.TrainerConfig(), "fit", lk.collect(reg), None))
    finally:
        namespace["log"].close()
    assert found.startswith("hook(ctx) at cell.py:3 uses the global 'log' (a TextIOWrapper)")
