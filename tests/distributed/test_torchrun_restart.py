"""torchrun's ``--max-restarts``: a rank that crashes once is restarted, and the job resumes
from the newest checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from tests.distributed.programs import N_TRAIN
from tests.distributed.support import assert_same_weights, run_torchrun

FAIL_STEP = 6  # of 8 (2 epochs of 4 steps): in the middle of the second epoch


def test_a_rank_crashing_once_is_restarted_and_resumes_from_last(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    proc = run_torchrun(
        "fit_restarts.py",
        cwd=tmp_path,
        torchrun_args=("--standalone", "--max-restarts", "1"),
        timeout=120,
        OMP_NUM_THREADS="1",
        RUN_DIR=str(tmp_path),
        FAIL_STEP=str(FAIL_STEP),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"boom on rank 1 at step {FAIL_STEP}" in proc.stderr  # the first attempt crashed
    for rank in (0, 1):
        resumed = json.loads((tmp_path / f"resumed-{rank}.json").read_text())
        assert resumed["attempt"] == 1  # only the restarted job found a checkpoint
        assert 0 < resumed["global_step"] <= FAIL_STEP
        done = json.loads((tmp_path / f"done-{rank}.json").read_text())
        assert done == {"attempt": 1, "global_step": 2 * N_TRAIN // 64, "epoch": 2}
    # The weights of an uninterrupted run (one process, global batch 64), to float64 rounding.
    net = reference["plain"].models["net"]
    resumed_net = copy.deepcopy(net)
    resumed_net.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert_same_weights(resumed_net, net)
