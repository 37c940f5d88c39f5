"""Pretrain a tiny GPT on Python's own source code, then fine-tune it with LoRA on Python's docs.

Both texts ship with Python: the standard library's ``.py`` files (code) and
``pydoc_data.topics`` (the language reference's prose, what ``help("if")`` prints). The model
reads bytes (a 256-token vocabulary), so there is no tokenizer to download.

1. pretrain: a decoder-only transformer (written below) on the code corpus;
2. fine-tune: the same functions with other hyperparameters — ``corpus="docs"``,
   ``lora_rank=8``, ``base_weights=<the pretrained file>`` — so the model function wraps every
   linear layer of the frozen base in a low-rank adapter and only the adapters train;
3. report the held-out perplexity on the docs before and after fine-tuning, check that the base
   weights did not move, and print a sample from each model.

    python examples/finetune_llm.py                       # about five minutes on two CPU cores
    python examples/finetune_llm.py --n-layer 8 --n-embd 512 --block-size 256 --precision bf16-mixed

Bigger models on many GPUs change flags, not code; FSDP shards the parameters and ``bf16-true``
keeps them in bfloat16::

    python examples/finetune_llm.py --strategy fsdp --precision bf16-true --devices 8 \\
        --n-layer 24 --n-head 16 --n-embd 2048 --block-size 1024 --batch-size 8

With ``transformers`` installed, ``--hf-model /path/to/local/model`` fine-tunes that causal
language model (read from disk only, never downloaded) with the same LoRA adapters on every
``nn.Linear`` layer, skipping the pretraining.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightkit as lk

CODE_BYTES = 1_500_000  # how much standard-library source to pretrain on
HELD_OUT = 0.05  # the last 5% of each text is held out for validation


# -- the texts ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def corpus_text(corpus: str) -> str:
    """``"code"``: standard-library source files in name order; ``"docs"``: pydoc's topics."""
    if corpus == "code":
        parts, size = [], 0
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(text)
            size += len(text)
            if size >= CODE_BYTES:
                break
        return "\n".join(parts)[:CODE_BYTES]
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


@functools.lru_cache(maxsize=1)
def hf_tokenizer(hf_model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_model, local_files_only=True)


def encode(text: str, hf_model: str = "") -> torch.Tensor:
    if hf_model:
        return torch.tensor(hf_tokenizer(hf_model)(text)["input_ids"], dtype=torch.long)
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def decode(ids: Sequence[int], hf_model: str = "") -> str:
    if hf_model:
        return str(hf_tokenizer(hf_model).decode(list(ids)))
    return bytes(ids).decode("utf-8", errors="replace")


def tokens(corpus: str, split: str, hf_model: str = "") -> torch.Tensor:
    ids = encode(corpus_text(corpus), hf_model)
    cut = int(len(ids) * (1 - HELD_OUT))
    return ids[:cut] if split == "train" else ids[cut:]


class Windows(Dataset):
    """Non-overlapping windows of ``block_size + 1`` tokens: inputs and next-token targets."""

    def __init__(self, ids: torch.Tensor, block_size: int, limit: int = 0) -> None:
        self.ids, self.block = ids, block_size
        self.n = (len(ids) - 1) // block_size
        if limit:
            self.n = min(self.n, limit)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.ids[i * self.block : (i + 1) * self.block + 1]
        return chunk[:-1], chunk[1:]


