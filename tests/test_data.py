"""Tests for mark2_lib.data: labels.csv, soft labels, the feature cache and the dataset."""
import csv
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from mark2_lib import audio, data
from mark2_lib.audio import AudioConfig
from mark2_lib.data import DataError

CFG = AudioConfig()
HEADER = ["clip_id", "path", "label"]


# ----------------------------------------------------------------------------- fixtures

def write_wav(path, seconds=1.0, sr=16000, channels=1, subtype="PCM_16", seed=0):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * sr), channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def folder(tmp_path):
    """make(n, labels, splits, seconds) -> labels.csv beside audio/c<i>.wav; rows in `make.rows`."""
    root = tmp_path / "set"

    def make(n=6, labels=None, splits=None, seconds=None):
        labels = labels if labels is not None else [i % 2 for i in range(n)]
        make.rows = []
        for i in range(n):
            write_wav(root / "audio" / f"c{i}.wav", seconds=seconds[i] if seconds else 1.0, seed=i)
            make.rows.append([f"c{i}", f"audio/c{i}.wav", labels[i]] + ([splits[i]] if splits else []))
        make.header = HEADER + (["split"] if splits else [])
        return make.write()

    make.write = lambda: write_csv(root / "labels.csv", make.header, make.rows)
    make.root = root
    return make


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("text,label", [("0", 0), ("1", 1), (0, 0), (1, 1), (np.int64(1), 1), ("clean", 0),
                                        (" Noise ", 1), ("CLEAN", 0), ("noise\t", 1), (" 1 ", 1)])
def test_parse_label(text, label):
    assert data.parse_label(text) == label


@pytest.mark.parametrize("text", ["2", "-1", "", "yes", "noisy", "0.0", 2, True, None])
def test_parse_label_unknown(text):
    with pytest.raises(DataError, match="unknown label"):
        data.parse_label(text)


def test_reexported_error():
    assert data.DataError is audio.DataError


def test_load_labels_basic(folder):
    folder(6, labels=["clean", "noise", "0", "1", "Clean", "NOISE"], splits=["train", "Train", "val", "val", "test", "test"])
    m = data.load_labels(folder.root / "labels.csv")
    assert len(m) == 6 and m.clip_ids == [f"c{i}" for i in range(6)]
    assert m.root == folder.root.resolve()
    assert list(m.df.columns) == ["clip_id", "path", "label", "split", "row"]
    assert m.df["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert m.df["split"].tolist() == ["train", "train", "val", "val", "test", "test"]
    assert m.df["row"].tolist() == [2, 3, 4, 5, 6, 7]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in m.df["path"])
    assert m.skipped == []
    assert m.split("val").clip_ids == ["c2", "c3"] and len(m.split("train")) == 2
    with pytest.raises(ValueError):
        m.split("dev")


def test_row_numbers_count_blank_lines_and_bom(folder):
    csv_path = folder(3)
    text = csv_path.read_text().replace("\r\n", "\n").splitlines()
    csv_path.write_text("\ufeff" + text[0] + "\n\n" + text[1] + "\n\n\n" + "\n".join(text[2:]) + "\n")
    m = data.load_labels(csv_path)
    assert m.df["row"].tolist() == [3, 6, 7]


def test_absolute_path_inside_folder_is_fine(folder):
    folder(4)
    folder.rows[0][1] = str((folder.root / "audio" / "c0.wav").resolve())
    m = data.load_labels(folder.write())
    assert m.df["path"][0] == str((folder.root / "audio" / "c0.wav").resolve())


def test_stereo_and_44k_files_load(folder):
    folder(4)
    write_wav(folder.root / "audio" / "c0.wav", sr=44100, channels=2)
    write_wav(folder.root / "audio" / "c1.wav", sr=22050, channels=1, subtype="FLOAT")
    write_wav(folder.root / "audio" / "c2.wav", sr=48000, channels=2, subtype="PCM_24")
    assert len(data.load_labels(folder.root / "labels.csv")) == 4


