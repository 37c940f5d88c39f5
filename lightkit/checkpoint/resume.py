"""Where a resumed run picks up: the random states of the training loader and the global
generators, captured as each epoch begins and restored on resume.

Exact mid-epoch resume: a checkpoint written after batch ``b`` of epoch ``e`` holds the random
states as they were when epoch ``e``'s batches began. Resuming restores those, re-creates the
epoch's iterator, reads the ``b + 1`` consumed batches again (so samplers, loader generators and
worker seeds advance exactly as they did), then restores the states of the moment of the save.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import torch

from lightkit.utils.seed import rng_states, set_rng_states

if TYPE_CHECKING:
    from lightkit.engine.engine import Engine
    from lightkit.engine.epoch_iterator import EpochIterator

# Where a training loader may keep a torch.Generator (the loader's own, the sampler's).
_GENERATOR_PATHS = (
    "generator",
    "sampler.generator",
    "batch_sampler.sampler.generator",
    "batch_sampler.generator",
)


# -- random states --------------------------------------------------------------------------
def loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The distinct ``torch.Generator`` objects a loader and its samplers draw from."""
    found: dict[str, torch.Generator] = {}
    for path in _GENERATOR_PATHS:
        obj = loader
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.Generator) and not any(obj is g for g in found.values()):
            found[path] = obj
    return found


def capture_random(loader: Any) -> dict[str, Any]:
    """Every global generator's state and the training loader's generators, storable."""
    states = rng_states()
    # Python's state is 625 ints: one tensor pickles in one piece instead of 625.
    version, internal, gauss = states["python"]
    states["python"] = (version, torch.tensor(internal, dtype=torch.int64), gauss)
    if "numpy" in states:  # numpy's tuple holds an ndarray: store it as a tensor
        name, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss)
    return {
        "rng": states,
        "loaders": {p: g.get_state() for p, g in loader_generators(loader).items()},
    }


def restore_random(saved: dict[str, Any], loader: Any) -> None:
    """Set the global generators and the loader's generators to what ``capture_random`` saw."""
    states = dict(saved["rng"])
    version, internal, gauss = states["python"]
    if isinstance(internal, torch.Tensor):  # older checkpoints hold the tuple itself
        states["python"] = (version, tuple(internal.tolist()), gauss)
    if "numpy" in states:
        if "numpy" in sys.modules:
            import numpy as np

            name, keys, pos, has_gauss, gauss = states["numpy"]
            states["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
        else:
            del states["numpy"]
    if "cuda" in states and not torch.cuda.is_available():
        del states["cuda"]
    set_rng_states(states)
    generators = loader_generators(loader)
    for path, state in saved.get("loaders", {}).items():
        if path in generators:
            generators[path].set_state(state)


@attrs.define
class ResumeState:
    """Where and how the fit loop picks a restored run up (consumed by ``begin_epoch``)."""

    skip: int
    random: dict[str, Any]
    epoch_start: dict[str, Any] | None


def begin_epoch(
    engine: Engine, train: EpochIterator, epoch: int, skip: int
) -> Iterator[tuple[int, Any]]:
    """The batches of ``epoch`` for the fit loop, after ``skip`` consumed ones.

    Remembers the random states as the epoch's batches begin (a mid-epoch checkpoint stores
    them). When resuming mid-epoch, restores that epoch's starting states first, reads the
    consumed batches again, then restores the states of the moment of the save.
    """
    resume, engine.resume = engine.resume, None
    loader = train.loader
    if resume is not None and skip and resume.epoch_start is not None:
        restore_random(resume.epoch_start, loader)
        engine.epoch_start = resume.epoch_start
        random = resume.random
        return train.epoch(epoch, skip, on_skipped=lambda: restore_random(random, loader))
    if resume is not None:
        restore_random(resume.random, loader)
    engine.epoch_start = capture_random(loader)
    return train.epoch(epoch, skip)


def resume_before_epoch(engine: Engine, train: EpochIterator) -> None:
    """Resuming at an epoch boundary: restore the random states before the epoch's hooks run,
    where the interrupted run stood when it saved."""
    resume = engine.resume
    if resume is not None and resume.skip == 0:
        restore_random(resume.random, train.loader)
        engine.resume = None


__all__ = [
    "ResumeState",
    "begin_epoch",
    "capture_random",
    "loader_generators",
    "restore_random",
    "resume_before_epoch",
]
