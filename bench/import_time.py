"""How much time ``import lightkit`` adds on top of ``import torch``.

Each run starts fresh interpreters: one imports torch alone, one imports torch then lightkit.
The figure is the median over runs of ``t(import torch; import lightkit) - t(import torch)``,
timed inside the child so interpreter start-up cancels out. Also printed: the median time of
``import lightkit`` measured directly after ``import torch`` in the same process, which is less
noisy, and which modules ``import lightkit`` adds to those torch loaded.

Usage::

    python bench/import_time.py            # 10 runs
    python bench/import_time.py --runs 30 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TORCH_ONLY = """
import time
t0 = time.perf_counter()
import torch
print(time.perf_counter() - t0)
"""

TORCH_THEN_LIGHTKIT = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
before = set(sys.modules)
import lightkit
t2 = time.perf_counter()
watched = ("tensorboardX", "tqdm", "numpy", "matplotlib", "pandas", "pydantic")
heavy = [m for m in watched if m in sys.modules and m not in before]
print(t2 - t0, t2 - t1, len(set(sys.modules) - before), ",".join(heavy) or "-")
"""


def _child(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return out.split()


def measure(runs: int) -> dict[str, object]:
    added, direct, torch_alone = [], [], []
    heavy: list[str] = []
    new_modules = 0
    _child(TORCH_THEN_LIGHTKIT)  # warm the file-system cache and the .pyc files
    for _ in range(runs):
        (t_torch,) = _child(TORCH_ONLY)
        both, lightkit_only, n_modules, names = _child(TORCH_THEN_LIGHTKIT)
        torch_alone.append(float(t_torch))
        added.append(float(both) - float(t_torch))
        direct.append(float(lightkit_only))
        new_modules = int(n_modules)
        heavy = [] if names == "-" else names.split(",")
    return {
        "runs": runs,
        "added_ms_median": 1e3 * statistics.median(added),
        "added_ms_stdev": 1e3 * statistics.stdev(added) if runs > 1 else 0.0,
        "direct_ms_median": 1e3 * statistics.median(direct),
        "torch_ms_median": 1e3 * statistics.median(torch_alone),
        "new_modules": new_modules,
        "heavy_modules": heavy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh-process pairs (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = measure(max(1, args.runs))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"import torch:                    {result['torch_ms_median']:8.1f} ms (median)")
    print(
        f"import lightkit, added:          {result['added_ms_median']:8.1f} ms (median of "
        f"{result['runs']} pairs, stdev {result['added_ms_stdev']:.1f} ms)"
    )
    print(f"import lightkit, timed directly: {result['direct_ms_median']:8.1f} ms (median)")
    heavy = ", ".join(result["heavy_modules"]) or "none"  # type: ignore[arg-type]
    print(f"modules lightkit adds to torch's: {result['new_modules']} (of note: {heavy})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
