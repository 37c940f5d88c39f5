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
