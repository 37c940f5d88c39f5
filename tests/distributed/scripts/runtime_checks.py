"""Under torchrun: a user's own Runtime on two gloo ranks refuses what one process refuses.

Each rank prints one ``RESULT {json}`` line: a valid reduction's value, and what each bad call
raised (type, code, message), for the test to compare with a one-process Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import lightkit as lk


def outcome(call: Any) -> dict[str, Any]:
    try:
        call()
    except Exception as exc:
        return {"type": type(exc).__name__, "code": getattr(exc, "code", None), "msg": str(exc)}
    return {"type": None}


def main() -> None:
    rt = lk.Runtime(accelerator="cpu", strategy="ddp")
    rt.launch()
    try:
        summed = rt.all_reduce(torch.tensor(float(rt.rank + 1)), op="sum").item()
        result = {
            "rank": rt.rank,
            "world": rt.world_size,
            "sum": summed,
            "bad_op": outcome(lambda: rt.all_reduce(torch.tensor(1.0), op="bogus")),
            "not_a_tensor": outcome(lambda: rt.all_reduce(1.0)),  # type: ignore[arg-type]
        }
        rt.barrier()
    finally:
        rt.teardown()
    # One file per rank: two ranks printing at once can interleave on torchrun's stdout.
    Path(f"result-{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
