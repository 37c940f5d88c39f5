"""Run under torchrun (or with its variables set by hand): fit N times in this process and
print, per fit, this rank's result as JSON. Each fit joins the job and tears the group down."""

import json
import os
import sys

import torch.distributed as dist

import lightkit as lk
from tests.distributed import programs

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
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
threads = len(os.listdir("/proc/self/task"))
for i in range(runs):
    result = trainer.fit(spec)
    line = {
        "run": i,
        "rank": int(os.environ["RANK"]),
        "world": result.models["net"] is not None and dist.is_initialized(),
        "metrics": result.metrics,
        "global_step": result.global_step,
        "threads_left": len(os.listdir("/proc/self/task")) - threads,
    }
    print("RESULT " + json.dumps(line), flush=True)
