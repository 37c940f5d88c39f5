"""Seeding and saving/restoring the global random generators."""

from __future__ import annotations

import random
import sys
from typing import Any

import torch

from lightkit.errors import LightkitWarning, user_stacklevel


def seed_everything(seed: int, workers: bool = False) -> int:
    """Seed python's ``random``, numpy (if installed) and torch (CPU and every GPU); return
    ``seed``. What the Trainer's ``seed=`` does before anything is built (Lightning's
    ``seed_everything``, for code outside a fit).

    ``workers`` is accepted for Lightning's signature; lightkit installs no
    ``worker_init_fn``: PyTorch seeds each DataLoader worker's ``random``, numpy and torch
    generators from the seeded main generator, identically on every rank.

    Raises:
        ConfigError: ``bad-seed`` when ``seed`` is not an integer (checked before anything
            is seeded).
    """
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        from lightkit.errors import ConfigError

        raise ConfigError(
            f"seed_everything({seed!r}): the seed must be an int, got {type(seed).__name__}. "
            f"Pass e.g. seed_everything(0), or int(...) a seed read from text.",
            code="bad-seed",
        )
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        from lightkit.errors import ConfigError

        raise ConfigError(
            f"seed_everything({seed}): torch takes seeds from -2**63 to 2**64 - 1. Pass a "
            f"smaller one, e.g. seed % 2**32.",
            code="bad-seed",
        )
    if workers:
        import warnings

        warnings.warn(
            LightkitWarning(
                "seed_everything(workers=True): lightkit installs no worker_init_fn. PyTorch "
                "already seeds each DataLoader worker's random, numpy and torch generators from "
                "the seeded main generator, the same on every rank; for different augmentations "
                "per rank, seed in your own worker_init_fn with torch.distributed.get_rank().",
                code="seed-workers",
            ),
            stacklevel=user_stacklevel(),
        )
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)
    return seed


def rng_states() -> dict[str, Any]:
    """The state of every global generator (numpy only if already imported)."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        states["numpy"] = sys.modules["numpy"].random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    if "python" in states:
        random.setstate(states["python"])
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class isolate_rng:
    """Restore every global generator on exit (the sanity check must not shift the run)."""

    def __enter__(self) -> None:
        self._states = rng_states()

    def __exit__(self, *exc: Any) -> None:
        set_rng_states(self._states)
