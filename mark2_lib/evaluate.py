"""Evaluation: predictions over cached features, metrics tables, breakdowns, and KD vs hard-only."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from .data import ClipDataset, Manifest, collate_clips
from .metrics import classification_metrics, confusion
from .models import ClipClassifier

SNR_BANDS = [-np.inf, 0, 5, 10, 15, 20, 25, np.inf]


def predict_features(model: ClipClassifier, manifest: Manifest, features: dict, batch_size: int = 128,
                     temperature: float = 1.0) -> dict:
    """Run a model over cached features: clip logits, clip P(noise) and per-segment P(noise) lists."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(ClipDataset(manifest, features), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_clips)
    clip_logits, seg_p = [], []
    with torch.no_grad():
        for batch in loader:
            mask = batch["segment_mask"]
            logits, seg_logits = model(batch["features"].to(device), mask.to(device))
            clip_logits.append(logits.float().cpu())
            seg = torch.softmax(seg_logits.float().cpu() / temperature, dim=-1)[..., 1]
            seg_p.extend(seg[i][mask[i]].numpy() for i in range(len(mask)))
    logits = torch.cat(clip_logits) if clip_logits else torch.zeros(0, 2)
    return {
        "clip_id": list(manifest.df["clip_id"]),
        "logits": logits.numpy(),
        "p_noise": torch.softmax(logits / temperature, dim=-1)[:, 1].numpy(),
        "segment_p_noise": seg_p,
    }


def truth_labels(truth: pd.DataFrame, clip_ids) -> np.ndarray:
    """The annotator's expected judgement (P(noise) >= 0.5) for each clip: labels without label noise."""
    t = truth.set_index("clip_id").loc[list(clip_ids)]
    return (t["p_noise_annotator"].to_numpy() >= 0.5).astype(int)


def metrics_table(predictions: dict, manifest: Manifest, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: metrics against the hard labels (and against truth.csv when given)."""
    y = manifest.df["label"].to_numpy()
    rows = []
    for name, p in predictions.items():
        row = {"model": name, **classification_metrics(y, p)}
        if truth is not None:
            yt = truth_labels(truth, manifest.df["clip_id"])
            row.update({f"truth_{k}": v for k, v in classification_metrics(yt, p).items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def confusion_matrices(predictions: dict, manifest: Manifest) -> dict:
    y = manifest.df["label"].to_numpy()
    return {name: confusion(y, p) for name, p in predictions.items()}


def breakdown(predictions: dict, manifest: Manifest, truth: pd.DataFrame, by: str) -> pd.DataFrame:
    """Accuracy against the hard labels per value of a truth.csv column (`snr_band` bins snr_db)."""
    t = truth.set_index("clip_id").loc[list(manifest.df["clip_id"])].reset_index()
    order = None
    if by == "snr_band":  # rows from the lowest SNR up, then the clips without noise
        bands = pd.cut(t["snr_db"], SNR_BANDS)
        order = [str(b) for b in bands.cat.categories] + ["no noise"]
        t["snr_band"] = bands.astype(str).where(t["snr_db"].notna(), "no noise")
    if by not in t:
        raise ValueError(f"truth has no column {by!r}; columns: {list(t.columns)}")
    y = manifest.df["label"].to_numpy()
    out = {"n": t.groupby(by).size()}
    for name, p in predictions.items():
        correct = pd.Series(((np.asarray(p) >= 0.5).astype(int) == y).astype(float))
        out[name] = correct.groupby(t[by].to_numpy()).mean()
    table = pd.DataFrame(out)
    return table.loc[[b for b in order if b in table.index]] if order else table


def mean_std_table(per_seed: pd.DataFrame, group: str = "model") -> pd.DataFrame:
    """Format a per-seed metrics frame as 'mean ± std' strings per model."""
    metrics = [c for c in per_seed.select_dtypes("number").columns if c != "seed"]
    agg = per_seed.groupby(group, sort=False)[metrics].agg(["mean", "std"])
    return pd.DataFrame({m: [f"{a:.3f} ± {0.0 if np.isnan(s) else s:.3f}" for a, s in zip(agg[(m, "mean")], agg[(m, "std")])]
                         for m in metrics}, index=agg.index)


def gap_recovery(table: pd.DataFrame, metric: str = "macro_f1", kd: str = "kd_student",
                 hard: str = "hard_only_student", teacher: str = "teacher") -> float:
    """Share of the teacher - hard-only gap the KD student recovers (1.0 = all of it)."""
    gap = table.loc[teacher, metric] - table.loc[hard, metric]
    return float((table.loc[kd, metric] - table.loc[hard, metric]) / gap) if gap else float("nan")


def join_clips(waves, sample_rate: int, seconds: float = 10.0) -> torch.Tensor:
    """Clips joined end to end and cut into `[n, seconds * sample_rate]` waveforms (the last partial one dropped).

    Speed is measured on recordings of several seconds, where a model's per-call cost is spread
    over many segments, as when classifying an archive; 2 s clips one by one would mostly time
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
    import time

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


def realtime_factors(models: dict, waves: torch.Tensor, sample_rate: int, batch_size: int = 8, repeats: int = 5,
                     min_time: float = 0.25) -> dict:
    """Seconds of audio per second of wall time (features + model) of each model on the same `waves`:
    the median over the rounds of `pass_times`."""
    times = pass_times(models, waves, batch_size, repeats, min_time)
    seconds = waves.numel() / sample_rate
    return {name: seconds / float(np.median(t)) for name, t in times.items()}


def speed_table(models: dict, waves: torch.Tensor, sample_rate: int, reference: str = "teacher") -> pd.DataFrame:
    """Parameters, M MACs per second of audio (each model's own front end) and x real time, one row per model.

    `waves` is a batch of equal-length waveforms (see `speed_audio`); batches of 8, as benchmarks/bench_inference.py.
    With a `reference` model among `models`, "x faster" is the reference's pass time over each model's in
    the same round, median over the rounds: a change of load on the machine slows both sides of a round
    alike, so the ratio is steadier than one of the two medians."""
    from .models import count_parameters, macs_per_second

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
