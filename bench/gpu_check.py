"""One check of lightkit on a CUDA machine, in under five minutes.

1. Every precision (32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true) trains a small
   MLP through ``lk.Trainer`` on one GPU: first/last loss, parameter dtype, steps/s.
2. With two GPUs or more: two-rank DDP and FSDP on nccl through
   ``lk.Trainer(devices=2, strategy=...)``, each in a child process with a time limit
   (skipped with one GPU).
3. Throughput of a GPT-style transformer (about 1B parameters, bf16-mixed) that fills a good
   part of the GPU: tokens/s and an MFU estimate through ``lk.Trainer``, next to the same
   model in a hand-written loop (the framework's overhead is the gap).
4. A JSON summary, printed last on a line starting with ``SUMMARY``.

On a machine without CUDA it prints that it has nothing to check and exits 0. It exits 1 when
a check that ran failed.

Usage::

    python bench/gpu_check.py                 # everything
    python bench/gpu_check.py --quick         # fewer steps, a smaller transformer
    python bench/gpu_check.py --peak-tflops 989 --batch 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lightkit as lk  # noqa: E402
from lightkit.precision import precision_from  # noqa: E402

#: "cuda"; the hidden ``--cpu-dry-run`` flag sets "cpu": every check runs at a tiny size on the
#: CPU (the two-rank checks on gloo), so the script's paths are tried without a GPU.
ACCEL = "cuda"
PRECISIONS = ["32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]
QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}
#: Dense bf16/fp16 tensor-core peaks (TFLOP/s) by device-name fragment, for the MFU estimate.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "V100": 125.0,
    "4090": 165.0,
}


def sync() -> None:
    if ACCEL == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Times the steps after ``warmup`` from inside the run, synchronising the GPU at the two
    edges only, and keeps each step's loss without syncing."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.steps = 0
        self.losses: list[torch.Tensor] = []

    def batch_end(self, outputs: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach().float())
        self.steps += 1
        if self.steps == self.warmup:
            sync()
            self.start = time.perf_counter()

    def fit_end(self) -> None:
        sync()
        self.end = time.perf_counter()

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def first_last(self, n: int = 5) -> tuple[float, float]:
        first = torch.stack(self.losses[:n]).mean().item()
        last = torch.stack(self.losses[-n:]).mean().item()
        return first, last


def add_clock(reg: lk.Registry, clock: Clock) -> None:
    def clock_batch_end(outputs):
        clock.batch_end(outputs)

    def clock_fit_end():
        clock.fit_end()

    reg.on("train_batch_end", clock_batch_end)
    reg.on("fit_end", clock_fit_end)


# -- 1. every precision on one GPU ---------------------------------------------------------------
def mlp_registry(samples: int, batch: int, width: int) -> lk.Registry:
    reg = lk.Registry()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 256, generator=g)
    y = (x[:, :10] + 0.1 * torch.randn(samples, 10, generator=g)).argmax(1)

    def net():
        return nn.Sequential(
            nn.Linear(256, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, 10),
        )

    def data():
        pin = ACCEL == "cuda"
        return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, pin_memory=pin)

    def train(net, batch):
        inputs, labels = batch
        return F.cross_entropy(net(inputs).float(), labels)

    def optim(net):  # SGD: Adam's second moment underflows in 16-true and the run diverges
        return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    return reg


def check_precisions(steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    batch, width, warmup = (256, 1024, 10) if ACCEL == "cuda" else (32, 64, 2)
    for name in PRECISIONS:
        try:
            clock = Clock(warmup=warmup)
            reg = mlp_registry(samples=batch * 40, batch=batch, width=width)
            add_clock(reg, clock)
            plugin = precision_from(name)
            flags = {"accelerator": ACCEL, "devices": 1, "precision": plugin, "seed": 0}
            result = lk.Trainer(max_steps=steps, **QUIET, **flags).fit(lk.collect(reg))
            first, last = clock.first_last()
            dtype = next(result.models["net"].parameters()).dtype
            row = {
                "ok": bool(last < first and math.isfinite(last)),
                "first_loss": round(first, 4),
                "last_loss": round(last, 4),
                "param_dtype": str(dtype).replace("torch.", ""),
                "steps_per_s": round(clock.timed_steps / clock.seconds, 1),
                "samples_per_s": round(clock.timed_steps * batch / clock.seconds),
            }
            if getattr(plugin, "scaler", None) is not None:
                row["loss_scale"] = plugin.scale
        except Exception as exc:  # report and go on: one broken mode must not hide the others
            row = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        out[name] = row
        print(f"[precision] {name:>10}: {row}", flush=True)
    return out


# -- 2. two ranks: DDP and FSDP (child processes) ------------------------------------------------
DIST_STEPS = 30


def dist_net():
    return nn.Sequential(nn.Linear(256, 2048), nn.GELU(), nn.Linear(2048, 10))


def dist_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64 * 64, 256, generator=g)
    y = x[:, :10].argmax(1)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)


def dist_train(dist_net, batch, ctx):
    x, y = batch
    loss = F.cross_entropy(dist_net(x).float(), y)
    ctx.log("loss", loss, sync_dist=True)
    return loss


def dist_optim(dist_net):
    return torch.optim.AdamW(dist_net.parameters(), lr=1e-3)


def run_dist_child(strategy: str) -> int:
    """Inside the child: train on two GPUs (dry run: two CPU ranks on gloo, in fp32) and print
    one ``DIST`` line from rank 0."""
    reg = lk.Registry()
    reg.model(dist_net)
    reg.train_data(dist_data)
    reg.training_step(dist_train)
    reg.configure_optimizers(dist_optim)
    trainer = lk.Trainer(
        accelerator=ACCEL,
        devices=2,
        strategy=strategy,
        precision="bf16-mixed" if ACCEL == "cuda" else "32-true",
        max_steps=DIST_STEPS,
        seed=0,
        **QUIET,
    )
    start = time.perf_counter()
    result = trainer.fit(lk.collect(reg))
    seconds = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = getattr(result, "metrics", {}) or {}
        row = {
            "ok": getattr(result, "global_step", None) == DIST_STEPS,
            "global_step": getattr(result, "global_step", None),
            "loss": metrics.get("loss"),
            "seconds": round(seconds, 1),
        }
        print("DIST " + json.dumps(row), flush=True)
    return 0


def check_distributed(timeout: float) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    if gpus < 2 and ACCEL == "cuda":
        print(f"[distributed] skipped: {gpus} GPU (two needed)", flush=True)
        return {"skipped": f"{gpus} GPU; DDP/FSDP need 2"}
    out: dict[str, Any] = {}
    for strategy in ("ddp", "fsdp"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--dist-child", strategy]
        if ACCEL == "cpu":
            cmd.append("--cpu-dry-run")
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DIST ")]
            if proc.returncode == 0 and lines:
                row = json.loads(lines[-1][5:])
            else:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                row = {"ok": False, "returncode": proc.returncode, "tail": tail}
        except subprocess.TimeoutExpired:
            row = {"ok": False, "error": f"timed out after {timeout:.0f}s"}
        out[strategy] = row
        print(f"[distributed] {strategy}: {row}", flush=True)
    return out


# -- 3. transformer throughput -------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, seq: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def default_batch() -> int:
    """Sequences per step for the 1B model: fill about half of the GPU's memory."""
    if ACCEL != "cuda":
        return 4
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return 32 if gib >= 100 else 16 if gib >= 60 else 8


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


