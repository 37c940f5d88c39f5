"""Render a recorded :class:`~lightkit.engine.schedule.Schedule` as text people can read.

Entries are grouped as the loops nest them: top-level events, the sanity check, epochs,
batches, evaluation runs. Within an epoch the batches' sequences are merged into one, each step
labelled with the batches it happens in ("each batch", "batches 1, 3, …, 11 (every 2nd)").
Consecutive identical epochs are printed once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightkit.engine.schedule import Entry, Listener, Schedule

_EVAL_PREFIX = {"validate": "validation", "test": "test", "predict": "predict"}
_ARROW = " → "


class _Run:
    """An evaluation run (validation/test/predict epoch): its entries, grouped into batches."""

    def __init__(self, prefix: str, entries: list[Entry]) -> None:
        self.prefix = prefix
        self.entries = entries
        self.batches = sum(1 for e in entries if e.what == f"{prefix}_batch_start")
        self.sanity = any(e.sanity for e in entries)

    def body(self) -> list[str]:
        return _body(self.entries, f"{self.prefix}_batch_start", {})

    @property
    def label(self) -> str:
        kind = "sanity" if self.sanity else self.prefix
        return f"{kind} run ({self.batches} batch{'es' if self.batches != 1 else ''})"


def _group_runs(entries: Sequence[Entry]) -> list[Entry | _Run]:
    """Fold every ``<prefix>_epoch_start`` ... ``<prefix>_epoch_end`` stretch into a ``_Run``."""
    out: list[Entry | _Run] = []
    i = 0
    while i < len(entries):
        e = entries[i]
        prefix = _EVAL_PREFIX.get(e.stage)
        if prefix is not None and e.what == f"{prefix}_epoch_start":
            j = i
            while j < len(entries) and entries[j].what != f"{prefix}_epoch_end":
                j += 1
            # What the run does after its end event (writing its logs) belongs to it too.
            j += 1
            while (
                j < len(entries)
                and entries[j].stage == e.stage
                and entries[j].what in ("write_logs",)
            ):
                j += 1
            out.append(_Run(prefix, list(entries[i:j])))
            i = j
        else:
            out.append(e)
            i += 1
    return out


def _key(item: Entry | _Run, runs: dict[str, list[str]]) -> str:
    if isinstance(item, _Run):
        body = item.body()
        label = item.label
        n = 2
        while label in runs and runs[label] != body:
            label = f"{item.label} #{n}"
            n += 1
        runs[label] = body
        return label
    return item.label


def _merge(canon: list[list[Any]], seq: list[str], idx: int) -> list[list[Any]]:
    """Merge ``seq`` (the keys of batch ``idx``) into ``canon`` ([key, indices] pairs), keeping
    both orders (shortest common supersequence by longest common subsequence)."""
    keys = [c[0] for c in canon]
    n, m = len(keys), len(seq)
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(n - 1, -1, -1):
        for b in range(m - 1, -1, -1):
            lcs[a][b] = (
                lcs[a + 1][b + 1] + 1 if keys[a] == seq[b] else max(lcs[a + 1][b], lcs[a][b + 1])
            )
    out: list[list[Any]] = []
    a = b = 0
    while a < n or b < m:
        if a < n and b < m and keys[a] == seq[b]:
            out.append([keys[a], [*canon[a][1], idx]])
            a, b = a + 1, b + 1
        elif b == m or (a < n and lcs[a + 1][b] >= lcs[a][b + 1]):
            out.append(canon[a])
            a += 1
        else:
            out.append([seq[b], [idx]])
            b += 1
    return out


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def describe_indices(chosen: Sequence[int], every: Sequence[int]) -> str:
    """``each batch``, ``batch 5``, ``batches 1, 3, …, 11 (every 2nd)``."""
    chosen = sorted(set(chosen))
    if list(chosen) == sorted(set(every)):
        return "each batch"
    if len(chosen) == 1:
        return f"batch {chosen[0]}"
    if len(chosen) <= 4:
        return "batches " + ", ".join(map(str, chosen))
    for head, tail in ((chosen, []), (chosen[:-1], chosen[-1:])):
        steps = {b - a for a, b in itertools.pairwise(head)}
        if len(steps) == 1 and len(head) >= 4:
            d = steps.pop()
            text = f"batches {head[0]}, {head[1]}, …, {head[-1]} (every {_ordinal(d)})"
            return text + (f" and {tail[0]}" if tail else "")
    return f"{len(chosen)} batches: " + ", ".join(map(str, chosen[:4])) + f", …, {chosen[-1]}"


def _body(
    entries: Sequence[Entry | _Run], batch_start: str, runs: dict[str, list[str]]
) -> list[str]:
    """Lines for a stretch holding batches: what precedes them, the merged batches, the rest."""
    head: list[str] = []
    tail: list[str] = []
    batches: list[tuple[int, list[str]]] = []
    ordinal = 0
    for item in entries:
        key = _key(item, runs)
        starts = not isinstance(item, _Run) and item.what == batch_start
        closes = not isinstance(item, _Run) and item.batch_idx is None and batches
        if starts and not isinstance(item, _Run):  # (``starts`` implies it; for the type)
            # Training batches by their index; evaluation batches (maybe of several loaders)
            # by their position in the run.
            idx = (
                item.batch_idx if item.stage == "train" and item.batch_idx is not None else ordinal
            )
            batches.append((idx, [key]))
            ordinal += 1
        elif batches and not closes and not tail:
            batches[-1][1].append(key)
        elif batches:
            tail.append(key)
        else:
            head.append(key)
    lines: list[str] = []
    if head:
        lines.append(_ARROW.join(head))
    if batches:
        canon: list[list[Any]] = []
        for idx, keys in batches:
            canon = _merge(canon, keys, idx)
        every = [idx for idx, _ in batches]
        grouped: list[tuple[str, list[str]]] = []
        for key, where in canon:
            label = describe_indices(where, every)
            if grouped and grouped[-1][0] == label:
                grouped[-1][1].append(key)
            else:
                grouped.append((label, [key]))
        width = max(len(label) for label, _ in grouped) + 1
        for label, keys in grouped:
            lines.append(f"{label + ':':<{width}} {_ARROW.join(keys)}")
    if tail:
        lines.append(_ARROW.join(tail))
    return lines


def _epoch_lines(epochs: list[tuple[int, int, list[str]]]) -> list[str]:
    """Each epoch pattern in full the first time; later epochs as references to it, with runs
    of references that repeat with a short period folded into one line."""
    first: dict[tuple[int, tuple[str, ...]], int] = {}
    ids: list[int] = []
    for epoch, n, body in epochs:
        ids.append(first.setdefault((n, tuple(body)), epoch))
    lines: list[str] = []
    i = 0
    while i < len(epochs):
        epoch, n, body = epochs[i]
        if ids[i] == epoch:
            lines.append(f"epoch {epoch} ({n} batch{'es' if n != 1 else ''})")
            lines.extend(f"  {line}" for line in body)
            i += 1
            continue
        best_p, best_len = 1, 1
        for p in range(1, 9):
            length = 0
            while (
                i + length < len(epochs)
                and ids[i + length] != epochs[i + length][0]
                and ids[i + length] == ids[i + length % p]
            ):
                length += 1
            if length >= p and length > best_len:
                best_p, best_len = p, length
        last = epochs[i + best_len - 1][0]
        span = f"epoch {epoch}" if best_len == 1 else f"epochs {epoch}–{last}"
        refs = sorted(set(ids[i : i + best_p]), key=ids[i : i + best_p].index)
        if len(refs) == 1:
            lines.append(f"{span}: as epoch {refs[0]}")
        else:
            lines.append(f"{span}: as epochs {', '.join(map(str, refs))} in turn")
        i += best_len
    return lines


def _structure(schedule: Schedule, runs: dict[str, list[str]]) -> list[str]:
    """The "order" section."""
    items = _group_runs(schedule.entries)
    lines: list[str] = []
    i = 0
    epochs: list[tuple[int, int, list[str]]] = []  # (epoch, batches, body)

    def flush_epochs() -> None:
        lines.extend(_epoch_lines(epochs))
        epochs.clear()

    while i < len(items):
        item = items[i]
        if not isinstance(item, _Run) and item.what == "train_epoch_start":
            j = i + 1
            while j < len(items) and (
                isinstance(items[j], _Run)
                or items[j].what not in ("train_epoch_start", "train_end", "fit_end")  # type: ignore[union-attr]
            ):
                j += 1
            stretch = items[i:j]
            n = sum(1 for x in stretch if not isinstance(x, _Run) and x.what == "train_batch_start")
            epochs.append((item.epoch, n, _body(stretch, "train_batch_start", runs)))
            i = j
            continue
        flush_epochs()
        if not isinstance(item, _Run) and item.what == "sanity_check_start":
            j = i + 1
            while j < len(items) and getattr(items[j], "what", "") != "sanity_check_end":
                j += 1
            inner = [_key(x, runs) for x in items[i : j + 1]]
            lines.append("sanity check: " + _ARROW.join(inner))
            i = j + 1
            continue
        if isinstance(item, _Run) and schedule.stage != "fit":
            lines.append(_key(item, runs))
            lines.extend(f"  {line}" for line in runs[_key(item, runs)])
            i += 1
            continue
        lines.append(_key(item, runs))
        i += 1
    flush_epochs()
    return lines


def _who(schedule: Schedule) -> list[str]:
    """The "who runs where" section: per entry kind, its listeners and what they get."""
    seen: dict[str, list[Listener]] = {}
    for e in schedule.entries:
        if not e.listeners:
            continue
        have = seen.setdefault(e.what, [])
        for x in e.listeners:
            if x not in have:
                have.append(x)
    lines: list[str] = []
    for what, listeners in seen.items():
        lines.append(what)
        lines.extend(_listener_lines(listeners))
    unreached = {k: v for k, v in schedule.listening.items() if k not in seen}
    if unreached:
        lines.append("only if it happens (not in this schedule):")
        for what, waiting in unreached.items():
            lines.append(f"  {what}")
            lines.extend(f"  {line}" for line in _listener_lines(waiting))
    return lines


def _listener_lines(listeners: Sequence[Listener]) -> list[str]:
    width = max(len(x.call) for x in listeners)
    return [f"  {x.kind:<8} {x.call:<{width}}  at {x.where}" for x in listeners]


def render(schedule: Schedule) -> str:
    """The schedule as text: a summary, the order, each evaluation run, who runs where."""
    facts = schedule.facts
    out = [f"lightkit explain: {schedule.stage}"]
    changed = facts.get("config") or {}
    out.append(
        "  config: "
        + (", ".join(f"{k}={v!r}" for k, v in changed.items()) if changed else "all defaults")
    )
    if facts.get("train_batches") is not None:
        out.append(f"  train batches per epoch: {facts['train_batches']}")
    if facts.get("eval_batches"):
        out.append(f"  evaluation batches per run: {', '.join(map(str, facts['eval_batches']))}")
    if facts.get("callbacks"):
        out.append(f"  callbacks: {', '.join(facts['callbacks'])}")
    if facts.get("manual_optimization"):
        out.append(
            "  manual optimization: the step calls backward and the optimizers itself; each "
            "ctx.backward fires before_backward and after_backward"
        )
    world = facts.get("world_size", 1)
    if world > 1:
        out.append(
            f"  {world} processes: each runs this schedule over its share of the data "
            f"(the lengths above are per process)"
        )
    out.append(
        "  (a dry run: every step is taken to return a loss; should_stop, max_time and what "
        "callbacks decide inside their methods depend on the data)"
    )
    runs: dict[str, list[str]] = {}
    out.append("")
    out.append("order:")
    out.extend(f"  {line}" for line in _structure(schedule, runs))
    if facts.get("truncated"):
        last = schedule.entries[-1] if schedule.entries else None
        out.append(
            f"  … the dry run stopped after {facts['truncated']} entries"
            + (f" (in epoch {last.epoch})" if last is not None else "")
            + ": explain a shorter run (max_epochs, max_steps, limit_train_batches) to see it all"
        )
    if schedule.stage == "fit":
        for label, body in runs.items():
            out.append("")
            out.append(f"{label}:")
            out.extend(f"  {line}" for line in body)
    who = _who(schedule)
    if who:
        out.append("")
        out.append("who runs where, with what it is injected:")
        out.extend(f"  {line}" for line in who)
    return "\n".join(out) + "\n"
