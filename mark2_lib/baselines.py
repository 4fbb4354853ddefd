"""Classical baselines: two blind SNR estimators that need no training, as noise-vs-clean classifiers.

* `stnr_snr`, in the style of NIST STNR: 20 ms frames every 10 ms (rectangular window, whole frames
  only), frame energy = mean square, in dB with a floor at -100 dB (1e-10; full scale is 0 dB), and
  SNR = 95th - 10th percentile of the frame energies (loud speech frames over the quietest frames).
* `wada_snr`, WADA-SNR (Kim & Stern 2008): speech amplitudes Gamma-distributed with shape 0.4 plus
  white Gaussian noise make G = ln E|z| - E ln|z| a known, rising function of the SNR; the clip's G
  is looked up in that curve (-20..100 dB, clamped at both ends). The curve is computed at import
  (`wada_table`, deterministic quadrature) rather than copied from a Monte Carlo table.

An estimate is NaN when it is undefined, with the reason from `stnr_problem` / `wada_problem`:
"digital silence" (STNR: no frame above the floor; WADA: every sample 0) or "too short" (STNR:
fewer than 10 frames, 0.11 s; WADA: fewer than 1600 samples, 0.1 s at 16 kHz). `noise_score` turns
an estimate into a score that is higher for noisier clips, an undefined one counting as a clean
100 dB (silence carries no noise). `baseline_report` fits each estimator's threshold on train
(`fit_threshold`, best macro-F1) and scores test: rows that sit beside the models' in notebook 05.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import dawsn, erf, gammaln

from .audio import load_audio
from .data import Dataset, Manifest, load_labels, load_truth
from .evaluate import truth_labels
from .metrics import classification_metrics
from .timing import timed_rounds

FRAME_SECONDS = 0.020        # STNR frame length
HOP_SECONDS = 0.010          # STNR frame hop
STNR_PERCENTILES = (95, 10)  # signal level, noise level (percentiles of the frame energies)
ENERGY_FLOOR_DB = -100.0     # frame energies below this (digital silence) count as this
STNR_MIN_FRAMES = 10         # fewer whole frames than this: too short for percentiles
WADA_ALPHA = 0.4             # Gamma shape of clean speech amplitudes (Kim & Stern 2008)
WADA_DB = np.arange(-20.0, 101.0)  # the SNRs of WADA's lookup table, 1 dB apart
WADA_EPS = 1e-10             # |sample| / peak floored here before its log, as the reference code does
WADA_MIN_SAMPLES = 1600      # fewer samples than this: too short for the amplitude statistics
UNDEFINED_SNR_DB = 100.0     # what an undefined (NaN) estimate counts as in `noise_score`
ESTIMATORS = ("stnr", "wada")
TIE_TOL = 1e-12              # macro-F1 values this close are a tie in `fit_threshold`


def as_wave(wave) -> np.ndarray:
    """`wave` (numpy or torch) as a 1-D float64 array; ValueError for other shapes or NaN/inf."""
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"wave must be 1-D (one mono clip), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("wave has NaN or inf samples")
    return x


# ----------------------------------------------------------------------------- STNR

def frame_energies_db(wave, sample_rate: int) -> np.ndarray:
    """Energy in dB (10 log10 mean square, floored at ENERGY_FLOOR_DB) of every whole 20 ms frame, 10 ms apart."""
    x = as_wave(wave)
    frame, hop = int(round(FRAME_SECONDS * sample_rate)), int(round(HOP_SECONDS * sample_rate))
    if frame < 1 or hop < 1:
        raise ValueError(f"sample_rate={sample_rate}: too low for {FRAME_SECONDS * 1e3:g} ms frames")
    if len(x) < frame:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    energy = np.einsum("ij,ij->i", frames, frames) / frame
    return 10.0 * np.log10(np.maximum(energy, 10.0 ** (ENERGY_FLOOR_DB / 10.0)))


def stnr_problem(wave, sample_rate: int) -> str | None:
    """Why `stnr_snr` is undefined for this clip ("too short", "digital silence"), or None."""
    db = frame_energies_db(wave, sample_rate)
    if len(db) < STNR_MIN_FRAMES:
        return "too short"
    return "digital silence" if db.max() <= ENERGY_FLOOR_DB else None


def stnr_snr(wave, sample_rate: int) -> float:
    """Blind SNR in dB, NIST-STNR style: 95th minus 10th percentile of the frame energies (`frame_energies_db`).

    NaN for a clip with fewer than STNR_MIN_FRAMES frames or with no frame above the floor
    (`stnr_problem` says which). Digital silence within a clip sits at the floor, so the estimate
    of a clip whose pauses are digitally silent is its speech level + 100 dB."""
    db = frame_energies_db(wave, sample_rate)
    if len(db) < STNR_MIN_FRAMES or db.max() <= ENERGY_FLOOR_DB:
        return float("nan")
    high, low = np.percentile(db, STNR_PERCENTILES)
    return float(high - low)


# ----------------------------------------------------------------------------- WADA

def gaussian_log_abs_mean(m: np.ndarray, switch: float = 12.0, step: float = 1e-3) -> np.ndarray:
    """E ln|m + Z| for Z ~ N(0, 1): -(gamma + ln 2) / 2 at m = 0, whose derivative in m is the principal
    value E 1/(m + Z) = sqrt(2) Dawson(m / sqrt(2)), integrated on a 1e-3 grid (trapezoid) up to
    `switch`; above it the series ln m - 1/(2 m^2) - 3/(4 m^4) - 5/(2 m^6)."""
    m = np.abs(np.asarray(m, dtype=np.float64))
    grid = np.arange(0.0, switch + step / 2, step)
    slope = math.sqrt(2.0) * dawsn(grid / math.sqrt(2.0))
    curve = -(np.euler_gamma + math.log(2.0)) / 2 + np.concatenate([[0.0], np.cumsum((slope[1:] + slope[:-1]) * step / 2)])
    big = np.maximum(m, switch)
    series = np.log(big) - 1 / (2 * big ** 2) - 3 / (4 * big ** 4) - 5 / (2 * big ** 6)
    return np.where(m > switch, series, np.interp(m, grid, curve))


def wada_table(alpha: float = WADA_ALPHA, db=WADA_DB) -> np.ndarray:
    """G(SNR) = ln E|z| - E ln|z| for z = speech + noise: speech |amplitude| ~ Gamma(alpha, 1) with a
    random sign, noise ~ N(0, sigma^2), SNR = E speech^2 / sigma^2 = alpha (alpha + 1) / sigma^2.

    Given the amplitude a, E|a + noise| = sigma (sqrt(2/pi) exp(-m^2/2) + m erf(m/sqrt 2)) with
    m = a / sigma and E ln|a + noise| = ln sigma + `gaussian_log_abs_mean`(m); both are averaged over
    ln a, whose density exp(alpha s - e^s) / Gamma(alpha) the trapezoid rule on a 0.02 grid
    integrates to ~1e-12. Rises from the Gaussian value 0.4094 (-20 dB) towards ln alpha - digamma(alpha)."""
    s = np.arange(-90.0, 6.0, 0.02)
    weight = np.exp(alpha * s - np.exp(s) - gammaln(alpha)) * 0.02
    a = np.exp(s)
    sigma = np.sqrt(alpha * (alpha + 1) / 10.0 ** (np.asarray(db, dtype=np.float64) / 10.0))
    m = a[None, :] / sigma[:, None]
    mean_abs = (weight * (math.sqrt(2 / math.pi) * np.exp(-m * m / 2) + m * erf(m / math.sqrt(2)))).sum(1)
    return np.log(mean_abs) - (weight * gaussian_log_abs_mean(m)).sum(1)


WADA_G = wada_table()  # computed once at import (~20 ms)


def wada_problem(wave) -> str | None:
    """Why `wada_snr` is undefined for this clip ("too short", "digital silence"), or None."""
    x = as_wave(wave)
    if len(x) < WADA_MIN_SAMPLES:
        return "too short"
    return None if np.any(x) else "digital silence"


def wada_snr(wave) -> float:
    """WADA-SNR in dB: G = ln mean|z| - mean ln|z| of the peak-normalised clip (|z| floored at 1e-10),
    looked up in `WADA_G` by linear interpolation; clamped to -20..100 dB. NaN as `wada_problem` says."""
    x = as_wave(wave)
    if wada_problem(x) is not None:
        return float("nan")
    z = np.maximum(np.abs(x) / np.abs(x).max(), WADA_EPS)
    g = math.log(max(WADA_EPS, float(z.mean()))) - float(np.log(z).mean())
    return float(np.interp(g, WADA_G, WADA_DB))


def wada_energies(wave) -> tuple[float, float]:
    """(speech energy, noise energy): the clip's energy sum(x^2) split as `wada_snr` says (NaN when it is NaN)."""
    x = as_wave(wave)
    factor = 10.0 ** (wada_snr(x) / 10.0)
    energy = float(np.dot(x, x))
    return energy * factor / (1 + factor), energy / (1 + factor)


