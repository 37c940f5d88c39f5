"""What every benchmark of ``bench/run.py`` shares: the cases, the data, the three ways to
train (a hand-written loop, lightkit, PyTorch Lightning) and the clock.

The three implementations do the same work: seed, build the MLP, the optimizer and a shuffled
``DataLoader`` over the same synthetic data, and train with the same step function
(:func:`step_loss`). The clock lives in that step function, so it costs every implementation
the same: it notes when the first step begins (process start to first step) and when step
``warmup + 1`` begins; the loop's end is noted right after the last step (a ``fit_end`` hook,
an ``on_train_end`` callback, or the line after the loop). The steady-state time per step is
the time between the two marks divided by the steps between them, in wall-clock and in the
process's CPU time (CPU time ignores time spent descheduled, which dominates the noise on a
shared machine).

Each measurement runs in a fresh process (``python bench/run.py --child JOB``), which writes
one JSON object; ``bench/run.py`` interleaves them and turns them into figures.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import importlib.util
import os
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("raw", "lightkit", "lightning")
#: The hand-written loop in a process that first ran a short lightkit fit (see
#: :func:`raw_after_lightkit_fit`); measured beside figures a, a-log, b and d.
RAW_AFTER_LIGHTKIT = "raw-after-lightkit"
FEATURES_OFF: dict[str, Any] = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


# -- cases ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One training setup, the same for every implementation."""

    name: str
    hidden: int = 64
    batch_size: int = 64  # per rank
    steps: int = 1024  # optimizer steps (per rank), over ``epochs`` epochs
    epochs: int = 2
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    log_loss: bool = False  # the step logs its loss (lk.log / self.log)
    features: bool = False  # the framework's default features on (logger, bar, checkpoints)
    compile: bool = False  # torch.compile the model
    ranks: int = 1  # > 1: DDP on gloo, one process per rank

    @property
    def warmup(self) -> int:
        """Steps left out of the steady-state window (first-call paths, allocator, compile)."""
        return max(2, self.steps // 10)

    @property
    def samples(self) -> int:
        return self.batch_size * self.ranks * self.steps // self.epochs

    def scaled(self, factor: float) -> Case:
        """The same case with ``factor`` times the steps (a whole number of batches per epoch)."""
        steps = max(self.epochs * 4, int(self.steps * factor) // self.epochs * self.epochs)
        return replace(self, steps=steps)


#: The cases behind the figures; ``bench/run.py`` picks and scales them.
CASES = {
    "tiny": Case("tiny"),
    "tiny-log": Case("tiny-log", log_loss=True),
    "tiny-defaults": Case("tiny-defaults", log_loss=True, features=True),
    "compute": Case("compute", hidden=1024, batch_size=256, steps=96, optimizer="adam"),
    "compute-compile": Case(
        "compute-compile", hidden=1024, batch_size=256, steps=96, optimizer="adam", compile=True
    ),
    "ddp": Case("ddp", steps=512, ranks=2),
}


def median_interval(
    values: list[float], level: float = 0.95, resamples: int = 2000
) -> tuple[float, float] | None:
    """A bootstrap confidence interval of the median of ``values`` (percentile method, a fixed
    seed so reruns on the same numbers agree); ``None`` with fewer than five values.

    How far a median of noisy pairs can be trusted: when a target lies inside the interval,
    the run cannot tell whether it is met.
    """
    import random
    import statistics

    if len(values) < 5:
        return None
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def make_net(case: Case) -> Any:
    from torch import nn

    h = case.hidden
    return nn.Sequential(
        nn.Linear(32, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10)
    )  # fmt: skip


def make_optimizer(case: Case, net: Any) -> Any:
    import torch

    if case.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=1e-3)
    return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


_DATA: dict[int, Any] = {}


def dataset(case: Case) -> Any:
    """Synthetic features and labels (their own generator: the global one is not touched)."""
    import torch
    from torch.utils.data import TensorDataset

    n = case.samples
    if n not in _DATA:
        g = torch.Generator().manual_seed(1234)
        _DATA[n] = TensorDataset(
            torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        )
    return _DATA[n]


def make_loader(case: Case) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(dataset(case), batch_size=case.batch_size, shuffle=True)


# -- the clock --------------------------------------------------------------------------------------
class Clock:
    """Marks set from inside the step function and at the loop's end (see the module doc)."""

    __slots__ = ("calls", "cpu0", "cpu1", "first", "wall0", "wall1", "warmup")

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, warmup: int) -> None:
        self.warmup = warmup
        self.calls = 0
        self.first = self.wall0 = self.wall1 = self.cpu0 = self.cpu1 = 0.0


