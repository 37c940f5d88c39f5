"""A rank started by :class:`~lightkit.runtime.launch.Launcher`: read the job, run the same
``fit``/``validate``/``test``/``predict`` call, and report to the calling process (rank 0's
result, or why this rank failed). A rank dies with the calling process (``PR_SET_PDEATHSIG``
on Linux) and ends with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.connection as mpc
import os
import pickle
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from lightkit.runtime.pickling import dumps

if TYPE_CHECKING:
    from lightkit.engine.result import Result
    from lightkit.engine.trainer import Trainer
    from lightkit.runtime.launch import Job

#: The environment variables a spawned rank finds its pipe and its parent in.
FD_VAR = "LIGHTKIT_LAUNCH_FD"
PARENT_VAR = "LIGHTKIT_PARENT_PID"


def spawned_main() -> None:
    """Entry point of a spawned rank (``python -c``): read the job, run it, report."""
    _die_with_parent(int(os.environ[PARENT_VAR]))
    conn = mpc.Connection(int(os.environ.pop(FD_VAR)))
    header = conn.recv()
    sys.path[:] = header["sys_path"]
    sys.argv[:] = header["argv"]
    try:
        job = pickle.loads(conn.recv_bytes())
    except BaseException as exc:
        _report(conn, exc)
        _exit(1)
    _exit(_run(job, conn))


def forked_main(env: dict[str, str], parent: int, job: Job, conn: mpc.Connection) -> None:
    os.environ.update(env)
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # the parent's OpenMP pool did not survive the fork
    _exit(_run(job, conn))


def _run(job: Job, conn: mpc.Connection) -> int:
    """Run the job as this rank; send rank 0's result; return the exit code."""
    from lightkit.checkpoint.preemption import Preempted
    from lightkit.engine.trainer import Trainer

    trainer = Trainer(job.config)
    try:
        result = trainer._run(job.stage, job.spec, job.ckpt_path, job.weights)
        if int(os.environ.get("RANK", "0")) == 0:
            conn.send(("result", _dumps_result(result, trainer)))
        return 0
    except Preempted as exc:  # a forwarded signal: last.ckpt is written, not a failure
        checkpoint = None if exc.checkpoint is None else str(exc.checkpoint)
        with contextlib.suppress(Exception):
            conn.send(("preempted", {"signum": exc.signum, "checkpoint": checkpoint}))
        return _exit_status(exc)
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
    # The user's callback objects stay in the calling process: send what each would save in a
    # checkpoint (ModelCheckpoint's best_model_path, EarlyStopping's stopped_epoch, ...).
    result.extras["callback_states"] = [_state_of(cb) for cb in trainer.config.callbacks]
    # And the folder each of the user's loggers chose (a new version_N), so that
    # `logger.log_dir` after fit names it as in one process.
    result.extras["logger_dirs"] = [getattr(lg, "log_dir", None) for lg in user_loggers(trainer)]
    return dumps(result)


def user_loggers(trainer: Trainer) -> list[Any]:
    """The logger objects the caller passed (none for ``logger=True``, which makes its own)."""
    from lightkit.loggers import check_loggers

    value = trainer.config.logger
    return [] if value is True else check_loggers(value)


def _state_of(callback: Any) -> Any:
    try:
        state = callback.state_dict()
        dumps(state)
    except Exception:
        return None  # a state that cannot travel: the object in the caller keeps its own
    return state


def _portable_models(result: Result, engine: Any) -> dict[str, Any]:
    """CPU modules for the calling process. Under FSDP the strategy gathered each model's
    full state; the model is rebuilt from its function and loaded with it."""
    full = result.extras.pop("full_model_states", None)
    if full is None:
        return {name: module.cpu() for name, module in result.models.items()}
    return engine.rebuilt_models(full)  # type: ignore[no-any-return]


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
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
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


__all__ = ["FD_VAR", "PARENT_VAR", "forked_main", "is_peer_failure", "spawned_main"]
