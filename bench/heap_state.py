"""What the state of a process costs a training loop that is not lightkit's.

Each repetition starts two fresh processes. Both time the hand-written loop of figure (a)
(``bench/common.py``), then do something, then time the same loop again; the figure is the
second time minus the first, in µs per step of CPU time:

- ``nothing``: nothing between the two loops (the baseline drift of a second run);
- ``lightkit``: a short lightkit fit of the same case between them (two steps an epoch), which
  imports pydantic and lightkit's modules and runs a fit's set-up, as a lightkit process does
  before its loop;
- ``fragmented``: no lightkit at all; 20,000 byte strings of 600 B to 20 KB are made and one
  in three is kept, which leaves the C heap in pieces (a control: it shows how much the
  heap's state alone can cost the same loop).

The difference between the two medians is what the lightkit process's state costs a loop that
lightkit does not run: the part of figure (a) that ``raw-after-lightkit`` shows in
``bench/run.py``, here within one process. To see where it goes, profile the two children
with long loops and compare them by symbol, e.g. ``perf record -F 4000 python
bench/heap_state.py --child lightkit --steps 6144`` against ``--child nothing``.

Usage::

    python bench/heap_state.py              # 6 repetitions
    python bench/heap_state.py --reps 10 --steps 2048
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

MODES = ("nothing", "lightkit", "fragmented")


def loop_us(case: common.Case, root: Path) -> float:
    """One hand-written fit of ``case``; CPU µs per step after the warm-up steps."""
    common.CLOCK.reset(case.warmup)
    gc.collect()
    common.raw_fit(case, root)
    c = common.CLOCK
    return (c.cpu1 - c.cpu0) / (case.steps - case.warmup) * 1e6


def fragment_the_heap() -> list[bytes]:
    """Blocks above CPython's small-object size, so they come from the C heap; the kept third
    leaves holes between them."""
    sizes = random.Random(0)
    blocks = [bytes(sizes.randint(600, 20_000)) for _ in range(20_000)]
    return blocks[::3]


def child(mode: str, steps: int) -> float:
    import torch

    torch.set_num_threads(1)
    case = replace(common.CASES["tiny"], steps=steps)
    common.warm_up_torch()
    with tempfile.TemporaryDirectory(prefix="lkbench-heap-") as tmp:
        before = loop_us(case, Path(tmp))
        if mode == "lightkit":
            common.lightkit_fit(replace(case, steps=case.epochs * 2), Path(tmp) / "short-fit")
        kept = fragment_the_heap() if mode == "fragmented" else []
        after = loop_us(case, Path(tmp))
        del kept
    return after - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(f"{child(args.child, args.steps):.2f}")
        return 0
    deltas: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(args.reps):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            deltas[mode].append(float(out.stdout.split()[-1]))
    print(f"second loop minus first, CPU µs per step, {args.reps} processes each:")
    for mode, values in deltas.items():
        print(
            f"  {mode:<10} median {statistics.median(values):+6.1f}  "
            f"[{min(values):+.1f} .. {max(values):+.1f}]"
        )
    cost = statistics.median(deltas["lightkit"]) - statistics.median(deltas["nothing"])
    print(f"a short lightkit fit in between costs the raw loop {cost:+.1f} µs per step")
    control = statistics.median(deltas["fragmented"]) - statistics.median(deltas["nothing"])
    print(f"a heap fragmented on purpose (no lightkit) costs it {control:+.1f} µs per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
