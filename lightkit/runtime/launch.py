"""Start the ranks of a one-machine run, watch them, and return rank 0's result.

``Trainer(devices=N, strategy="ddp")`` called from a plain process (a script, the CLI, a
notebook) does not train in that process: it starts N rank processes on this machine with
torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, a
free ``MASTER_PORT``), runs the same ``fit``/``validate``/``test``/``predict`` call in each,
and supervises them. The calling process never joins the process group, so it stays usable
whatever the ranks do: ``fit`` returns rank 0's ``Result`` (models on the CPU), or raises.
Under torchrun or SLURM nothing is started: each process is a rank already and joins the job.

How the ranks start (``DDPStrategy(start_method=...)``, the same for FSDP):

- ``"spawn"`` (the default): each rank is a fresh interpreter that imports lightkit and
  receives the trainer's configuration and the spec, pickled with ``cloudpickle``. Functions
  from importable modules travel as references; functions and classes defined in
  ``__main__`` (a script run directly, a notebook cell) travel by value, with the globals they
  use. This works after threads were started, after CUDA was used in the calling process, in
  scripts without an ``if __name__ == "__main__":`` guard (the script is not re-run), and in
  notebooks. It costs a second or two per call (every rank imports torch).
- ``"fork"``: the ranks are forked from the calling process: no pickling, the fastest start,
  every object works as it is. POSIX only. Refused once CUDA is initialized in the calling
  process (a forked child cannot use it). Forked ranks run with one intra-op thread: the
  OpenMP thread pool of a process that already computed does not survive a fork.

Notebooks (Jupyter, IPython): both start methods work, and a cell can call ``fit`` again.
With ``"spawn"``, what the functions use from the notebook is copied into each rank when
``fit`` is called (load large data inside the data function, not in a global); objects that
cannot be pickled (open files, locks, generators) must be created inside the functions, or use
``"fork"``. In both, each rank works on its own copies: callbacks, lists a hook appends to and
other notebook objects are not changed by the run; only the returned ``Result`` comes back.
The ranks' output goes to the notebook's output (ipykernel forwards it). Interrupting the
kernel stops every rank. ``torch.multiprocessing`` start methods are not used: ``spawn``
there cannot unpickle functions defined in a notebook, and re-running a script
(``sys.argv``) cannot work in one.

Failure: the first rank that raises (or dies: a signal, ``os._exit``) is the root cause. The
other ranks are stopped by the broken group (their collectives fail at once on gloo) or, after
``failure_timeout`` seconds, by SIGTERM and then SIGKILL; ranks that raise meanwhile still run
their ``exception`` hooks and flush their loggers. The calling process then raises
:class:`~lightkit.DistributedError` with the root cause's traceback, printed once. No rank
outlives the call, and the ranks die with the calling process (``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import io
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lightkit.errors import ConfigError, DistributedError
from lightkit.runtime.environment import free_port, local_rank_env

if TYPE_CHECKING:
    from lightkit.engine.result import Result
    from lightkit.engine.trainer import Trainer
    from lightkit.spec.spec import TrainingSpec

START_METHODS = ("spawn", "fork")
_FD_VAR = "LIGHTKIT_LAUNCH_FD"
_PARENT_VAR = "LIGHTKIT_PARENT_PID"
#: Seconds between SIGTERM and SIGKILL when stopping ranks.
_KILL_GRACE = 3.0


@attrs.define
class Job:
    """One entry-point call, as every rank runs it."""

    config: Any
    stage: str
    spec: Any
    ckpt_path: Any


@attrs.define
class Launcher:
    """Starts ``nprocs`` ranks on this machine and supervises them (see the module docstring)."""

    nprocs: int
    start_method: str = attrs.field(default="spawn", validator=attrs.validators.in_(START_METHODS))
    failure_timeout: float = 10.0

    def launch(self, trainer: Trainer, stage: str, spec: TrainingSpec, ckpt_path: Any) -> Result:
        """Run ``trainer.<stage>(spec, ckpt_path)`` on every rank; return rank 0's result."""
        job = Job(trainer.config, stage, spec, _plain_path(ckpt_path))
        port = free_port()
        if self.start_method == "fork":
            _check_fork()
            start = _ForkedRank
            payload: Any = job
        else:
            start = _SpawnedRank  # type: ignore[assignment]
            payload = _dumps_job(job)
        ranks: list[_Rank] = []
        try:
            for rank in range(self.nprocs):
                ranks.append(start(rank, local_rank_env(rank, self.nprocs, port), payload))
            for r in ranks:  # after every start: the ranks import torch at the same time
                r.send_job()
            outcome = _supervise(ranks, self.failure_timeout)
        finally:
            _stop(ranks)
        return outcome.result_or_raise(self.nprocs)


