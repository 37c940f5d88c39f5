"""A plain script whose fit(devices=2) has rank 1 raise at step 3 (spawned ranks).

Prints the wall time when fit raised, and the exit codes the error reports.
"""

import sys
import time

import lightkit as lk
from tests.distributed import programs

marker_dir = sys.argv[1]
trainer = lk.Trainer(
    accelerator="cpu",
    devices=2,
    strategy="ddp",
    precision="64-true",
    max_epochs=2,
    num_sanity_val_steps=0,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    log_every_n_steps=1,
    default_root_dir=marker_dir,
)
spec = lk.collect(programs).with_hparams(fail_rank=1, fail_step=3, marker_dir=marker_dir)
try:
    trainer.fit(spec)
except lk.DistributedError as exc:
    print(f"RAISED-AT {time.time()!r}", flush=True)
    print(f"EXITCODES {exc.exitcodes!r}", flush=True)
    raise