# ----------------------------------------------------------------------------- scores and thresholds

def noise_score(snr_db) -> np.ndarray:
    """Higher = noisier: -SNR, an undefined (NaN) estimate counting as UNDEFINED_SNR_DB (clean)."""
    snr = np.asarray(snr_db, dtype=np.float64)
    return -np.where(np.isnan(snr), UNDEFINED_SNR_DB, snr)


def score_waves(waves, clip_ids, sample_rate: int) -> pd.DataFrame:
    """clip_id, stnr_db, wada_db and note (why an estimate is NaN; "" when both are defined) per clip."""
    rows = []
    for clip_id, wave in zip(clip_ids, waves, strict=True):
        x = as_wave(wave)
        problems = {"stnr": stnr_problem(x, sample_rate), "wada": wada_problem(x)}
        rows.append({"clip_id": clip_id, "stnr_db": stnr_snr(x, sample_rate), "wada_db": wada_snr(x),
                     "note": "; ".join(f"{k}: {v}" for k, v in problems.items() if v)})
    return pd.DataFrame(rows, columns=["clip_id", "stnr_db", "wada_db", "note"])


def read_waves(paths, sample_rate: int) -> list[np.ndarray]:
    """Each file as float64 mono at `sample_rate` (`audio.load_audio`: DataError names a bad file)."""
    return [load_audio(p, sample_rate).numpy().astype(np.float64) for p in paths]


