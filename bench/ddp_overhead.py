"""What lightkit's DDP costs on top of the same 2-rank training written by hand.

The script starts two rank processes on this machine (torchrun's variables, gloo on CPU, one
intra-op thread each) and, in both, alternates a hand-written DDP loop and ``trainer.fit``
with ``strategy="ddp"`` joining the same job. Both sides do the same work per run: create the
process group, seed, build the model, wrap it in ``DistributedDataParallel``, build a
``DataLoader`` with a ``DistributedSampler`` (shuffle, seed 0, ``set_epoch`` each epoch), train
two epochs with SGD, and destroy the group. They compute the same weights (checked).

Each figure is the ratio of one lightkit run to the hand-written run just before it, on rank
0; min/median/max are over the repetitions. Variants:

- ``tiny``: 32->64->64->10, batch 64 per rank, 256 steps: per-step overhead shows most.
- ``compute``: 32->1024->1024->10, batch 256 per rank, 48 steps: a step long enough that the
  loop's own cost should vanish.
- ``fixed``: ``tiny`` with 8 steps: the cost of a run besides its steps (setting up, the
  metrics agreed at the end, tearing down).

Usage::

    python bench/ddp_overhead.py                   # both variants, 7 repetitions
    python bench/ddp_overhead.py --variant tiny --reps 11 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Variant:
    name: str
    hidden: int
    batch_size: int  # per rank
    steps: int  # optimizer steps over two epochs

    @property
    def samples(self) -> int:
        return self.batch_size * 2 * self.steps // 2  # two ranks, two epochs


VARIANTS = {
    "tiny": Variant("tiny", 64, 64, 256),
    "compute": Variant("compute", 1024, 256, 48),
    "fixed": Variant("fixed", 64, 64, 8),  # almost no steps: what a run costs besides them
}


# -- in a rank ------------------------------------------------------------------------------------
def _net(v: Variant) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(32, v.hidden), nn.ReLU(), nn.Linear(v.hidden, v.hidden), nn.ReLU(),
        nn.Linear(v.hidden, 10),
    )  # fmt: skip


_DATA: dict[int, Any] = {}


def _dataset(n: int) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    if n not in _DATA:
        g = torch.Generator().manual_seed(0)
        _DATA[n] = TensorDataset(
            torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        )
    return _DATA[n]


def run_raw(v: Variant) -> Any:
    """The hand-written DDP loop."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = DistributedDataParallel(_net(v))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    ds = _dataset(v.samples)
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=v.batch_size, sampler=sampler)
    net.train()
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    module = net.module
    del net, opt  # the reducer holds the group: release it first
    dist.destroy_process_group()
    return module


def lightkit_spec(v: Variant) -> Any:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    import lightkit as lk

    reg = lk.Registry()

    def net():
        return _net(v)

    def data():
        return DataLoader(_dataset(v.samples), batch_size=v.batch_size, shuffle=True)

    def train(net, batch):
        x, y = batch
        return nn.functional.cross_entropy(net(x), y)

    def optim(net):
        return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    return lk.collect(reg)


def run_lightkit(v: Variant, spec: Any) -> Any:
    import lightkit as lk

    trainer = lk.Trainer(
        accelerator="cpu",
        strategy="ddp",
        max_epochs=2,
        seed=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    result = trainer.fit(spec)
    assert result.global_step == v.steps, result.global_step
    return result.models["net"]


def rank_main(variant: str, reps: int) -> None:
    import torch

    # Before any group exists (as lightkit does): modules that DDP imports capture the
    # current default group in default arguments, which would keep the hand-written run's
    # group alive after destroy_process_group() and hang the next run on the same port.
    import torch.distributed.nn.functional

    torch.set_num_threads(1)
    v = VARIANTS[variant]
    spec = lightkit_spec(v)
    from overhead import summary, timed  # one clock and one summary for both benches

    *_, raw_net = timed(lambda: run_raw(v))  # warm-up, and both sides compute the same
    *_, lk_net = timed(lambda: run_lightkit(v, spec))
    same = all(
        torch.equal(a, b) for a, b in zip(raw_net.parameters(), lk_net.parameters(), strict=True)
    )
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for i in range(reps):
        for side, run in enumerate((lambda: run_raw(v), lambda: run_lightkit(v, spec))):
            w, c, _ = timed(run)
            wall[side].append(w)
            cpu[side].append(c)
        if os.environ.get("BENCH_VERBOSE"):
            print(f"rank {os.environ['RANK']} rep {i}: wall {wall[0][-1]:.3f} {wall[1][-1]:.3f}",
                  file=sys.stderr)  # fmt: skip
    if os.environ["RANK"] == "0":
        result = {
            "variant": v.name,
            "steps": v.steps,
            "weights_equal": same,
            "wall": summary(*wall, v.steps),
            "cpu": summary(*cpu, v.steps),
        }
        print("RESULT " + json.dumps(result), flush=True)


# -- the launcher -----------------------------------------------------------------------------------
def measure(variant: str, reps: int) -> dict[str, Any]:
    from lightkit.runtime.environment import free_port, local_rank_env

    port = free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            **local_rank_env(rank, 2, port, launched=False),
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--rank-of", variant, "--reps", str(reps)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.returncode for p in procs]}")
    line = next(x for x in outs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--rank-of", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_of:
        rank_main(args.rank_of, args.reps)
        return 0
    names = ["tiny", "compute"] if args.variant == "all" else [args.variant]
    for name in names:
        r = measure(name, args.reps)
        if args.json:
            print(json.dumps(r))
            continue
        for clock in ("wall", "cpu"):
            c = r[clock]
            print(
                f"{r['variant']:8s} {clock:4s} {r['steps']} steps/run, 2 ranks: hand-written "
                f"{c['raw_median_s']:.3f}s, lightkit {c['lightkit_median_s']:.3f}s; ratio median "
                f"{c['ratio_median']:.3f} (min {c['ratio_min']:.3f}, max {c['ratio_max']:.3f}); "
                f"{c['us_per_step_median']:+.0f} us/step; same weights: {r['weights_equal']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
