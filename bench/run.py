"""The benchmark suite: lightkit next to a hand-written PyTorch loop and PyTorch Lightning.

One command runs every benchmark, interleaved (raw, lightkit, Lightning, then again in a
rotated order, for several repetitions), each measurement in a fresh process, and writes
``bench/results.json``, a Markdown table ``bench/results.md`` and, when matplotlib is
installed, a bar chart ``bench/results.png``. Lightning runs when ``lightning`` or
``pytorch-lightning`` is installed (``pip install -e .[bench]``); its rows are left out
otherwise.

Figures (see ``bench/README.md`` for what each measures and its target):

- a: per-step time, tiny MLP (32→64→64→10, batch 64), features off; a-log: the same, logging
  the loss every step
- b: the same with each framework's default features on (logger, progress bar, checkpoint
  every epoch, model summary)
- c: compute-bound MLP (hidden 1024, batch 256, Adam); c-compile: the same under torch.compile
- d: two-rank DDP on gloo (the tiny MLP, batch 64 per rank)
- e: ``import`` time over ``import torch``; process start to first training step
- f: peak resident memory over the hand-written loop's
- g: checkpoint save and load of a 50M-parameter model

Usage::

    python bench/run.py                    # everything, 7 repetitions
    python bench/run.py --quick            # 3 repetitions, shorter runs: a few minutes
    python bench/run.py --only a,b,e --reps 11 --clock wall
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import CASES, Case  # noqa: E402

BENCH = ROOT / "bench"


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """Measurements that are interleaved with each other: one per implementation."""

    key: str
    kind: str  # "train", "import" or "checkpoint"
    case: Case | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    group: str
    target: float | None = None  # x raw (or MB / ms for e and f)
    below_lightning: bool = False
    note: str = ""


FIGURES = [
    Figure("a", "Per-step time, tiny MLP, features off", "tiny", 1.02, True),
    Figure("a-log", "Per-step time, tiny MLP, logging the loss every step", "tiny-log", 1.05, True),
    Figure(
        "b",
        "Per-step time, tiny MLP, default features on (logger, progress bar, checkpoint each "
        "epoch, model summary; the loss logged every step)",
        "tiny-defaults",
        1.10,
        True,
        note="The hand-written loop has no features; lightkit and Lightning run their defaults.",
    ),
    Figure("c", "Per-step time, compute-bound MLP (hidden 1024, batch 256, Adam)", "compute", 1.02),
    Figure(
        "c-compile",
        "Per-step time, compute-bound MLP under torch.compile (lightkit: compile=True)",
        "compute-compile",
        1.02,
        note="Every row compiles; the speed-up column compares with eager raw of figure c.",
    ),
    Figure(
        "d",
        "Per-step time, 2-rank DDP on gloo, tiny MLP",
        "ddp",
        1.03,
        True,
        note="Rank 0's figures. CPU time includes gloo's threads waiting for the other rank, so "
        "on a quiet machine the wall-clock column is the truer one.",
    ),
    Figure("e", "Import time over `import torch`; process start to first step", "import", 100.0),
    Figure("f", "Peak resident memory over the hand-written loop", "tiny-defaults", 30.0),
    Figure("g", "Checkpoint save and load, 50M-parameter model (weights)", "checkpoint"),
]
FIGURE_KEYS = [f.key for f in FIGURES]


def make_groups(quick: bool, size: str) -> dict[str, Group]:
    """The groups to run. ``size="smoke"`` shrinks everything to seconds (tests)."""
    scale = {"full": 1.0, "quick": 1.0, "smoke": 0.02}[size]
    compute = 0.5 if quick or size == "smoke" else 1.0
    if size == "smoke":
        compute = 0.1
    groups = {
        "tiny": Group("tiny", "train", CASES["tiny"].scaled(scale)),
        "tiny-log": Group("tiny-log", "train", CASES["tiny-log"].scaled(scale)),
        "tiny-defaults": Group("tiny-defaults", "train", CASES["tiny-defaults"].scaled(scale)),
        "compute": Group("compute", "train", CASES["compute"].scaled(compute)),
        "compute-compile": Group(
            "compute-compile", "train", CASES["compute-compile"].scaled(compute)
        ),
        "ddp": Group("ddp", "train", CASES["ddp"].scaled(scale * (0.5 if quick else 1.0))),
        "import": Group("import", "import"),
        "checkpoint": Group(
            "checkpoint",
            "checkpoint",
            extra={
                "params_m": 50.0 if size != "smoke" else 1.0,
                "repeats": 2 if quick or size == "smoke" else 3,
            },
        ),
    }
    if size == "smoke":
        groups["compute"] = Group(
            "compute", "train", Case("compute", hidden=128, batch_size=32, steps=8, epochs=2)
        )
        groups["compute-compile"] = Group(
            "compute-compile",
            "train",
            Case("compute-compile", hidden=128, batch_size=32, steps=8, epochs=2, compile=True),
        )
    return groups


def groups_for(figures: Iterable[str]) -> list[str]:
    wanted = []
    for key in figures:
        fig = next(f for f in FIGURES if f.key == key)
        needs = [fig.group]
        if key == "e":
            needs.append("tiny")  # process start to first step
        if key == "f":
            needs += ["tiny", "compute"]
        if key == "c-compile":
            needs.append("compute")  # the speed-up over eager
        for g in needs:
            if g not in wanted:
                wanted.append(g)
    return wanted


#: The groups that also measure the hand-written loop after a short lightkit fit.
PROCESS_STATE_GROUPS = ("tiny", "tiny-log", "tiny-defaults", "ddp")


def group_impls(group: Group, impls: list[str]) -> list[str]:
    """What a group measures: every implementation; for imports also lightkit with all its
    public names used (``import lightkit`` alone imports them lazily); for the tiny cases also
    the hand-written loop in a process that ran a short lightkit fit first."""
    if group.kind == "import":
        return [*impls[:2], "lightkit-all", *impls[2:]]
    if group.key in PROCESS_STATE_GROUPS:
        return [*impls, common.RAW_AFTER_LIGHTKIT]
    return impls


# -- running children -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTKIT_", "PL_"))}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(var, None)
    env.pop("MASTER_PORT", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONWARNINGS"] = "ignore"
    env["TQDM_DISABLE"] = env.get("TQDM_DISABLE", "")
    return env


def run_child(job: dict[str, Any], threads: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """Run ``job`` in fresh process(es); return what rank 0 wrote, or ``{"error": ...}``."""
    ranks = int(job.get("case", {}).get("ranks", 1))
    out = workdir / f"out-{time.monotonic_ns()}.json"
    env = child_env(threads)
    port = free_port()
    procs, logs = [], []
    job = {**job, "threads": threads}
    for rank in range(ranks):
        rank_env = dict(env)
        if ranks > 1:
            rank_env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                GROUP_RANK="0",
                NODE_RANK="0",
                WORLD_SIZE=str(ranks),
                LOCAL_WORLD_SIZE=str(ranks),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
            if sys.platform.startswith("linux"):
                rank_env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        log = open(workdir / f"log-{time.monotonic_ns()}-{rank}.txt", "w+")
        logs.append(log)
        job["launched_at"] = time.time()
        cmd = [sys.executable, str(BENCH / "run.py"), "--child", json.dumps(job), "--out", str(out)]
        procs.append(
            subprocess.Popen(cmd, cwd=workdir, env=rank_env, stdout=log, stderr=subprocess.STDOUT)
        )
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append(f"timed out after {timeout:.0f}s")
    tails = []
    for log in logs:
        log.seek(0)
        tails.append(log.read()[-3000:])
        log.close()
    if all(c == 0 for c in codes) and out.exists():
        return json.loads(out.read_text())  # type: ignore[no-any-return]
    return {"error": f"exit {codes}", "log_tail": "\n".join(tails)[-4000:]}


def child_main(job_text: str, out: str) -> int:
    """Inside the fresh process: one measurement, written to ``out`` as JSON."""
    job = json.loads(job_text)
    result = common.run_job(job)
    if result is not None:
        Path(out).write_text(json.dumps(result))
    return 0


# -- statistics -----------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
        "median_ci95": common.median_interval(values),
    }


def paired(
    records: dict[str, list[dict[str, Any]]], impl: str, base: str, value: Callable[[dict], float]
) -> dict[str, float] | None:
    """Per-repetition ratios ``value(impl) / value(base)`` (runs of one repetition ran back to
    back, so the ratio cancels slow drift in the machine's speed)."""
    a, b = records.get(impl, []), records.get(base, [])
    ratios = [
        value(x) / value(y)
        for x, y in zip(a, b, strict=False)
        if x and y and "error" not in x and "error" not in y
    ]
    return spread(ratios)


def differences(
    records: dict[str, list[dict[str, Any]]], impl: str, base: str, key: str
) -> dict[str, float] | None:
    a, b = records.get(impl, []), records.get(base, [])
    return spread(
        [
            x[key] - y[key]
            for x, y in zip(a, b, strict=False)
            if "error" not in x and "error" not in y
        ]
    )


def ok_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "error" not in r]


