"""ProgressBar: bounded plain lines when not on a terminal, tqdm bars on one, metrics read
only on refreshes, rank 0 only."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

import lightkit as lk
from lightkit.callbacks.progress import ProgressBar
from tests.callbacks.cb_helpers import spec, trainer


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def epoch_of(line: str) -> int | None:
    m = re.match(r"Epoch (\d+)", line)
    return int(m.group(1)) if m else None


def test_text_mode_prints_a_bounded_number_of_lines_per_epoch():
    out = io.StringIO()  # not a TTY: plain lines
    bar = ProgressBar(file=out, text_lines_per_epoch=4)
    # 40 batches per epoch, 3 epochs, validation at the end of each.
    trainer(max_epochs=3, callbacks=[bar]).fit(spec(n_train=64, batch_size=2))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    per_epoch = [sum(1 for ln in lines if epoch_of(ln) == e) for e in range(3)]
    assert per_epoch == [4, 4, 4]  # 3 progress lines (25/50/75%) + the epoch's summary
    assert len(lines) == 12 == bar.lines_written
    last = lines[-1]
    assert last.startswith("Epoch 2: 100% 32/32 [")
    assert "it/s] step 96" in last
    assert re.search(r"train/loss=[\d.e+-]+", last) and re.search(r"val/loss=[\d.e+-]+", last)
    assert "ETA" not in last and re.search(r"\[\d\d:\d\d<\d\d:\d\d, ", lines[0])


def test_default_bar_in_a_captured_stdout_is_plain_text(capsys):
    trainer(max_epochs=2, enable_progress_bar=True).fit(spec(n_train=64, batch_size=2))
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("Epoch")]
    assert 2 <= len(lines) <= 2 * 5


def test_mid_epoch_validation_gets_its_own_line():
    out = io.StringIO()
    trainer(max_epochs=1, val_check_interval=2, callbacks=[ProgressBar(file=out)]).fit(spec())
    lines = out.getvalue().splitlines()
    val_lines = [ln for ln in lines if "Validation:" in ln]
    assert len(val_lines) == 1  # after batch 2; the one after batch 4 joins the epoch line
    assert val_lines[0].startswith("Epoch 0 step 2 Validation: 2 batches")
    assert "val/loss=" in val_lines[0]


def test_tty_draws_tqdm_bars_with_metrics():
    out = TTY()
    trainer(max_epochs=2, callbacks=[ProgressBar(file=out, min_interval=0)]).fit(spec())
    text = out.getvalue()
    assert "\r" in text
    assert "Epoch 1: 100%" in text and "4/4" in text
    assert "train/loss=" in text and "val/loss=" in text
    assert "Validation" in text
    assert "it/s" in text


def test_metrics_are_read_only_every_refresh_rate_batches(monkeypatch):
    from lightkit.engine.metrics import MetricStore

    reads = []
    original = MetricStore.progress

    def counting(self):
        reads.append(1)
        return original(self)

    monkeypatch.setattr(MetricStore, "progress", counting)
    bar = ProgressBar(file=TTY(), refresh_rate=10, min_interval=0)
    # 32 batches per epoch, 2 epochs, no validation.
    trainer(max_epochs=2, callbacks=[bar]).fit(spec(n_train=64, batch_size=2, val=None))
    # Per epoch: batches 10, 20, 30, the last (32), and the epoch's end.
    assert len(reads) == 2 * 5


def test_time_throttle_limits_redraws(monkeypatch):
    from lightkit.engine.metrics import MetricStore

    reads = []
    original = MetricStore.progress
    monkeypatch.setattr(MetricStore, "progress", lambda self: reads.append(1) or original(self))
    bar = ProgressBar(file=TTY(), min_interval=3600)  # never due: only each epoch's end draws
    trainer(max_epochs=2, callbacks=[bar]).fit(spec(n_train=64, batch_size=2, val=None))
    assert len(reads) == 2


def test_only_global_rank_zero_draws():
    out = TTY()
    bar = ProgressBar(file=out)
    ctx = SimpleNamespace(is_global_zero=False, _engine=None, epoch=0, global_step=0)
    bar.setup(ctx, "fit")
    bar.on_train_epoch_start(ctx)
    bar.on_train_batch_end(ctx, 0)
    bar.on_train_epoch_end(ctx)
    bar.on_validation_epoch_start(ctx)
    bar.on_validation_batch_end(ctx)
    bar.on_validation_epoch_end(ctx)
    assert out.getvalue() == ""


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_stages(stage):
    import torch

    reg = lk.Registry()
    out = io.StringIO()
    from tests.callbacks import cb_helpers as h

    reg.model(h.make_net, name="net")
    reg.val_data(lambda: h.loader(16, 4))  # type: ignore[arg-type]
    reg.test_data(lambda: h.loader(16, 4))  # type: ignore[arg-type]
    reg.predict_data(lambda: h.loader(16, 4))  # type: ignore[arg-type]

    def evaluate(net, batch):
        lk.log(f"{stage}/loss", torch.nn.functional.mse_loss(net(batch[0]), batch[1]))

    def predict(net, batch):
        return net(batch[0])

    reg.validation_step(evaluate)
    reg.test_step(evaluate)
    reg.predict_step(predict)
    t = trainer(callbacks=[ProgressBar(file=out)])
    getattr(t, stage)(lk.collect(reg))
    lines = out.getvalue().splitlines()
    name = {"validate": "Validation", "test": "Testing", "predict": "Predicting"}[stage]
    assert len(lines) == 1 and lines[0].startswith(f"{name}: 4 batches")
    if stage != "predict":
        assert f"{stage}/loss=" in lines[0]


def test_unknown_length_loader_prints_doubling_lines():
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            from tests.callbacks.cb_helpers import X, Y

            for i in range(200):
                yield X[i % 64], Y[i % 64]

    out = io.StringIO()
    reg = lk.Registry()
    from tests.callbacks import cb_helpers as h

    reg.model(h.make_net, name="net")
    reg.train_data(lambda: torch.utils.data.DataLoader(Stream(), batch_size=2))  # type: ignore[arg-type]
    reg.training_step(h.mse_step)
    reg.configure_optimizers(h.sgd)
    trainer(max_epochs=1, callbacks=[ProgressBar(file=out)]).fit(lk.collect(reg))
    lines = out.getvalue().splitlines()
    # 100 batches: lines at 32 and 64, then the epoch's summary.
    assert [ln.split("[")[0].strip() for ln in lines] == [
        "Epoch 0: 32",
        "Epoch 0: 64",
        "Epoch 0: 100",
    ]


def test_refresh_rate_zero_shows_nothing_as_lightnings():
    out = io.StringIO()
    bar = ProgressBar(refresh_rate=0, mode="text", file=out)
    result = trainer(max_epochs=2, callbacks=[bar]).fit(spec())
    assert result.global_step == 8
    assert out.getvalue() == "" and bar.lines_written == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        ProgressBar(refresh_rate=-1)
    with pytest.raises(ValueError):
        ProgressBar(mode="fancy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("notebook", "widgets", "stream", "text", "widget"),
    [
        (False, False, io.StringIO(), True, False),
        (False, False, TTY(), False, False),
        (True, True, io.StringIO(), False, True),  # a kernel's stdout is no TTY: widget
        (True, False, io.StringIO(), True, False),  # no ipywidgets: plain lines
    ],
)
def test_mode_detection(monkeypatch, notebook, widgets, stream, text, widget):
    from lightkit.callbacks import progress

    monkeypatch.setattr(progress, "in_notebook", lambda: notebook)
    monkeypatch.setattr(progress, "_has_widgets", lambda: widgets)
    bar = ProgressBar(file=stream)
    bar.setup(SimpleNamespace(is_global_zero=True, _engine=None), "fit")
    assert (bar._text, bar._notebook) == (text, widget)
