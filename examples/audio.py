"""A small WaveNet that learns to play chords, trained on tones synthesized in memory.

The data are the seven triads of C major (C, Dm, Em, F, G, Am, Bdim), each note a sine with a
second harmonic, at 8 kHz. The model (written below) is a stack of dilated causal convolutions
with gated activations, conditioned on the chord; it predicts the next sample as one of 256
mu-law levels. After training it generates one second of a chord, sample by sample (each
layer caches its recent inputs, so a sample costs one small step per layer), and writes it
with the standard library's ``wave`` module. The report gives the loss (nats per sample) and
how much of the generated sound's energy lies at the chord's notes.

    python examples/audio.py                            # about two minutes on two CPU cores
    python examples/audio.py --chord 4 --seconds 2      # generate G major, two seconds
    python examples/audio.py --channels 64 --layers 10 --precision bf16-mixed
"""

from __future__ import annotations

import functools
import math
import sys
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit as lk

RATE = 8000  # samples per second
LEVELS = 256  # mu-law quantization levels
CHORDS = {  # name -> MIDI notes of the triad, C major's seven chords
    "C": (60, 64, 67),
    "Dm": (62, 65, 69),
    "Em": (64, 67, 71),
    "F": (65, 69, 72),
    "G": (67, 71, 74),
    "Am": (69, 72, 76),
    "Bdim": (71, 74, 77),
}
NAMES = list(CHORDS)


