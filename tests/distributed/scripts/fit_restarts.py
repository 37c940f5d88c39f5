"""Run under ``torchrun --max-restarts 1``: a 2-rank fit of ``tests.distributed.programs``
checkpointing every step, where rank 1 raises at step ``$FAIL_STEP`` on the first attempt only.
Every attempt starts with ``ckpt_path="last"``, so the restart resumes from the newest
checkpoint under ``$RUN_DIR``.

Writes to ``$RUN_DIR``: ``resumed-<rank>.json`` (the step of the checkpoint each rank loaded),
``done-<rank>.json`` (the attempt and final step) and ``weights.pt`` (rank 0's final weights).
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch

import lightkit as lk
from tests.distributed import programs

RUN_DIR = Path(os.environ["RUN_DIR"])
RANK = int(os.environ["RANK"])
ATTEMPT = int(os.environ["TORCHELASTIC_RESTART_COUNT"])


@lk.on("load_checkpoint")
def note_resume(checkpoint):
    out = {"attempt": ATTEMPT, "global_step": checkpoint["global_step"]}
    (RUN_DIR / f"resumed-{RANK}.json").write_text(json.dumps(out))


spec = lk.collect(programs, sys.modules[__name__])
if ATTEMPT == 0:  # the crash happens once; the restarted job runs to the end
    spec = spec.with_hparams(fail_rank=1, fail_step=int(os.environ["FAIL_STEP"]))
trainer = lk.Trainer(
    accelerator="cpu",
    strategy="ddp",
    precision="64-true",
    seed=0,
    max_epochs=2,
    num_sanity_val_steps=0,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[lk.ModelCheckpoint(every_n_train_steps=1, save_last=True)],
    logger=False,
    default_root_dir=str(RUN_DIR),
)
signal.alarm(60)  # a hang ends the process (SIGALRM) instead of waiting
result = trainer.fit(spec, ckpt_path="last")  # warns and starts fresh when there is none
signal.alarm(0)
done = {"attempt": ATTEMPT, "global_step": result.global_step, "epoch": result.epoch}
(RUN_DIR / f"done-{RANK}.json").write_text(json.dumps(done))
if RANK == 0:
    torch.save(result.models["net"].state_dict(), RUN_DIR / "weights.pt")
