"""Tests for the corpus jobs (mark2_lib.jobs.score, jobs.scorers) through the command line: `mark2 predict`
on the serial and local engines against today's predict_paths, JSON-lines manifests in and out,
`mark2 soft-labels` with a trained run, a TorchScript file and DNSMOS as teacher (DNSMOS needs its extra)."""
import csv
import json

import numpy as np
import pandas as pd
import pytest
from conftest import dnsmos_missing, require_or_skip

from mark2_lib import dnsmos
from mark2_lib.cli import main
from mark2_lib.config import ModelConfig, TrainConfig
from mark2_lib.data import Dataset, load_soft_labels
from mark2_lib.inference.export import export_torchscript
from mark2_lib.inference.predict import predict_paths
from mark2_lib.jobs.score import soft_labels_job
from mark2_lib.train import train_run

TINY = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16)


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A small run trained for one epoch on the tiny data: student and teacher of these tests."""
    manifest, features, audio_cfg = tiny_data
    run_dir = tmp_path_factory.mktemp("jobs_run") / "tiny"
    cfg = TrainConfig(alpha=0.0, epochs=1, lr=1e-2, batch_size=8, seed=0, progress=False)
    train_run(run_dir, Dataset(manifest, features), cfg, audio_cfg, TINY, resume=False)
    return run_dir


@pytest.fixture(scope="module")
def clips(tiny_data, tmp_path_factory):
    """A folder of 10 tiny-data clips plus a file that is not audio (an error row)."""
    manifest, _, _ = tiny_data
    folder = tmp_path_factory.mktemp("jobs_clips") / "clips"
    folder.mkdir()
    for path in manifest.df["path"][:10]:
        (folder / path.rsplit("/", 1)[1]).symlink_to(path)
    (folder / "zz_broken.wav").write_text("not audio\n" * 10)
    return folder


def read(path):
    return pd.read_csv(path, keep_default_na=False, dtype={"error": str, "label": str})


def cli(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def test_predict_serial_and_local_give_the_same_files_as_predict_paths(run, clips, tmp_path, capsys):
    serial, local = tmp_path / "serial.csv", tmp_path / "local.csv"
    assert cli("predict", run, clips, "--out", serial, "--segments", "--engine", "serial", "--shard-size", "4") == 1
    assert cli("predict", run, clips, "--out", local, "--segments", "--engine", "local", "--workers", "2",
               "--shard-size", "4") == 1
    assert serial.read_bytes() == local.read_bytes()
    assert (tmp_path / "serial_segments.csv").read_bytes() == (tmp_path / "local_segments.csv").read_bytes()
    assert not (tmp_path / "serial.csv.parts").exists() and not (tmp_path / "local.csv.parts").exists()
    assert "11 files: 10 scored" in capsys.readouterr().err

    want, want_seg = predict_paths(run, [clips], segments=True, progress=False)
    got = read(serial)
    assert list(got.columns) == ["path", "p_noise", "label", "n_segments", "error"]
    assert list(got["path"]) == list(want["path"]) and list(got["error"] == "") == [True] * 10 + [False]
    assert "not a readable audio file" in got["error"].iloc[-1] and got["p_noise"].iloc[-1] == ""
    ok = got["error"] == ""
    np.testing.assert_allclose(got["p_noise"][ok].astype(float), want["p_noise"][:10], atol=1e-6)
    assert list(got["label"][ok]) == list(want["label"][:10])
    assert got["n_segments"][ok].astype(int).tolist() == want["n_segments"][:10].tolist()
    seg = read(tmp_path / "serial_segments.csv")
    assert list(seg.columns) == list(want_seg.columns) and len(seg) == len(want_seg) == 30
    np.testing.assert_allclose(seg["p_noise"].astype(float), want_seg["p_noise"], atol=1e-6)


def test_predict_jsonl_manifest_in_and_out_keeps_every_field(run, tiny_data, tmp_path):
    manifest, _, _ = tiny_data
    paths = list(manifest.df["path"][:3])
    lines = [json.dumps({"audio_filepath": p, "duration": 2.0, "speaker": f"spk{i}", "text": "héllo",
                         "tags": [i, {"x": None}]}) for i, p in enumerate(paths)]
    lines.insert(1, '{"audio_filepath": "missing.wav", "speaker": "nobody"}')
    lines.insert(2, '{"duration": 1.0')  # malformed
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    assert cli("predict", run, src, "--out", out, "--engine", "serial") == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    assert list(rows[0]) == ["audio_filepath", "duration", "speaker", "text", "tags",
                             "clip_id", "path", "p_noise", "label", "n_segments", "error"]
    want, _ = predict_paths(run, paths, progress=False)
    for row, i, p in zip([rows[0], rows[3], rows[4]], range(3), want["p_noise"]):
        assert row["speaker"] == f"spk{i}" and row["text"] == "héllo" and row["tags"] == [i, {"x": None}]
        assert row["error"] == "" and abs(row["p_noise"] - p) < 1e-6 and row["n_segments"] == 3
    assert rows[1]["speaker"] == "nobody" and "missing.wav: file not found" in rows[1]["error"]
    assert rows[1]["p_noise"] is None
    assert f"{src} line 3: not valid JSON" in rows[2]["error"] and rows[2]["p_noise"] is None


def test_predict_keeps_its_old_behaviour_for_reruns_and_bad_options(run, clips, tmp_path, capsys):
    out = tmp_path / "p.csv"
    one = sorted(clips.glob("s7_*.wav"))
    assert cli("predict", run, one[0], "--out", out) == 0
    assert cli("predict", run, one[1], one[2], "--out", out) == 0  # same --out, other files: just overwritten
    assert len(read(out)) == 2
    with pytest.raises(SystemExit):  # argparse refuses an unknown engine
        cli("predict", run, one[0], "--out", out, "--engine", "nope")
    assert cli("predict", run, one[0], "--out", tmp_path / "p.txt") == 2
    assert cli("predict", run, one[0], "--out", out, "--shard-size", "0") == 2
    assert cli("soft-labels", "--teacher", tmp_path / "nothing", one[0], "--out", tmp_path / "s.csv") == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_shows_paths_as_given(run, clips, tmp_path, monkeypatch):
    """The path column holds each file as the user named it (a folder relative to the working directory
    gives relative paths), as mark2 predict always wrote it; the workers read absolute paths."""
    monkeypatch.chdir(clips.parent)
    out = tmp_path / "p.csv"
    assert cli("predict", run, clips.name, "missing.wav", "--out", out, "--engine", "serial") == 1
    paths = read(out)["path"].tolist()
    assert paths[-1] == "missing.wav" and all(p.startswith(clips.name + "/") for p in paths[:-1]), paths[:3]


def test_soft_labels_from_a_trained_run_and_its_torchscript_export(run, tiny_data, tmp_path):
    manifest, _, _ = tiny_data
    labels = manifest.root / "labels.csv"
    out = tmp_path / "soft_labels.csv"
    assert cli("soft-labels", "--teacher", run, labels, "--out", out, "--segments", "--engine", "serial") == 0
    soft = load_soft_labels(out, manifest)
    assert soft.teachers == [run.name] and set(soft.clip) == set(manifest.clip_ids)
    assert all(sorted(soft.segment[c]) == [0, 1, 2] for c in manifest.clip_ids)
    want, want_seg = predict_paths(run, list(manifest.df["path"]), segments=True, progress=False)
    np.testing.assert_allclose(soft.p_noise(manifest.clip_ids), want["p_noise"], atol=1e-6)
    got_seg = [soft.segment[c][k][1] for c in manifest.clip_ids for k in range(3)]
    np.testing.assert_allclose(got_seg, want_seg["p_noise"], atol=1e-6)

    small = tmp_path / "small.csv"  # a labels.csv of 4 clips, paths absolute
    small.write_text("clip_id,path,label,split\n" + "".join(
        f"{c},{p},clean,train\n" for c, p in zip(manifest.clip_ids[:4], manifest.df["path"][:4])))
    ts = export_torchscript(run, tmp_path / "teacher.ts")
    info = soft_labels_job(ts, [small], tmp_path / "ts.jsonl", engine="serial", progress=False)
    assert info["teacher"] == "teacher" and info["n_scored"] == 4 and info["errors"] == []
    rows = [json.loads(line) for line in (tmp_path / "ts.jsonl").read_text().splitlines()]
    assert [r["clip_id"] for r in rows] == manifest.clip_ids[:4]
    assert list(rows[0]) == ["path", "label", "split", "clip_id", "p_clean", "p_noise", "teacher", "error"]
    np.testing.assert_allclose([r["p_noise"] for r in rows], want["p_noise"][:4], atol=1e-5)




def test_dnsmos_soft_labels_are_calibrated_cached_and_repeatable(tiny_data, tmp_path, monkeypatch):
    if (missing := dnsmos_missing()):
        require_or_skip(missing, "the DNSMOS soft-labels job")
    manifest, _, _ = tiny_data
    labels = tmp_path / "labels.csv"  # a clean and a noisy train clip (DNSMOS takes ~0.3 s per window)
    rows = [r for r in csv.DictReader(open(manifest.root / "labels.csv")) if r["split"] == "train"]
    rows = [next(r for r in rows if r["label"] == "clean"), next(r for r in rows if r["label"] == "noise")]
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "path", "label", "split"])
        w.writerows([[r["clip_id"], str(manifest.root / r["path"]), r["label"], r["split"]] for r in rows]
                    + [["gone", str(tmp_path / "gone.wav"), "noise", "test"]])
    cache, out = tmp_path / "cache", tmp_path / "soft.csv"
    args = ["soft-labels", "--teacher", "dnsmos", labels, "--out", out, "--cache-dir", cache, "--engine", "serial",
            "--segments"]
    assert cli(*args) == 1  # the missing file
    first = out.read_bytes()
    soft = load_soft_labels(out)
    assert soft.teachers == ["dnsmos"] and len(soft.clip) == 2 and "gone" not in soft.clip
    assert all(sorted(soft.segment[c]) == [0, 1, 2] for c in soft.clip)

    def no_model(*a, **k):
        raise AssertionError("DNSMOS ran again although every score is cached")

    monkeypatch.setattr(dnsmos, "DnsmosModel", no_model)
    assert cli(*args) == 1
    assert out.read_bytes() == first
    info = soft_labels_job("dnsmos", [labels], tmp_path / "soft.jsonl", cache_dir=cache, engine="serial",
                           segments=True, progress=False)
    assert info["n_cached"] == 2 and [e["clip_id"] for e in info["errors"]] == ["gone"] and info["a"] < 0
    lines = [json.loads(line) for line in (tmp_path / "soft.jsonl").read_text().splitlines()]
    assert [r["clip_id"] for r in lines[:2]] == list(soft.clip)
    np.testing.assert_allclose([r["p_noise"] for r in lines[:2]], soft.p_noise(list(soft.clip)), atol=1e-8)
    np.testing.assert_allclose(lines[0]["segment_p_noise"], [soft.segment[lines[0]["clip_id"]][k][1] for k in range(3)],
                               atol=1e-8)
    assert 1 <= lines[0]["bak"] <= 5.5 and "file not found" in lines[2]["error"] and lines[2]["p_noise"] is None
    with pytest.raises(ValueError, match="calibration needs labelled train clips"):
        soft_labels_job("dnsmos", [manifest.df["path"][0]], tmp_path / "x.csv", cache_dir=cache, progress=False)


def test_a_train_label_that_is_not_a_label_is_named():
    """The DNSMOS Platt fit reads the train split's labels: an empty one is left out, a wrong one is refused."""
    from mark2_lib.errors import DataError
    from mark2_lib.jobs.inputs import Item
    from mark2_lib.jobs.score import _train_labels

    items = [Item(0, "/a.wav", "a", {"split": "train", "label": "noise"}, "m.jsonl line 1"),
             Item(1, "/b.wav", "b", {"split": "train", "label": ""}, "m.jsonl line 2"),
             Item(2, "/c.wav", "c", {"split": "test", "label": "??"}, "m.jsonl line 3")]
    assert _train_labels(items) == {0: 1}
    bad = items + [Item(3, "/d.wav", "d", {"split": "train", "label": "noisy"}, "m.jsonl line 4")]
    with pytest.raises(DataError, match="m.jsonl line 4: unknown label 'noisy'"):
        _train_labels(bad)