# -- the calling process ------------------------------------------------------------------------
def _plain_path(path: Any) -> Any:
    return str(path) if isinstance(path, Path) else path


def _check_fork() -> None:
    if not hasattr(os, "fork"):
        raise ConfigError(
            "start_method='fork' needs os.fork, which this platform lacks. Use 'spawn'.",
            code="impossible-config",
        )
    import torch

    if torch.cuda.is_initialized():
        raise ConfigError(
            "start_method='fork' cannot start ranks: CUDA is already initialized in this "
            "process, and a forked process cannot use it. Use start_method='spawn' (the "
            "default), or restart the notebook kernel and do not touch CUDA before fit.",
            code="fork-after-cuda",
        )
    # Import now what every rank imports while setting up (DDP imports torch._dynamo):
    # forked ranks then inherit it instead of each paying seconds for it.
    import torch._dynamo
    import torch.distributed.nn.functional
    import torch.nn.parallel


def _dumps_job(job: Job) -> bytes:
    try:
        return _dumps(job)
    except Exception as exc:
        raise ConfigError(
            f"the run cannot be sent to the rank processes: {type(exc).__name__}: {exc}. "
            f"Create such objects inside the decorated functions, or use "
            f"DDPStrategy(start_method='fork') (POSIX), which copies nothing.",
            code="unpicklable-run",
        ) from exc


def _dumps(obj: Any) -> bytes:
    """Pickle for another process: cloudpickle (functions of ``__main__`` and the spec's
    run-time hyperparameter model by value), and whole plain subclasses of lightkit's slotted
    plugins (below)."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            # A plain subclass of a slotted attrs class (``class Counter(lk.Callback)``
            # setting ``self.count`` in __init__) has a __dict__ that attrs' __getstate__
            # leaves out: send both.
            cls = type(obj)
            if (
                not isinstance(obj, type)
                and attrs.has(cls)
                and getattr(obj, "__dict__", None)
                and any("__slots__" in vars(k) for k in cls.__mro__[1:-1] if attrs.has(k))
            ):
                slots = {n: getattr(obj, n) for n in _slot_names(cls) if hasattr(obj, n)}
                return _rebuild_slotted, (cls, slots, dict(obj.__dict__))
            parent = getattr(super(), "reducer_override", None)
            return parent(obj) if parent is not None else NotImplemented

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _slot_names(cls: type) -> list[str]:
    names = [n for k in cls.__mro__ for n in vars(k).get("__slots__", ())]
    return [n for n in names if n not in ("__weakref__", "__dict__")]


def _rebuild_slotted(cls: Any, slots: dict[str, Any], values: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    for name, value in slots.items():
        object.__setattr__(obj, name, value)
    obj.__dict__.update(values)
    return obj


class _Rank(abc.ABC):
    """A started rank: its process and its end of the message pipe."""

    rank: int
    conn: mpc.Connection
    pid: int

    @property
    @abc.abstractmethod
    def sentinel(self) -> Any:
        """What ``multiprocessing.connection.wait`` watches for the process's end."""

    @abc.abstractmethod
    def exitcode(self) -> int | None:
        """The exit status, or ``None`` while the process runs."""

    def send_job(self) -> None:  # noqa: B027 - optional: forked ranks need no hand-over
        """Hand the job over (spawned ranks read it once they have imported lightkit)."""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.exitcode() is None and time.monotonic() < deadline:
            if self.sentinel is None:
                time.sleep(0.02)
            else:
                mpc.wait([self.sentinel], timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:  # noqa: B027 - optional: nothing to release by default
        """Release what watching the process needed."""


class _SpawnedRank(_Rank):
    def __init__(self, rank: int, env: dict[str, str], payload: bytes) -> None:
        self.rank = rank
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        fd = child_end.fileno()
        full_env = {**os.environ, **env, _FD_VAR: str(fd), _PARENT_VAR: str(os.getpid())}
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: do not oversubscribe the cores
            nprocs = int(env["LOCAL_WORLD_SIZE"])
            full_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nprocs))
        code = "from lightkit.runtime.launch import spawned_main; spawned_main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=full_env, pass_fds=(fd,), close_fds=True
        )
        child_end.close()
        self.pid = self.proc.pid
        self.conn = parent_end
        self.payload = payload
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(self.pid)  # Linux: readable once the process exits

    def send_job(self) -> None:
        try:
            self.conn.send({"sys_path": list(sys.path), "argv": list(sys.argv)})
            self.conn.send_bytes(self.payload)
        except OSError:
            pass  # it died at start; the supervisor reports its exit code
        self.payload = b""

    @property
    def sentinel(self) -> Any:
        return self.pidfd  # None elsewhere: the supervisor polls

    def exitcode(self) -> int | None:
        return self.proc.poll()

    def close(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


class _ForkedRank(_Rank):
    def __init__(self, rank: int, env: dict[str, str], payload: Job) -> None:
        self.rank = rank
        ctx = multiprocessing.get_context("fork")
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_forked_main,
            args=(env, os.getpid(), payload, child_end),
            name=f"lightkit-rank-{rank}",
            daemon=False,
        )
        self.proc.start()
        child_end.close()
        self.pid = self.proc.pid  # type: ignore[assignment]
        self.conn = parent_end

    @property
    def sentinel(self) -> Any:
        return self.proc.sentinel

    def exitcode(self) -> int | None:
        return self.proc.exitcode