# -- the model ------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.out = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A decoder-only transformer: token + position embeddings, blocks, a linear head."""

    def __init__(
        self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM behind the same ``forward(idx) -> logits``."""

    def __init__(self, inner: nn.Module, block_size: int) -> None:
        super().__init__()
        self.inner, self.block_size = inner, block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=idx).logits  # type: ignore[no-any-return]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(x))`` with ``base`` frozen and ``B`` starting at zero,
    so the adapted model starts exactly where the base model is."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.a), self.b) * self.scale


def add_lora(model: nn.Module, rank: int, alpha: float, skip: tuple[str, ...] = ()) -> nn.Module:
    """Freeze ``model`` and wrap each ``nn.Linear`` (except those named in ``skip``) in LoRA."""
    model.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name not in skip:
                setattr(parent, name, LoRALinear(child, rank, alpha))
    return model


@lk.model
def gpt(
    block_size: int = 128,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.0,
    lora_rank: int = 0,
    lora_alpha: float = 16.0,
    base_weights: str = "",
    hf_model: str = "",
) -> nn.Module:
    """The GPT (or a local ``transformers`` model), optionally from saved weights, optionally
    frozen with LoRA adapters (``lora_rank`` > 0)."""
    model: nn.Module
    if hf_model:
        from transformers import AutoModelForCausalLM

        inner = AutoModelForCausalLM.from_pretrained(hf_model, local_files_only=True)
        model = HFCausalLM(inner, block_size)
    else:
        model = GPT(256, block_size, n_layer, n_head, n_embd, dropout)
    if base_weights:
        model.load_state_dict(torch.load(base_weights, weights_only=True)["gpt"])
    if lora_rank:
        add_lora(model, lora_rank, lora_alpha, skip=("head", "lm_head"))
    return model


# -- the training program -------------------------------------------------------------------------
@lk.train_data
def train_windows(
    corpus: Literal["code", "docs"] = "code",
    block_size: int = 128,
    batch_size: int = 16,
    hf_model: str = "",
) -> DataLoader:
    data = Windows(tokens(corpus, "train", hf_model), block_size)
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)


@lk.val_data
def val_windows(
    corpus: Literal["code", "docs"] = "code",
    block_size: int = 128,
    batch_size: int = 16,
    hf_model: str = "",
) -> DataLoader:
    return DataLoader(Windows(tokens(corpus, "val", hf_model), block_size), batch_size=batch_size)


@lk.training_step
def train(gpt, batch):
    x, y = batch
    loss = F.cross_entropy(gpt(x).flatten(0, 1).float(), y.flatten())
    lk.log("train/loss", loss, prog_bar=True)
    return loss


@lk.validation_step
def validate(gpt, batch):
    x, y = batch
    lk.log("val/loss", F.cross_entropy(gpt(x).flatten(0, 1).float(), y.flatten()), prog_bar=True)


@lk.configure_optimizers
def optimizer(gpt, lr: float = 2e-3, weight_decay: float = 0.01, warmup: int = 50):
    trainable = [p for p in gpt.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}


@lk.on("fit_end")
def export_weights(gpt, ctx, export_to: str = ""):
    """Save the trained weights for the next stage (the strategy gathers them; rank 0 writes)."""
    if export_to:
        ctx.runtime.save({"gpt": gpt}, export_to)


# -- plain helpers for the report -----------------------------------------------------------------
@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, block_size: int, windows: int = 64) -> float:
    """``exp`` of the mean next-token loss over the first ``windows`` held-out windows."""
    model.eval()
    device = next(model.parameters()).device
    data = DataLoader(Windows(ids, block_size, limit=windows), batch_size=16)
    total, count = 0.0, 0
    for x, y in data:
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return math.exp(total / count)


@torch.no_grad()
def generate(
    model: nn.Module, prompt: torch.Tensor, n: int, temperature: float = 0.7, seed: int = 0
) -> list[int]:
    """Sample ``n`` tokens after ``prompt``, one at a time, from the last ``block_size``."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    idx = prompt.to(device).unsqueeze(0)
    for _ in range(n):
        logits = model(idx[:, -model.block_size :])[:, -1].float().cpu()
        probs = torch.softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).to(device)
        idx = torch.cat([idx, nxt], dim=1)
    return idx[0, prompt.numel() :].tolist()


def same_base(tuned: nn.Module, base_state: dict[str, torch.Tensor]) -> bool:
    """Whether every base weight inside the adapted model still equals the saved one."""
    state = tuned.state_dict()
    for key, value in base_state.items():
        module, _, leaf = key.rpartition(".")
        now = state.get(key, state.get(f"{module}.base.{leaf}"))
        if now is None or not torch.equal(now.cpu(), value):
            return False
    return True