CLOCK = Clock()


def step_loss(net: Any, x: Any, y: Any) -> Any:
    """The training step every implementation runs (forward and loss); it also ticks the clock."""
    import torch.nn.functional as F

    c = CLOCK
    c.calls += 1
    if c.calls == c.warmup + 1:
        c.wall0, c.cpu0 = time.perf_counter(), time.process_time()
        if c.calls == 1:
            c.first = time.time()
    elif c.calls == 1:
        c.first = time.time()
    return F.cross_entropy(net(x), y)


def loop_end() -> None:
    """The training loop ended (called once, after the last step)."""
    CLOCK.wall1, CLOCK.cpu1 = time.perf_counter(), time.process_time()


# -- the three implementations ----------------------------------------------------------------------
def raw_fit(case: Case, root: Path) -> Any:
    """The hand-written loop (DDP with a ``DistributedSampler`` when ``case.ranks > 1``)."""
    import torch

    torch.manual_seed(0)
    net = make_net(case)
    opt = make_optimizer(case, net)
    model = net
    sampler = None
    if case.ranks > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DataLoader, DistributedSampler

        dist.init_process_group("gloo")
        model = DistributedDataParallel(net)
        sampler = DistributedSampler(dataset(case), shuffle=True, seed=0)
        loader = DataLoader(dataset(case), batch_size=case.batch_size, sampler=sampler)
    else:
        loader = make_loader(case)
    if case.compile:
        model = torch.compile(model)
    model.train()
    for epoch in range(case.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            loss = step_loss(model, x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    loop_end()
    if case.ranks > 1:
        import torch.distributed as dist

        del model, opt
        dist.destroy_process_group()
    return net


def lightkit_fit(case: Case, root: Path) -> Any:
    """The same training through ``lk.Trainer``."""
    import lightkit as lk

    reg = lk.Registry()

    def net():
        return make_net(case)

    def data():
        return make_loader(case)

    def train(net, batch):
        x, y = batch
        return step_loss(net, x, y)

    def train_logging(net, batch):
        x, y = batch
        loss = step_loss(net, x, y)
        lk.log("train/loss", loss)
        return loss

    def optim(net):
        return make_optimizer(case, net)

    reg.model(net)
    reg.train_data(data)
    reg.training_step(train_logging if case.log_loss else train)
    reg.configure_optimizers(optim)
    reg.on("fit_end", loop_end)
    flags: dict[str, Any] = {
        "max_epochs": case.epochs,
        "seed": 0,
        "accelerator": "cpu",
        "default_root_dir": str(root),
    }
    if not case.features:
        flags.update(FEATURES_OFF)
    if case.compile:
        flags["compile"] = True
    if case.ranks > 1:
        flags["strategy"] = "ddp"  # joins the job the environment describes
    result = lk.Trainer(**flags).fit(lk.collect(reg))
    return result.models["net"]


def raw_after_lightkit_fit(case: Case, root: Path) -> Any:
    """The hand-written loop, in a process that has just run a short lightkit fit of the same
    case (two steps an epoch): the process holds what a lightkit process holds when its loop
    starts (pydantic, lightkit's modules, what their import and the run's set-up allocated and
    freed), but the loop is not lightkit's. Next to ``raw`` it measures what that process
    state costs a loop; next to ``lightkit``, what lightkit's own loop costs."""
    lightkit_fit(replace(case, steps=case.epochs * 2), root / "short-fit")
    CLOCK.reset(case.warmup)
    gc.collect()
    return raw_fit(case, root)


def lightning_module() -> Any:
    """``pytorch_lightning`` (or ``lightning.pytorch``); ``None`` when neither is installed."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                return importlib.import_module(name)
        except ImportError:
            continue
    return None


def lightning_name() -> str | None:
    """Which Lightning package is installed, without importing it."""
    for name in ("lightning", "pytorch_lightning"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def lightning_fit(case: Case, root: Path) -> Any:
    """The same training as a ``LightningModule`` with Lightning's ``Trainer``."""
    import torch

    pl = lightning_module()
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers).*")

    class Module(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net(case)
            self.step_net = torch.compile(self.net) if case.compile else self.net

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = step_loss(self.step_net, x, y)
            if case.log_loss:
                self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return make_optimizer(case, self.net)

        def train_dataloader(self) -> Any:
            return make_loader(case)

    class LoopEnd(pl.Callback):  # type: ignore[misc, name-defined]
        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            loop_end()

    torch.manual_seed(0)
    module = Module()
    flags: dict[str, Any] = {
        "max_epochs": case.epochs,
        "accelerator": "cpu",
        "devices": case.ranks,
        "default_root_dir": str(root),
        "callbacks": [LoopEnd()],
        "num_sanity_val_steps": 0,
    }
    if not case.features:
        flags.update(FEATURES_OFF)
    if case.ranks > 1:
        flags["strategy"] = "ddp"  # joins the job the environment describes
    trainer = pl.Trainer(**flags)
    trainer.fit(module)
    return module.net


FIT = {
    "raw": raw_fit,
    "lightkit": lightkit_fit,
    "lightning": lightning_fit,
    RAW_AFTER_LIGHTKIT: raw_after_lightkit_fit,
}


# -- measurements (in the child process) ------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def digest(net: Any) -> str:
    """A short hash of the parameters' bytes: equal digests mean bitwise-equal weights."""
    h = hashlib.sha1()
    for p in net.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _import_framework(impl: str) -> None:
    import torch  # noqa: F401

    if impl == "lightkit":
        import lightkit  # noqa: F401
    elif impl == "lightning":
        lightning_module()


def warm_up_torch() -> None:
    """Pay torch's first-call costs (kernel and allocator set-up) before anything is timed, so
    they land on no implementation's fit: a few steps of a small MLP with both optimizers."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    net = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    state = torch.get_rng_state()
    for opt in (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
                torch.optim.Adam(net.parameters())):  # fmt: skip
        for _ in range(2):
            F.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.set_rng_state(state)


def measure_train(job: dict[str, Any]) -> dict[str, Any]:
    """One training run of ``job["impl"]`` on ``job["case"]``: the clock's figures."""
    launched = float(job.get("launched_at") or time.time())
    impl, case = job["impl"], Case(**job["case"])
    _import_framework(impl)
    imported = time.time()
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    w = time.perf_counter()
    warm_up_torch()
    warmup_s = time.perf_counter() - w
    CLOCK.reset(case.warmup)
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="lkbench-") as root:
        w0 = time.perf_counter()
        net = FIT[impl](case, Path(root))
        fit_s = time.perf_counter() - w0
    c = CLOCK
    timed = c.calls - case.warmup
    if c.calls != case.steps or timed <= 0 or c.wall1 == 0.0:
        raise RuntimeError(
            f"{impl} ran {c.calls} steps of {case.steps} (loop end marked: {c.wall1 != 0.0})"
        )
    return {
        "kind": "train",
        "impl": impl,
        "case": case.name,
        "steps": case.steps,
        "timed_steps": timed,
        "us_per_step_wall": (c.wall1 - c.wall0) / timed * 1e6,
        "us_per_step_cpu": (c.cpu1 - c.cpu0) / timed * 1e6,
        "fit_s": fit_s,
        "import_s": imported - launched,
        "first_step_s": c.first - launched,
        "harness_warmup_s": warmup_s,
        "peak_rss_mb": peak_rss_mb(),
        "digest": digest(net),
    }


def measure_import(job: dict[str, Any]) -> dict[str, Any]:
    """``import torch`` then ``import <framework>`` in this fresh process."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t1 = time.perf_counter()
    before = len(sys.modules)
    impl = job["impl"]
    if impl == "lightkit":
        import lightkit
    elif impl == "lightkit-all":  # every public name used once: all of lightkit's modules
        import lightkit

        for name in lightkit.__all__:
            getattr(lightkit, name)
    elif impl == "lightning":
        lightning_module()
    t2 = time.perf_counter()
    return {
        "kind": "import",
        "impl": impl,
        "torch_ms": (t1 - t0) * 1e3,
        "added_ms": (t2 - t1) * 1e3,
        "modules_added": len(sys.modules) - before,
        "peak_rss_mb": peak_rss_mb(),
    }


def big_model(params_m: float) -> Any:
    """An MLP of about ``params_m`` million parameters (layers up to 2048 wide)."""
    from torch import nn

    width = min(2048, int((params_m * 1e6) ** 0.5))
    layers = max(1, round(params_m * 1e6 / (width * width + width)))
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def measure_checkpoint(job: dict[str, Any]) -> dict[str, Any]:
    """Save and load a model's weights ``job["repeats"]`` times; the median of each."""
    import statistics

    import torch

    impl, repeats = job["impl"], int(job.get("repeats", 3))
    torch.set_num_threads(int(job.get("threads", 1)))
    torch.manual_seed(0)
    model = big_model(float(job.get("params_m", 50.0)))
    target = big_model(float(job.get("params_m", 50.0)))
    params = sum(p.numel() for p in model.parameters())

    if impl == "raw":

        def save(path: Path) -> None:
            torch.save({"model": model.state_dict()}, path)

        def load(path: Path) -> None:
            target.load_state_dict(torch.load(path, weights_only=True)["model"])

    elif impl == "lightkit":
        import lightkit as lk

        rt = lk.Runtime(accelerator="cpu")

        def save(path: Path) -> None:
            rt.save({"model": model}, path)

        def load(path: Path) -> None:
            rt.load(path, {"model": target})

    else:
        pl = lightning_module()
        io = pl.plugins.io.TorchCheckpointIO()

        def save(path: Path) -> None:
            io.save_checkpoint({"state_dict": model.state_dict()}, path)

        def load(path: Path) -> None:
            target.load_state_dict(io.load_checkpoint(path)["state_dict"])

    saves, loads = [], []
    with tempfile.TemporaryDirectory(prefix="lkbench-ckpt-", dir=job.get("dir")) as tmp:
        for i in range(repeats):
            path = Path(tmp) / f"model-{i}.ckpt"
            gc.collect()
            t0 = time.perf_counter()
            save(path)
            t1 = time.perf_counter()
            load(path)
            t2 = time.perf_counter()
            saves.append(t1 - t0)
            loads.append(t2 - t1)
            size = path.stat().st_size
            path.unlink()
    same = all(
        torch.equal(a, b) for a, b in zip(model.parameters(), target.parameters(), strict=True)
    )
    return {
        "kind": "checkpoint",
        "impl": impl,
        "params_m": params / 1e6,
        "file_mb": size / 1e6,
        "save_s": statistics.median(saves),
        "load_s": statistics.median(loads),
        "loaded_equal": same,
    }


def run_job(job: dict[str, Any]) -> dict[str, Any] | None:
    """Run one measurement in this process. ``None`` on a DDP rank other than 0."""
    kind = job["kind"]
    if kind == "train":
        out = measure_train(job)
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        return out
    if kind == "import":
        return measure_import(job)
    if kind == "checkpoint":
        return measure_checkpoint(job)
    raise ValueError(f"unknown job kind {kind!r}")


def job_for(kind: str, impl: str, case: Case | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-able description of one measurement."""
    job: dict[str, Any] = {"kind": kind, "impl": impl, **extra}
    if case is not None:
        job["case"] = asdict(case)
    return job