@attrs.define
class _Failure:
    rank: int
    at: float
    secondary: bool
    traceback: str
    summary: str
    exitcode: int | None = None


@attrs.define
class _Outcome:
    result: bytes | None = None
    failures: list[_Failure] = attrs.field(factory=list)
    exitcodes: dict[int, int | None] = attrs.field(factory=dict)
    timed_out: list[int] = attrs.field(factory=list)

    def result_or_raise(self, nprocs: int) -> Result:
        codes = ", ".join(
            f"rank {r}: {_describe_code(c)}" for r, c in sorted(self.exitcodes.items())
        )
        if not self.failures and self.result is not None:
            return pickle.loads(self.result)  # type: ignore[no-any-return]
        if not self.failures:
            raise DistributedError(f"rank 0 ended without a result ({codes}).", code="rank-failed")
        root = min(self.failures, key=lambda f: (f.secondary, f.at))
        others = [
            f"  rank {f.rank}: {f.summary}"
            for f in sorted(self.failures, key=lambda f: f.rank)
            if f is not root
        ]
        stopped = [f"  rank {r}: stopped (no exit after the failure)" for r in self.timed_out]
        lines = "\n".join(others + stopped)
        message = (
            f"rank {root.rank} of {nprocs} failed first and stopped the run; the traceback "
            f"below is its own.\n"
            + (f"The other ranks:\n{lines}\n" if lines else "")
            + f"Exit codes: {codes}.\n\n"
            + root.traceback.rstrip()
        )
        error = DistributedError(message, code="rank-failed")
        error.rank = root.rank  # type: ignore[attr-defined]
        error.exitcodes = dict(self.exitcodes)  # type: ignore[attr-defined]
        raise error


