"""The classical baselines (mark2_lib/baselines.py): STNR and WADA-SNR against loop references and
mixtures of known SNR, their documented behaviour on silence and short clips, the threshold fit
against a brute-force search, and the report on the tiny corpus."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import digamma
from sklearn.metrics import f1_score

from mark2_lib import baselines as B
from mark2_lib.builders import signals
from mark2_lib.builders.synth import mix_at_snr
from mark2_lib.data import Dataset, load_truth
from mark2_lib.evaluate import metrics_table

SR = 16000
SNRS = (0, 5, 10, 20, 30)


def loop_frame_energies_db(x, sr):
    """Reference: every whole 20 ms frame 10 ms apart, one at a time."""
    frame, hop = int(0.02 * sr), int(0.01 * sr)
    out = []
    start = 0
    while start + frame <= len(x):
        e = sum(float(v) * float(v) for v in x[start:start + frame]) / frame
        out.append(10 * math.log10(max(e, 1e-10)))
        start += hop
    return np.array(out)


def gamma_speech(rng, n):
    """WADA's model of clean speech: Gamma(0.4) amplitudes with random signs."""
    return rng.gamma(B.WADA_ALPHA, 1.0, n) * rng.choice([-1.0, 1.0], n)


def bursts_with_pauses(rng, n, sr):
    """White-noise 'syllables' of one level, 0.2 s on, 0.2 s silent: the case STNR is built for."""
    on = (np.arange(n) // int(0.2 * sr)) % 2 == 0
    return rng.standard_normal(n) * on


# ----------------------------------------------------------------------------- STNR

@pytest.mark.parametrize("sr", [16000, 8000, 22050])
def test_frame_energies_match_a_loop(sr):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(int(0.37 * sr)) * np.linspace(0.01, 1, int(0.37 * sr))
    x[: sr // 20] = 0.0  # digital silence sits at the floor
    got = B.frame_energies_db(x, sr)
    ref = loop_frame_energies_db(x, sr)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert got[0] == B.ENERGY_FLOOR_DB


def test_stnr_is_the_95th_minus_10th_percentile_of_the_loop_energies():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.standard_normal(SR) * rng.uniform(0, 1, SR) ** 3
        ref = loop_frame_energies_db(x, SR)
        assert B.stnr_snr(x, SR) == pytest.approx(np.percentile(ref, 95) - np.percentile(ref, 10), abs=1e-9)


@pytest.mark.parametrize("noise", ["white", "pink"])
def test_stnr_rises_with_the_true_snr_of_speech(noise):
    rng = np.random.default_rng(2)
    clean, n = signals.speech(rng, 4 * SR, SR), getattr(signals, noise)(rng, 4 * SR, SR)
    est = [B.stnr_snr(mix_at_snr(clean, n, snr), SR) for snr in SNRS]
    assert np.all(np.diff(est) > 0), est


def test_stnr_tracks_the_snr_of_a_signal_with_pauses():
    """With pauses the 10th percentile is the noise and the 95th speech + noise: the estimate is the
    SNR while talking, 10 log10(1 + P_talk / P_noise), i.e. the clip SNR + 3 dB at 50 % talk."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        clean, noise = bursts_with_pauses(rng, 4 * SR, SR), rng.standard_normal(4 * SR)
        for snr in SNRS:
            est = B.stnr_snr(mix_at_snr(clean, noise, snr), SR)
            talking = 10 * math.log10(1 + 2 * 10 ** (snr / 10))
            assert abs(est - talking) < 1.5, (seed, snr, est, talking)


# ----------------------------------------------------------------------------- WADA

@pytest.mark.parametrize("m", [0.0, 0.3, 1.0, 2.5, 6.0, 11.9, 12.1, 30.0])
def test_gaussian_log_abs_mean_against_quadrature(m):
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    ref = quad(lambda z: math.log(abs(m + z)) * pdf(z), -m - 40, -m + 40, points=[-m], limit=400)[0]
    assert float(B.gaussian_log_abs_mean(np.array([m]))[0]) == pytest.approx(ref, abs=2e-6)


def test_wada_table_limits_and_shape():
    g = B.WADA_G
    assert g.shape == B.WADA_DB.shape and np.all(np.diff(g) > 0)
    gaussian = 0.5 * math.log(2 / math.pi) + (np.euler_gamma + math.log(2)) / 2  # ln E|n| - E ln|n|
    gamma = math.log(B.WADA_ALPHA) - digamma(B.WADA_ALPHA)                       # ln E|s| - E ln|s|
    assert B.wada_table(db=[-80.0])[0] == pytest.approx(gaussian, abs=1e-6)
    assert B.wada_table(db=[400.0])[0] == pytest.approx(gamma, abs=1e-4)
    assert gaussian < g[0] < g[-1] < gamma


@pytest.mark.parametrize("snr", [-10, 0, 10, 20, 30])
def test_wada_table_against_monte_carlo(snr):
    rng = np.random.default_rng(snr + 100)
    s = gamma_speech(rng, 2_000_000)
    z = s + math.sqrt(B.WADA_ALPHA * (B.WADA_ALPHA + 1) / 10 ** (snr / 10)) * rng.standard_normal(len(s))
    g = math.log(np.abs(z).mean()) - np.log(np.abs(z)).mean()
    assert g == pytest.approx(B.WADA_G[B.WADA_DB == snr][0], abs=5e-3)


def loop_wada(x):
    """Reference, step by step as the paper's code: peak-normalise, floor, G, then the first table
    entry at or above G and a straight line from the one before it; clamped at the table's ends."""
    z = [max(abs(v) / max(abs(u) for u in x), 1e-10) for v in x]
    g = math.log(max(1e-10, sum(z) / len(z))) - sum(math.log(v) for v in z) / len(z)
    table, db = list(B.WADA_G), list(B.WADA_DB)
    if g <= table[0]:
        return db[0]
    for i in range(1, len(table)):
        if g <= table[i]:
            return db[i - 1] + (g - table[i - 1]) / (table[i] - table[i - 1]) * (db[i] - db[i - 1])
    return db[-1]


def test_wada_matches_a_loop_reference_including_the_clamps():
    rng = np.random.default_rng(3)
    cases = [gamma_speech(rng, 4000) + a * rng.standard_normal(4000) for a in (0.0, 0.05, 0.5, 3.0)]
    cases += [rng.standard_normal(4000), np.sign(rng.standard_normal(4000))]  # G below / above the table
    for x in cases:
        assert B.wada_snr(x) == pytest.approx(loop_wada(x), abs=1e-9)
    assert B.wada_snr(cases[-1]) == -20.0 and B.wada_snr(gamma_speech(rng, 4000) ** 9) == 100.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wada_recovers_the_snr_of_its_designed_case(seed):
    """Gamma-like speech + white Gaussian noise: within 1 dB of the truth over 0-30 dB, and rising."""
    rng = np.random.default_rng(seed)
    clean, noise = gamma_speech(rng, 4 * SR), signals.white(rng, 4 * SR, SR)
    est = [B.wada_snr(mix_at_snr(clean, noise, snr)) for snr in SNRS]
    np.testing.assert_allclose(est, SNRS, atol=1.0)
    assert np.all(np.diff(est) > 0)


@pytest.mark.parametrize("noise", ["white", "pink"])
def test_wada_rises_with_the_true_snr_of_speech(noise):
    rng = np.random.default_rng(4)
    clean, n = signals.speech(rng, 4 * SR, SR), getattr(signals, noise)(rng, 4 * SR, SR)
    est = [B.wada_snr(mix_at_snr(clean, n, snr)) for snr in SNRS]
    assert np.all(np.diff(est) > 0), est


def test_wada_energies_split_the_clip_energy_at_the_estimate():
    rng = np.random.default_rng(5)
    x = mix_at_snr(gamma_speech(rng, SR), rng.standard_normal(SR), 10)
    speech, noise = B.wada_energies(x)
    assert speech + noise == pytest.approx(float(np.sum(x * x)))
    assert 10 * math.log10(speech / noise) == pytest.approx(B.wada_snr(x))


# ----------------------------------------------------------------------------- silence, short clips, bad input

def test_silence_and_short_clips_are_nan_with_a_reason_and_no_warning():
    rng = np.random.default_rng(6)
    silent, short = np.zeros(SR), rng.standard_normal(int(0.05 * SR))
    faint = 1e-7 * rng.standard_normal(SR)  # every frame below -100 dB: silence to STNR, not to WADA
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(B.stnr_snr(silent, SR)) and math.isnan(B.wada_snr(silent))
        assert B.stnr_problem(silent, SR) == B.wada_problem(silent) == "digital silence"
        assert math.isnan(B.stnr_snr(short, SR)) and math.isnan(B.wada_snr(short))
        assert B.stnr_problem(short, SR) == B.wada_problem(short) == "too short"
        assert math.isnan(B.stnr_snr(faint, SR)) and B.stnr_problem(faint, SR) == "digital silence"
        assert math.isfinite(B.wada_snr(faint)) and B.wada_problem(faint) is None
        assert all(math.isnan(v) for v in B.wada_energies(silent))
        table = B.score_waves([silent, short, faint, rng.standard_normal(SR)], ["s", "t", "f", "n"], SR)
    assert list(table["note"]) == ["stnr: digital silence; wada: digital silence", "stnr: too short; wada: too short",
                                   "stnr: digital silence", ""]
    # the shortest clips each estimator takes
    assert math.isfinite(B.stnr_snr(rng.standard_normal(int(0.11 * SR)), SR))
    assert math.isnan(B.stnr_snr(rng.standard_normal(int(0.11 * SR) - 1), SR))
    assert math.isfinite(B.wada_snr(rng.standard_normal(B.WADA_MIN_SAMPLES)))
    np.testing.assert_array_equal(B.noise_score([np.nan, 12.5]), [-B.UNDEFINED_SNR_DB, -12.5])


def test_digitally_silent_pauses_read_as_the_speech_level_over_the_floor():
    rng = np.random.default_rng(7)
    x = 0.1 * bursts_with_pauses(rng, 2 * SR, SR)  # -20 dB while talking, exact zeros between
    assert B.stnr_snr(x, SR) == pytest.approx(-20 - B.ENERGY_FLOOR_DB, abs=0.5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="1-D"):
        B.stnr_snr(np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="NaN or inf"):
        B.wada_snr(np.array([0.1, np.nan] * 1000))
    with pytest.raises(ValueError, match="equal, non-empty"):
        B.fit_threshold([1.0, 2.0], [0])
    with pytest.raises(ValueError, match="finite"):
        B.fit_threshold([1.0, np.nan], [0, 1])


# ----------------------------------------------------------------------------- threshold

def brute_force_threshold(scores, labels):
    """Every candidate threshold, scored with scikit-learn; the lowest of the best."""
    values = sorted(set(scores))
    candidates = [-np.inf] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [np.inf]
    f1 = [f1_score(labels, (np.asarray(scores) >= t).astype(int), average="macro", labels=[0, 1], zero_division=0)
          for t in candidates]
    best = max(f1)
    return next(t for t, f in zip(candidates, f1) if f >= best - 1e-12), f1


@pytest.mark.parametrize("seed", range(8))
def test_fit_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    labels = rng.integers(0, 2, n) if seed != 7 else np.ones(n, dtype=int)  # one class only, too
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 1)  # rounded: ties between clips
    ref, ref_curve = brute_force_threshold(scores, labels)
    assert B.fit_threshold(scores, labels) == ref
    np.testing.assert_allclose(B.macro_f1_curve(scores, labels)[1], ref_curve, atol=1e-12)


def test_fit_threshold_separates_separable_scores_and_breaks_ties_low():
    assert B.fit_threshold([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1]) == 1.5
    assert B.fit_threshold([5.0, 5.0, 5.0], [0, 1, 1]) == -np.inf  # all equal: call every clip noise


# ----------------------------------------------------------------------------- report

@pytest.fixture(scope="module")
def report(tiny_data):
    manifest, _, audio_cfg = tiny_data
    return B.baseline_report(manifest.root, sample_rate=audio_cfg.sample_rate), manifest


def test_report_on_the_tiny_corpus(report):
    (table, clips), manifest = report
    test = manifest.split("test")
    assert list(table.index) == ["stnr_baseline", "wada_baseline"] and table.index.name == "model"
    assert np.isfinite(table["roc_auc"]).all() and np.isfinite(table["truth_roc_auc"]).all()
    assert (table["x real time"] > 0).all() and (table["n_undefined"] == 0).all()
    assert list(clips["clip_id"]) == test.clip_ids and list(clips["label"]) == list(test.df["label"])
    for name in B.ESTIMATORS:
        row = table.loc[f"{name}_baseline"]
        called_noise = (clips[f"{name}_db"] <= row["snr_threshold_db"]).astype(int)
        assert row["accuracy"] == pytest.approx((called_noise == clips["label"]).mean())
        assert row["macro_f1"] == pytest.approx(f1_score(clips["label"], called_noise, average="macro"))
        fit = B.score_split(manifest.root, "train")
        assert list(fit["clip_id"]) == manifest.split("train").clip_ids
        assert -row["snr_threshold_db"] == B.fit_threshold(B.noise_score(fit[f"{name}_db"]), fit["label"])


def test_report_rows_append_to_the_models_table(report, tiny_data):
    (table, _), manifest = report
    _, features, _ = tiny_data
    test, truth = manifest.split("test"), load_truth(manifest.root)
    models = metrics_table({"teacher": np.full(len(test), 0.5)}, test, truth)
    both = pd.concat([models, table])
    assert list(both.columns[:len(models.columns)]) == list(models.columns)
    assert list(both.index) == ["teacher", "stnr_baseline", "wada_baseline"]
    scores = [c for c in table.columns if c != "x real time"]
    from_dataset, _ = B.baseline_report(Dataset(manifest, features, truth=truth))  # as notebook 05 holds it
    pd.testing.assert_frame_equal(from_dataset[scores], table[scores])
    from_manifest, _ = B.baseline_report(manifest)  # a Manifest has no truth: no truth columns
    assert "truth_roc_auc" not in from_manifest
    pd.testing.assert_frame_equal(from_manifest[["accuracy", "macro_f1", "roc_auc", "snr_threshold_db"]],
                                  table[["accuracy", "macro_f1", "roc_auc", "snr_threshold_db"]])
    with pytest.raises(TypeError, match="expected a Dataset, a Manifest or a path"):
        B.baseline_report(test.df)


def test_report_fits_on_the_labelled_train_clips_only(report, tiny_data):
    """A transfer set's train clips (no hard label) take no part in fitting the thresholds."""
    from mark2_lib.data import UNLABELLED, Manifest

    (table, _), manifest = report
    df = manifest.df.copy()
    train = np.flatnonzero(df["split"] == "train")
    df.loc[train[::2], "label"] = UNLABELLED
    with_transfer = Manifest(manifest.root, df, manifest.skipped)
    got, _ = B.baseline_report(with_transfer)
    fit = B.score_split(manifest.root, "train").iloc[1::2]  # the train clips that kept their label
    for name in B.ESTIMATORS:
        assert -got.loc[f"{name}_baseline", "snr_threshold_db"] == B.fit_threshold(
            B.noise_score(fit[f"{name}_db"]), fit["label"])
    df.loc[train, "label"] = UNLABELLED
    with pytest.raises(ValueError, match="'train' split has no clip with a hard label"):
        B.baseline_report(Manifest(manifest.root, df, manifest.skipped))

