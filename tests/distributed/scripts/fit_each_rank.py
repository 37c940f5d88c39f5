"""Run under torchrun (or with its variables set by hand): fit N times in this process and
append, per fit, this rank's result as a JSON line to ``$RUN_DIR/results-<rank>.jsonl``. Each
fit joins the job and tears the group down."""

import json
import os
import signal
import sys

import torch
import torch.distributed as dist

import lightkit as lk
from tests.distributed import programs

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
PER_RUN_TIMEOUT = 30  # seconds; one fit takes well under one
spec = lk.collect(programs)
trainer = lk.Trainer(
    accelerator="cpu",
    strategy="ddp",
    precision="64-true",
    seed=0,
    max_epochs=1,
    num_sanity_val_steps=0,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    logger=False,
    default_root_dir=os.environ.get("RUN_DIR", "."),
)
# The intra-op thread pool starts its workers at the first parallel op and keeps them: start
# them now (a sum big enough to split), so that only threads a fit leaves behind are counted.
torch.ones(2**20, dtype=torch.float64).sum()
threads = len(os.listdir("/proc/self/task"))
for i in range(runs):
    signal.alarm(PER_RUN_TIMEOUT)  # a hang ends the process (SIGALRM) instead of waiting
    result = trainer.fit(spec)
    signal.alarm(0)
    line = {
        "run": i,
        "rank": int(os.environ["RANK"]),
        "world": result.models["net"] is not None and dist.is_initialized(),
        "metrics": result.metrics,
        "global_step": result.global_step,
        "threads_left": len(os.listdir("/proc/self/task")) - threads,
    }
    # One file per rank: under torchrun both ranks share stdout and lines can interleave.
    with open(
        os.path.join(os.environ.get("RUN_DIR", "."), f"results-{line['rank']}.jsonl"), "a"
    ) as f:
        f.write(json.dumps(line) + "\n")
