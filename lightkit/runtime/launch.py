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

Preemption: during ``fit``, a preemption signal sent to the calling process (``kill``,
``docker stop``) is passed on to every rank, which saves ``last.ckpt`` and stops as one process
does; the calling process then raises :class:`~lightkit.checkpoint.Preempted` too.

This module is the calling process's side: starting the ranks and supervising them. A rank's
side (read the job, run it, report) is :mod:`lightkit.runtime.rank`; what travels between
them is pickled by :mod:`lightkit.runtime.pickling`.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lightkit.errors import ConfigError, DistributedError
from lightkit.runtime.environment import free_port, local_rank_env
from lightkit.runtime.pickling import dumps
from lightkit.runtime.rank import FD_VAR, PARENT_VAR, forked_main, user_loggers
from lightkit.utils.validators import one_of

if TYPE_CHECKING:
    from lightkit.engine.result import Result
    from lightkit.engine.trainer import Trainer
    from lightkit.spec.spec import TrainingSpec

START_METHODS = ("spawn", "fork")
#: Seconds between SIGTERM and SIGKILL when stopping ranks.
_KILL_GRACE = 3.0


@attrs.define
class Job:
    """One entry-point call, as every rank runs it."""

    config: Any
    stage: str
    spec: Any
    ckpt_path: Any
    weights: Any = None  # the calling trainer's fitted model states (validate after fit)


@attrs.define
class Launcher:
    """Starts ``nprocs`` ranks on this machine and supervises them (see the module docstring)."""

    nprocs: int
    start_method: str = attrs.field(default="spawn", validator=one_of(*START_METHODS))
    failure_timeout: float = 10.0

    def launch(
        self, trainer: Trainer, stage: str, spec: TrainingSpec, ckpt_path: Any, weights: Any = None
    ) -> Result:
        """Run ``trainer.<stage>(spec, ckpt_path)`` on every rank; return rank 0's result."""
        job = Job(trainer.config, stage, spec, _plain_path(ckpt_path), weights)
        port = free_port()
        if self.start_method == "fork":
            _check_fork()
            start = _ForkedRank
            payload: Any = job
        else:
            start = _SpawnedRank  # type: ignore[assignment]
            payload = _dumps_job(job)
        ranks: list[_Rank] = []
        signals = list(trainer.config.preemption_signals or []) if stage == "fit" else []
        try:
            for rank in range(self.nprocs):
                ranks.append(start(rank, local_rank_env(rank, self.nprocs, port), payload))
            # Installed after the ranks started: a forked rank must not inherit the handler.
            with _forwarding(signals, ranks) as received:
                for r in ranks:  # after every start: the ranks import torch at the same time
                    r.send_job()
                outcome = _supervise(ranks, self.failure_timeout)
        finally:
            _stop(ranks)
        outcome.raise_if_preempted(received[0] if received else None)
        result = outcome.result_or_raise(self.nprocs)
        states = result.extras.pop("callback_states", None) or []
        for callback, state in zip(trainer.config.callbacks, states, strict=False):
            if state is not None:  # the caller's objects end as rank 0's did
                callback.load_state_dict(state)
        dirs = result.extras.pop("logger_dirs", None) or []
        for logger, log_dir in zip(user_loggers(trainer), dirs, strict=False):
            if log_dir is not None and hasattr(logger, "log_dir"):
                logger.log_dir = log_dir
        return result


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
        return dumps(job)
    except Exception as exc:
        culprit = _culprit(job)
        raise ConfigError(
            f"the run cannot be sent to the rank processes: {culprit}{type(exc).__name__}: "
            f"{exc}. Create such objects inside the decorated functions, or use "
            f"DDPStrategy(start_method='fork') (POSIX), which copies nothing.",
            code="unpicklable-run",
        ) from exc


