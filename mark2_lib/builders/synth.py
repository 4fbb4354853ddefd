"""Synthetic noise-vs-clean dataset: SNR mixing of signals.py's sources and noises, an annotator model, splits.

Each clip is drawn from its own generator `default_rng([seed, 0, index])`, so a clip's audio and
label depend only on (seed, index), never on how many clips are built or in which order.
numpy/scipy only: this module never imports torch.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit
from tqdm.auto import tqdm

from .common import deal_splits, finish_build, is_built, start_build, write_csv, write_labels, write_wav
from .signals import NOISES, SOURCES, add_mic_floor, db_to_gain

MARKER = ".mark2-synth"  # marks a folder this module built, so rebuilding it is safe
PARAMS_FILE = "synth.json"  # the parameters of a complete build (written last)
VERSION = 1  # bump when the generated content changes, so cached builds are regenerated
SOURCE_TYPES = ("speech", "music", "room")
SOURCE_PROBS = (0.45, 0.40, 0.15)
NOISE_TYPES = ("white", "pink", "brown", "hum", "babble", "fan", "clicks")
P_NO_NOISE = 0.25                # share of clips with noise_type "none"
SNR_RANGE_DB = (-5.0, 30.0)
PEAK_RANGE_DBFS = (-20.0, -1.0)  # mixtures are peak-normalised so level is no shortcut
# (split, share of clips) for val and test, the rest is train; stratified by label. The student's default
# data keeps a large test split so that its ECE is not mostly sampling noise (docs/results.md gives
# metrics.ece_floor at two test sizes); the teacher's pool keeps most of its clips for training.
SPLIT_SHARES = (("val", 0.10), ("test", 0.40))
POOL_SPLIT_SHARES = (("val", 0.15), ("test", 0.15))
# annotator: P(noise) = sigmoid((boundary - snr) / width); more annoying noise -> higher boundary
ANNOTATOR = {  # noise_type: (boundary_db, width_db)
    "white": (15.0, 2.5), "pink": (12.0, 2.75), "brown": (10.5, 2.75), "hum": (10.5, 2.5),
    "babble": (19.0, 3.0), "fan": (13.5, 2.75), "clicks": (19.5, 3.0),
}
P_NOISE_NONE = 0.03              # annotators sometimes call a clean clip noisy
_WAV_NAME = re.compile(r"s\d+_c\d+\.wav")

# ----------------------------------------------------------------------------- mixing and labels


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * noise, g set so that 10 log10(P_clean / P_noise_scaled) == snr_db; P = mean square."""
    clean, noise = np.asarray(clean, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} differ in shape")
    p_clean, p_noise = np.mean(clean**2), np.mean(noise**2)
    if not (p_clean > 0 and p_noise > 0 and math.isfinite(snr_db)):
        raise ValueError(f"need finite snr_db and non-zero signal powers (clean {p_clean}, noise {p_noise})")
    return clean + math.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10))) * noise


def annotator_p_noise(noise_type: str, snr_db):
    """P(an annotator labels the clip 'noise') = sigmoid((boundary - snr) / width); constant for 'none'."""
    if noise_type == "none":
        return np.full(np.shape(snr_db), P_NOISE_NONE) if np.ndim(snr_db) else P_NOISE_NONE
    if noise_type not in ANNOTATOR:
        raise ValueError(f"unknown noise_type {noise_type!r}; expected one of {NOISE_TYPES + ('none',)}")
    snr = np.asarray(snr_db, dtype=np.float64)
    if not np.isfinite(snr).all():
        raise ValueError(f"snr_db must be finite for noise_type {noise_type!r}")
    boundary, width = ANNOTATOR[noise_type]
    p = expit((boundary - snr) / width)
    return float(p) if p.ndim == 0 else p


@dataclass(frozen=True)
class ClipSpec:
    """What one synthetic clip contains and how the annotator labelled it."""

    source_type: str
    noise_type: str
    snr_db: float      # NaN when noise_type == "none"
    p_noise: float     # annotator's P(label == "noise")
    label: str         # "clean" or "noise"
    peak_dbfs: float   # peak level the mixture is normalised to


def draw_spec(rng) -> ClipSpec:
    """Draw a clip's source, noise type, SNR (0.01 dB grid), annotator label and peak level."""
    source = SOURCE_TYPES[rng.choice(len(SOURCE_TYPES), p=SOURCE_PROBS)]
    noise_type = "none" if rng.random() < P_NO_NOISE else NOISE_TYPES[rng.integers(len(NOISE_TYPES))]
    snr = round(float(rng.uniform(*SNR_RANGE_DB)), 2)
    snr = math.nan if noise_type == "none" else snr
    p = annotator_p_noise(noise_type, snr)
    label = "noise" if rng.random() < p else "clean"
    return ClipSpec(source, noise_type, snr, p, label, float(rng.uniform(*PEAK_RANGE_DBFS)))


def render_clip(seed: int, index: int, n_samples: int, sample_rate: int = 16000):
    """Clip `index` of dataset `seed`: its spec and float64 waveform (peak <= -1 dBFS)."""
    rng = np.random.default_rng([seed, 0, index])
    spec = draw_spec(rng)
    x = SOURCES[spec.source_type](rng, n_samples, sample_rate)
    x = x if spec.source_type == "room" else add_mic_floor(rng, x)
    if spec.noise_type != "none":
        x = mix_at_snr(x, NOISES[spec.noise_type](rng, n_samples, sample_rate), spec.snr_db)
    return spec, x * (db_to_gain(spec.peak_dbfs) / np.max(np.abs(x)))