def _cut(path, n):
    path.write_bytes(path.read_bytes()[:-n])


def _nan_wav(path):
    x = np.zeros(16000, np.float32)
    x[10] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")


# name -> (change the folder, words the message must contain, row of the bad line)
BAD_ROWS = {
    "missing audio": (lambda f: (f.root / "audio/c2.wav").unlink(), ["not found", "c2.wav"], 4),
    "empty audio": (lambda f: (f.root / "audio/c2.wav").write_bytes(b""), ["empty", "c2.wav"], 4),
    "header only": (lambda f: (f.root / "audio/c2.wav").write_bytes((f.root / "audio/c2.wav").read_bytes()[:44]),
                    ["0 samples", "c2.wav"], 4),
    "truncated 1 byte": (lambda f: _cut(f.root / "audio/c2.wav", 1), ["truncated", "c2.wav"], 4),
    "truncated 1000 bytes": (lambda f: _cut(f.root / "audio/c2.wav", 1000), ["truncated", "c2.wav"], 4),
    "not audio": (lambda f: (f.root / "audio/c2.wav").write_text("hello, world\n"), ["not a readable audio", "c2.wav"], 4),
    "nan samples": (lambda f: _nan_wav(f.root / "audio/c2.wav"), ["NaN", "c2.wav"], 4),
    "duplicate clip_id": (lambda f: f.rows[4].__setitem__(0, "c1"), ["duplicate", "rows 3 and 6"], 6),
    "unknown label": (lambda f: f.rows[2].__setitem__(2, "maybe"), ["unknown label", "maybe"], 4),
    "empty clip_id": (lambda f: f.rows[2].__setitem__(0, " "), ["empty clip_id"], 4),
    "empty path": (lambda f: f.rows[2].__setitem__(1, ""), ["empty path"], 4),
    "dotdot escape": (lambda f: f.rows[2].__setitem__(1, "../outside.wav"), ["outside", "../outside.wav"], 4),
    "absolute outside": (lambda f: f.rows[2].__setitem__(1, str(f.root.parent / "outside.wav")), ["outside"], 4),
    "symlink escape": (lambda f: ((f.root / "audio/c2.wav").unlink(),
                                  (f.root / "audio/c2.wav").symlink_to(f.root.parent / "outside.wav")), ["outside"], 4),
    "extra fields": (lambda f: f.rows[2].extend(["x", "y"]), ["fields"], 4),
}


def _break(folder, case):
    folder(6)
    write_wav(folder.root.parent / "outside.wav")
    change, words, row = BAD_ROWS[case]
    change(folder)
    return folder.write(), words, row


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_raises_naming_csv_and_row(folder, case):
    csv_path, words, row = _break(folder, case)
    with pytest.raises(DataError) as e:
        data.load_labels(csv_path)
    msg = str(e.value)
    assert str(csv_path) in msg and f"row {row} (clip_id " in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_skipped(folder, case, capsys):
    csv_path, words, row = _break(folder, case)
    m = data.load_labels(csv_path, on_error="skip")
    assert len(m) == 5 and [s["row"] for s in m.skipped] == [row]
    assert set(m.skipped[0]) == {"row", "clip_id", "path", "reason"}
    assert all(w in m.skipped[0]["reason"] for w in words)
    out = capsys.readouterr().out
    assert "skipped 1 of 6 rows" in out and f"row {row} (clip_id" in out


def test_skip_reports_every_row(folder, capsys):
    folder(8)
    (folder.root / "audio/c1.wav").unlink()
    folder.rows[3][2] = "loud"
    folder.rows[5][0] = "c0"
    m = data.load_labels(folder.write(), on_error="skip")
    assert m.clip_ids == ["c0", "c2", "c4", "c6", "c7"]
    assert [(s["row"], s["clip_id"]) for s in m.skipped] == [(3, "c1"), (5, "c3"), (7, "c0")]
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("skipped 3 of 8 rows:") and len(out) == 4
    assert "audio file not found" in out[1] and "unknown label 'loud'" in out[2] and "duplicate" in out[3]


