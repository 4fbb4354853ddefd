"""Tests for mark2_lib.builders.synth: determinism, SNR mixing, CSV contracts, annotator, WAVs, idempotence."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from mark2_lib.audio import load_audio
from mark2_lib.builders import common, signals, synth

SR = 16000
LABELS_COLUMNS = ["clip_id", "path", "label", "split"]
TRUTH_COLUMNS = ["clip_id", "source_type", "noise_type", "snr_db", "p_noise_annotator", "label"]


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def wav_bytes(out_dir):
    return {p.name: p.read_bytes() for p in sorted((Path(out_dir) / "audio").glob("*.wav"))}


def longest_zero_run(x):
    edges = np.diff(np.concatenate([[0], (x == 0).astype(int), [0]]))
    return int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1), initial=0))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 60-clip build shared by the content tests."""
    return synth.make_default_dataset(tmp_path_factory.mktemp("synth") / "d60", n_clips=60, seed=0, progress=False)


def test_returns_out_dir_and_writes_files(built):
    assert isinstance(built, Path)
    for name in ("labels.csv", "truth.csv", "synth.json"):
        assert (built / name).is_file()


def test_same_seed_same_bytes_other_seed_differs(tmp_path, built):
    a = synth.make_default_dataset(tmp_path / "a", n_clips=24, seed=0, progress=False)
    b = synth.make_default_dataset(tmp_path / "b", n_clips=24, seed=0, progress=False)
    c = synth.make_default_dataset(tmp_path / "c", n_clips=24, seed=1, progress=False)
    for name in ("labels.csv", "truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    wa, wb, wc = wav_bytes(a), wav_bytes(b), wav_bytes(c)
    assert len(wa) == 24 and wa == wb
    assert not set(wa) & set(wc), "different seeds must give different clip_ids"
    assert sorted(wa.values()) != sorted(wc.values())
    # clip i depends only on (seed, i): a 24-clip build is a prefix of the 60-clip one
    w60 = wav_bytes(built)
    assert all(w60[name] == data for name, data in wa.items())


def test_parallel_build_gives_the_same_bytes(tmp_path):
    one = synth.make_default_dataset(tmp_path / "one", n_clips=230, seed=4, workers=1, progress=False)
    two = synth.make_default_dataset(tmp_path / "two", n_clips=230, seed=4, workers=2, progress=False)
    for name in ("labels.csv", "truth.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    assert wav_bytes(one) == wav_bytes(two) and len(wav_bytes(two)) == 230


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(16, 2000), snr=st.floats(-30, 60),
       noise_type=st.sampled_from(synth.NOISE_TYPES), clean_scale=st.floats(1e-4, 1e2))
def test_mix_at_snr_hits_target(seed, n, snr, noise_type, clean_scale):
    rng = np.random.default_rng(seed)
    clean = clean_scale * rng.standard_normal(n)
    noise = signals.NOISES[noise_type](rng, n, SR)
    scaled = synth.mix_at_snr(clean, noise, snr) - clean
    measured = 10 * math.log10(np.mean(clean**2) / np.mean(scaled**2))
    assert abs(measured - snr) < 0.01
    gain = np.dot(scaled, noise) / np.dot(noise, noise)
    assert gain > 0 and np.allclose(scaled, gain * noise)  # a pure rescaling of the noise


def test_mix_at_snr_rejects_bad_input():
    x = np.ones(8)
    with pytest.raises(ValueError):
        synth.mix_at_snr(x, np.zeros(8), 10.0)
    with pytest.raises(ValueError):
        synth.mix_at_snr(np.zeros(8), x, 10.0)
    with pytest.raises(ValueError):
        synth.mix_at_snr(x, np.ones(9), 10.0)
    with pytest.raises(ValueError):
        synth.mix_at_snr(x, x, float("nan"))


def test_labels_csv_contract(built):
    columns, rows = read_csv(built / "labels.csv")
    assert columns == LABELS_COLUMNS
    assert len(rows) == 60
    ids = [r["clip_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    root = built.resolve()
    for r in rows:
        assert r["label"] in ("clean", "noise") and r["split"] in ("train", "val", "test")
        assert r["path"] == f"audio/{r['clip_id']}.wav"
        path = (built / r["path"]).resolve()
        assert path.is_relative_to(root) and path.is_file()
    for label in ("clean", "noise"):  # stratified: every split holds both labels
        assert {r["split"] for r in rows if r["label"] == label} == {"train", "val", "test"}
    share = {name: sum(r["split"] == name for r in rows) / len(rows) for name in ("train", "val", "test")}
    assert share == pytest.approx({"train": 0.5, "val": 0.1, "test": 0.4}, abs=0.04)  # synth.SPLIT_SHARES


def test_pool_splits_and_a_change_of_splits_rebuilds(tmp_path):
    """The teacher's pool trains on 70 %; asking the same folder for other shares re-splits it, same audio."""
    out = synth.make_default_dataset(tmp_path / "pool", n_clips=40, seed=2, splits=synth.POOL_SPLIT_SHARES,
                                     progress=False)
    _, rows = read_csv(out / "labels.csv")
    assert sum(r["split"] == "train" for r in rows) / 40 == pytest.approx(0.7, abs=0.05)
    wav = (out / rows[0]["path"]).read_bytes()
    synth.make_default_dataset(out, n_clips=40, seed=2, progress=False)
    _, rows2 = read_csv(out / "labels.csv")
    assert sum(r["split"] == "test" for r in rows2) / 40 == pytest.approx(0.4, abs=0.05)
    assert (out / rows[0]["path"]).read_bytes() == wav
    assert json.loads((out / "synth.json").read_text())["splits"] == {"val": 0.1, "test": 0.4}


def test_csv_and_wav_writers_are_atomic_and_exact(tmp_path):
    path = common.write_csv(tmp_path / "t.csv", ["a", "b"], [["x,y", 1], ["", "é"]])
    assert path.read_bytes() == 'a,b\n"x,y",1\n,é\n'.encode()
    x = 0.5 * np.sin(np.arange(800) / 5.0)
    common.write_wav(tmp_path / "t.wav", x, SR)
    y, sr = sf.read(tmp_path / "t.wav", dtype="int16")
    assert sr == SR and sf.info(str(tmp_path / "t.wav")).subtype == "PCM_16"
    assert np.abs(y / 32768.0 - x).max() < 1.0 / 32768
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.wav"]  # no temp files left


def test_deal_splits_gives_shares_in_order_then_train():
    shares = (("val", 0.10), ("test", 0.40))
    assert common.deal_splits(10, shares, at_least=1) == ["val"] + ["test"] * 4 + ["train"] * 5
    assert common.deal_splits(2, shares, at_least=1) == ["val", "test"]
    assert common.deal_splits(2, shares, at_least=0) == ["test", "train"]
    assert common.deal_splits(0, shares, at_least=1) == []


def test_truth_csv_consistent_with_labels(built):
    columns, truth = read_csv(built / "truth.csv")
    assert columns == TRUTH_COLUMNS
    _, labels = read_csv(built / "labels.csv")
    assert [t["clip_id"] for t in truth] == [r["clip_id"] for r in labels]
    assert [t["label"] for t in truth] == [r["label"] for r in labels]
    for t in truth:
        assert t["source_type"] in synth.SOURCE_TYPES
        assert t["noise_type"] in synth.NOISE_TYPES + ("none",)
        p = float(t["p_noise_annotator"])
        if t["noise_type"] == "none":
            assert t["snr_db"] == "" and p == pytest.approx(synth.P_NOISE_NONE)
        else:
            snr = float(t["snr_db"])
            assert synth.SNR_RANGE_DB[0] <= snr <= synth.SNR_RANGE_DB[1]
            assert p == pytest.approx(synth.annotator_p_noise(t["noise_type"], snr), abs=1e-6)
    assert {t["source_type"] for t in truth} == set(synth.SOURCE_TYPES)
    assert {t["noise_type"] for t in truth} == set(synth.NOISE_TYPES) | {"none"}


def test_annotator_monotonic_and_centred():
    snr = np.linspace(-10, 40, 201)
    for noise_type, (boundary, width) in synth.ANNOTATOR.items():
        p = synth.annotator_p_noise(noise_type, snr)
        assert np.all(np.diff(p) < 0)
        assert synth.annotator_p_noise(noise_type, boundary) == pytest.approx(0.5)
        assert synth.annotator_p_noise(noise_type, -5.0) > 0.95 and synth.annotator_p_noise(noise_type, 30.0) < 0.05
        assert 2.0 <= width <= 3.5
    assert synth.ANNOTATOR["clicks"][0] > synth.ANNOTATOR["white"][0] > synth.ANNOTATOR["hum"][0]
    assert synth.annotator_p_noise("none", 5.0) == synth.P_NOISE_NONE
    assert synth.annotator_p_noise("none", float("nan")) == synth.P_NOISE_NONE
    with pytest.raises(ValueError):
        synth.annotator_p_noise("thunder", 10.0)
    with pytest.raises(ValueError):
        synth.annotator_p_noise("white", float("nan"))


def test_default_mix_is_balanced_and_covers_all_types():
    """Over the default 2000 clips (specs only, no audio), both classes hold 35-65%."""
    specs = [synth.draw_spec(np.random.default_rng([0, 0, i])) for i in range(2000)]
    noisy = np.mean([s.label == "noise" for s in specs])
    assert 0.35 <= noisy <= 0.65
    counts = {t: sum(s.noise_type == t for s in specs) for t in synth.NOISE_TYPES + ("none",)}
    assert 0.2 <= counts["none"] / 2000 <= 0.3
    assert all(counts[t] >= 150 for t in synth.NOISE_TYPES)


def test_wavs_load_with_correct_length_and_no_clipping(built):
    _, rows = read_csv(built / "labels.csv")
    _, truth = read_csv(built / "truth.csv")
    for r, t in zip(rows, truth):
        path = built / r["path"]
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        wave = load_audio(path, SR).numpy()
        assert wave.shape == (2 * SR,)
        assert np.isfinite(wave).all()
        peak = np.abs(wave).max()
        assert 10 ** (-20.5 / 20) < peak < 10 ** (-0.9 / 20)  # normalised to -20..-1 dBFS, never clips
        if t["noise_type"] != "clicks":  # loud clicks may push the rest below 1 LSB, as in real life
            assert longest_zero_run(wave) < 0.005 * SR, "digital silence would be a shortcut to 'clean'"


def test_generators_are_finite_and_sized():
    for name, gen in {**signals.SOURCES, **signals.NOISES}.items():
        x = gen(np.random.default_rng(7), 12345, SR)
        assert x.shape == (12345,) and np.isfinite(x).all() and np.mean(x**2) > 0, name


def test_idempotent_and_regenerates_on_new_params(tmp_path):
    out = synth.make_default_dataset(tmp_path / "d", n_clips=12, seed=3, progress=False)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert synth.make_default_dataset(out, n_clips=12, seed=3, progress=False) == out
    assert {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()} == mtimes
    # other parameters -> rebuilt, and the old seed's clips are removed
    synth.make_default_dataset(out, n_clips=10, seed=4, progress=False)
    _, rows = read_csv(out / "labels.csv")
    assert len(rows) == 10 and all(r["clip_id"].startswith("s4_") for r in rows)
    assert sorted(p.name for p in (out / "audio").iterdir()) == sorted(f"{r['clip_id']}.wav" for r in rows)
    # a missing clip means the build is incomplete -> regenerated
    (out / rows[0]["path"]).unlink()
    synth.make_default_dataset(out, n_clips=10, seed=4, progress=False)
    assert (out / rows[0]["path"]).is_file()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        synth.make_default_dataset(tmp_path / "x", n_clips=0, progress=False)
    with pytest.raises(ValueError):
        synth.make_default_dataset(tmp_path / "x", seed=-1, progress=False)
    with pytest.raises(ValueError, match="splits"):
        synth.make_default_dataset(tmp_path / "x", n_clips=10, splits=(("val", 0.5), ("test", 0.5)), progress=False)


def test_parallel_build_from_an_unguarded_script_says_what_to_do(tmp_path):
    """Spawned workers re-import the calling script; without a __main__ guard they die, and the error says why."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "build.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(root)!r})\n"
                      "from mark2_lib.builders import synth\n"
                      f"synth.make_default_dataset({str(tmp_path / 'd')!r}, n_clips=200, workers=2, progress=False)\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert 'if __name__ == "__main__":' in res.stderr and "workers=1" in res.stderr
