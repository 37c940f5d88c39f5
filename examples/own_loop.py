"""Your own training loop on ``lk.Runtime``: the device layer without the Trainer.

``lk.Runtime`` is what the Trainer's loops use to touch hardware: module and optimizer setup,
data sharding, device transfer, autocast, backward, optimizer steps, collectives, checkpoints.
Here it drives a hand-written loop over the digits example's functions, which are plain
functions: ``digits.cnn()`` builds the network and ``digits.train_loader()`` the data.

    python examples/own_loop.py                                  # CPU, float32
    python examples/own_loop.py --precision bf16-mixed
    torchrun --nproc-per-node 2 examples/own_loop.py --strategy ddp   # the Runtime joins torchrun
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import lightkit as lk


@torch.no_grad()
def accuracy(rt: lk.Runtime, model: nn.Module, loader: Any) -> float:
    """Accuracy over every rank's share of ``loader``, summed across ranks."""
    model.eval()
    counts = torch.zeros(2, device=rt.device)  # correct, seen
    for batch in loader:
        x, y = rt.to_device(batch)
        with rt.autocast():
            pred = model(x).argmax(1)
        counts += torch.stack([(pred == y).sum(), torch.tensor(len(y), device=rt.device)])
    correct, seen = rt.all_reduce(counts, op="sum").tolist()
    model.train()
    return correct / seen


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from examples import _common, digits

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto")
    parser.add_argument("--strategy", default="auto", help="single_device, ddp, fsdp or auto")
    parser.add_argument("--devices", default="auto", help="processes (or GPU indices)")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, ...")
    epochs = 2 if _common.smoke() else 12
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs (int)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (float)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (int)")
    subset = 256 if _common.smoke() else 0
    parser.add_argument("--subset", type=int, default=subset, help="samples used; 0: all")
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("own_loop.ckpt"), help="checkpoint file"
    )
    parser.add_argument("--results", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rt = lk.Runtime(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision,
    )
    rt.launch()  # joins torchrun's process group when there is one
    torch.manual_seed(0)  # the model's initial weights and the shuffling order

    model = rt.setup(digits.cnn())
    opt = rt.setup_optimizer(torch.optim.AdamW(model.parameters(), lr=args.lr))
    train = rt.setup_dataloader(digits.train_loader(args.batch_size, subset=args.subset))
    val = rt.setup_dataloader(digits.val_loader(args.batch_size), shuffle_default=False)
    test = rt.setup_dataloader(digits.test_loader(args.batch_size), shuffle_default=False)

    losses: list[float] = []
    for epoch in range(args.epochs):
        if hasattr(train.sampler, "set_epoch"):
            train.sampler.set_epoch(epoch)  # a different shuffle per epoch on every rank
        total = torch.zeros((), device=rt.device)
        for batch in train:
            x, y = rt.to_device(batch)
            with rt.autocast():
                loss = F.cross_entropy(model(x), y)
            rt.backward(loss)
            rt.optimizer_step(opt)
            opt.zero_grad(set_to_none=True)
            total += loss.detach().float()
        losses.append(rt.all_reduce(total / len(train)).item())  # one sync per epoch
        val_acc = accuracy(rt, model, val)
        if rt.is_global_zero:
            print(f"epoch {epoch}: train loss {losses[-1]:.4f}  val acc {val_acc:.4f}")

    test_acc = accuracy(rt, model, test)
    rt.save({"model": model, "optimizer": opt, "epoch": args.epochs}, args.checkpoint)
    rt.barrier()

    # Load the checkpoint into a fresh model: the same accuracy, bit for bit.
    fresh = rt.setup(digits.cnn())
    rest = rt.load(args.checkpoint, {"model": fresh})
    reloaded_acc = accuracy(rt, fresh, test)
    results = {
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "val_acc": val_acc,
        "test_acc": test_acc,
        "reloaded_test_acc": reloaded_acc,
        "checkpoint_epoch": rest["epoch"],
        "checkpoint": str(args.checkpoint),
        "runtime": repr(rt),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if rt.is_global_zero:
        _common.report("own_loop: results", results)
        _common.write_results(args, results)
    rt.teardown()
    return results


if __name__ == "__main__":
    # Import the package's copy so the digits functions resolve as examples.digits.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.own_loop import main

    main()
