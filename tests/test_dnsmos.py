"""Tests for the DNSMOS teacher on a handful of synthetic clips (needs the `dnsmos` extra).

Without the extra every test here skips, saying how to install it, except under CI ($CI 1/true/yes,
which .ci/run sets), where each one fails instead: CI installs the extra, so a broken one must show.
"""
import csv
import json
from pathlib import Path
import types

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import dnsmos_missing, require_or_skip

from mark2_lib import dnsmos, timing
from mark2_lib.audio import n_segments
from mark2_lib.builders import signals, synth
from mark2_lib.config import AudioConfig
from mark2_lib.data import load_labels, load_soft_labels
from mark2_lib.errors import DataError

SR = 16000


MISSING = dnsmos_missing()


@pytest.fixture(scope="module", autouse=True)
def _dnsmos_extra():
    """Every test here needs the extra: skip without it, fail without it under CI. Module-scoped, so
    that it runs before the module-scoped `model` fixture (which would raise ImportError)."""
    if MISSING:
        require_or_skip(MISSING, "the DNSMOS tests (tests/test_dnsmos.py)")


@pytest.fixture(scope="module")
def model():
    return dnsmos.DnsmosModel()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six 2 s clips of synthetic speech: three clean, three with white noise at 0 dB; two per split."""
    root = tmp_path_factory.mktemp("dnsmos_clips")
    (root / "audio").mkdir()
    rows = []
    for i in range(6):
        rng = np.random.default_rng([11, i])
        x = signals.speech(rng, 2 * SR, SR)
        noisy = i % 2 == 1
        if noisy:
            x = synth.mix_at_snr(x, signals.white(rng, 2 * SR, SR), 0.0)
        sf.write(root / "audio" / f"c{i}.wav", 0.5 * x / np.abs(x).max(), SR, subtype="PCM_16")
        rows.append([f"c{i}", f"audio/c{i}.wav", "noise" if noisy else "clean", ("train", "val", "test")[i // 2]])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["clip_id", "path", "label", "split"], *rows])
    return root


def test_windows_tile_short_audio_and_hop_long_audio():
    short = np.arange(3 * SR, dtype=np.float32) / (4 * SR)
    w = dnsmos.DnsmosModel.windows(short)
    assert w.shape == (1, dnsmos.WINDOW)
    assert np.array_equal(w[0, :3 * SR], short) and np.array_equal(w[0, 3 * SR:6 * SR], short)
    assert dnsmos.DnsmosModel.windows(np.zeros(11 * SR)).shape == (2, dnsmos.WINDOW)  # starts 0, 1 s (2 s overruns)
    assert dnsmos.DnsmosModel.windows(np.zeros(12 * SR)).shape == (3, dnsmos.WINDOW)
    assert dnsmos.DnsmosModel.windows(np.full(SR, 3.0)).max() == 1.0  # clipped to DNSMOS's [-1, 1]
    with pytest.raises(DataError, match="empty"):
        dnsmos.DnsmosModel.windows(np.zeros(0))


def test_soft_labels_cache_and_calibration(clips, tmp_path):
    audio = AudioConfig()
    manifest = load_labels(clips / "labels.csv")
    out = tmp_path / "soft.csv"
    info = dnsmos.dnsmos_soft_labels(manifest, audio, tmp_path / "cache", out, segment_splits=("train",),
                                     progress=False)
    assert info["a"] < 0  # more intrusive background (lower BAK) -> more likely 'noise'
    scores = info["scores"]
    assert not scores["cached"].any() and len(scores) == 6
    assert ((scores[["sig", "bak", "ovr"]] >= 1.0) & (scores[["sig", "bak", "ovr"]] <= 5.5)).all().all()
    noisy = scores["label"] == 1
    assert scores.loc[noisy, "bak"].max() < scores.loc[~noisy, "bak"].min() - 0.5, scores  # noise lowers BAK
    assert scores.loc[noisy, "p_noise"].min() > scores.loc[~noisy, "p_noise"].max()
    soft = load_soft_labels(out, manifest)
    assert soft.teachers == ["dnsmos"] and set(soft.clip) == set(manifest.clip_ids)
    assert set(soft.segment) == {"c0", "c1"}  # only the train split's segments were asked for
    assert sorted(soft.segment["c0"]) == list(range(n_segments(2 * SR, audio)))
    # second run: every clip from the cache, same numbers; asking for more segments scores just those
    again, seg = dnsmos.score_manifest(manifest, audio, tmp_path / "cache", ("train",), progress=False)
    assert again["cached"].all()
    assert np.allclose(again["bak"], scores["bak"])
    more, seg = dnsmos.score_manifest(manifest, audio, tmp_path / "cache", ("train", "val"), progress=False)
    assert more["cached"].tolist() == [True, True, False, False, True, True] and set(seg) == {"c0", "c1", "c2", "c3"}
    # editing a file invalidates its entry
    x, _ = sf.read(clips / "audio" / "c4.wav")
    sf.write(tmp_path / "edited.wav", x[: SR], SR)
    (clips / "audio" / "c4.wav").write_bytes((tmp_path / "edited.wav").read_bytes())
    last, _ = dnsmos.score_manifest(manifest, audio, tmp_path / "cache", ("train",), progress=False)
    assert last.set_index("clip_id")["cached"].to_dict()["c4"] is False


def test_platt_fit_and_single_label_error():
    bak = np.array([1.5, 1.8, 2.0, 2.6, 3.5, 3.9, 4.0, 4.2])
    a, b = dnsmos.fit_platt(bak, [1, 1, 1, 0, 1, 0, 0, 0])
    p = dnsmos.platt(bak, a, b)
    assert a < 0 and np.all(np.diff(p) < 0) and 0.5 < -b / a / 3 < 1.2
    with pytest.raises(DataError, match="both labels"):
        dnsmos.fit_platt(bak, [0] * 8)


def test_warns_on_non_speech_only():
    with pytest.warns(UserWarning, match="built for speech.*music 2"):
        dnsmos.warn_if_not_speech(pd.DataFrame({"source_type": ["speech", "music", "music", "room"]}))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dnsmos.warn_if_not_speech(pd.DataFrame({"source_type": ["speech"] * 3}))
        dnsmos.warn_if_not_speech(None)


class FakeClock:
    """Stands in for the `time` module inside mark2_lib.dnsmos: `perf_counter` returns `start`, then
    moves on only when told (`advance`), or, with `real`, records the real clock's readings."""

    def __init__(self, start: float = 1000.0, real=None):
        self.now, self.real, self.readings = start, real, []

    def advance(self, seconds: float):
        self.now += seconds

    def perf_counter(self) -> float:
        value = self.real() if self.real else self.now
        self.readings.append(value)
        return value


