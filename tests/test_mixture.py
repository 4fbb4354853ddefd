"""Tests for mixtures.make_mixture_dataset: SNR accuracy, determinism, speaker-disjoint splits, bad input."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from mark2_lib.builders import mixtures, synth
from mark2_lib.errors import CorpusError, DataError

SR = 16000


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tone(path, freq, seconds=3.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), amp * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """12 clean tone files of 8 speakers (some at 22.05 kHz) and two noise files."""
    root = tmp_path_factory.mktemp("sources")
    clean, speakers = [], []
    for k in range(12):
        sr = 22050 if k % 3 == 0 else SR
        clean.append(tone(root / f"clean_{k}.wav", 300 + 40 * k, seconds=1.5 + 0.1 * k, sr=sr))
        speakers.append(f"spk{k % 8}")
    noise = {tone(root / "hiss.wav", 3000, seconds=0.7): "white", tone(root / "buzz.wav", 5000): "hum"}
    return clean, speakers, noise


def test_snr_of_written_mixtures_is_within_half_a_db(tmp_path):
    # One 440 Hz talker, one 3 kHz noise recording (longer than the 1 s clip): both land exactly
    # on FFT bins, so the SNR can be read back from the written 16-bit WAVs.
    clean = [tone(tmp_path / f"c{k}.wav", 440) for k in range(3)]
    noise = {tone(tmp_path / "n.wav", 3000): "white"}
    out = mixtures.make_mixture_dataset(clean, noise, tmp_path / "mix", snr_range=(-5, 30), seed=3, n_clips=40,
                                     clip_seconds=1.0, synthetic_noises=(), babble=False, progress=False)
    checked = 0
    for row in read_rows(out / "truth.csv"):
        if row["noise_type"] == "none":
            assert row["snr_db"] == ""
            continue
        x, sr = sf.read(out / "audio" / f"{row['clip_id']}.wav")
        spec = np.abs(np.fft.rfft(x))
        measured = 20 * math.log10(spec[440] / spec[3000])
        assert abs(measured - float(row["snr_db"])) < 0.5, row
        checked += 1
    assert checked >= 20
    snrs = [float(r["snr_db"]) for r in read_rows(out / "truth.csv") if r["snr_db"]]
    assert min(snrs) >= -5 and max(snrs) <= 30 and max(snrs) - min(snrs) > 15


def test_same_seed_same_bytes_other_seed_differs(tmp_path, sources):
    clean, speakers, noise = sources
    kw = dict(n_clips=30, clip_seconds=1.0, speakers=speakers, progress=False)
    a = mixtures.make_mixture_dataset(clean, noise, tmp_path / "a", seed=5, **kw)
    b = mixtures.make_mixture_dataset(list(reversed(clean)), dict(reversed(list(noise.items()))), tmp_path / "b",
                                   seed=5, **{**kw, "speakers": list(reversed(speakers))})
    c = mixtures.make_mixture_dataset(clean, noise, tmp_path / "c", seed=6, **kw)
    for name in ("labels.csv", "truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    wavs = lambda d: {p.name: p.read_bytes() for p in sorted((d / "audio").glob("*.wav"))}  # noqa: E731
    assert wavs(a) == wavs(b) and len(wavs(a)) == 30
    assert wavs(a) != {k.replace("m6", "m5"): v for k, v in wavs(c).items()}
    before = {p: p.stat().st_mtime_ns for p in (a / "audio").iterdir()}
    mixtures.make_mixture_dataset(clean, noise, a, seed=5, **kw)  # complete build: nothing rewritten
    assert before == {p: p.stat().st_mtime_ns for p in (a / "audio").iterdir()}


def test_splits_are_speaker_disjoint_including_babble(tmp_path, sources):
    clean, speakers, noise = sources
    out = mixtures.make_mixture_dataset(clean, noise, tmp_path / "mix", seed=1, n_clips=80, clip_seconds=1.0,
                                     speakers=speakers, progress=False)
    rows = read_rows(out / "truth.csv")
    labels = {r["clip_id"]: r for r in read_rows(out / "labels.csv")}
    speaker_of = {Path(f).name: s for f, s in zip(clean, speakers)}
    split_of_speaker = {}
    for r in rows:
        assert labels[r["clip_id"]]["split"] == r["split"] and labels[r["clip_id"]]["label"] == r["label"]
        assert split_of_speaker.setdefault(r["speaker"], r["split"]) == r["split"], r["speaker"]
        assert {speaker_of[f] for f in r["clean_files"].split("+")} == {r["speaker"]}
    assert set(split_of_speaker.values()) == {"train", "val", "test"}
    babble = [r for r in rows if r["noise_type"] == "babble"]
    assert babble, "no babble clip drawn"
    for r in babble:
        talkers = r["noise_source"].split("+")
        assert r["speaker"] not in talkers and len(talkers) >= 3
        assert {split_of_speaker.get(t, mixtures.split_groups(speakers, 1)[t]) for t in talkers} == {r["split"]}
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 56, "val": 12, "test": 12}
    kinds = {r["noise_type"] for r in rows}
    assert {"none", "babble", "white", "hum"} <= kinds and kinds - {"none", "babble"} <= set(synth.NOISE_TYPES)


def test_without_speakers_each_file_is_its_own_group(tmp_path, sources):
    clean, _, noise = sources
    out = mixtures.make_mixture_dataset(clean, noise, tmp_path / "mix", seed=2, n_clips=40, clip_seconds=1.0,
                                     progress=False)
    split_of = {}
    for r in read_rows(out / "truth.csv"):
        assert r["speaker"] == str(Path(r["clean_files"]))  # relative to the inputs' common folder
        assert split_of.setdefault(r["speaker"], r["split"]) == r["split"]


def test_bad_input_is_refused(tmp_path, sources):
    clean, speakers, noise = sources
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not make"):
        mixtures.make_mixture_dataset(clean, noise, foreign, n_clips=4, progress=False)
    with pytest.raises(ValueError, match="unknown noise class"):
        mixtures.make_mixture_dataset(clean, {clean[0]: "thunder"}, tmp_path / "x", n_clips=4, progress=False)
    with pytest.raises(ValueError, match="at least 3 speakers"):
        mixtures.make_mixture_dataset(clean, noise, tmp_path / "y", speakers=["a", "b"] * 6, n_clips=4, progress=False)
    empty = [tmp_path / f"empty{k}.wav" for k in range(3)]
    for e in empty:
        e.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\d\.wav: file is empty"):
        mixtures.make_mixture_dataset(empty, noise, tmp_path / "z", n_clips=4, progress=False)
    silent = [tone(tmp_path / f"silent{k}.wav", 440, amp=0.0) for k in range(3)]
    with pytest.raises(DataError, match=r"silent\d\.wav: empty, silent or non-finite"):
        mixtures.make_mixture_dataset(silent, noise, tmp_path / "s", n_clips=4, progress=False)


def test_read_recording_mixes_to_mono_and_resamples(tmp_path):
    t = np.arange(22050) / 22050
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)], axis=1)
    sf.write(str(tmp_path / "st.wav"), stereo, 22050, subtype="FLOAT")
    x = mixtures.read_recording(tmp_path / "st.wav", SR)
    assert x.dtype == np.float64 and len(x) == SR
    mono = stereo.astype(np.float32).astype(np.float64).mean(axis=1)  # as written (float32), then mixed
    assert np.array_equal(x, resample_poly(mono, 320, 441))  # 22050 -> 16000 Hz


def test_copyright_licences(tmp_path):
    from mark2_lib.builders import packages as corpus

    dep5 = tmp_path / "copyright"
    dep5.write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                    "Files: *\nCopyright: 2016 Someone\nLicense: MIT\n\n"
                    "Files: etc/samples/vinyl_hiss.flac\nCopyright: 2011 veezay\nLicense: CC0\n")
    assert corpus.copyright_licences(dep5, ["vinyl_hiss.flac", "loop_electric.flac"]) == [
        "vinyl_hiss.flac: CC0 (2011 veezay)", "loop_electric.flac: MIT (2016 Someone)"]
    assert corpus.copyright_licences(dep5) == ["CC0", "MIT"]
    gpl = tmp_path / "gpl"
    gpl.write_text("Copyright:\n\n   under the terms of the GNU General Public License as published by\n"
                   "   the Free Software Foundation; version 2 dated June, 1991.\n")
    assert corpus.copyright_licences(gpl) == ["GPL-2"]


def test_corpus_without_apt_gives_a_clear_error(tmp_path, monkeypatch):
    from mark2_lib.builders import packages as corpus

    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get on PATH
    with pytest.raises(CorpusError, match="apt-get.*not found"):
        corpus.fetch_packages(tmp_path / "pkgs", packages=["kajongg"], progress=False)


def test_transfer_clips_leave_the_labelled_clips_unchanged(tmp_path, sources):
    clean, speakers, noise = sources
    kw = dict(seed=4, n_clips=20, clip_seconds=1.0, speakers=speakers, progress=False)
    plain = mixtures.make_mixture_dataset(clean, noise, tmp_path / "plain", **kw)
    both = mixtures.make_mixture_dataset(clean, noise, tmp_path / "both", n_transfer=12, **kw)
    labels = read_rows(both / "labels.csv")
    assert labels[:20] == read_rows(plain / "labels.csv")
    assert all((plain / r["path"]).read_bytes() == (both / r["path"]).read_bytes() for r in labels[:20])
    transfer = labels[20:]
    assert len(transfer) == 12 and {r["label"] for r in transfer} == {""} and {r["split"] for r in transfer} == {"train"}
    train = {r["speaker"] for r in read_rows(both / "truth.csv")[:20] if r["split"] == "train"}
    split_of = mixtures.split_groups(speakers, 4)
    assert all(split_of[r["speaker"]] == "train" for r in read_rows(both / "truth.csv")[20:]) and train
    again = mixtures.make_mixture_dataset(clean, noise, tmp_path / "both", n_transfer=12, **kw)  # complete: reused
    assert again == both and len(read_rows(again / "labels.csv")) == 32
