"""Synthetic noise-vs-clean dataset: clean sources, noise types, SNR mixing and an annotator model.

Each clip is drawn from its own generator `default_rng([seed, 0, index])`, so a clip's audio and
label depend only on (seed, index), never on how many clips are built or in which order.
numpy/scipy only: this module never imports torch.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, oaconvolve
from scipy.special import expit
from tqdm.auto import tqdm

MARKER = ".mark2-synth"  # marks a folder this module built, so rebuilding it is safe
VERSION = 1  # bump when the generated content changes, so cached builds are regenerated
SOURCE_TYPES = ("speech", "music", "room")
SOURCE_PROBS = (0.45, 0.40, 0.15)
NOISE_TYPES = ("white", "pink", "brown", "hum", "babble", "fan", "clicks")
P_NO_NOISE = 0.25                # share of clips with noise_type "none"
SNR_RANGE_DB = (-5.0, 30.0)
PEAK_RANGE_DBFS = (-20.0, -1.0)  # mixtures are peak-normalised so level is no shortcut
# val and test shares, the rest is train; stratified by label. The student's default data keeps
# 40 % for test: with 1200 test clips a perfectly calibrated model scores ECE ~0.015 (~0.03 with
# 300), so calibration differences between students are measurable. The teacher's pool trains on 70 %.
SPLITS = (("val", 0.10), ("test", 0.40))
POOL_SPLITS = (("val", 0.15), ("test", 0.15))
# annotator: P(noise) = sigmoid((boundary - snr) / width); more annoying noise -> higher boundary
ANNOTATOR = {  # noise_type: (boundary_db, width_db)
    "white": (15.0, 2.5), "pink": (12.0, 2.75), "brown": (10.5, 2.75), "hum": (10.5, 2.5),
    "babble": (19.0, 3.0), "fan": (13.5, 2.75), "clicks": (19.5, 3.0),
}
P_NOISE_NONE = 0.03              # annotators sometimes call a clean clip noisy
VOWELS = np.array([  # F1, F2, F3 in Hz for an adult male talker
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
    [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240],
], dtype=float)
_WAV_NAME = re.compile(r"s\d+_c\d+\.wav")

# ----------------------------------------------------------------------------- helpers


def _gain(db: float) -> float:
    """Decibels to an amplitude factor."""
    return 10.0 ** (db / 20.0)


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS."""
    return x / math.sqrt(np.mean(x * x) + 1e-30)


def _hiss(rng, n: int) -> np.ndarray:
    """Unit-variance uniform white noise: cheaper than Gaussian where the distribution doesn't matter."""
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _mic_floor(rng, x: np.ndarray) -> np.ndarray:
    """x plus a faint low-passed self-noise floor 40-50 dB down, so clean audio has no digital silence."""
    floor = _unit(lfilter([1.0], [1.0, -0.9], _hiss(rng, len(x))))
    return x + _gain(-rng.uniform(40, 50)) * math.sqrt(np.mean(x * x)) * floor


