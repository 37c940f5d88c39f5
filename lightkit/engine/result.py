"""``Result``: what a run returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from torch import nn


@attrs.define
class Result:
    """What ``fit``/``validate``/``test`` return.

    Attributes:
        metrics: the latest value of every logged metric (epoch aggregates for epoch metrics).
        models: the user's modules by name (never a DDP/FSDP wrapper).
        best_checkpoint: the best checkpoint by the checkpoint callback's monitor (the first
            ``ModelCheckpoint`` that monitors, else the first), if any.
        last_checkpoint: the newest checkpoint this run wrote, if any.
        log_dir: the run folder (logs, ``spec.json``, ``config.json``, checkpoints).
        global_step: optimizer steps taken (training batches in manual optimization).
        epoch: epochs completed.
        stopped_by: why training ended (``"max_epochs"``, ``"max_steps"``, ``"max_time"``,
            ``"should_stop"``, ``"signal"``; ``None`` outside fit).
    """

    metrics: dict[str, float] = attrs.field(factory=dict)
    models: dict[str, nn.Module] = attrs.field(factory=dict)
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    log_dir: Path | None = None
    global_step: int = 0
    epoch: int = 0
    stopped_by: str | None = None
    extras: dict[str, Any] = attrs.field(factory=dict, repr=False)