# -- the suite --------------------------------------------------------------------------------------
def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    figures = [k for k in (args.only.split(",") if args.only else FIGURE_KEYS) if k]
    unknown = sorted(set(figures) - set(FIGURE_KEYS))
    if unknown:
        raise SystemExit(f"unknown figure(s) {unknown}; available: {', '.join(FIGURE_KEYS)}")
    size = "smoke" if args.smoke else ("quick" if args.quick else "full")
    groups = make_groups(args.quick, size)
    order = groups_for(figures)
    lightning = common.lightning_name() if not args.no_lightning else None
    impls = ["raw", "lightkit"] + (["lightning"] if lightning else [])
    reps = args.reps or (1 if args.smoke else 3 if args.quick else 7)
    records: dict[str, dict[str, list[dict[str, Any]]]] = {
        g: {i: [] for i in group_impls(groups[g], impls)} for g in order
    }
    began = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="lkbench-run-") as tmp:
        workdir = Path(tmp)
        for rep in range(reps):
            for key in order:
                g = groups[key]
                these = group_impls(g, impls)
                rotated = these[rep % len(these) :] + these[: rep % len(these)]
                if rep >= len(impls):
                    rng.shuffle(rotated)
                for impl in rotated:
                    job = common.job_for(g.kind, impl, g.case, **g.extra)
                    if g.kind == "checkpoint":
                        job["dir"] = args.tmp_dir
                    t0 = time.perf_counter()
                    result = run_child(job, args.threads, args.timeout, workdir)
                    result["rep"] = rep
                    records[key][impl].append(result)
                    status = "error" if "error" in result else f"{time.perf_counter() - t0:5.1f}s"
                    if not args.quiet:
                        print(f"[rep {rep + 1}/{reps}] {key:<16} {impl:<10} {status}", flush=True)
                    if "error" in result and not args.quiet:
                        print(result["log_tail"][-1500:], file=sys.stderr, flush=True)
    meta = {
        "command": " ".join(["python bench/run.py", *(shlex.quote(a) for a in args.argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - began, 1),
        "repetitions": reps,
        "size": size,
        "clock": args.clock,
        "threads": args.threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": _version("torch"),
        "lightkit": _version("lightkit"),
        "lightning": (_version(lightning) if lightning else None),
        "lightning_package": lightning,
        "impls": impls,
        "cases": {
            k: ({**asdict(g.case), "warmup": g.case.warmup} if g.case else g.extra)
            for k, g in groups.items()
            if k in order
        },
    }
    summary = summarize(figures, records, args.clock, impls)
    return {"meta": meta, "figures": summary, "records": records}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist if dist != "pytorch_lightning" else "pytorch-lightning")
    except metadata.PackageNotFoundError:
        return None


def summarize(
    figures: list[str], records: dict[str, dict[str, list[dict[str, Any]]]], clock: str,
    impls: list[str],
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    step_key = f"us_per_step_{clock}"
    for fig in FIGURES:
        if fig.key not in figures:
            continue
        recs = records.get(fig.group, {})
        entry: dict[str, Any] = {"title": fig.title, "target": fig.target, "note": fig.note}
        if fig.key in ("a", "a-log", "b", "c", "c-compile", "d"):
            rows = {}
            for impl in [*impls, *(i for i in recs if i not in impls)]:
                runs = ok_runs(recs.get(impl, []))
                row: dict[str, Any] = {
                    "runs": len(runs),
                    "errors": len(recs.get(impl, [])) - len(runs),
                    "us_per_step_cpu": spread([r["us_per_step_cpu"] for r in runs]),
                    "us_per_step_wall": spread([r["us_per_step_wall"] for r in runs]),
                    "fit_s": spread([r["fit_s"] for r in runs]),
                }
                if impl != "raw":
                    row["x_raw_cpu"] = paired(recs, impl, "raw", lambda r: r["us_per_step_cpu"])
                    row["x_raw_wall"] = paired(recs, impl, "raw", lambda r: r["us_per_step_wall"])
                    row["x_raw_fit"] = paired(recs, impl, "raw", lambda r: r["fit_s"])
                    raw_digests = {r["digest"] for r in ok_runs(recs.get("raw", []))}
                    row["same_weights_as_raw"] = bool(runs) and all(
                        r["digest"] in raw_digests for r in runs
                    )
                if impl == "lightkit" and "lightning" in impls:
                    row["x_lightning"] = paired(
                        recs, "lightkit", "lightning", lambda r: r[step_key]
                    )
                if impl == "lightkit" and common.RAW_AFTER_LIGHTKIT in recs:
                    row["x_raw_after_lightkit"] = paired(
                        recs, "lightkit", common.RAW_AFTER_LIGHTKIT, lambda r: r[step_key]
                    )
                if fig.key == "c-compile":
                    eager = records.get("compute", {}).get("raw", [])
                    row["x_raw_eager"] = paired(
                        {"a": recs.get(impl, []), "b": eager}, "a", "b", lambda r: r[step_key]
                    )
                rows[impl] = row
            entry["rows"] = rows
            lk = rows.get("lightkit", {})
            ratio = (lk.get(f"x_raw_{clock}") or {}).get("median")
            vs_pl = (lk.get("x_lightning") or {}).get("median")
            entry["value"] = ratio
            entry["met"] = _met(ratio, fig.target, vs_pl if fig.below_lightning else None)
        elif fig.key == "e":
            rows = {}
            for impl in [*impls[:2], "lightkit-all", *impls[2:]]:
                runs = ok_runs(recs.get(impl, []))
                rows[impl] = {
                    "torch_ms": spread([r["torch_ms"] for r in runs]),
                    "added_ms": spread([r["added_ms"] for r in runs]),
                    "modules_added": spread([r["modules_added"] for r in runs]),
                }
                starts = ok_runs(records.get("tiny", {}).get(impl, []))
                rows[impl]["first_step_s"] = spread([r["first_step_s"] for r in starts])
                rows[impl]["import_s"] = spread([r["import_s"] for r in starts])
                if impl not in ("raw", "lightkit-all"):
                    rows[impl]["first_step_over_raw_s"] = differences(
                        records.get("tiny", {}), impl, "raw", "first_step_s"
                    )
            entry["rows"] = rows
            added = (rows.get("lightkit", {}).get("added_ms") or {}).get("median")
            entry["value"] = added
            entry["met"] = None if added is None else added <= (fig.target or 0)
        elif fig.key == "f":
            rows = {}
            for group in ("tiny", "tiny-defaults", "compute"):
                g = records.get(group, {})
                rows[group] = {
                    impl: {
                        "peak_rss_mb": spread([r["peak_rss_mb"] for r in ok_runs(g.get(impl, []))]),
                        "over_raw_mb": differences(g, impl, "raw", "peak_rss_mb")
                        if impl != "raw"
                        else None,
                    }
                    for impl in impls
                }
            entry["rows"] = rows
            over = [
                (rows[g]["lightkit"]["over_raw_mb"] or {}).get("median")
                for g in rows
                if "lightkit" in rows[g]
            ]
            over = [v for v in over if v is not None]
            entry["value"] = max(over) if over else None
            entry["met"] = None if not over else max(over) <= (fig.target or 0)
        elif fig.key == "g":
            rows = {}
            for impl in impls:
                runs = ok_runs(recs.get(impl, []))
                row = {
                    "save_s": spread([r["save_s"] for r in runs]),
                    "load_s": spread([r["load_s"] for r in runs]),
                    "file_mb": spread([r["file_mb"] for r in runs]),
                    "params_m": spread([r["params_m"] for r in runs]),
                    "loaded_equal": all(r["loaded_equal"] for r in runs) if runs else None,
                }
                if impl != "raw":
                    row["save_x_raw"] = paired(recs, impl, "raw", lambda r: r["save_s"])
                    row["load_x_raw"] = paired(recs, impl, "raw", lambda r: r["load_s"])
                if impl == "lightkit" and "lightning" in impls:
                    row["save_x_lightning"] = paired(recs, impl, "lightning", lambda r: r["save_s"])
                    row["load_x_lightning"] = paired(recs, impl, "lightning", lambda r: r["load_s"])
                rows[impl] = row
            entry["rows"] = rows
            entry["value"] = (rows.get("lightkit", {}).get("save_x_raw") or {}).get("median")
            entry["met"] = None
        out[fig.key] = entry
    return out


def _met(ratio: float | None, target: float | None, lightning: float | None) -> bool | None:
    if ratio is None or target is None:
        return None
    ok = ratio <= target
    if lightning is not None:
        ok = ok and lightning < 1.0
    return ok


# -- reports ----------------------------------------------------------------------------------------
def _fmt(s: dict[str, float] | None, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    if not s:
        return "–"
    med, lo, hi = (fmt.format(s[k] * scale) for k in ("median", "min", "max"))
    return med if s.get("n", 1) == 1 else f"{med} [{lo}–{hi}]"


def _mark(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "–"}[met]


def _noise(entry: dict[str, Any], clock: str) -> str:
    """How sure the verdict is: the 95% interval of the median ratio, and whether the target
    lies inside it (then this run alone cannot tell met from missed)."""
    ratio = entry.get("rows", {}).get("lightkit", {}).get(f"x_raw_{clock}") or {}
    ci, target = ratio.get("median_ci95"), entry.get("target")
    if not ci or target is None:
        return ""
    low, high = ci
    where = (
        "the target lies inside it, so this run cannot tell"
        if low <= target <= high
        else "the target lies outside it"
    )
    return (
        f" (median {ratio['median']:.3f}, 95% interval of the median {low:.3f}–{high:.3f}: {where})"
    )


def markdown(result: dict[str, Any]) -> str:
    meta, figs = result["meta"], result["figures"]
    clock = meta["clock"]
    lines = [
        "# lightkit benchmarks",
        "",
        f"`{meta['command']}` — {meta['date']}, {meta['seconds']:.0f} s, "
        f"{meta['repetitions']} interleaved repetition(s), each measurement a fresh process, "
        f"{meta['threads']} torch thread(s).",
        "",
        f"torch {meta['torch']}, lightkit {meta['lightkit']}, "
        + (
            f"{meta['lightning_package']} {meta['lightning']}"
            if meta["lightning"]
            else "Lightning not installed (its rows are absent)"
        )
        + f"; Python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs; load average "
        f"{_load(meta['load_before'])} before, {_load(meta['load_after'])} after.",
        "",
        f"Values are median [min–max] over repetitions. Ratios are paired per repetition (each "
        f"implementation's run divided by the hand-written run of the same repetition). Targets "
        f"are judged on the **{clock}** clock (`--clock`): "
        + (
            "the process's CPU time, which ignores time spent waiting for a core on a busy machine."
            if clock == "cpu"
            else "wall-clock time."
        ),
        "",
    ]
    steps_key = f"us_per_step_{clock}"
    for key, e in figs.items():
        lines += [f"## ({key}) {e['title']}", ""]
        if e.get("note"):
            lines += [e["note"], ""]
        rows = e.get("rows", {})
        if key in ("a", "a-log", "b", "c", "c-compile", "d"):
            case = meta["cases"].get(_FIG_GROUP[key], {})
            lines.append(
                f"{case.get('steps')} steps over {case.get('epochs')} epochs (the first "
                f"{case.get('warmup')} left out of the timing), batch "
                f"{case.get('batch_size')}, hidden {case.get('hidden')}, {case.get('optimizer')}"
                + (f", {case.get('ranks')} ranks" if case.get("ranks", 1) > 1 else "")
                + "."
            )
            lines.append("")
            extra = " | × raw eager" if key == "c-compile" else ""
            lines += [
                f"| | µs/step ({clock}) | × raw ({clock}) | × raw (other clock) | × Lightning | "
                f"whole fit × raw | same weights as raw{extra} |",
                "|---|---|---|---|---|---|---|" + ("---|" if extra else ""),
            ]
            other = "wall" if clock == "cpu" else "cpu"
            for impl, r in rows.items():
                err = f" ({r['errors']} failed)" if r.get("errors") else ""
                same = r.get("same_weights_as_raw")
                lines.append(
                    f"| {impl}{err} | {_fmt(r.get(steps_key), '{:.1f}')} | "
                    f"{_fmt(r.get(f'x_raw_{clock}'))} | {_fmt(r.get(f'x_raw_{other}'))} | "
                    f"{_fmt(r.get('x_lightning'))} | {_fmt(r.get('x_raw_fit'))} | "
                    f"{'–' if same is None else ('yes' if same else 'no')}"
                    + (f" | {_fmt(r.get('x_raw_eager'))}" if extra else "")
                    + " |"
                )
            after = rows.get(common.RAW_AFTER_LIGHTKIT)
            if after:
                lk_after = rows.get("lightkit", {}).get("x_raw_after_lightkit")
                lines += [
                    "",
                    f"{common.RAW_AFTER_LIGHTKIT}: the hand-written loop in a process that first "
                    "ran a short lightkit fit of the same case, so it holds what a lightkit "
                    "process holds when its loop starts, but runs raw's loop. Its ratio to raw "
                    f"({_fmt(after.get(f'x_raw_{clock}'))}) is what that process state costs a "
                    "loop; lightkit over it "
                    f"({_fmt(lk_after)}) is what lightkit's own loop costs.",
                ]
            target = f"≤ {e['target']} × raw" + (
                " and below Lightning" if _FIG_BELOW.get(key) else ""
            )
            lines += [
                "",
                f"Target: lightkit {target}: {_mark(e.get('met'))}{_noise(e, clock)}.",
                "",
            ]
        elif key == "e":
            lines += [
                "| | import torch (ms) | added by the framework (ms) | modules added | "
                "process start → framework imported (s) | process start → first step (s) | "
                "first step later than raw (s) |",
                "|---|---|---|---|---|---|---|",
            ]
            names = {"raw": "torch only", "lightkit-all": "lightkit, every public name used"}
            for impl, r in rows.items():
                name = names.get(impl, impl)
                lines.append(
                    f"| {name} | {_fmt(r['torch_ms'], '{:.0f}')} | "
                    f"{'–' if impl == 'raw' else _fmt(r['added_ms'], '{:.0f}')} | "
                    f"{'–' if impl == 'raw' else _fmt(r['modules_added'], '{:.0f}')} | "
                    f"{_fmt(r.get('import_s'), '{:.2f}')} | {_fmt(r.get('first_step_s'), '{:.2f}')}"
                    f" | {_fmt(r.get('first_step_over_raw_s'), '{:.2f}')} |"
                )
            lines += [
                "",
                "Import: `import torch` then `import lightkit` / `import "
                f"{meta.get('lightning_package') or 'lightning'}` in a fresh process, each timed "
                "in the process. `import lightkit` imports a public name's module when the name "
                "is first used; the row 'every public name used' is what a training script pays "
                "for lightkit's modules by its first step (pydantic included). Start to first step: from just before the process is started "
                "to the start of the first training step of figure (a) (interpreter start, "
                "imports, building the spec, model, optimizer and data).",
                "",
                f"Target: `import lightkit` ≤ {e['target']:.0f} ms over torch: "
                f"{_mark(e.get('met'))}.",
                "",
            ]
        elif key == "f":
            lines += ["| case | " + " | ".join(_impl_cols(rows)) + " |", "|---|" + "---|" * len(
                _impl_cols(rows)
            )]  # fmt: skip
            for group, per_impl in rows.items():
                cells = []
                for impl, r in per_impl.items():
                    cells.append(_fmt(r["peak_rss_mb"], "{:.0f}"))
                    if impl != "raw":
                        cells.append(_fmt(r["over_raw_mb"], "{:+.1f}"))
                lines.append(f"| {group} | " + " | ".join(cells) + " |")
            lines += [
                "",
                "Peak RSS (`getrusage` maxrss) of the training process, MB; the differences are "
                "paired per repetition.",
                "",
                f"Target: lightkit ≤ {e['target']:.0f} MB over raw in every case: "
                f"{_mark(e.get('met'))}.",
                "",
            ]
        elif key == "g":
            lines += [
                "| | save (s) | load (s) | save × raw | load × raw | save × Lightning | "
                "load × Lightning | file (MB) |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for impl, r in rows.items():
                lines.append(
                    f"| {impl} | {_fmt(r['save_s'])} | {_fmt(r['load_s'])} | "
                    f"{_fmt(r.get('save_x_raw'))} | {_fmt(r.get('load_x_raw'))} | "
                    f"{_fmt(r.get('save_x_lightning'))} | {_fmt(r.get('load_x_lightning'))} | "
                    f"{_fmt(r['file_mb'], '{:.0f}')} |"
                )
            params = (rows.get("raw", {}).get("params_m") or {}).get("median", 0)
            lines += [
                "",
                f"A {params:.1f}M-parameter MLP's weights. raw: `torch.save` / `torch.load("
                "weights_only=True)`; lightkit: `Runtime.save` / `Runtime.load` (temporary file, "
                "fsync, atomic rename; CRC check before `torch.load(weights_only=True)`); "
                "Lightning: `TorchCheckpointIO.save_checkpoint` / `load_checkpoint`.",
                "",
            ]
    return "\n".join(lines) + "\n"


_FIG_GROUP = {f.key: f.group for f in FIGURES}
_FIG_BELOW = {f.key: f.below_lightning for f in FIGURES}


def _impl_cols(rows: dict[str, Any]) -> list[str]:
    first = next(iter(rows.values()), {})
    cols = []
    for impl in first:
        cols.append(f"{impl} (MB)")
        if impl != "raw":
            cols.append(f"{impl} over raw (MB)")
    return cols


def _load(load: Any) -> str:
    return "–" if not load else "/".join(f"{x:.1f}" for x in load)


def chart(result: dict[str, Any], path: Path) -> bool:
    """A bar chart of the ratios to raw (median, min–max whiskers); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    clock = result["meta"]["clock"]
    figs = result["figures"]
    labels, series = [], {"lightkit": [], "lightning": []}
    targets = []
    for key in ("a", "a-log", "b", "c", "c-compile", "d"):
        if key not in figs:
            continue
        labels.append(key)
        targets.append(figs[key]["target"])
        for impl in series:
            series[impl].append(figs[key]["rows"].get(impl, {}).get(f"x_raw_{clock}"))
    if "g" in figs:
        for what in ("save", "load"):
            labels.append(f"g {what}")
            targets.append(None)
            for impl in series:
                series[impl].append(figs["g"]["rows"].get(impl, {}).get(f"{what}_x_raw"))
    if not labels:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 4))
    width = 0.38
    colors = {"lightkit": "#3b7dd8", "lightning": "#a0a0a0"}
    for n, (impl, values) in enumerate(series.items()):
        if not any(values):
            continue
        xs = [i + (n - 0.5) * width for i in range(len(labels))]
        med = [v["median"] if v else 0 for v in values]
        err = [
            [(v["median"] - v["min"]) if v else 0 for v in values],
            [(v["max"] - v["median"]) if v else 0 for v in values],
        ]
        ax.bar(xs, med, width, yerr=err, capsize=3, label=impl, color=colors[impl])
    for i, t in enumerate(targets):
        if t:
            ax.hlines(t, i - 0.45, i + 0.45, colors="#d62728", linestyles="dashed", linewidth=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(f"× hand-written PyTorch ({clock} time)")
    ax.set_title("lightkit and Lightning relative to a hand-written loop (dashed: target)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, shorter runs")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 7; quick 3)")
    parser.add_argument("--only", default="", help=f"figures, comma-separated: {FIGURE_KEYS}")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="judge targets")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--out-dir", default=str(BENCH), help="where results.* are written")
    parser.add_argument("--tmp-dir", default=None, help="folder for checkpoint files")
    parser.add_argument("--no-lightning", action="store_true", help="leave Lightning out")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.out)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    result = run_suite(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out_dir / "results.md").write_text(text)
    drew = chart(result, out_dir / "results.png")
    if not args.quiet:
        print(text)
        print(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'}", end="")
        print(f", {out_dir / 'results.png'}" if drew else " (no chart: matplotlib missing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