def _coloured(rng, n: int, sr: int, exponent: float, shape=None, f_lo: float = 20.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent, optionally times a gain `shape(f)`."""
    f = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.maximum(f, f_lo) ** (-exponent / 2.0)
    if shape is not None:
        gain = gain * shape(f)
    spec = rng.standard_normal((2, len(f))) * gain
    spec = spec[0] + 1j * spec[1]
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def _harmonics(cycles: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """sum_k amps[k] * sin(2 pi (k+1) cycles + phases[k]) for a phase track in cycles (wavetable)."""
    grid = np.linspace(0.0, 1.0, 2049)
    table = amps @ np.sin(2 * np.pi * np.arange(1, len(amps) + 1)[:, None] * grid + phases[:, None])
    return np.interp(cycles - np.floor(cycles), grid, table)


def _edges(rng, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Cut [0, n) into consecutive segments of lo..hi seconds; returns the boundaries."""
    lengths = rng.uniform(lo, hi, int(n / (lo * sr)) + 2) * sr
    edges = np.concatenate([[0], np.cumsum(lengths).astype(int)])
    return np.append(edges[edges < n], n)


def _adsr(length: int, sr: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    """Attack-decay-sustain-release envelope of `length` samples (times in seconds)."""
    a, d, r = (min(max(int(x * sr), 1), length // 3) for x in (a, d, r))
    return np.interp(np.arange(length), [0, a, a + d, length - r, length], [0, 1, s, s, 0])


# ----------------------------------------------------------------------------- clean sources


def speech(rng, n: int, sr: int) -> np.ndarray:
    """Formant-synthesised talker: glottal pulses through vowel resonators, syllables and pauses."""
    f0 = rng.uniform(90, 250)
    edges = _edges(rng, n, sr, 0.10, 0.25)  # one vowel (syllable) per segment
    k = len(edges) - 1
    scale = (f0 / 120) ** 0.25 * rng.uniform(0.95, 1.08)  # shorter vocal tracts for higher voices
    formants = np.minimum(VOWELS[rng.integers(len(VOWELS), size=k)] * scale, 0.45 * sr)
    bandwidths = np.array([60.0, 90.0, 120.0]) * rng.uniform(0.8, 1.5)
    gains = rng.uniform(0.4, 1.0, k) * (rng.random(k) > 0.15)  # ~15% of segments are pauses
    # pitch: slow random wiggle with declination; one glottal pulse per cycle
    knots = np.arange(0, n + sr // 6, sr // 8)
    pitch = f0 * np.interp(np.arange(n), knots, rng.uniform(0.85, 1.15, len(knots)))
    pitch *= np.linspace(1.05, 0.92, n)
    cycles = np.cumsum(pitch / sr)
    src = np.diff(np.floor(cycles), prepend=0.0)
    src = lfilter([1.0, -1.0], [1.0, -1.9, 0.9025], src)  # glottal roll-off + lip radiation
    src += 0.01 * _hiss(rng, n)  # breathiness
    seg = np.repeat(np.arange(k), np.diff(edges))
    u = (np.arange(n) - edges[seg]) / np.diff(edges)[seg]
    src *= gains[seg] * np.sqrt(np.sin(np.float32(np.pi) * u.astype(np.float32)))  # syllable envelopes
    # three cascaded resonators (one 6th-order filter), retuned per segment, state carried over
    r = np.exp(-np.pi * bandwidths / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * formants / sr), r * r  # [k, 3] each
    out, zi = np.empty(n), np.zeros(6)
    for j in range(k):
        a = np.convolve(np.convolve([1.0, a1[j, 0], a2[0]], [1.0, a1[j, 1], a2[1]]), [1.0, a1[j, 2], a2[2]])
        out[edges[j]:edges[j + 1]], zi = lfilter([a.sum()], a, src[edges[j]:edges[j + 1]], zi=zi)
    # fricative bursts (high-passed noise) at some syllable onsets
    onsets = edges[:-1][(rng.random(k) < 0.3) & (gains > 0)]
    fric = np.zeros(n)
    for a in onsets:
        length = min(int(rng.uniform(0.03, 0.08) * sr), n - a)
        fric[a:a + length] = np.hanning(length)
    fric[1:] *= np.diff(_hiss(rng, n))  # high-passed noise
    return _unit(out) + _gain(rng.uniform(-20, -8)) * fric


def music(rng, n: int, sr: int) -> np.ndarray:
    """A few harmonic notes of one random timbre with ADSR envelopes, drawn from a scale."""
    out = np.zeros(n)
    steps = [0, 2, 4, 5, 7, 9, 11, 12] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10, 12]  # major/minor
    root = rng.integers(45, 70)
    rolloff, odd = rng.uniform(0.7, 2.0), rng.uniform(0.2, 1.0)  # timbre: brightness, even-harmonic level
    n_notes = rng.integers(2, 7)
    starts = np.sort(rng.uniform(0, 0.85, n_notes)) * n
    starts[0] = rng.uniform(0, 0.1) * n
    for start in starts.astype(int):
        f = 440.0 * 2 ** ((root + rng.choice(steps) - 69) / 12)
        length = min(int(rng.uniform(0.25, 1.0) * sr), n - start)
        n_harm = int(min(10, 0.45 * sr / f))
        k = np.arange(1, n_harm + 1)
        amps = k ** -rolloff * np.where(k % 2 == 0, odd, 1.0)
        t = np.arange(length) / sr
        vib, rate = rng.uniform(0, 0.006), rng.uniform(4, 6.5)
        cycles = f * t + f * vib / (2 * np.pi * rate) * np.sin(2 * np.pi * rate * t)
        env = _adsr(length, sr, *rng.uniform([0.005, 0.05, 0.3, 0.05], [0.05, 0.2, 0.8, 0.3]))
        tone = _harmonics(cycles, amps, rng.uniform(0, 2 * np.pi, n_harm))
        out[start:start + length] += rng.uniform(0.5, 1.0) * env * tone
    return out


def room(rng, n: int, sr: int) -> np.ndarray:
    """Quiet room tone at about -50 dBFS: low-passed coloured noise with a few low room modes."""
    fc, modes = rng.uniform(1500, 4000), rng.uniform(40, 300, 3)

    def shape(f):
        peaks = sum(np.exp(-(((f - m) / 8.0) ** 2)) for m in modes)
        return (1.0 + 3.0 * peaks) / (1.0 + (f / fc) ** 4)

    return _gain(-50 + rng.uniform(-5, 5)) * _unit(_coloured(rng, n, sr, rng.uniform(0.5, 1.5), shape))


# ----------------------------------------------------------------------------- noises


def white(rng, n: int, sr: int) -> np.ndarray:
    """White Gaussian noise."""
    return rng.standard_normal(n)


def pink(rng, n: int, sr: int) -> np.ndarray:
    """Pink (1/f) noise."""
    return _coloured(rng, n, sr, 1.0)


def brown(rng, n: int, sr: int) -> np.ndarray:
    """Brown (1/f^2) noise, flattened below 20 Hz."""
    return _coloured(rng, n, sr, 2.0)


def hum(rng, n: int, sr: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with a random buzz profile of harmonics, over faint hiss."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.998, 1.002)
    k = np.arange(1, int(min(12, 0.45 * sr / f0)) + 1)
    amps = rng.uniform(0.2, 1.0, len(k)) * k ** -rng.uniform(0.5, 2.0)
    amps *= np.where(k % 2, 1.0, rng.uniform(0.2, 1.0))  # odd/even balance of the buzz
    tone = _harmonics(f0 * np.arange(n) / sr, amps, rng.uniform(0, 2 * np.pi, len(k)))
    return _unit(tone) + 0.03 * _hiss(rng, n)


def babble(rng, n: int, sr: int) -> np.ndarray:
    """Crowd babble: 4-6 synthetic talkers at random levels."""
    return sum(_gain(rng.uniform(-6, 0)) * _unit(speech(rng, n, sr)) for _ in range(rng.integers(4, 7)))


def fan(rng, n: int, sr: int) -> np.ndarray:
    """Fan / engine: band-limited noise plus wobbling blade-pass tones and harmonics."""
    fc, octaves = rng.uniform(150, 1500), rng.uniform(0.5, 1.5)
    band = lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / fc) / octaves) ** 2)  # noqa: E731
    broad = _coloured(rng, n, sr, 0.0, band)
    bpf, h, rate = rng.uniform(60, 400), rng.integers(2, 6), rng.uniform(0.2, 1.0)
    t = np.arange(n) / sr
    cycles = bpf * t + 0.01 * bpf / (2 * np.pi * rate) * np.sin(2 * np.pi * rate * t)  # +-1% speed wobble
    tones = _harmonics(cycles, rng.uniform(0.2, 1.0, h) / np.arange(1, h + 1), rng.uniform(0, 2 * np.pi, h))
    return _unit(broad) + _gain(rng.uniform(-10, 3)) * _unit(tones)


def clicks(rng, n: int, sr: int) -> np.ndarray:
    """Impulsive clicks (short decaying bursts) over vinyl-like crackle."""
    m = rng.poisson(rng.uniform(2, 25) * n / sr) + 1
    imp = np.zeros(n)
    imp[rng.integers(0, n, m)] = rng.choice([-1.0, 1.0], m) * rng.lognormal(0.0, 0.7, m)
    length = int(rng.uniform(0.001, 0.006) * sr) + 2
    kernel = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
    burst = oaconvolve(imp, kernel)[:n]
    c = rng.binomial(n, rng.uniform(0.0005, 0.005)) + 1
    crackle = np.zeros(n)
    crackle[rng.integers(0, n, c)] = rng.laplace(size=c)
    crackle = lfilter([1.0, -1.0], [1.0, -0.5], crackle)
    return _unit(burst) + _gain(rng.uniform(-15, -3)) * _unit(crackle)


SOURCES = {"speech": speech, "music": music, "room": room}
NOISES = {"white": white, "pink": pink, "brown": brown, "hum": hum,
          "babble": babble, "fan": fan, "clicks": clicks}

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
    x = x if spec.source_type == "room" else _mic_floor(rng, x)
    if spec.noise_type != "none":
        x = mix_at_snr(x, NOISES[spec.noise_type](rng, n_samples, sample_rate), spec.snr_db)
    return spec, x * (_gain(spec.peak_dbfs) / np.max(np.abs(x)))


def assign_splits(labels, seed: int, splits=SPLITS) -> list[str]:
    """train/val/test per clip, `splits` shares within each label, deterministic per seed."""
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng([seed, 1])
    for lab in ("clean", "noise"):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        start = 0
        for name, frac in splits:
            k = max(round(frac * len(idx)), 1 if len(idx) >= 3 else 0)
            split[idx[start:start + k]] = name
            start += k
    return split.tolist()


# ----------------------------------------------------------------------------- dataset


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _is_built(out_dir: Path, params: dict, params_file: str = "synth.json") -> bool:
    """True when out_dir holds a complete build with exactly these parameters."""
    try:
        if json.loads((out_dir / params_file).read_text()) != params:
            return False
        with open(out_dir / "labels.csv", newline="") as f:
            paths = [row["path"] for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return False
    return (out_dir / "truth.csv").is_file() and len(paths) == params["n_clips"] and all(
        (out_dir / p).is_file() for p in paths)


def _render_to_files(audio_dir: Path, seed: int, indices: range, n_samples: int, sample_rate: int) -> list:
    """Render and write clips `indices` of dataset `seed` as 16-bit WAV; returns their specs."""
    specs = []
    for i in indices:
        spec, x = render_clip(seed, i, n_samples, sample_rate)
        buf = io.BytesIO()  # encode in memory: about twice as fast as letting libsndfile write the file
        sf.write(buf, x, sample_rate, subtype="PCM_16", format="WAV")
        (audio_dir / f"s{seed}_c{i:05d}.wav").write_bytes(buf.getvalue())
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
                         splits=SPLITS) -> Path:
    """Build (or reuse) the synthetic dataset: audio/*.wav, labels.csv, truth.csv and synth.json.

    `workers` processes render the clips (default: one per CPU core, for 500 clips or more).
    `splits` gives the val and test shares (`SPLITS`; the teacher's pool uses `POOL_SPLITS`).
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
    if _is_built(out_dir, params):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise ValueError(f"{out_dir} holds files that mark2_lib.synth did not make; "
                         "refusing to write synthetic data there (choose a new or empty folder)")
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by mark2_lib.synth; safe to regenerate\n")
    (out_dir / "synth.json").unlink(missing_ok=True)  # an interrupted build never looks complete
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
    _write_csv(out_dir / "labels.csv", ["clip_id", "path", "label", "split"],
               [[c, f"audio/{c}.wav", s.label, sp] for c, s, sp in zip(ids, specs, clip_splits)])
    _write_csv(out_dir / "truth.csv",
               ["clip_id", "source_type", "noise_type", "snr_db", "p_noise_annotator", "label"],
               [[c, s.source_type, s.noise_type, "" if math.isnan(s.snr_db) else f"{s.snr_db:.2f}",
                 f"{s.p_noise:.6f}", s.label] for c, s in zip(ids, specs)])
    (out_dir / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
    return out_dir


def ensure_dataset(data_dir, n_clips: int = 3000, seed: int = 0, progress: bool = True, splits=SPLITS) -> Path:
    """Build the default dataset into a missing or empty folder, or refresh one this module built;
    any other folder holds the user's own data and is left untouched."""
    d = Path(data_dir)
    if not d.exists() or not any(d.iterdir()) or (d / MARKER).exists():
        make_default_dataset(d, n_clips=n_clips, seed=seed, progress=progress, splits=splits)
    return d


def make_mixture_dataset(clean_files, noise_files, out_dir, snr_range=SNR_RANGE_DB, seed: int = 0, **kwargs) -> Path:
    """Mix clean recordings with noise recordings at drawn SNRs; see `mixtures.make_mixture_dataset`."""
    from .mixtures import make_mixture_dataset as build

    return build(clean_files, noise_files, out_dir, snr_range=snr_range, seed=seed, **kwargs)
