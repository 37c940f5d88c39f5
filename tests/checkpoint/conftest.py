from collections.abc import Iterator

import pytest
import torch

from tests.checkpoint import resumable


@pytest.fixture(autouse=True)
def _one_thread_and_clean_module() -> Iterator[None]:
    """Tiny models run fastest on one thread; every test starts with the module's controls
    and records cleared."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    resumable.reset()
    yield
    resumable.reset()
    torch.set_num_threads(saved)