def _describe_code(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _supervise(ranks: list[_Rank], failure_timeout: float) -> _Outcome:
    """Wait for every rank; collect rank 0's result and every failure report."""
    out = _Outcome()
    open_conns = {r.conn: r for r in ranks}
    running = {r.rank: r for r in ranks}
    deadline: float | None = None
    killing_at: float | None = None

    def receive(conn: mpc.Connection) -> None:
        rank = open_conns[conn]
        try:
            kind, data = conn.recv()
        except (EOFError, OSError):
            del open_conns[conn]
            return
        if kind == "result":
            out.result = data
        elif kind == "failed":
            out.failures.append(_Failure(rank.rank, **data))

    try:
        while running:
            now = time.monotonic()
            waits = [c for c in open_conns] + [
                r.sentinel for r in running.values() if r.sentinel is not None
            ]
            polled = any(r.sentinel is None for r in running.values())
            timeout = 0.05 if polled else 1.0
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
            for ready in mpc.wait(waits, timeout=timeout):
                if ready in open_conns:
                    receive(ready)
            for r in list(running.values()):
                code = r.exitcode()
                if code is None:
                    continue
                while r.conn in open_conns and r.conn.poll():  # its last words
                    receive(r.conn)
                del running[r.rank]
                out.exitcodes[r.rank] = code
                reported = any(f.rank == r.rank for f in out.failures)
                if code != 0 and not reported:
                    how = _describe_code(code)
                    out.failures.append(
                        _Failure(
                            r.rank,
                            time.time(),
                            False,
                            f"rank {r.rank} (pid {r.pid}) died ({how}) without raising "
                            f"an exception.",
                            f"died ({how})",
                            code,
                        )
                    )
            if out.failures and deadline is None:
                deadline = time.monotonic() + failure_timeout
            now = time.monotonic()
            if deadline is not None and now >= deadline and running:
                if killing_at is None:
                    out.timed_out = sorted(running)
                    for r in running.values():
                        r.signal(signal.SIGTERM)
                    killing_at = now + _KILL_GRACE
                    deadline = killing_at
                else:
                    for r in running.values():
                        r.signal(signal.SIGKILL)
                    deadline = now + 1.0
    except KeyboardInterrupt:  # the user interrupted: interrupt the ranks too
        _stop(ranks, signal.SIGINT)
        raise
    except BaseException:
        _stop(ranks)
        raise
    for conn in list(open_conns):  # anything still unread (the result is sent before exit)
        while conn in open_conns and conn.poll():
            receive(conn)
    for f in out.failures:
        f.exitcode = out.exitcodes.get(f.rank)
    return out


def _stop(ranks: list[_Rank], first: int = signal.SIGTERM) -> None:
    """Leave no rank behind: ``first`` (SIGTERM), a short wait, then SIGKILL; close pipes."""
    alive = [r for r in ranks if r.exitcode() is None]
    for r in alive:
        r.signal(first)
    deadline = time.monotonic() + _KILL_GRACE
    for r in alive:
        r.join(max(0.0, deadline - time.monotonic()))
    for r in ranks:
        if r.exitcode() is None:
            r.signal(signal.SIGKILL)
            r.join(5.0)
        if isinstance(r, _SpawnedRank):
            with contextlib.suppress(Exception):
                r.proc.wait(timeout=1.0)
        else:
            with contextlib.suppress(Exception):
                r.proc.join(1.0)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            r.conn.close()
        r.close()


# -- a rank ---------------------------------------------------------------------------------------
def spawned_main() -> None:
    """Entry point of a spawned rank (``python -c``): read the job, run it, report."""
    _die_with_parent(int(os.environ[_PARENT_VAR]))
    conn = mpc.Connection(int(os.environ.pop(_FD_VAR)))
    header = conn.recv()
    sys.path[:] = header["sys_path"]
    sys.argv[:] = header["argv"]
    try:
        job = pickle.loads(conn.recv_bytes())
    except BaseException as exc:
        _report(conn, exc)
        _exit(1)
    _exit(_run(job, conn))


def _forked_main(env: dict[str, str], parent: int, job: Job, conn: mpc.Connection) -> None:
    os.environ.update(env)
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # the parent's OpenMP pool did not survive the fork
    _exit(_run(job, conn))


def _run(job: Job, conn: mpc.Connection) -> int:
    """Run the job as this rank; send rank 0's result; return the exit code."""
    from lightkit.engine.trainer import Trainer

    trainer = Trainer(job.config)
    try:
        result = trainer._run(job.stage, job.spec, job.ckpt_path)
        if int(os.environ.get("RANK", "0")) == 0:
            conn.send(("result", _dumps_result(result, trainer)))
        return 0
    except BaseException as exc:
        _report(conn, exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else _exit_status(exc)
    finally:
        trainer.last_engine = None


def _exit_status(exc: BaseException) -> int:
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code:
        return exc.code
    return 1


def _dumps_result(result: Result, trainer: Trainer) -> bytes:
    """Rank 0's result for the calling process: models on the CPU, nothing tied to a group."""
    result.models = _portable_models(result, trainer.last_engine)
    return _dumps(result)


def _portable_models(result: Result, engine: Any) -> dict[str, Any]:
    """CPU modules for the calling process. Under FSDP the strategy gathered each model's
    full state; the model is rebuilt from its function and loaded with it."""
    full = result.extras.pop("full_model_states", None)
    if full is None:
        return {name: module.cpu() for name, module in result.models.items()}
    from lightkit.engine.binders import bind_plan

    hparams = engine.spec.hparams
    base = {"ctx": engine.ctx, "hparams": hparams}
    models: dict[str, Any] = {}
    for plan in engine.spec.plans:
        if plan.role == "model":
            module = engine.runtime.precision.convert_module(bind_plan(plan, (), base, hparams)())
            module.load_state_dict(full[plan.name])
            models[plan.name] = module.cpu()
    return models


def _report(conn: mpc.Connection, exc: BaseException) -> None:
    """Tell the supervisor why this rank failed (never print it here: it prints once)."""
    text = "".join(traceback.format_exception(exc))
    rank = int(os.environ.get("RANK", "0"))
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    head = f"Traceback of rank {rank} (pid {os.getpid()}), most recent call last:\n"
    if text.startswith("Traceback (most recent call last):\n"):
        text = head + text.split("\n", 1)[1]
    data = {
        "at": time.time(),
        "secondary": is_peer_failure(exc),
        "traceback": text,
        "summary": summary.splitlines()[0][:200],
    }
    with contextlib.suppress(Exception):
        conn.send(("failed", data))


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says another rank failed (a broken collective), not a cause of its own."""
    import torch.distributed as dist

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, dist.DistError):
            return True
        text = str(e)
        if isinstance(e, RuntimeError) and any(
            marker in text
            for marker in (
                "Connection closed by peer",
                "Connection reset by peer",
                "Broken pipe",
                "gloo/transport",
                "NCCL communicator was aborted",
                "ProcessGroupNCCL",
            )
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the calling process dies, so no rank is ever orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _exit(code: int) -> None:
    """End the rank now: flush what it printed, skip interpreter teardown (nothing of the run
    is left to release, and exit-time destructors of native libraries can hang)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


__all__ = ["START_METHODS", "Job", "Launcher", "is_peer_failure", "spawned_main"]