def assign_splits(labels, seed: int, splits=SPLIT_SHARES) -> list[str]:
    """train/val/test per clip, `splits` shares within each label, deterministic per seed."""
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng([seed, 1])
    for lab in ("clean", "noise"):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        split[idx] = deal_splits(len(idx), splits, at_least=1 if len(idx) >= 3 else 0)
    return split.tolist()


# ----------------------------------------------------------------------------- dataset


def _render_to_files(audio_dir: Path, seed: int, indices: range, n_samples: int, sample_rate: int) -> list:
    """Render and write clips `indices` of dataset `seed` as 16-bit WAV; returns their specs."""
    specs = []
    for i in indices:
        spec, x = render_clip(seed, i, n_samples, sample_rate)
        write_wav(audio_dir / f"s{seed}_c{i:05d}.wav", x, sample_rate)
        specs.append(spec)
    return specs


def _render_all(audio_dir: Path, seed: int, n_clips: int, n_samples: int, sample_rate: int,
                workers: int, progress: bool) -> list:
    """All clips' specs, rendered in `workers` processes; a clip depends only on (seed, index),
    so the files are the same bytes whatever the number of workers."""
    chunk = 100
    ranges = [range(a, min(a + chunk, n_clips)) for a in range(0, n_clips, chunk)]
    bar = tqdm(total=n_clips, desc="synthesising clips", unit="clip", disable=not progress)
    specs = []
    if workers <= 1 or len(ranges) == 1:
        for r in ranges:
            specs += _render_to_files(audio_dir, seed, r, n_samples, sample_rate)
            bar.update(len(r))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may hold torch's thread pools, which do not survive a fork
        from concurrent.futures.process import BrokenProcessPool

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(_render_to_files, audio_dir, seed, r, n_samples, sample_rate) for r in ranges]
            try:
                for job, r in zip(jobs, ranges):
                    specs += job.result()
                    bar.update(len(r))
            except BrokenProcessPool as e:
                raise RuntimeError(
                    f"a worker process died while rendering clips into {audio_dir}. Workers start by "
                    "re-importing the calling script: from a script, call this under "
                    "`if __name__ == \"__main__\":`, or pass workers=1") from e
    bar.close()
    return specs


def make_default_dataset(out_dir, n_clips: int = 3000, seed: int = 0, clip_seconds: float = 2.0,
                         sample_rate: int = 16000, progress: bool = True, workers: int | None = None,
                         splits=SPLIT_SHARES) -> Path:
    """Build (or reuse) the synthetic dataset: audio/*.wav, labels.csv, truth.csv and synth.json.

    `workers` processes render the clips (default: one per CPU core, for 500 clips or more).
    `splits` gives the val and test shares (`SPLIT_SHARES`; the teacher's pool uses `POOL_SPLIT_SHARES`).
    """
    out_dir = Path(out_dir)
    if not (int(n_clips) >= 1 and int(seed) >= 0 and clip_seconds > 0 and int(sample_rate) >= 8000):
        raise ValueError("need n_clips >= 1, seed >= 0, clip_seconds > 0 and sample_rate >= 8000")
    params = {"version": VERSION, "n_clips": int(n_clips), "seed": int(seed),
              "clip_seconds": float(clip_seconds), "sample_rate": int(sample_rate),
              "splits": {name: float(frac) for name, frac in splits}}
    if not (set(params["splits"]) <= {"val", "test"} and all(f >= 0 for f in params["splits"].values())
            and sum(params["splits"].values()) < 1):
        raise ValueError(f"splits={splits!r}: expected val and test shares >= 0 that leave some train")
    if is_built(out_dir, params, PARAMS_FILE):
        return out_dir
    start_build(out_dir, MARKER, "mark2_lib.synth", PARAMS_FILE)
    n_clips, seed, sample_rate = params["n_clips"], params["seed"], params["sample_rate"]
    n_samples = int(round(clip_seconds * sample_rate))
    ids = [f"s{seed}_c{i:05d}" for i in range(n_clips)]
    if workers is None:
        workers = (os.cpu_count() or 1) if n_clips >= 500 else 1
    specs = _render_all(out_dir / "audio", seed, n_clips, n_samples, sample_rate, int(workers), progress)
    keep = {f"{c}.wav" for c in ids}
    for old in (out_dir / "audio").iterdir():  # drop clips of an earlier build with other params
        if _WAV_NAME.fullmatch(old.name) and old.name not in keep:
            old.unlink()
    clip_splits = assign_splits([s.label for s in specs], seed, splits)
    write_labels(out_dir, [(c, s.label, sp) for c, s, sp in zip(ids, specs, clip_splits)])
    write_csv(out_dir / "truth.csv",
              ["clip_id", "source_type", "noise_type", "snr_db", "p_noise_annotator", "label"],
              [[c, s.source_type, s.noise_type, "" if math.isnan(s.snr_db) else f"{s.snr_db:.2f}",
                f"{s.p_noise:.6f}", s.label] for c, s in zip(ids, specs)])
    return finish_build(out_dir, params, PARAMS_FILE)


def ensure_dataset(data_dir, n_clips: int = 3000, seed: int = 0, progress: bool = True,
                   splits=SPLIT_SHARES) -> Path:
    """Build the default dataset into a missing or empty folder, or refresh one this module built;
    any other folder holds the user's own data and is left untouched."""
    d = Path(data_dir)
    if not d.exists() or not any(d.iterdir()) or (d / MARKER).exists():
        make_default_dataset(d, n_clips=n_clips, seed=seed, progress=progress, splits=splits)
    return d
