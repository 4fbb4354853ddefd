"""Tests for mark2_lib.teacher and mark2_lib.calibration: no shared audio between the teacher's pool and
the student's clips, soft labels that round-trip through the validating loader, temperature scaling
against a grid search, the chance-level warning, the bring-your-own paths (import, TorchScript), and
make_soft_labels, the one call for any kind of teacher."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mark2_lib.builders import synth
from mark2_lib.calibration import fit_calibration_temperature
from mark2_lib.config import ModelConfig, TrainConfig
from mark2_lib.data import (
    Dataset,
    file_sha1,
    load_labels,
    load_soft_labels,
    write_soft_labels,
)
from mark2_lib.errors import DataError
from mark2_lib.evaluate import predict_features
from mark2_lib.inference.export import export_torchscript
from mark2_lib.run_folders import load_classifier
from mark2_lib.teacher import (
    TEACHERS,
    check_disjoint,
    import_soft_labels,
    make_soft_labels,
    pretrain_teacher,
    teacher_from_torchscript,
    teacher_report,
    write_teacher_soft_labels,
)
from mark2_lib.train import train_run

TINY_TEACHER = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16)


@pytest.fixture(scope="module")
def teacher_run(tiny_data, tmp_path_factory):
    """A small teacher trained with hard labels on the tiny dataset (enough to be better than chance)."""
    manifest, features, audio_cfg = tiny_data
    run_dir = tmp_path_factory.mktemp("teacher") / "teacher"
    cfg = TrainConfig(alpha=0.0, epochs=4, lr=1e-2, batch_size=8, seed=0, progress=False)
    train_run(run_dir, Dataset(manifest, features), cfg, audio_cfg, TINY_TEACHER, resume=False)
    return run_dir


def _hashes(manifest):
    return {file_sha1(p) for p in manifest.df["path"]}


# ----------------------------------------------------------------------------- leakage

def test_default_pool_shares_no_audio_with_the_student_clips(tmp_path):
    """The pool as notebook 02 builds it (3x the clips, seed 1000) never contains a student clip."""
    student = load_labels(synth.make_default_dataset(tmp_path / "student", n_clips=40, seed=0, progress=False)
                          / "labels.csv")
    pool = load_labels(synth.ensure_dataset(tmp_path / "pool", n_clips=3 * 40, seed=1000, progress=False,
                                            splits=synth.POOL_SPLIT_SHARES) / "labels.csv")
    assert len(_hashes(student)) == 40 and len(_hashes(pool)) == 120
    assert not _hashes(student) & _hashes(pool)
    check_disjoint(pool, student)  # passes


def test_pool_that_contains_student_audio_is_refused_before_training(tmp_path, tiny_data):
    _, _, audio_cfg = tiny_data
    student_dir = synth.make_default_dataset(tmp_path / "student", n_clips=20, seed=3, progress=False)
    student = load_labels(student_dir / "labels.csv")
    # Same seed: a clip depends only on (seed, index), so the first 20 pool clips are the student's.
    pool_dir = synth.make_default_dataset(tmp_path / "pool", n_clips=30, seed=3, progress=False)
    with pytest.raises(DataError, match=r"20 teacher-pool clips have the same audio as student clips"):
        check_disjoint(load_labels(pool_dir / "labels.csv"), student)
    cfg = TrainConfig(alpha=0.0, epochs=1, progress=False)
    with pytest.raises(DataError, match="another seed"):
        pretrain_teacher(pool_dir, tmp_path / "run", audio_cfg, cfg, tmp_path / "cache", TINY_TEACHER,
                         student=student)
    assert not (tmp_path / "run").exists()  # nothing was trained


# ----------------------------------------------------------------------------- soft labels

def test_teacher_soft_labels_round_trip_through_the_loader(teacher_run, tiny_data, tmp_path):
    manifest, features, _ = tiny_data
    val = manifest.split("val")
    out = tmp_path / "soft_labels.csv"
    info = write_teacher_soft_labels(teacher_run, manifest, features, out, calibration=(val, features),
                                     teacher_name="tiny-teacher")
    assert info["calibration_temperature"] > 0 and 0 <= info["ece_after"] <= 1 and 0 <= info["ece_before"] <= 1
    soft = load_soft_labels(out, manifest)
    assert soft.teachers == ["tiny-teacher"]
    pred = predict_features(load_classifier(teacher_run).model, manifest, features,
                            calibration_temperature=info["calibration_temperature"])
    for clip_id, p, seg in zip(pred["clip_id"], pred["p_noise"], pred["segment_p_noise"]):
        assert soft.clip[clip_id] == pytest.approx([1 - p, p], abs=1e-7)
        got = np.array([soft.segment[clip_id][k][1] for k in sorted(soft.segment[clip_id])])
        assert got == pytest.approx(seg, abs=1e-7) and len(got) == features[clip_id].shape[0]


def test_uncalibrated_soft_labels_are_the_run_s_own_probabilities(teacher_run, tiny_data, tmp_path):
    manifest, features, _ = tiny_data
    info = write_teacher_soft_labels(teacher_run, manifest, features, tmp_path / "soft.csv")
    assert info == {"path": str(tmp_path / "soft.csv"), "calibration_temperature": 1.0, "ece_before": None,
                    "ece_after": None}
    pred = predict_features(load_classifier(teacher_run).model, manifest, features)
    soft = load_soft_labels(tmp_path / "soft.csv", manifest)
    assert soft.p_noise(pred["clip_id"]) == pytest.approx(pred["p_noise"], abs=1e-7)


def test_fit_calibration_temperature_matches_a_grid_search():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), (2 * y - 1) * 3.0 + rng.normal(0, 2.5, 400)], axis=1)  # overconfident

    def nll(t):
        return float(torch.nn.functional.cross_entropy(torch.tensor(logits / t), torch.tensor(y)))

    grid = np.exp(np.linspace(-3, 3, 6001))
    best = grid[np.argmin([nll(t) for t in grid])]
    t = fit_calibration_temperature(logits, y)
    assert t == pytest.approx(best, rel=2e-3) and t > 1  # an overconfident model is softened
    assert nll(t) <= nll(1.0)


def test_teacher_report_warns_only_for_a_chance_level_teacher(tiny_data, tmp_path):
    manifest, _, _ = tiny_data
    test = manifest.split("test")
    truth = pd.read_csv(manifest.root / "truth.csv")
    labels = test.df["label"].to_numpy()
    good = write_soft_labels(tmp_path / "good.csv", test.clip_ids, np.where(labels == 1, 0.9, 0.1))
    coin = write_soft_labels(tmp_path / "coin.csv", test.clip_ids, np.full(len(labels), 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = teacher_report(load_soft_labels(good, manifest), test, truth)
    assert table.loc["teacher", "macro_f1"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="barely better than chance"):
        teacher_report(load_soft_labels(coin, manifest), test, truth)
    with pytest.raises(DataError, match="no clip-level soft label"):
        teacher_report(load_soft_labels(good, manifest), manifest.split("train"), truth)


# ----------------------------------------------------------------------------- bring your own teacher

def test_import_soft_labels_averages_teachers_and_round_trips(tiny_data, tmp_path):
    manifest, _, _ = tiny_data
    ids = manifest.clip_ids
    rng = np.random.default_rng(1)
    p_a, p_b = rng.uniform(0, 1, len(ids)), rng.uniform(0, 1, len(ids))
    a = write_soft_labels(tmp_path / "a.csv", ids, p_a, [np.full(3, q) for q in p_a], teacher="a")
    b = write_soft_labels(tmp_path / "b.csv", ids, p_b, [np.full(3, q) for q in p_b], teacher="b")
    merged = import_soft_labels([a, b], manifest, out_csv=tmp_path / "merged.csv")
    back = load_soft_labels(tmp_path / "merged.csv", manifest)
    for i, c in enumerate(ids):
        mean = (p_a[i] + p_b[i]) / 2
        assert merged.clip[c][1] == pytest.approx(mean, abs=1e-7)
        assert back.clip[c][1] == pytest.approx(mean, abs=1e-7)
        assert back.segment[c][2][1] == pytest.approx(mean, abs=1e-7)


def test_torchscript_teacher_labels_like_the_run_it_was_exported_from(teacher_run, tiny_data, tmp_path):
    manifest, _, audio_cfg = tiny_data
    small = manifest.split("val")
    ts = export_torchscript(teacher_run, tmp_path / "teacher.ts")
    soft = teacher_from_torchscript(ts, small, audio_cfg, tmp_path / "soft.csv", progress=False)
    assert soft.teachers == ["teacher"]
    model = load_classifier(teacher_run)
    from mark2_lib.audio import load_audio
    for clip_id, path in zip(small.df["clip_id"], small.df["path"]):
        with torch.no_grad():
            p = torch.softmax(model(load_audio(path, audio_cfg.sample_rate)[None]).double(), -1)[0, 1]
        assert soft.clip[clip_id][1] == pytest.approx(float(p), abs=1e-5)


def test_torchscript_teacher_that_is_not_torchscript_is_a_data_error(tiny_data, tmp_path):
    manifest, _, audio_cfg = tiny_data
    bogus = tmp_path / "teacher.ts"
    bogus.write_bytes(b"not a model")
    with pytest.raises(DataError, match="teacher.ts: not a loadable TorchScript teacher"):
        teacher_from_torchscript(bogus, manifest, audio_cfg, tmp_path / "soft.csv", progress=False)


# ----------------------------------------------------------------------------- one call for any teacher

def test_make_soft_labels_imports_and_runs_torchscript(teacher_run, tiny_data, tmp_path):
    manifest, _, audio_cfg = tiny_data
    ids = manifest.clip_ids
    a = write_soft_labels(tmp_path / "a.csv", ids, np.linspace(0.1, 0.9, len(ids)), teacher="a")
    info = make_soft_labels("import", manifest, audio_cfg, tmp_path / "out.csv", tmp_path / "cache", sources=[a])
    assert info["kind"] == "import" and info["path"] == str(tmp_path / "out.csv")
    assert "1 file(s)" in info["summary"] and "['a']" in info["summary"]
    assert load_soft_labels(tmp_path / "out.csv", manifest).p_noise(ids) == pytest.approx(
        np.linspace(0.1, 0.9, len(ids)), abs=1e-7)

    small = manifest.split("val")
    ts = export_torchscript(teacher_run, tmp_path / "teacher.ts")
    info = make_soft_labels("torchscript", small, audio_cfg, tmp_path / "ts.csv", tmp_path / "cache",
                            teacher_path=ts, progress=False)
    assert f"labelled {len(small)} clips" in info["summary"]
    assert set(load_soft_labels(tmp_path / "ts.csv", small).clip) == set(small.clip_ids)


@pytest.mark.parametrize("kind,kwargs,match", [
    ("teachr", {}, "expected one of 'default', 'import', 'torchscript', 'dnsmos'"),
    ("import", {}, "sources"),
    ("torchscript", {}, "teacher_path"),
    ("default", {"pool_dir": "pool"}, "pool_dir, run_dir and train_cfg"),
])
def test_make_soft_labels_refuses_a_kind_without_its_inputs(kind, kwargs, match, tiny_data, tmp_path):
    manifest, _, audio_cfg = tiny_data
    with pytest.raises(ValueError, match=match):
        make_soft_labels(kind, manifest, audio_cfg, tmp_path / "out.csv", tmp_path / "cache", **kwargs)
    assert not (tmp_path / "out.csv").exists()
    assert TEACHERS == ("default", "import", "torchscript", "dnsmos")