def test_all_rows_skipped_is_an_error(folder):
    folder(2)
    folder.rows = [[r[0], r[1], "?"] for r in folder.rows]
    with pytest.raises(DataError, match="no usable rows"):
        data.load_labels(folder.write(), on_error="skip")


def test_check_audio_off_still_needs_the_file(folder):
    folder(4)
    (folder.root / "audio/c1.wav").write_text("not audio")
    assert len(data.load_labels(folder.root / "labels.csv", check_audio=False)) == 4
    (folder.root / "audio/c1.wav").unlink()
    with pytest.raises(DataError, match="not found"):
        data.load_labels(folder.root / "labels.csv", check_audio=False)


def test_missing_columns(folder):
    folder(3)
    write_csv(folder.root / "labels.csv", ["clip_id", "file"], [["c0", "audio/c0.wav"]])
    with pytest.raises(DataError) as e:
        data.load_labels(folder.root / "labels.csv")
    assert "labels.csv" in str(e.value) and "path, label" in str(e.value)


def test_empty_and_missing_csv(tmp_path):
    (tmp_path / "labels.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        data.load_labels(tmp_path / "labels.csv")
    with pytest.raises(DataError, match="not found"):
        data.load_labels(tmp_path / "nope.csv")


def test_unknown_and_partial_split(folder):
    folder(4, splits=["train", "val", "dev", "test"])
    with pytest.raises(DataError, match=r"row 4 \(clip_id 'c2'\): unknown split 'dev'"):
        data.load_labels(folder.root / "labels.csv")
    folder(4, splits=["train", "", "val", ""])
    with pytest.raises(DataError, match=r"labels.csv: the split column is empty on row\(s\) 3, 5"):
        data.load_labels(folder.root / "labels.csv", on_error="skip")


def test_bad_on_error(folder):
    folder(2)
    with pytest.raises(ValueError, match="on_error"):
        data.load_labels(folder.root / "labels.csv", on_error="ignore")


def _splits(m):
    return dict(zip(m.df["clip_id"], m.df["split"]))


def test_auto_split_deterministic_stratified_and_order_free(folder):
    labels = [0] * 20 + [1] * 10
    csv_path = folder(30, labels=labels)
    a = data.load_labels(csv_path, check_audio=False)
    assert _splits(a) == _splits(data.load_labels(csv_path, check_audio=False))
    folder.rows = folder.rows[::-1]  # same clips, another row order
    assert _splits(a) == _splits(data.load_labels(folder.write(), check_audio=False))
    counts = a.df.groupby(["label", "split"]).size().to_dict()
    assert counts == {(0, "train"): 14, (0, "val"): 3, (0, "test"): 3,
                      (1, "train"): 6, (1, "val"): 2, (1, "test"): 2}
    assert _splits(a) != _splits(data.load_labels(csv_path, check_audio=False, split_seed=1))
    no_test = data.load_labels(csv_path, check_audio=False, test_fraction=0)
    assert set(no_test.df["split"]) == {"train", "val"}


@pytest.mark.parametrize("n_per_class", [3, 4, 7])
def test_auto_split_small_sets_fill_every_split(folder, n_per_class):
    folder(2 * n_per_class)
    m = data.load_labels(folder.root / "labels.csv", check_audio=False)
    for name in data.SPLITS:
        assert set(m.split(name).df["label"]) == {0, 1}


def test_auto_split_when_split_column_empty(folder):
    folder(12, splits=[""] * 12)
    assert set(data.load_labels(folder.root / "labels.csv").df["split"]) == set(data.SPLITS)


# ----------------------------------------------------------------------------- soft labels

SOFT = ["clip_id", "segment", "teacher", "p_clean", "p_noise"]


def test_soft_labels_probabilities_and_segments(tmp_path):
    f = write_csv(tmp_path / "t.csv", SOFT, [["a", "", "", 0.25, 0.75], ["a", 0, "", 0.5, 0.5],
                                              ["a", "2.0", "", 0.9, 0.1], ["b", "", "", 1, 0]])
    s = data.load_soft_labels(f)
    np.testing.assert_allclose(s.clip["a"], [0.25, 0.75])
    np.testing.assert_allclose(s.clip["b"], [1, 0])
    assert sorted(s.segment["a"]) == [0, 2] and "b" not in s.segment
    np.testing.assert_allclose(s.segment["a"][2], [0.9, 0.1])
    assert s.teachers == ["t"] and s.source == [str(f)]
    assert s.has_clip("a") and not s.has_clip("zzz")
    r = s.restrict(["b"])
    assert list(r.clip) == ["b"] and r.segment == {}


def test_soft_labels_logits(tmp_path):
    f = write_csv(tmp_path / "t.csv", ["clip_id", "logit_clean", "logit_noise"], [["a", 0.0, np.log(3)], ["b", 1000, -1000]])
    s = data.load_soft_labels(f)
    np.testing.assert_allclose(s.clip["a"], [0.25, 0.75])
    np.testing.assert_allclose(s.clip["b"], [1, 0])


def test_soft_labels_average_teachers_and_files(tmp_path):
    one = write_csv(tmp_path / "one.csv", SOFT, [["a", "", "big", 0.2, 0.8], ["a", "", "small", 0.4, 0.6],
                                                  ["b", "", "big", 0.9, 0.1], ["a", 1, "big", 0, 1]])
    two = write_csv(tmp_path / "two.csv", ["clip_id", "p_clean", "p_noise"], [["a", 0.0, 1.0], ["c", 0.5, 0.5]])
    s = data.load_soft_labels([one, two])
    np.testing.assert_allclose(s.clip["a"], [0.2, 0.8])  # mean of 0.8, 0.6 and 1.0
    np.testing.assert_allclose(s.clip["b"], [0.9, 0.1])  # only one teacher covers b
    np.testing.assert_allclose(s.segment["a"][1], [0, 1])
    assert s.teachers == ["big", "small", "two"] and s.source == [str(one), str(two)]


def test_soft_labels_clips_without_labels_stay_absent(folder, tmp_path):
    m = data.load_labels(folder(4))
    s = data.load_soft_labels(write_csv(tmp_path / "t.csv", SOFT, [["c1", "", "", 0.5, 0.5]]), m)
    assert list(s.clip) == ["c1"]


BAD_SOFT = {
    "negative": (["c2", "", "", -0.1, 1.1], "negative"),
    "nan": (["c2", "", "", "nan", 0.5], "finite"),
    "inf": (["c2", "", "", 0.5, "inf"], "finite"),
    "sum": (["c2", "", "", 0.5, 0.6], "must be 1"),
    "text": (["c2", "", "", "high", 0.5], "numbers"),
    "empty prob": (["c2", "", "", "", 0.5], "numbers"),
    "unknown clip": (["zz", "", "", 0.5, 0.5], "not in the labels manifest"),
    "duplicate": (["c0", "", "", 0.3, 0.7], "duplicate soft label for the whole clip"),
    "duplicate segment": (["c0", "1", "", 0.3, 0.7], "duplicate soft label for segment 1"),
    "bad segment": (["c2", "-1", "", 0.5, 0.5], "segment"),
    "fractional segment": (["c2", "1.5", "", 0.5, 0.5], "segment"),
    "empty clip_id": (["", "", "", 0.5, 0.5], "empty clip_id"),
}


@pytest.mark.parametrize("case", list(BAD_SOFT))
def test_bad_soft_label_rows(folder, tmp_path, case, capsys):
    m = data.load_labels(folder(3), check_audio=False)
    row, word = BAD_SOFT[case]
    rows = [["c0", "", "", 0.5, 0.5], ["c0", "1", "", 0.5, 0.5], row, ["c1", "", "", 0.1, 0.9]]
    f = write_csv(tmp_path / "teach.csv", SOFT, rows)
    with pytest.raises(DataError) as e:
        data.load_soft_labels(f, m)
    assert f"{f} row 4 (clip_id " in str(e.value) and word in str(e.value), str(e.value)
    if case.startswith("duplicate"):
        assert "row 2" in str(e.value) or "row 3" in str(e.value)
    s = data.load_soft_labels(f, m, on_error="skip")
    assert [x["row"] for x in s.skipped] == [4] and word in s.skipped[0]["reason"]
    assert s.skipped[0]["file"] == str(f) and "c1" in s.clip
    assert "skipped 1 of 4 rows" in capsys.readouterr().out


@pytest.mark.parametrize("p_noise,ok", [(0.5009, True), (0.4991, True), (0.5011, False), (0.4989, False)])
def test_soft_label_sum_tolerance_is_1e_3(tmp_path, p_noise, ok, capsys):
    """data/README.md: p_clean + p_noise must be 1 within 1e-3; just inside is renormalised, just outside refused."""
    f = write_csv(tmp_path / "teach.csv", SOFT, [["a", "", "", 0.5, 0.5], ["b", "", "", 0.5, p_noise]])
    if ok:
        s = data.load_soft_labels(f)
        np.testing.assert_allclose(s.clip["b"], np.array([0.5, p_noise]) / (0.5 + p_noise), rtol=0, atol=1e-15)
        return
    with pytest.raises(DataError) as e:
        data.load_soft_labels(f)
    assert f"{f} row 3 (clip_id 'b'): " in str(e.value) and "must be 1 (within 1e-3)" in str(e.value), str(e.value)
    s = data.load_soft_labels(f, on_error="skip")
    assert [(x["file"], x["row"], x["clip_id"]) for x in s.skipped] == [(str(f), 3, "b")] and list(s.clip) == ["a"]


def test_duplicate_across_files_same_teacher(tmp_path):
    one = write_csv(tmp_path / "one.csv", SOFT, [["a", "", "T", 0.5, 0.5]])
    two = write_csv(tmp_path / "two.csv", SOFT, [["b", "", "T", 0.5, 0.5], ["a", "", "T", 0.1, 0.9]])
    with pytest.raises(DataError, match=f"{two} row 3 .*also {one} row 2"):
        data.load_soft_labels([one, two])


@pytest.mark.parametrize("header,word", [(["id", "p_clean", "p_noise"], "clip_id"),
                                         (["clip_id", "p_clean", "p_noise", "logit_clean", "logit_noise"], "both"),
                                         (["clip_id", "p_noise"], "needs one"),
                                         (["clip_id", "teacher"], "needs one")])
def test_bad_soft_label_columns(tmp_path, header, word):
    f = write_csv(tmp_path / "t.csv", header, [["a"] + [0.5] * (len(header) - 1)])
    with pytest.raises(DataError, match=word) as e:
        data.load_soft_labels(f)
    assert str(f) in str(e.value)


def test_soft_labels_for_skipped_clips_are_dropped(folder, tmp_path, capsys):
    folder(4)
    (folder.root / "audio/c3.wav").unlink()
    m = data.load_labels(folder.root / "labels.csv", on_error="skip")
    s = data.load_soft_labels(write_csv(tmp_path / "t.csv", SOFT, [["c3", "", "", 0.5, 0.5], ["c0", "", "", 1, 0]]), m)
    assert list(s.clip) == ["c0"] and "ignored 1 row" in capsys.readouterr().out


def test_write_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c"]
    p = rng.uniform(0, 1, 3)
    segs = [rng.uniform(0, 1, k) for k in (1, 3, 2)]
    out = data.write_soft_labels(tmp_path / "soft" / "teacher.csv", ids, p, segs, teacher="big")
    assert [x.name for x in out.parent.iterdir()] == ["teacher.csv"]  # no temp file left
    s = data.load_soft_labels(out)
    assert s.teachers == ["big"]
    for i, c in enumerate(ids):
        np.testing.assert_allclose(s.clip[c], [1 - p[i], p[i]], atol=1e-6)
        assert sorted(s.segment[c]) == list(range(len(segs[i])))
        for k, q in enumerate(segs[i]):
            np.testing.assert_allclose(s.segment[c][k], [1 - q, q], atol=1e-6)
    data.write_soft_labels(out, ["a"], [0.5])  # overwrite, clip rows only
    assert data.load_soft_labels(out).segment == {}
    with pytest.raises(ValueError):
        data.write_soft_labels(out, ["a"], [1.5])
    with pytest.raises(ValueError):
        data.write_soft_labels(out, ["a", "b"], [0.5])


# ----------------------------------------------------------------------------- feature cache

@pytest.fixture
def counted(monkeypatch):
    """Counts calls to audio.clip_features."""
    calls = []
    real = audio.clip_features
    monkeypatch.setattr(audio, "clip_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_cache_computes_once(folder, tmp_path, counted, capsys):
    m = data.load_labels(folder(4, seconds=[1.0, 2.0, 0.3, 1.6]))
    cache = data.FeatureCache(tmp_path / "cache", CFG)
    first = cache.features(m, progress=False)
    assert len(counted) == 4 and "0 of 4 clips cached" in capsys.readouterr().out
    second = cache.features(m, progress=False)
    assert len(counted) == 4 and "4 of 4 clips cached" in capsys.readouterr().out
    for c in m.clip_ids:
        assert isinstance(second[c], np.memmap) and second[c].dtype == np.float32
        assert not second[c].flags.writeable
        np.testing.assert_array_equal(first[c], second[c])
    assert [first[c].shape[0] for c in m.clip_ids] == [1, 3, 1, 3]
    files = sorted(p.name for p in (tmp_path / "cache" / CFG.key()).iterdir())
    assert len(files) == 5 and "audio_config.json" in files and not any(f.endswith(".tmp") for f in files)


def test_cache_equals_direct_features(folder, tmp_path):
    m = data.load_labels(folder(2))
    write_wav(folder.root / "audio/c1.wav", seconds=1.3, sr=44100, channels=2)
    feats = data.FeatureCache(tmp_path / "cache", CFG).features(m, progress=False)
    for c, p in zip(m.df["clip_id"], m.df["path"]):
        direct = audio.clip_features(audio.load_audio(p, CFG.sample_rate), CFG).numpy()
        np.testing.assert_allclose(feats[c], direct, rtol=0, atol=1e-5)


def test_cache_recomputes_changed_file_only(folder, tmp_path, counted):
    m = data.load_labels(folder(3))
    cache = data.FeatureCache(tmp_path / "cache", CFG)
    before = cache.features(m, progress=False)
    write_wav(folder.root / "audio/c1.wav", seed=99)
    after = cache.features(m, progress=False)
    assert len(counted) == 4
    np.testing.assert_array_equal(before["c0"], after["c0"])
    assert not np.array_equal(before["c1"], after["c1"])
    assert cache.path_for(folder.root / "audio/c1.wav").name == after["c1"].filename.name


def test_cache_recomputes_on_new_config(folder, tmp_path, counted):
    m = data.load_labels(folder(2))
    data.FeatureCache(tmp_path / "cache", CFG).features(m, progress=False)
    other = AudioConfig(n_mels=32)
    feats = data.FeatureCache(tmp_path / "cache", other).features(m, progress=False)
    assert len(counted) == 4 and feats["c0"].shape[1] == 32
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_identical_files_share_a_cache_entry(folder, tmp_path, counted):
    folder(3)
    (folder.root / "audio/c2.wav").write_bytes((folder.root / "audio/c0.wav").read_bytes())
    feats = data.FeatureCache(tmp_path / "cache", CFG).features(data.load_labels(folder.root / "labels.csv"), progress=False)
    assert len(counted) == 2 and feats["c0"].filename == feats["c2"].filename


# ----------------------------------------------------------------------------- dataset

@pytest.fixture
def dataset(folder, tmp_path):
    m = data.load_labels(folder(3, labels=[0, 1, 1], seconds=[1.0, 2.0, 1.5]))
    feats = data.FeatureCache(tmp_path / "cache", CFG).features(m, progress=False)
    soft = data.load_soft_labels(write_csv(tmp_path / "t.csv", SOFT, [["c1", "", "", 0.2, 0.8], ["c1", 2, "", 0.4, 0.6],
                                                                       ["c2", 0, "", 1, 0]]), m)
    return data.ClipDataset(m, feats, soft)


def test_dataset_items(dataset):
    assert len(dataset) == 3
    x = dataset[1]
    assert x["clip_id"] == "c1" and x["index"] == 1
    assert x["features"].dtype == torch.float32 and x["features"].shape == (3, CFG.n_mels, CFG.n_frames)
    assert x["label"].dtype == torch.long and x["label"].item() == 1
    assert torch.allclose(x["soft_clip"], torch.tensor([0.2, 0.8])) and x["soft_clip_mask"].item()
    assert x["soft_segment"].shape == (3, 2) and x["soft_segment_mask"].tolist() == [False, False, True]
    assert torch.allclose(x["soft_segment"][2], torch.tensor([0.4, 0.6])) and (x["soft_segment"][:2] == 0).all()
    y = dataset[0]
    assert not y["soft_clip_mask"].item() and (y["soft_clip"] == 0).all() and not y["soft_segment_mask"].any()
    assert dataset[2]["soft_segment_mask"].tolist() == [True, False]
    x["features"].add_(1)  # items are copies, never views into the read-only cache
    assert not torch.equal(x["features"], dataset[1]["features"])


def test_collate_pads_and_masks(dataset):
    b = data.collate_clips([dataset[i] for i in range(3)])
    assert b["features"].shape == (3, 3, CFG.n_mels, CFG.n_frames)
    assert b["segment_mask"].tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert (b["features"][0, 1:] == 0).all() and (b["features"][2, 2] == 0).all()
    assert b["label"].tolist() == [0, 1, 1] and b["index"].tolist() == [0, 1, 2]
    assert b["soft_clip_mask"].tolist() == [False, True, False] and b["soft_clip"].shape == (3, 2)
    assert b["soft_segment"].shape == (3, 3, 2)
    assert b["soft_segment_mask"].tolist() == [[False] * 3, [False, False, True], [True, False, False]]
    assert not (b["soft_segment_mask"] & ~b["segment_mask"]).any()
    assert b["clip_id"] == ["c0", "c1", "c2"]


def test_dataset_pickles_as_memmaps(dataset):
    blob = pickle.dumps(dataset)
    assert len(blob) < 10_000  # file names, not the arrays
    back = pickle.loads(blob)
    assert isinstance(back.features["c1"], np.memmap)
    assert torch.equal(back[1]["features"], dataset[1]["features"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=data.collate_clips)
    assert [b["features"].shape[0] for b in loader] == [2, 1]


def test_segment_label_past_the_clip_end(dataset, tmp_path):
    m = data.load_labels(tmp_path / "set" / "labels.csv")
    soft = data.load_soft_labels(write_csv(tmp_path / "bad.csv", SOFT, [["c0", 1, "", 0.5, 0.5]]), m)
    with pytest.raises(DataError, match=r"clip_id 'c0' has a label for segment 1 but the clip has 1 segment"):
        data.ClipDataset(m, dataset.features, soft)


# ----------------------------------------------------------------------------- synth round trip

def test_synth_dataset_round_trips(tmp_path):
    from mark2_lib import synth
    out = synth.make_default_dataset(tmp_path / "synth", n_clips=30, seed=3, progress=False)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    m = data.load_labels(out / "labels.csv")
    assert m.skipped == [] and m.clip_ids == [r["clip_id"] for r in rows]
    assert m.df["label"].tolist() == [data.parse_label(r["label"]) for r in rows]
    assert m.df["split"].tolist() == [r["split"] for r in rows]
    assert m.df["path"].tolist() == [str((out / r["path"]).resolve()) for r in rows]
