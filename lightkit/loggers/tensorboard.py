"""``TensorBoardLogger``: scalars, hyperparameters and (optionally) the model graph as
TensorBoard event files, written with tensorboardX.

Hyperparameters reach TensorBoard's HParams tab in two parts: the session start (the values)
when the run starts, so a running run already shows up, and at the end the experiment (the
hyperparameters and the metrics to compare) and the session's status (success or failure).
The HParams tab reads each metric's latest scalar from the run itself.

Scalars are buffered as rows of numbers and turned into events at the logger's flush points,
in the calling thread, with tensorboardX's ``EventsWriter``. tensorboardX's ``SummaryWriter``
would hand each event to a background thread through a ``multiprocessing`` queue instead; on
the tiny benchmark (``bench/run.py --only b``) that cost the training loop about 40 µs per
step, a tenth of the step. Building each row's event as it comes (``tensorboardX.summary.scalar``
goes through numpy) cost another 4 µs per step: code run once every 50 steps runs cold. ``experiment`` still gives a
full ``SummaryWriter`` (its own event file in the same folder) for images, histograms and the
graph.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from lightkit.errors import LightkitWarning, user_stacklevel
from lightkit.loggers.base import Logger, flatten_params, reset_run_state
from lightkit.utils.validators import kind_of

#: Numbers the event files this process opens.
_WRITERS = itertools.count()
#: What a TensorBoard tag may not hold (tensorboardX's rule: each becomes ``_``).
_NOT_IN_TAG = re.compile(r"[^-/\w\.]")


def _unique_suffix() -> str:
    """``.<pid>.<n>``: tensorboardX names event files by the second, so a writer opened
    again in the same second (the same logger in ``fit`` then ``validate``, ``experiment``
    used after ``fit``) would truncate the file the last one wrote."""
    return f".{os.getpid()}.{next(_WRITERS)}"


_STATUS = {"success": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "interrupted": "STATUS_FAILURE"}


@attrs.define
class TensorBoardLogger(Logger):
    """Write TensorBoard events into the run folder. Open them with
    ``tensorboard --logdir <default_root_dir>/lightkit_logs``.

    Args:
        log_graph: also write the model's graph, traced on its ``example_input_array``
            (needs the ``tensorboard`` package; the first model with an example input).
        (and ``save_dir``, ``name``, ``version``, ``flush_every_n_steps`` of :class:`Logger`.)

    Example::

        tb = lk.TensorBoardLogger(flush_every_n_steps=10, log_graph=True)
        lk.Trainer(logger=tb)
        tb.experiment.add_image(...)  # a tensorboardX SummaryWriter on the same run folder
    """

    _log_graph: bool = attrs.field(
        default=False, alias="log_graph", validator=kind_of(bool, "True or False")
    )
    _events: Any = attrs.field(default=None, init=False, repr=False)
    _experiment: Any = attrs.field(default=None, init=False, repr=False)
    _steps_since_flush: int = attrs.field(default=0, init=False, repr=False)
    _params: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)
    _final: dict[str, float] | None = attrs.field(default=None, init=False, repr=False)
    _last: dict[str, tuple[int, float]] = attrs.field(factory=dict, init=False, repr=False)
    # Rows not yet written as events: (wall time, step, [(tag, value), ...]).
    _rows: list[tuple[float, int, list[tuple[str, float]]]] = attrs.field(
        factory=list, init=False, repr=False
    )
    _tags: dict[str, str] = attrs.field(factory=dict, init=False, repr=False)
    _graph_done: bool = attrs.field(default=False, init=False, repr=False)
    _session_started: bool = attrs.field(default=False, init=False, repr=False)

    def setup(self, run_dir: Path) -> None:
        # A logger used for a second run (fit, then validate; two fits) starts that run clean,
        # its writers on the last run's folder (`experiment` used after a fit) closed.
        for writer in (self._events, self._experiment):
            if writer is not None:
                writer.close()
        reset_run_state(self)
        super().setup(run_dir)

    @property
    def events(self) -> Any:
        """The run's event file (a tensorboardX ``EventsWriter``, created on first use)."""
        if self._events is None:
            from tensorboardX.event_file_writer import EventsWriter

            if self.log_dir is None:
                raise RuntimeError("TensorBoardLogger.setup(run_dir) was not called.")
            os.makedirs(self.log_dir, exist_ok=True)
            self._events = EventsWriter(
                os.path.join(self.log_dir, "events"), filename_suffix=_unique_suffix()
            )
        return self._events

    @property
    def experiment(self) -> Any:
        """A tensorboardX ``SummaryWriter`` on the run folder, for what the logger does not
        write itself (``add_image``, ``add_histogram``, ...). Created on first use."""
        if self._experiment is None:
            from tensorboardX import SummaryWriter  # imported on use: keeps `import lightkit` light

            if self.log_dir is None:
                raise RuntimeError("TensorBoardLogger.setup(run_dir) was not called.")
            # Its own file (see _unique_suffix).
            self._experiment = SummaryWriter(
                logdir=str(self.log_dir),
                filename_suffix=f"{_unique_suffix()}.experiment",
            )
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        last, tags, values = self._last, self._tags, []
        for name, value in metrics.items():
            point = (step, value)
            if last.get(name) == point:
                continue  # the same point again (e.g. ``epoch`` in a step's second row)
            last[name] = point
            tag = tags.get(name)
            if tag is None:
                tag = tags[name] = _NOT_IN_TAG.sub("_", name).lstrip("/")
            values.append((tag, float(value)))
        if values:
            self._rows.append((time.time(), step, values))
        self._steps_since_flush += 1
        if self._steps_since_flush >= self.flush_every_n_steps:
            self.save()

    def log_hparams(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """At the start (no ``metrics``): write the session's hyperparameters. At the end:
        remember the final metrics; ``finalize`` writes them with the session's status."""
        first = self._params is None
        # TensorBoard's HParams drop a None; Lightning shows it as "None". A non-finite float
        # goes as text ("inf"): as a number tensorboardX warns about it at every write.
        self._params = {k: _hparam_value(v) for k, v in flatten_params(params).items()}
        if metrics is not None:
            self._final = dict(metrics)
        elif first and self.log_dir is not None:
            self._write_session_start()
            self.save()  # on disk now: a running run shows up in the HParams tab

    def log_graph(self, model: Any, example_input: Any = None) -> None:
        """Write ``model``'s graph (once per run, with ``log_graph=True``), traced on
        ``example_input`` or the model's ``example_input_array``."""
        if not self._log_graph or self._graph_done or self.log_dir is None:
            return
        example = example_input
        if example is None:
            example = getattr(model, "example_input_array", None)
        if example is None:
            warnings.warn(
                LightkitWarning(
                    f"TensorBoardLogger(log_graph=True): {type(model).__name__} has no "
                    f"example_input_array; set `model.example_input_array = <a batch>` to log "
                    f"its graph.",
                    code="graph-not-logged",
                ),
                stacklevel=user_stacklevel(),
            )
            return
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            # tensorboardX traces graphs through torch.utils.tensorboard, which needs it.
            warnings.warn(
                LightkitWarning(
                    "TensorBoardLogger(log_graph=True): tracing the graph needs the tensorboard "
                    "package; pip install tensorboard. The graph is not logged.",
                    code="graph-not-logged",
                ),
                stacklevel=user_stacklevel(),
            )
            self._graph_done = True
            return
        from lightkit.utils.seed import isolate_rng

        was_training = model.training
        try:
            model.eval()
            with isolate_rng(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's notice
                self.experiment.add_graph(model, example)
            self._graph_done = True
        except Exception as exc:  # tracing fails on some models: never stop training for it
            warnings.warn(
                LightkitWarning(
                    f"TensorBoardLogger: the graph was not logged ({exc!r}).",
                    code="graph-not-logged",
                ),
                stacklevel=user_stacklevel(),
            )
        finally:
            model.train(was_training)

    def _write_rows(self) -> None:
        """The buffered rows, as one event each."""
        if not self._rows:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        write, value = self.events.write_event, Summary.Value
        for wall_time, step, values in self._rows:
            summary = Summary(value=[value(tag=t, simple_value=v) for t, v in values])
            write(Event(wall_time=wall_time, step=step, summary=summary))
        self._rows = []

    def save(self) -> None:
        self._write_rows()
        if self._events is not None:
            self._events.flush()
        if self._experiment is not None:
            self._experiment.flush()
        self._steps_since_flush = 0

    def finalize(self, status: str) -> None:
        self._write_rows()
        if self._params is not None and self.log_dir is not None:
            self._write_session_end(status)
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None

    # -- hparams -------------------------------------------------------------------------------
    def _add(self, summary: Any, step: int | None = None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._write_rows()  # events stay in the order they were logged

        event = Event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = step
        self.events.write_event(event)

    def _write_session_start(self) -> None:
        from tensorboardX.summary import hparams

        _, start, _ = hparams(self._params, {})
        self._add(start)
        self._session_started = True

    def _write_session_end(self, status: str) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.summary import hparams

        metrics = self._final if self._final is not None else dict.fromkeys(self._last, 0.0)
        experiment, start, _ = hparams(self._params, metrics)
        if not self._session_started:
            self._add(start)
        self._add(experiment)
        end = SessionEndInfo(status=Status.Value(_STATUS.get(status, "STATUS_UNKNOWN")))
        content = HParamsPluginData(session_end_info=end, version=0)
        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name="hparams", content=content.SerializeToString()
            )
        )
        self._add(
            Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])
        )


def _hparam_value(value: Any) -> Any:
    """``value`` as the HParams tab takes it."""
    if value is None:
        return "None"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
