"""``import lightkit`` stays light: it never imports tensorboardX or tqdm itself.

torch imports tqdm on its own (``torch.hub``), so the check removes it after ``import torch``
and watches who imports it again while ``import lightkit`` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent(
    """
    import json, os, sys
    import torch

    WATCHED = ("tqdm", "tensorboardX")
    for name in list(sys.modules):
        if name.split(".")[0] in WATCHED:
            del sys.modules[name]

    torch_dir = os.path.dirname(torch.__file__)
    attempts = []

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in WATCHED:
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
                    frame = frame.f_back
                importer = frame.f_code.co_filename if frame is not None else "?"
                inside = [f"{os.sep}{w}{os.sep}" for w in WATCHED]  # their own sub-imports
                if not importer.startswith(torch_dir) and not any(d in importer for d in inside):
                    attempts.append([name, importer])
            return None

    sys.meta_path.insert(0, Watch())
    import lightkit
    print(json.dumps({
        "attempts": attempts,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "tensorboardX"),
    }))
    """
)


def test_import_lightkit_does_not_import_tensorboardx_or_tqdm():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"attempts": [], "loaded": []}


def test_plain_import_lightkit_leaves_tensorboardx_out():
    code = "import sys, lightkit; print(sorted(m for m in sys.modules if 'tensorboardX' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


FIT_PROBE = textwrap.dedent(
    """
    import json, sys
    import torch
    import lightkit as lk

    reg = lk.Registry()
    reg.model(lambda: torch.nn.Linear(2, 1), name="net")
    reg.train_data(lambda: [(torch.ones(4, 2), torch.zeros(4, 1))] * 2)
    reg.training_step(lambda net, batch: ((net(batch[0]) - batch[1]) ** 2).mean())
    reg.configure_optimizers(lambda net: torch.optim.SGD(net.parameters(), lr=0.1))
    lk.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
               enable_checkpointing=False, enable_model_summary=False).fit(lk.collect(reg))
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("lightkit."))))
    """
)


def test_a_features_off_fit_imports_only_what_it_uses():
    """A run pays for what it uses: a one-device fit with every feature off loads no built-in
    callback but the checkpoint one (the loop checks for it), no logger and no distributed
    strategy."""
    result = subprocess.run(
        [sys.executable, "-c", FIT_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "lightkit.engine.loops" in loaded  # the probe did fit
    unused = {
        "lightkit.callbacks.early_stopping",
        "lightkit.callbacks.grad_norm",
        "lightkit.callbacks.lr_monitor",
        "lightkit.callbacks.model_summary",
        "lightkit.callbacks.progress",
        "lightkit.callbacks.timer",
        "lightkit.loggers.csv",
        "lightkit.loggers.tensorboard",
        "lightkit.strategies.ddp",
        "lightkit.strategies.fsdp",
    }
    assert loaded & unused == set()


def test_subpackages_import_their_classes_on_first_use():
    import lightkit.callbacks
    import lightkit.loggers
    import lightkit.strategies
    from lightkit.callbacks.early_stopping import EarlyStopping
    from lightkit.loggers.csv import CSVLogger
    from lightkit.strategies.ddp import DDPStrategy

    assert lightkit.callbacks.EarlyStopping is EarlyStopping
    assert lightkit.loggers.CSVLogger is CSVLogger
    assert lightkit.strategies.DDPStrategy is DDPStrategy
    for package in (lightkit.callbacks, lightkit.loggers, lightkit.strategies):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        lightkit.callbacks.Nope  # noqa: B018
