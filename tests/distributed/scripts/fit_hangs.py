"""A plain script whose fit(devices=2) never ends: rank 1 sleeps in its second step.

Arguments: the marker folder (ranks write their pids there), the start method.
"""

import signal
import sys

import lightkit as lk
from tests.distributed import programs

# The test stands for Ctrl-C in a terminal, where SIGINT raises KeyboardInterrupt. A suite run
# as a background job of a non-interactive shell starts with SIGINT ignored, and this process
# would inherit that: give it the terminal's handler back.
signal.signal(signal.SIGINT, signal.default_int_handler)

marker_dir, start_method = sys.argv[1], sys.argv[2]
trainer = lk.Trainer(
    accelerator="cpu",
    devices=2,
    strategy=lk.DDPStrategy(start_method=start_method),
    precision="64-true",
    max_epochs=2,
    num_sanity_val_steps=0,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    logger=False,
    default_root_dir=marker_dir,
)
trainer.fit(lk.collect(programs).with_hparams(hang_rank=1, fail_step=1, marker_dir=marker_dir))
