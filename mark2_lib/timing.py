"""What a model costs: parameters, multiply-accumulates per second of audio, and wall-clock speed.

`speed_table` puts the three side by side for notebook 05; benchmarks/bench_inference.py and
`dnsmos.realtime_factor` time with the same `timed_rounds`. Models are timed as given: pass
inference models (`load_classifier`'s, or `.fuse()`d), as deployment runs them.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .config import AudioConfig
from .context import context_size
from .models import ClipClassifier


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values `model` trains (BatchNorm's running statistics are buffers: not counted).

    A fused ClipClassifier is counted as it was trained, BatchNorm weights and biases included: fusing
    changes how a model runs, not what it learned."""
    if isinstance(model, ClipClassifier) and model.encoder.fused:
        model = fresh_copy(model)
    return sum(p.numel() for p in model.parameters())


def fresh_copy(model: ClipClassifier) -> ClipClassifier:
    """A new, unfused ClipClassifier of `model`'s architecture, built without drawing from the global
    random generators (its initialisation would otherwise change what a seeded caller draws next)."""
    with torch.random.fork_rng(devices=[]):
        return ClipClassifier(model.audio, model.config)


def macs_per_second(model: ClipClassifier, audio: AudioConfig | None = None) -> float:
    """Multiply-accumulates of the model (no front end) per second of audio, counted with hooks.

    `audio` defaults to the front end the model was built for. The count is made on a fresh,
    unfused model of the same architecture (weights do not change it), whose every conv and linear
    layer runs as its own module where a forward hook sees it."""
    audio = audio or model.audio
    macs = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            macs[0] += out.numel() * k
        elif isinstance(mod, nn.Linear):
            macs[0] += out.numel() * mod.in_features

    with torch.random.fork_rng(devices=[]):
        counted = ClipClassifier(audio, model.config).eval()
    for m in counted.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        k = context_size(model.config.clip_context)  # a clip context's statistics are no MACs; its head inputs are
        counted.segment_forward(torch.zeros(1, audio.n_mels, audio.n_frames), torch.zeros(1, k) if k else None)
    segments_per_second = 1.0 / audio.hop_seconds  # long recordings: one segment per hop
    return macs[0] * segments_per_second


def join_clips(waves, sample_rate: int, seconds: float = 10.0) -> torch.Tensor:
    """Clips joined end to end and cut into `[n, seconds * sample_rate]` waveforms (the last partial one dropped).

    Speed is measured on recordings of several seconds, where a model's per-call cost is spread
    over many segments, as when classifying an archive; short clips one by one would mostly time
    that per-call cost."""
    audio = torch.cat([torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waves])
    length = int(round(seconds * sample_rate))
    if audio.numel() < length:
        raise ValueError(f"{audio.numel() / sample_rate:.1f} s of audio is less than one {seconds:g} s waveform")
    n = audio.numel() // length
    return audio[:n * length].reshape(n, length)


def speed_audio(clips, sample_rate: int, seconds: float = 10.0, max_seconds: float = 600.0) -> torch.Tensor:
    """Waveforms for `speed_table`: `join_clips` into `seconds`-long recordings (shorter when all the
    audio is shorter), at most `max_seconds` of them in all."""
    total = sum(torch.as_tensor(c).numel() for c in clips) / sample_rate
    if total <= 0:
        raise ValueError("no audio to time")
    seconds = min(seconds, total)
    return join_clips(clips, sample_rate, seconds)[:max(int(max_seconds // seconds), 1)]


def timed_rounds(tasks: dict, repeats: int = 5, min_time: float = 0.25, warmup: int = 1) -> dict:
    """Seconds per call of each zero-argument task: {name: one value per round}.

    After `warmup` untimed calls each, the tasks take turns for `repeats` rounds, so that a change of
    load on the machine slows them alike. A call shorter than `min_time` seconds (a tiny model's pass)
    is timed as that many calls back to back, as `timeit` does: a single short call is at the mercy of
    one scheduler hiccup."""
    loops, times = {}, {name: [] for name in tasks}
    for _ in range(warmup):
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            fn()
            loops[name] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9)))
    for _ in range(repeats):
        for name, fn in tasks.items():
            n = loops.get(name, 1)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    return times


def pass_times(models: dict, waves: torch.Tensor, batch_size: int = 8, repeats: int = 5,
               min_time: float = 0.25) -> dict:
    """Seconds per pass (features + model) of each model over the same `waves`, in batches of
    `batch_size`: {name: one value per round of `timed_rounds`}, after one warm-up pass each."""
    def one_pass(model):
        for i in range(0, len(waves), batch_size):
            model(waves[i:i + batch_size])

    with torch.inference_mode():
        return timed_rounds({name: lambda m=model.eval(): one_pass(m) for name, model in models.items()},
                            repeats, min_time)


def speed_table(models: dict, waves: torch.Tensor, sample_rate: int, reference: str = "teacher") -> pd.DataFrame:
    """Parameters, M MACs per second of audio (each model's own front end) and x real time, one row per model.

    `models` are WaveformClassifiers; `waves` is a batch of equal-length waveforms (see `speed_audio`),
    scored in batches of 8, as benchmarks/bench_inference.py does. With a `reference` model among
    `models`, "x faster" is the reference's pass time over each model's in the same round, median over
    the rounds: a change of load on the machine slows both sides of a round alike, so the ratio is
    steadier than one of the two medians."""
    times = pass_times(models, waves)
    seconds = waves.numel() / sample_rate
    table = pd.DataFrame({name: {"parameters": count_parameters(m.model),
                                 "M MACs / s audio": macs_per_second(m.model) / 1e6,
                                 "x real time": seconds / float(np.median(times[name]))}
                          for name, m in models.items()}).T
    if reference in times:
        table[f"x faster than {reference}"] = [float(np.median(np.divide(times[reference], times[name])))
                                               for name in table.index]
    return table
