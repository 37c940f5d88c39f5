"""Hardware gates for tests: ``@requires(cuda=True)``, ``@requires(min_gpus=2)``."""

from __future__ import annotations

import pytest
import torch


def requires(*, cuda: bool = False, min_gpus: int = 0) -> pytest.MarkDecorator:
    """Skip the test unless this machine has what it needs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    needed = max(min_gpus, 1 if cuda else 0)
    return pytest.mark.skipif(gpus < needed, reason=f"needs {needed} CUDA GPU(s), found {gpus}")
