"""Run the resumable spec in a child process as a test asks (``argv[1]`` is JSON), so the test
can kill it or signal it."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lightkit as lk  # noqa: E402
from lightkit.checkpoint import io as ckpt_io  # noqa: E402
from tests.checkpoint import resumable  # noqa: E402
from tests.checkpoint.ckpt_helpers import SPEC, flags  # noqa: E402


def slow_writer(delay: float, die_on_call: int | None):
    """Write checkpoints in 8 chunks over ``delay`` seconds; on call ``die_on_call``, die by
    SIGKILL halfway through."""
    calls = [0]

    def write(state, f):
        calls[0] += 1
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        chunk = max(1, len(data) // 8)
        for i, start in enumerate(range(0, len(data), chunk)):
            f.write(data[start : start + chunk])
            f.flush()
            if die_on_call == calls[0] and i == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(delay / 8)

    return write


def main() -> None:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    resumable.CONTROL.update({k: tuple(v) for k, v in cfg.get("control", {}).items()})
    if "slow_write" in cfg:
        ckpt_io._write = slow_writer(cfg["slow_write"], cfg.get("die_on_call"))
    if "handler_marker" in cfg:
        marker = Path(cfg["handler_marker"])

        def mine(signum, frame):
            marker.write_text(str(signum))

        signal.signal(signal.SIGTERM, mine)
    callbacks = [lk.ModelCheckpoint(**cfg["checkpoint"])] if "checkpoint" in cfg else []
    trainer = lk.Trainer(**flags(cfg["root"], callbacks=callbacks))
    trainer.fit(SPEC)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