def flops_per_token(model: nn.Module, layers: int, d: int, seq: int) -> float:
    """PaLM's estimate: 6 FLOPs per parameter (embeddings excluded) plus attention."""
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok", "pos")))
    return 6.0 * params + 12.0 * layers * d * seq


def check_throughput(args: argparse.Namespace) -> dict[str, Any]:
    vocab, seq = 32768, 1024
    d, layers, heads = (1024, 8, 8) if args.quick else (2048, 16, 16)
    if ACCEL == "cpu":
        d, layers, heads, seq, vocab = 64, 2, 4, 32, 256
    batch, steps, warmup = args.batch or default_batch(), (10 if args.quick else 25), 5
    if ACCEL == "cpu":
        steps, warmup = 4, 2
    samples = batch * (steps + warmup)
    tokens = torch.randint(0, vocab, (samples, seq + 1), generator=torch.Generator().manual_seed(0))
    torch.backends.cuda.matmul.allow_tf32 = True

    def make() -> nn.Module:
        torch.manual_seed(0)
        with torch.device(ACCEL):
            return GPT(vocab, d, layers, heads, seq)

    def loader() -> DataLoader:
        return DataLoader(TensorDataset(tokens), batch_size=batch, pin_memory=ACCEL == "cuda")

    out: dict[str, Any] = {"model": {"d": d, "layers": layers, "seq": seq, "batch": batch}}

    # (a) through lk.Trainer
    clock = Clock(warmup)
    reg = lk.Registry()

    def gpt():
        return make()

    def data():
        return loader()

    def train(gpt, batch):
        return lm_loss(gpt, batch[0])

    def optim(gpt):
        return torch.optim.AdamW(gpt.parameters(), lr=3e-4, fused=ACCEL == "cuda")

    reg.model(gpt)
    reg.train_data(data)
    reg.training_step(train)
    reg.configure_optimizers(optim)
    add_clock(reg, clock)
    flags = {"accelerator": ACCEL, "devices": 1, "precision": "bf16-mixed"}
    result = lk.Trainer(max_steps=steps + warmup, **QUIET, **flags).fit(lk.collect(reg))
    model = result.models["gpt"]
    per_token = flops_per_token(model, layers, d, seq)
    out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    lk_tps = clock.timed_steps * batch * seq / clock.seconds
    if ACCEL == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    del model, result
    torch.cuda.empty_cache()

    # (b) the same model and steps by hand
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=ACCEL == "cuda")
    for i, (batch_tokens,) in enumerate(loader()):
        if i == warmup:
            sync()
            start = time.perf_counter()
        if i == steps + warmup:
            break
        batch_tokens = batch_tokens.to(ACCEL, non_blocking=True)
        with torch.autocast(ACCEL, dtype=torch.bfloat16):
            loss = lm_loss(model, batch_tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    raw_tps = steps * batch * seq / (time.perf_counter() - start)
    del model, opt
    torch.cuda.empty_cache()

    name = torch.cuda.get_device_name() if ACCEL == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    out["lightkit_tokens_per_s"] = round(lk_tps)
    out["raw_tokens_per_s"] = round(raw_tps)
    out["lightkit_vs_raw"] = round(lk_tps / raw_tps, 3)
    out["tflops_per_s"] = round(lk_tps * per_token / 1e12, 1)
    out["peak_tflops"] = peak
    out["mfu"] = round(lk_tps * per_token / (peak * 1e12), 3) if peak else None
    out["raw_mfu"] = round(raw_tps * per_token / (peak * 1e12), 3) if peak else None
    out["ok"] = bool(math.isfinite(clock.first_last(1)[1]))
    print(f"[throughput] {out}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, smaller transformer")
    parser.add_argument("--batch", type=int, default=None, help="transformer batch (sequences)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for the MFU estimate")
    parser.add_argument("--dist-timeout", type=float, default=150.0)
    parser.add_argument("--dist-child", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_dry_run:
        global ACCEL, DIST_STEPS
        ACCEL, DIST_STEPS = "cpu", 6
        args.quick, args.batch = True, 4
    if args.dist_child:
        return run_dist_child(args.dist_child)
    if ACCEL == "cuda" and not torch.cuda.is_available():
        print("no CUDA: this machine has no GPU torch can use; nothing to check (exit 0).")
        print("SUMMARY " + json.dumps({"cuda": False, "torch": torch.__version__}))
        return 0

    began = time.perf_counter()
    summary: dict[str, Any] = {
        "cuda": ACCEL == "cuda",
        "device": torch.cuda.get_device_name() if ACCEL == "cuda" else "cpu (dry run)",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "lightkit": lk.__version__,
    }
    sections = [
        (
            "precisions",
            lambda: check_precisions(
                steps=200 if not args.quick else 60 if ACCEL == "cuda" else 12
            ),
        ),
        ("distributed", lambda: check_distributed(args.dist_timeout)),
        ("throughput", lambda: check_throughput(args)),
    ]
    failed = []
    for key, run in sections:
        try:
            summary[key] = run()
        except Exception as exc:
            traceback.print_exc()
            summary[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        value = summary[key]
        rows = [value] if "ok" in value else list(value.values())
        if any(isinstance(r, dict) and r.get("ok") is False for r in rows):
            failed.append(key)
    summary["failed"] = failed
    summary["seconds"] = round(time.perf_counter() - began, 1)
    print("SUMMARY " + json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
