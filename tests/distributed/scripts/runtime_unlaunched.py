"""Under torchrun: a user's Runtime used before ``launch()``. The loader is split and the
collectives reach the other rank (they join the job on first use, as ``setup`` does), and
``save`` with a path that differs per rank is refused on both ranks alike.

Each rank writes ``result-<rank>.json`` for the test to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk


def main() -> None:
    rt = lk.Runtime(accelerator="cpu", strategy="ddp")  # no rt.launch()
    loader = rt.setup_dataloader(
        DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2), shuffle_default=False
    )
    seen = [x.tolist() for (batch,) in loader for x in batch]
    result = {
        "rank": rt.rank,
        "seen": seen,
        "sum": rt.all_reduce(torch.tensor(float(rt.rank + 1)), op="sum").item(),
        "gathered": rt.all_gather(torch.tensor([rt.rank])).tolist(),
        "broadcast": rt.broadcast(f"from rank {rt.rank}", src=0),
    }
    try:
        rt.save({"x": torch.ones(1)}, f"own-{rt.rank}.ckpt")
    except lk.ConfigError as exc:
        result["own_path"] = {"code": exc.code, "msg": str(exc)}
    rt.save({"x": torch.ones(1)}, "shared.ckpt")
    result["loaded"] = rt.load("shared.ckpt")["x"].tolist()
    rt.teardown()
    try:  # the group is gone: acting alone would be a silent one-process answer
        rt.all_reduce(torch.ones(1), op="sum")
    except lk.DistributedError as exc:
        result["after_teardown"] = exc.code
    Path(f"result-{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