class CountingModel:
    """Records every waveform `score` gets and passes it on to `inner` (if any). With `clock`, each
    call advances it: the first (the warm-up) by 100 s, which must not count, then each call of
    timed round k by `steps[k]` (rounds of `per_round` calls)."""

    def __init__(self, inner=None, clock=None, steps=(), per_round=1):
        self.inner, self.clock, self.steps, self.per_round, self.calls = inner, clock, list(steps), per_round, []

    def score(self, wave):
        self.calls.append(np.array(wave, copy=True))
        if self.clock is not None:
            timed = len(self.calls) - 2  # index among the timed calls; -1 = the warm-up
            self.clock.advance(100.0 if timed < 0 else self.steps[timed // self.per_round])
        return self.inner.score(wave) if self.inner else (3.0, 3.0, 3.0)


def test_realtime_factor_is_audio_seconds_over_median_elapsed(monkeypatch):
    """With a scripted clock: warm-up untimed, every waveform scored once per round, median round."""
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    waves = [np.full(2 * SR, 0.25), np.full(3 * SR, -0.5)]  # 5 s of audio
    model = CountingModel(clock=clock, steps=[0.5, 2.0, 0.25], per_round=len(waves))  # rounds: 1.0, 4.0, 0.5 s
    factor = dnsmos.realtime_factor(waves, model, repeats=3)
    assert factor == 5.0 / 1.0  # audio seconds over the median round (1.0 s), not the mean or the warm-up
    assert len(model.calls) == 1 + 3 * len(waves)
    expected = [waves[0]] + waves * 3
    assert all(c.dtype == np.float32 and np.array_equal(c, w) for c, w in zip(model.calls, expected))


def test_realtime_factor_times_the_real_model_on_the_audio(model, monkeypatch):
    """The real model: scored once per waveform per round plus a warm-up, and the factor is exactly the
    audio's seconds over the median of the rounds the (real, recorded) clock measured."""
    import time

    clock = FakeClock(real=time.perf_counter)
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(2 * SR), 0.1 * rng.standard_normal(SR)]
    counting = CountingModel(inner=model)
    factor = dnsmos.realtime_factor(waves, counting, repeats=2)  # each call scores a 9.01 s window: ~0.3 s
    assert len(counting.calls) == 1 + 2 * len(waves)
    assert all(np.allclose(c, w) for c, w in zip(counting.calls, [waves[0]] + waves * 2))
    assert len(clock.readings) == 2 * 2  # a start and an end per round
    rounds = [b - a for a, b in zip(clock.readings[::2], clock.readings[1::2])]
    assert all(r > 0 for r in rounds)
    assert factor == pytest.approx(3.0 / float(np.median(rounds)), rel=1e-12)


def test_every_engine_gives_the_same_soft_labels_and_a_rerun_scores_nothing(clips, tmp_path, monkeypatch):
    """Notebook 02's DNSMOS teacher on the serial and the local engine (2 worker processes): the same
    soft_labels.csv, byte for byte (one ONNX Runtime thread per model); a rerun reads every score from the
    cache and starts no engine; a bad engine is refused by name even when there is nothing to score."""
    from mark2_lib import teacher
    from mark2_lib.jobs import shards

    audio, manifest = AudioConfig(), load_labels(clips / "labels.csv")
    written = {}
    for engine in ("serial", "local"):
        out = tmp_path / f"{engine}.csv"
        info = teacher.make_soft_labels("dnsmos", manifest, audio, out, tmp_path / f"cache-{engine}",
                                        segment_splits=("train", "val", "test"), progress=False, engine=engine,
                                        workers=2)
        assert not info["scores"]["cached"].any() and "6 scored now, 0 from the cache" in info["summary"]
        written[engine] = out.read_bytes()
    assert written["serial"] == written["local"]
    assert len(load_soft_labels(tmp_path / "local.csv", manifest).segment) == 6

    def no_engine(*args, **kwargs):
        raise AssertionError("every score is cached: no engine should start")

    monkeypatch.setattr(shards, "run_sharded", no_engine)
    again = teacher.make_soft_labels("dnsmos", manifest, audio, tmp_path / "again.csv", tmp_path / "cache-local",
                                     progress=False, engine="local")
    assert again["scores"]["cached"].all() and (tmp_path / "again.csv").read_bytes() == written["local"]
    with pytest.raises(ValueError, match="engine='threads'"):
        teacher.make_soft_labels("dnsmos", manifest, audio, tmp_path / "x.csv", tmp_path / "cache-local",
                                 progress=False, engine="threads")


def test_notebook_02_scores_dnsmos_on_the_local_engine(clips, tmp_path):
    """Notebook 02 with teacher="dnsmos" and its engine parameters, run headless from the repo root."""
    from mark2_lib.workbook import run_notebook

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "02.ipynb"
    run_notebook(root / "notebooks" / "02_teacher_soft_labels.ipynb", out,
                 {"data_dir": str(clips), "teacher": "dnsmos", "engine": "local", "workers": 2, "dnsmos_segments": "",
                  "cache_dir": str(tmp_path / "cache"), "progress": False}, 300, cwd=root)
    soft = pd.read_csv(clips / "soft_labels.csv")
    assert sorted(soft["clip_id"]) == [f"c{i}" for i in range(6)] and soft["segment"].isna().all()
    assert set(soft["teacher"]) == {"dnsmos"}
    assert "DNSMOS: 6 clips" in "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                                         for o in c.get("outputs", []))


def test_source_screening_scores_dry_files_with_the_real_model(clips, model, tmp_path, monkeypatch):
    """`make data-real` screens each dry source with DNSMOS (builders.screening.dnsmos_scores): the
    scores are the model's own, a file it cannot read gets its error, and a second call reads the cache."""
    from mark2_lib.builders import screening
    from mark2_lib.jobs import shards

    paths = [str(clips / "audio" / f"c{i}.wav") for i in range(3)]
    (tmp_path / "bad.wav").write_text("not audio")
    scores = screening.dnsmos_scores([*paths, str(tmp_path / "bad.wav")], tmp_path / "cache", engine="serial",
                                     progress=False)
    for p in paths:
        wave, _ = sf.read(p, dtype="float32")
        assert scores[p] == pytest.approx(model.score(wave), abs=1e-6)
    assert isinstance(scores[str(tmp_path / "bad.wav")], str) and "bad.wav" in scores[str(tmp_path / "bad.wav")]
    def no_engine(*args, **kwargs):
        raise AssertionError("every score is cached: no engine should start")

    monkeypatch.setattr(shards, "run_sharded", no_engine)
    assert screening.dnsmos_scores(paths, tmp_path / "cache", progress=False) == {p: scores[p] for p in paths}
    with pytest.raises(ValueError, match="engine='threads'"):  # refused by name, even with nothing to score
        screening.dnsmos_scores(paths, tmp_path / "cache", engine="threads", progress=False)
