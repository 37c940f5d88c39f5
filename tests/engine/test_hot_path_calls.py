"""What one training step costs in function calls, on top of a hand-written loop.

Timing a loop's overhead needs a quiet machine (see ``bench/overhead.py``); counting the
function calls it makes does not. Both loops run the same step over a list of ready batches
under ``cProfile``, for two lengths; the difference between the lengths cancels the set-up,
so what is left is the calls per step. A new call on the hot path (a property, a generator,
a ``dict`` built per step) shows up here as a failure naming it.
"""

from __future__ import annotations

import cProfile
import pstats

import torch
from torch import nn

import lightkit as lk
from tests.engine.engine_helpers import trainer

#: The calls lightkit's loop adds per step: the binder and the user's step (the hand-written
#: loop inlines its step), the end of the accumulation window, and the NaN check of the loss
#: (``.dim()``, ``.item()``, ``math.isfinite``).
EXTRA_CALLS_PER_STEP = 6
#: What one ``lk.log(name, tensor)`` per step adds to that.
LOG_CALLS_PER_STEP = 7
SHORT, LONG = 8, 104


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(n)]


def loss_of(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(net(x), y)


def raw(n: int) -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for batch in batches(n):
        loss = loss_of(net, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def with_lightkit(n: int, log: bool = False) -> None:
    # Named functions, not lambdas: the profile tells code objects apart by file, line and name.
    def net() -> nn.Module:
        return nn.Linear(3, 1)

    def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
        return batches(n)

    def step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        loss = loss_of(net, batch)
        if log:
            lk.log("train/loss", loss)
        return loss

    def optim(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=0.1)

    reg = lk.Registry()
    reg.model(net)
    reg.train_data(data)
    reg.training_step(step)
    reg.configure_optimizers(optim)
    trainer(max_epochs=1, seed=0).fit(lk.collect(reg))  # every feature off


def calls(run, n: int) -> dict[str, int]:
    profile = cProfile.Profile()
    profile.runcall(run, n)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return {f"{file}:{line}:{name}": total for (file, line, name), (_, total, *_) in stats.items()}


def per_step(run) -> dict[str, int]:
    # Each length runs twice and the second run counts: first-call paths (lazy imports,
    # source read for error messages, caches) stay out of the figures.
    short = [calls(run, SHORT) for _ in range(2)][-1]
    long = [calls(run, LONG) for _ in range(2)][-1]
    names = set(short) | set(long)
    # A call made at every step differs by a whole number per step; one made a few times per
    # run (a source line read for a message, a cache filled) by a fraction that rounds away.
    counts = {k: round((long.get(k, 0) - short.get(k, 0)) / (LONG - SHORT)) for k in names}
    return {k: v for k, v in counts.items() if v}


def extra_calls(mine: dict[str, int], theirs: dict[str, int]) -> tuple[int, str]:
    extra = sum(mine.values()) - sum(theirs.values())
    added = sorted(
        (f"{mine.get(k, 0) - theirs.get(k, 0):+d} {k}" for k in set(mine) | set(theirs)),
        key=lambda s: s.split(" ", 1)[1],
    )
    return extra, "\n".join(a for a in added if not a.startswith("+0 "))


def test_a_training_step_adds_a_handful_of_calls_to_the_hand_written_loop():
    extra, shown = extra_calls(per_step(with_lightkit), per_step(raw))
    assert extra == EXTRA_CALLS_PER_STEP, f"{extra} calls per step over the raw loop:\n{shown}"


def test_logging_the_loss_each_step_adds_only_the_log_call_itself():
    # lk.log, the context variable's get, MetricStore.log and what it does to the value:
    # isinstance, numel, detach, and one dict lookup of the metric by name. No sync, no
    # formatting.
    plain, logging = per_step(with_lightkit), per_step(lambda n: with_lightkit(n, log=True))
    extra, shown = extra_calls(logging, plain)
    assert extra == LOG_CALLS_PER_STEP, f"lk.log costs {extra} calls per step:\n{shown}"