def count(model: nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Pretrain, fine-tune with LoRA, print perplexities and a sample."""
    from examples import _common

    def extra(parser: Any) -> None:
        parser.add_argument("--pretrain-steps", type=int, default=600)
        parser.add_argument("--finetune-steps", type=int, default=300)
        parser.add_argument("--finetune-lr", type=float, default=3e-3)
        parser.add_argument("--prompt", default="The ")
        parser.add_argument("--sample-tokens", type=int, default=300)
        parser.add_argument("--temperature", type=float, default=0.7)

    spec, flags, args = _common.command_line(
        lk.collect(),
        argv,
        doc=__doc__,
        trainer={
            "seed": 0,
            "limit_val_batches": 10,
            "val_check_interval": 100,  # training batches, counted across epochs
            "check_val_every_n_epoch": None,
        },
        smoke_hparams={"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32},
        smoke_trainer={"limit_val_batches": 2, "log_every_n_steps": 1},
        extra=extra,
        omit=("max_steps",),  # two runs: --pretrain-steps and --finetune-steps
    )
    if _common.smoke():
        args.pretrain_steps, args.finetune_steps = (
            min(args.pretrain_steps, 30),
            min(args.finetune_steps, 20),
        )
        args.sample_tokens = min(args.sample_tokens, 40)
    flags.setdefault("max_epochs", -1)
    hp = spec.hparams
    start = time.perf_counter()
    root = Path(flags.get("default_root_dir") or ".") / "lightkit_logs" / "finetune_llm"
    base_file = root / "gpt_base.pt"  # written by the export_weights hook after pretraining
    held_out = tokens("docs", "val", hp.hf_model)
    results: dict[str, Any] = {}

    # 1. Pretrain on code (a local transformers model is already pretrained).
    if not hp.hf_model:
        pre_spec = spec.with_hparams(corpus="code", lora_rank=0, export_to=str(base_file))
        pre = lk.Trainer(**flags, max_steps=args.pretrain_steps).fit(pre_spec)
        base = pre.models["gpt"]
        results["pretrain_code_val_ppl"] = perplexity(
            base, tokens("code", "val"), hp.block_size, windows=64
        )
        results["pretrain_train_loss"] = pre.metrics["train/loss"]
        results["pretrain_log_dir"] = str(pre.log_dir)
        base_weights = str(base_file)
    else:
        base_weights = ""

    # 2. Fine-tune the frozen base with LoRA on the docs.
    ft_spec = spec.with_hparams(
        corpus="docs",
        lora_rank=hp.lora_rank or 8,
        base_weights=base_weights,
        lr=args.finetune_lr,
        export_to="",
    )
    # `gpt` is a plain function: called with the spec's hyperparameters it builds the model the
    # trainer will build. Adapters start at B = 0, so this is the base model: the "before".
    before = gpt(**{name: ft_spec.hparams[name] for name in inspect.signature(gpt).parameters})
    results["docs_ppl_before"] = perplexity(before, held_out, hp.block_size)
    ft = lk.Trainer(**flags, max_steps=args.finetune_steps).fit(ft_spec)
    tuned = ft.models["gpt"]
    results["docs_ppl_after"] = perplexity(tuned, held_out, hp.block_size)
    results["finetune_train_loss"] = ft.metrics["train/loss"]
    results["trainable_params"] = count(tuned, trainable=True)
    results["total_params"] = count(tuned, trainable=False)
    if base_weights:
        base_state = torch.load(base_weights, weights_only=True)["gpt"]
        results["base_weights_unchanged"] = same_base(tuned, base_state)
    results["finetune_log_dir"] = str(ft.log_dir)
    prompt = encode(args.prompt, hp.hf_model)
    for name, model in (("sample_before", before), ("sample_after", tuned)):
        ids = generate(model, prompt, args.sample_tokens, args.temperature)
        results[name] = args.prompt + decode(ids, hp.hf_model)
    results["wall_s"] = round(time.perf_counter() - start, 1)

    _common.report(
        "finetune_llm: results", {k: v for k, v in results.items() if not k.startswith("sample")}
    )
    print("\nsample before fine-tuning (the base model):\n" + results["sample_before"])
    print("\nsample after fine-tuning:\n" + results["sample_after"])
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file so the spec records importable function names.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.finetune_llm import main

    main()