def frequency(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def mu_law(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [-1, 1], finer steps near zero."""
    mu = LEVELS - 1
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def mu_law_inverse(y: torch.Tensor) -> torch.Tensor:
    mu = LEVELS - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def quantize(y: torch.Tensor) -> torch.Tensor:
    return ((y + 1) / 2 * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)


def dequantize(q: torch.Tensor) -> torch.Tensor:
    return q.float() / (LEVELS - 1) * 2 - 1


def synthesize(chord: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` samples of a chord: per note a sine plus a softer octave, random phases."""
    t = torch.arange(n, dtype=torch.float64) / RATE
    wave_ = torch.zeros(n, dtype=torch.float64)
    for note in CHORDS[NAMES[chord]]:
        f = frequency(note)
        phase = torch.rand(2, generator=gen, dtype=torch.float64) * 2 * math.pi
        wave_ += torch.sin(2 * math.pi * f * t + phase[0]) + 0.3 * torch.sin(
            4 * math.pi * f * t + phase[1]
        )
    loudness = 0.6 + 0.3 * torch.rand((), generator=gen, dtype=torch.float64)
    return (loudness * wave_ / 3.9).float()  # peak |x| < 1


@functools.lru_cache(maxsize=4)
def clips(count: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` mu-law clips of ``length + 1`` samples and their chords, seeded."""
    gen = torch.Generator().manual_seed(seed)
    chords = torch.randint(0, len(CHORDS), (count,), generator=gen)
    audio = torch.stack([synthesize(int(c), length + 1, gen) for c in chords])
    return quantize(mu_law(audio)), chords


# -- the model ------------------------------------------------------------------------------------
class GatedLayer(nn.Module):
    def __init__(self, channels: int, dilation: int, n_cond: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, 2 * channels, 2, dilation=dilation)
        self.cond = nn.Embedding(n_cond, 2 * channels)
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(F.pad(x, (self.dilation, 0))) + self.cond(c)[:, :, None]
        a, b = h.chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return x + self.res(h), self.skip(h)


class WaveNet(nn.Module):
    """Causal: the logits at position i depend on samples 0..i only."""

    def __init__(self, channels: int, layers: int, n_cond: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, channels, 1)
        self.layers = nn.ModuleList(GatedLayer(channels, 2**i, n_cond) for i in range(layers))
        self.out = nn.Sequential(
            nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.Conv1d(channels, LEVELS, 1)
        )
        self.receptive_field = 2**layers

    def forward(self, q: torch.Tensor, chord: torch.Tensor) -> torch.Tensor:
        """``q``: (B, T) quantized samples -> (B, LEVELS, T) logits of the next sample."""
        x = self.inp(dequantize(q).to(self.inp.weight.dtype)[:, None])
        skips = 0
        for layer in self.layers:
            x, s = layer(x, chord)
            skips = skips + s
        return self.out(skips)  # type: ignore[no-any-return]


@lk.model
def wavenet(channels: int = 32, layers: int = 7) -> nn.Module:
    return WaveNet(channels, layers, len(CHORDS))


@lk.train_data
def train_clips(clip_count: int = 1024, clip_length: int = 384, batch_size: int = 8):
    return DataLoader(
        TensorDataset(*clips(clip_count, clip_length, seed=0)), batch_size=batch_size, shuffle=True
    )


@lk.val_data
def val_clips(clip_length: int = 384, batch_size: int = 8):
    return DataLoader(TensorDataset(*clips(64, clip_length, seed=1)), batch_size=batch_size)


def nll(wavenet: nn.Module, batch: Any) -> torch.Tensor:
    """Mean negative log-likelihood of each next sample, in nats."""
    q, chord = batch
    logits = wavenet(q[:, :-1], chord)
    return F.cross_entropy(logits.float(), q[:, 1:])


@lk.training_step
def train(wavenet, batch):
    loss = nll(wavenet, batch)
    lk.log("train/loss", loss, prog_bar=True)
    return loss


@lk.validation_step
def validate(wavenet, batch):
    lk.log("val/loss", nll(wavenet, batch), prog_bar=True)


@lk.configure_optimizers
def optimizer(wavenet, lr: float = 3e-3):
    return torch.optim.Adam(wavenet.parameters(), lr=lr)


# -- generation and its measurement ---------------------------------------------------------------
@torch.no_grad()
def generate(
    model: WaveNet, chord: int, n: int, temperature: float = 0.9, seed: int = 0
) -> torch.Tensor:
    """``n`` samples in [-1, 1], each drawn from the model given the previous ones.

    Fast generation: each layer keeps a queue of its last ``dilation`` inputs, so a new sample
    costs one kernel-2 convolution per layer instead of a pass over the receptive field. The
    logits are the ones ``model.forward`` gives at the same position.
    """
    model.eval()
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    c = torch.tensor([chord], device=p.device)
    conds = [layer.cond(c)[:, :, None] for layer in model.layers]
    channels = model.inp.out_channels
    queues = [
        torch.zeros(1, channels, layer.dilation, device=p.device, dtype=p.dtype)
        for layer in model.layers
    ]
    q = torch.full((1, 1), LEVELS // 2, dtype=torch.long, device=p.device)  # silence
    out = torch.empty(n, dtype=torch.long)
    for i in range(n):
        x = model.inp(dequantize(q).to(p.dtype)[:, None])  # (1, C, 1)
        skips = 0
        for k, layer in enumerate(model.layers):
            oldest, queues[k] = queues[k][:, :, :1], torch.cat([queues[k][:, :, 1:], x], 2)
            h = F.conv1d(torch.cat([oldest, x], 2), layer.conv.weight, layer.conv.bias) + conds[k]
            a, b = h.chunk(2, dim=1)
            h = torch.tanh(a) * torch.sigmoid(b)
            x, skips = x + layer.res(h), skips + layer.skip(h)
        logits = model.out(skips)[0, :, -1].float().cpu()
        out[i] = torch.multinomial(torch.softmax(logits / temperature, 0), 1, generator=gen)[0]
        q = out[i].view(1, 1).to(p.device)
    return mu_law_inverse(dequantize(out))


def energy_at_notes(audio: torch.Tensor, chord: int, tolerance: float = 0.03) -> float:
    """The fraction of the signal's energy (DC removed) within ``tolerance`` of the chord's
    notes and their octaves."""
    spectrum = torch.fft.rfft((audio - audio.mean()).double() * torch.hann_window(len(audio)))
    power = spectrum.abs() ** 2
    freqs = torch.fft.rfftfreq(len(audio), 1 / RATE)
    near = torch.zeros_like(power, dtype=torch.bool)
    for note in CHORDS[NAMES[chord]]:
        for f in (frequency(note), 2 * frequency(note)):
            near |= (freqs - f).abs() <= tolerance * f
    return float(power[near].sum() / power.sum().clamp_min(1e-12))


def write_wav(audio: torch.Tensor, path: Path) -> Path:
    """16-bit mono PCM at ``RATE`` Hz."""
    pcm = (audio.clamp(-1, 1) * 32767).round().to(torch.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(pcm.numpy().tobytes())
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, generate a chord, write it as WAV, print the loss and the spectral check."""
    from examples import _common

    def extra(parser: Any) -> None:
        parser.add_argument("--chord", type=int, default=0, help=f"index into {NAMES}")
        parser.add_argument("--seconds", type=float, default=1.0)
        parser.add_argument("--wav", type=Path, help="where to write the generated audio")

    spec, flags, args = _common.command_line(
        lk.collect(),
        argv,
        doc=__doc__,
        trainer={"max_steps": 1000, "max_epochs": -1, "seed": 0, "limit_val_batches": 4},
        smoke_hparams={"channels": 8, "layers": 3, "clip_count": 32, "clip_length": 128},
        smoke_trainer={"max_steps": 8, "log_every_n_steps": 1},
        extra=extra,
    )
    if _common.smoke():
        args.seconds = min(args.seconds, 0.02)
    start = time.perf_counter()
    fitted = lk.Trainer(**flags).fit(spec)
    model = fitted.models["wavenet"]
    audio = generate(model, args.chord, int(args.seconds * RATE))
    reference = synthesize(args.chord, len(audio), torch.Generator().manual_seed(2))
    out = args.wav or (fitted.log_dir or Path(".")) / f"chord_{NAMES[args.chord]}.wav"
    write_wav(audio, out)
    results = {
        "train_loss_nats": fitted.metrics["train/loss"],
        # A run shorter than an epoch (--max-steps) validates never.
        "val_loss_nats": fitted.metrics.get("val/loss", math.nan),
        "steps": fitted.global_step,
        "chord": NAMES[args.chord],
        "energy_at_notes": energy_at_notes(audio, args.chord),
        "energy_at_notes_real": energy_at_notes(reference, args.chord),
        "wav": str(out),
        "log_dir": str(fitted.log_dir),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    _common.report("audio: results", results)
    _common.write_results(args, results)
    return results


if __name__ == "__main__":
    # Run the package's copy of this file so the spec records importable function names.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.audio import main

    main()