def _global_names(code: types.CodeType) -> Iterator[str]:
    """The global names ``code`` reads, its nested functions' and comprehensions' too."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _culprit(job: Job) -> str:
    """What in ``job`` cannot be pickled, named for a person: a function's global or
    closure variable (with the function's file:line), a callback, a logger, or a flag."""
    from lightkit.errors import describe_function

    def fails(obj: Any) -> bool:
        try:
            dumps(obj)
        except Exception:
            return True
        return False

    for entry in getattr(job.spec, "functions", ()):
        fn = inspect.unwrap(entry.fn)
        if not fails(fn):
            continue
        code = getattr(fn, "__code__", None)
        if code is not None:
            globals_ = getattr(fn, "__globals__", {})
            for name in dict.fromkeys(_global_names(code)):
                if name in globals_ and fails(globals_[name]):
                    value = globals_[name]
                    return (
                        f"{describe_function(fn)} uses the global {name!r} (a "
                        f"{type(value).__name__}), which cannot be sent. "
                    )
            cells = getattr(fn, "__closure__", None) or ()
            for name, cell in zip(code.co_freevars, cells, strict=False):
                try:
                    value = cell.cell_contents
                except ValueError:  # a cell not yet bound
                    continue
                if fails(value):
                    return (
                        f"{describe_function(fn)} uses the variable {name!r} (a "
                        f"{type(value).__name__}) of the function around it, which cannot be "
                        f"sent. "
                    )
        return f"{describe_function(fn)} cannot be sent. "
    config = job.config
    for what, items in (("callback", config.callbacks), ("logger", config.logger)):
        for item in items if isinstance(items, (list, tuple)) else [items]:
            if not isinstance(item, bool) and fails(item):
                return f"the {what} {type(item).__name__} cannot be sent. "
    return ""


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
        full_env = {**os.environ, **env, FD_VAR: str(fd), PARENT_VAR: str(os.getpid())}
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: do not oversubscribe the cores
            nprocs = int(env["LOCAL_WORLD_SIZE"])
            full_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nprocs))
        code = "from lightkit.runtime.rank import spawned_main; spawned_main()"
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
            target=forked_main,
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
    exception_type: str | None = None  # "builtins.ValueError"; None for a rank that died


@contextlib.contextmanager
def _forwarding(names: list[str], ranks: list[_Rank]) -> Iterator[list[int]]:
    """While the ranks run ``fit``, a preemption signal sent to this process (``docker stop``,
    ``kill``, a scheduler) goes on to every rank, which saves ``last.ckpt`` and stops, as one
    process does; the list yielded receives the signal's number."""
    from lightkit.checkpoint.preemption import call_previous, handling

    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
        for r in ranks:
            if r.exitcode() is None:
                r.signal(signum)

    with handling(names, forward) as previous:
        yield received
    if received:
        call_previous(previous, received[0])


@attrs.define
class _Outcome:
    result: bytes | None = None
    failures: list[_Failure] = attrs.field(factory=list)
    exitcodes: dict[int, int | None] = attrs.field(factory=dict)
    timed_out: list[int] = attrs.field(factory=list)
    #: The ranks that stopped for a preemption signal, the signal, and rank 0's
    #: ``last.ckpt`` (``""``: none written).
    preempted_ranks: set[int] = attrs.field(factory=set)
    preempted_signum: int | None = None
    preempted: str | None = None

    def raise_if_preempted(self, received: int | None) -> None:
        """:class:`Preempted`, as one process raises it, when this process or the ranks got a
        preemption signal, unless a rank failed of its own accord (that is the error then)."""
        from lightkit.checkpoint.preemption import Preempted

        signum = received if received is not None else self.preempted_signum
        if signum is None:
            return
        killed_by_it = {-signum, 128 + signum}
        if any(f.exitcode not in killed_by_it for f in self.failures):
            return
        raise Preempted(signum, Path(self.preempted) if self.preempted else None)

    def result_or_raise(self, nprocs: int) -> Result:
        codes = ", ".join(
            f"rank {r}: {_describe_code(c)}" for r, c in sorted(self.exitcodes.items())
        )
        if not self.failures and self.result is not None:
            return pickle.loads(self.result)  # type: ignore[no-any-return]
        if not self.failures:
            error = DistributedError(
                f"rank 0 ended without a result ({codes}).", code="rank-failed"
            )
            error.rank, error.exitcodes = 0, dict(self.exitcodes)
            raise error
        root = min(self.failures, key=lambda f: (f.secondary, f.at))
        others = [  # a rank stopped after the failure is listed as stopped, not as dying
            f"  rank {f.rank}: {f.summary}"
            for f in sorted(self.failures, key=lambda f: f.rank)
            if f is not root and f.rank not in self.timed_out
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
        error.rank = root.rank
        error.exitcodes = dict(self.exitcodes)
        # The failing rank's exception class, by name: the exception itself stays there
        # (it may not unpickle here), and `except DistributedError` can still tell an
        # out-of-memory from a bug.
        error.exception_type = root.exception_type
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
        elif kind == "preempted":
            out.preempted_ranks.add(rank.rank)
            out.preempted_signum = data["signum"]
            if rank.rank == 0 or out.preempted is None:
                out.preempted = data["checkpoint"] or ""
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
                reported = r.rank in out.preempted_ranks or any(
                    f.rank == r.rank for f in out.failures
                )
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


__all__ = ["START_METHODS", "Job", "Launcher"]
