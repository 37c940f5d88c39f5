"""``TensorBoardLogger``: scalars and hyperparameters as TensorBoard event files (tensorboardX)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from lightkit.loggers.base import Logger, flatten_params


@attrs.define
class TensorBoardLogger(Logger):
    """Write TensorBoard events into the run folder. Open them with
    ``tensorboard --logdir <default_root_dir>/lightkit_logs``.

    The hyperparameters are written with the final metrics, so TensorBoard's HParams tab
    compares runs.
    """

    _writer: Any = attrs.field(default=None, init=False, repr=False)
    _steps_since_flush: int = attrs.field(default=0, init=False, repr=False)
    _params: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from tensorboardX import SummaryWriter  # imported on use: keeps `import lightkit` light

            assert self.log_dir is not None, "TensorBoardLogger.setup() was not called"
            self._writer = SummaryWriter(
                logdir=str(self.log_dir), flush_secs=3600, max_queue=10_000
            )
        return self._writer

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        writer = self.writer
        for name, value in metrics.items():
            writer.add_scalar(name, value, global_step=step)
        self._steps_since_flush += 1
        if self._steps_since_flush >= self.flush_every_n_steps:
            self.save()

    def log_hparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        self._params = flatten_params(params)
        if metrics is None:
            return
        from tensorboardX.summary import hparams

        exp, ssi, sei = hparams(self._params, dict(metrics))
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)

    def save(self) -> None:
        if self._writer is not None:
            self._writer.flush()
        self._steps_since_flush = 0

    def finalize(self, status: str) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