def score_clips(paths, clip_ids=None, sample_rate: int = 16000) -> pd.DataFrame:
    """`score_waves` of audio files read at `sample_rate`; clip_ids default to the paths."""
    paths = [str(p) for p in paths]
    return score_waves(read_waves(paths, sample_rate), clip_ids if clip_ids is not None else paths, sample_rate)


def macro_f1_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, macro-F1 of "noise when score >= threshold") for every distinct decision: -inf,
    the midpoints between consecutive distinct scores, +inf. F1 of a class with no true and no
    predicted clips is 0 (scikit-learn's zero_division=0)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    if s.shape != y.shape or s.ndim != 1 or not len(s):
        raise ValueError(f"scores {s.shape} and labels {y.shape}: expected two equal, non-empty 1-D arrays")
    if not np.isfinite(s).all() or not np.isin(y, (0, 1)).all():
        raise ValueError("scores must be finite and labels 0 (clean) or 1 (noise)")
    values = np.unique(s)
    thresholds = np.concatenate([[-np.inf], (values[1:] + values[:-1]) / 2, [np.inf]])
    # clips at or above thresholds[k]: those whose score is >= values[k] (none for k = len(values))
    above_pos = np.append(np.cumsum(np.bincount(np.searchsorted(values, s[y == 1]), minlength=len(values))[::-1])[::-1], 0)
    above_neg = np.append(np.cumsum(np.bincount(np.searchsorted(values, s[y == 0]), minlength=len(values))[::-1])[::-1], 0)
    tp, fp = above_pos, above_neg
    fn, tn = (y == 1).sum() - tp, (y == 0).sum() - fp

    def f1(hit, false_alarm, miss):
        den = 2 * hit + false_alarm + miss
        return np.divide(2 * hit, den, out=np.zeros(len(den)), where=den > 0)

    return thresholds, (f1(tp, fp, fn) + f1(tn, fn, fp)) / 2


def fit_threshold(scores, labels) -> float:
    """The threshold with the best macro-F1 of "noise when score >= threshold" on (scores, labels);
    among ties (within TIE_TOL) the lowest. Candidates as `macro_f1_curve` lays them out."""
    thresholds, f1 = macro_f1_curve(scores, labels)
    return float(thresholds[np.flatnonzero(f1 >= f1.max() - TIE_TOL)[0]])


# ----------------------------------------------------------------------------- notebook 05's rows

def open_data(data, sample_rate: int = 16000, truth: pd.DataFrame | None = None):
    """(Dataset or Manifest, truth or None) of a Dataset (its truth), a Manifest, or a data folder /
    labels.csv path (the truth.csv beside it); `truth`, when given, wins."""
    if isinstance(data, (str, Path)):
        csv = Path(data) / "labels.csv" if Path(data).is_dir() else Path(data)
        return load_labels(csv, sample_rate=sample_rate), truth if truth is not None else load_truth(csv.parent)
    if not isinstance(data, (Dataset, Manifest)):
        raise TypeError(f"data: expected a Dataset, a Manifest or a path, got {type(data).__name__}")
    return data, truth if truth is not None or isinstance(data, Manifest) else data.truth


def split_of(data, name: str) -> Manifest:
    """One split of a Dataset or Manifest; ValueError when it has no clips."""
    part = data.split(name)
    if not len(part):
        raise ValueError(f"the data has no {name!r} clips")
    return part


def score_split(data, split: str = "test", sample_rate: int = 16000) -> pd.DataFrame:
    """`score_waves` of one split's clips (`data` as `open_data` takes it), with their label."""
    part = split_of(open_data(data, sample_rate)[0], split)
    return score_clips(part.df["path"], part.clip_ids, sample_rate).assign(label=part.df["label"].to_numpy())


def baseline_report(data, sample_rate: int = 16000, truth: pd.DataFrame | None = None, fit_split: str = "train",
                    test_split: str = "test", max_seconds: float = 600.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both estimators as classifiers: their noise score's threshold fitted on `fit_split`'s clips with a hard
    label (best macro-F1; a transfer set's unlabelled clips are left out),
    then accuracy, macro-F1 and ROC-AUC on `test_split`, as `evaluate.metrics_table` lays out a model's row.

    `data`: a Dataset, a Manifest or a data folder / labels.csv path (`open_data`; truth.csv is used
    where there is one). Audio is read at `sample_rate`. `ece` is NaN (a dB score is no probability);
    `truth_*` columns come with truth. `snr_threshold_db`: a test clip is called noisy when its
    estimate is at or below it. `n_undefined`: test clips with a NaN estimate (scored as clean).
    `x real time`: seconds of test audio (at most `max_seconds`, whole clips) per second of
    estimating, median of 5 rounds of `timing.timed_rounds`. Returns (table indexed by model, the
    per-clip test estimates of `score_waves` with label and split)."""
    data, truth = open_data(data, sample_rate, truth)
    fit, test = split_of(data, fit_split), split_of(data, test_split)
    fit = Manifest(fit.root, fit.df[fit.labelled].reset_index(drop=True), fit.skipped)  # a transfer set has no label
    if not len(fit):
        raise ValueError(f"the {fit_split!r} split has no clip with a hard label to fit the thresholds on")
    test_waves = read_waves(test.df["path"], sample_rate)
    scored = {fit_split: score_waves(read_waves(fit.df["path"], sample_rate), fit.clip_ids, sample_rate),
              test_split: score_waves(test_waves, test.clip_ids, sample_rate)}
    y_fit, y_test = fit.df["label"].to_numpy(), test.df["label"].to_numpy()
    timed, seconds = [], 0.0
    for w in test_waves:
        if timed and seconds + len(w) / sample_rate > max_seconds:
            break
        timed.append(w)
        seconds += len(w) / sample_rate
    times = timed_rounds({"stnr": lambda: [stnr_snr(w, sample_rate) for w in timed],
                          "wada": lambda: [wada_snr(w) for w in timed]})
    rows = {}
    for name in ESTIMATORS:
        threshold = fit_threshold(noise_score(scored[fit_split][f"{name}_db"]), y_fit)
        score = noise_score(scored[test_split][f"{name}_db"])
        row = {**classification_metrics(y_test, score, threshold), "ece": float("nan")}
        if truth is not None:
            row.update({f"truth_{k}": v for k, v in classification_metrics(truth_labels(truth, test.clip_ids), score,
                                                                              threshold).items()}, truth_ece=float("nan"))
        row.update({"snr_threshold_db": -threshold, "n_undefined": int(scored[test_split][f"{name}_db"].isna().sum()),
                    "x real time": seconds / float(np.median(times[name]))})
        rows[f"{name}_baseline"] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    clips = scored[test_split].assign(label=y_test, split=test_split)
    return table, clips
