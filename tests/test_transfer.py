"""A transfer set: train clips without a hard label (an empty label cell) that learn from the teacher's
soft labels only. Reading them (labels.csv, open_dataset), picking the clips a run trains on, and
training with the hard term masked."""
import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from test_data import write_csv

from mark2_lib import data
from mark2_lib import train as train_mod
from mark2_lib.config import AudioConfig, ModelConfig, TrainConfig
from mark2_lib.data import UNLABELLED, DataError
from mark2_lib.models import ClipClassifier
from mark2_lib.seeding import seed_everything

CFG = AudioConfig()
SOFT = ["clip_id", "segment", "teacher", "p_clean", "p_noise"]
TINY_MODEL = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16, pooling="attention", dropout=0.1,
                         level_norm=False, stats_pooling=False)
TINY_TRAIN = dict(alpha=0.5, temperature=2.0, epochs=3, patience=100, batch_size=8, lr=2e-2, seed=3,
                  random_segment=True, soft_target="clip", progress=False)


def make_folder(root: Path, labels, splits=None) -> Path:
    """labels.csv for clips c0.. with `labels` (and `splits`) beside 1 s WAVs; returns the CSV."""
    rows = []
    for i, label in enumerate(labels):
        path = root / "audio" / f"c{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.random.default_rng(i).uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
        rows.append([f"c{i}", f"audio/c{i}.wav", label] + ([splits[i]] if splits else []))
    return write_csv(root / "labels.csv", ["clip_id", "path", "label"] + (["split"] if splits else []), rows)


# ----------------------------------------------------------------------------- labels.csv

def test_empty_label_in_train_is_a_clip_without_a_hard_label(tmp_path):
    m = data.load_labels(make_folder(tmp_path, ["", "clean", "  ", "noise", 0, 1],
                                     ["train", "train", "Train", "val", "test", "train"]))
    assert m.df["label"].tolist() == [UNLABELLED, 0, UNLABELLED, 1, 0, 1] and m.df["label"].dtype == np.int64
    assert m.labelled.tolist() == [False, True, False, True, True, True]
    assert m.split("train").labelled.tolist() == [False, True, False, True]
    assert m.split("val").labelled.all() and m.split("test").labelled.all()
    assert m.skipped == []


@pytest.mark.parametrize("split", ["val", "test", "VAL"])
def test_empty_label_outside_train_is_refused_naming_file_and_row(tmp_path, split, capsys):
    csv_path = make_folder(tmp_path, [0, 1, "", 1], ["train", "train", split, "train"])
    with pytest.raises(DataError, match=rf"labels.csv row 4 \(clip_id 'c2'\): empty label in the "
                                        rf"{split.lower()} split; only train clips may be unlabelled"):
        data.load_labels(csv_path)
    m = data.load_labels(csv_path, on_error="skip")
    assert m.clip_ids == ["c0", "c1", "c3"] and [s["row"] for s in m.skipped] == [4]
    assert "empty label" in capsys.readouterr().out


def test_a_written_sentinel_is_not_an_empty_label(tmp_path):
    """Only an empty cell means "no hard label": -1 or ? in the file are typing errors and refused."""
    for text in ("-1", "?"):
        with pytest.raises(DataError, match=f"row 2 .*unknown label '{re.escape(text)}'"):
            data.load_labels(make_folder(tmp_path, [text, 0, 1], ["train"] * 3))


def test_auto_split_puts_unlabelled_clips_in_train_and_keeps_the_labelled_split(tmp_path):
    labels = [i % 2 for i in range(14)]
    plain = data.load_labels(make_folder(tmp_path / "plain", labels), split_seed=4)
    with_transfer = data.load_labels(make_folder(tmp_path / "transfer", labels + [""] * 5), split_seed=4)
    df = with_transfer.df
    assert (df.loc[~with_transfer.labelled, "split"] == "train").all()
    assert df.loc[with_transfer.labelled, "split"].tolist() == plain.df["split"].tolist()


# ----------------------------------------------------------------------------- soft labels joined

def test_open_dataset_names_the_clips_with_neither_label(tmp_path):
    make_folder(tmp_path, ["", 0, "", 1, "", 0, 1], ["train"] * 5 + ["val", "test"])
    cache = tmp_path / "cache"
    # c0 has a clip-level soft label, c4 one for a segment only, c2 none
    write_csv(tmp_path / "soft_labels.csv", SOFT, [["c0", "", "t", 0.2, 0.8], ["c4", 0, "t", 0.6, 0.4],
                                                   ["c1", "", "t", 0.9, 0.1]])
    with pytest.raises(DataError, match=r"1 clip\(s\) have neither a hard label nor a teacher soft label .*"
                                        r"'c2' \(row 4\)"):
        data.open_dataset(tmp_path, CFG, cache, progress=False)
    write_csv(tmp_path / "soft_labels.csv", SOFT, [["c1", "", "t", 0.9, 0.1]])
    with pytest.raises(DataError, match=r"3 clip\(s\) .*'c0' \(row 2\), 'c2' \(row 4\), 'c4' \(row 6\)"):
        data.open_dataset(tmp_path, CFG, cache, progress=False)
    (tmp_path / "soft_labels.csv").unlink()  # before the teacher has labelled them: accepted, checked at training
    ds = data.open_dataset(tmp_path, CFG, cache, progress=False)
    assert ds.soft is None and data.without_soft_label(ds.manifest, None) == ["c0", "c2", "c4"]


def test_items_and_batches_mark_the_clips_with_a_hard_label(tmp_path):
    m = data.load_labels(make_folder(tmp_path, [1, "", 0], ["train"] * 3))
    ds = data.ClipDataset(m, data.FeatureCache(tmp_path / "cache", CFG).features(m, progress=False))
    assert [bool(ds[i]["has_label"]) for i in range(3)] == [True, False, True]
    b = data.collate_clips([ds[i] for i in range(3)])
    assert b["label_mask"].tolist() == [True, False, True] and b["label_mask"].dtype == torch.bool
    assert b["label"].tolist() == [1, UNLABELLED, 0]


def test_training_clips(tmp_path, capsys):
    m = data.load_labels(make_folder(tmp_path, [1, "", 0, ""], ["train"] * 4))
    seg_only = data.SoftLabels({"c1": np.array([0.5, 0.5])}, {"c3": {0: np.array([0.2, 0.8])}})
    assert data.training_clips(m, None, 0.0).clip_ids == ["c0", "c2"]  # hard only: left out, said so
    assert "left out 2 clip(s) without a hard label" in capsys.readouterr().out
    assert data.training_clips(m, seg_only, 0.5, "segment") is m
    with pytest.raises(DataError, match=r"1 clip\(s\).*soft_target 'clip' reads the clip-level soft label.*'c3'"):
        data.training_clips(m, seg_only, 0.5, "clip")
    with pytest.raises(DataError, match=r"2 clip\(s\).*'c1' \(row 3\), 'c3' \(row 5\)"):
        data.training_clips(m, None, 1.0)
    labelled = m.split("train")
    labelled = data.Manifest(m.root, labelled.df[labelled.labelled].reset_index(drop=True))
    assert data.training_clips(labelled, None, 0.5) is labelled


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def transfer(tiny_data, tmp_path_factory):
    """tiny_data as a folder whose odd train clips have an empty label, with the annotator's soft labels for
    every clip: (Dataset opened from it, the clip_ids without a hard label, the cache folder)."""
    manifest, _, audio_cfg = tiny_data
    root = tmp_path_factory.mktemp("transfer")
    shutil.copytree(manifest.root / "audio", root / "audio")
    rows = list(csv.reader(open(manifest.root / "labels.csv", newline="")))
    header, rows = rows[0], rows[1:]
    train_rows = [r for r in rows if r[header.index("split")] == "train"]
    unlabelled = [r[0] for r in train_rows[1::2]]
    for r in rows:
        if r[0] in unlabelled:
            r[header.index("label")] = ""
    write_csv(root / "labels.csv", header, rows)
    truth = pd.read_csv(manifest.root / "truth.csv")
    data.write_soft_labels(root / "soft_labels.csv", truth["clip_id"], truth["p_noise_annotator"])
    cache = manifest.root.parent / "cache"
    return data.open_dataset(root, audio_cfg, cache, progress=False), unlabelled, cache


class NoCurves:
    """Stands in for plots.LossCurves: draws nothing (slow, and not what these tests check)."""

    def __init__(self, *a, **k):
        pass

    def update(self, history):
        pass

    def save(self, path, dpi=80):
        pass


@pytest.fixture
def no_plots(monkeypatch):
    import mark2_lib.plots
    monkeypatch.setattr(mark2_lib.plots, "LossCurves", NoCurves)


def weights_of(run_dir):
    return {n: torch.load(Path(run_dir) / n, weights_only=True) for n in ("encoder.pt", "head.pt")}


def assert_same_run(a, b):
    ha, hb = (pd.read_csv(Path(r) / "history.csv").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(ha, hb)
    wa, wb = weights_of(a), weights_of(b)
    for name in wa:
        for k in wa[name]:
            assert torch.equal(wa[name][k], wb[name][k]), f"{name}:{k}"


@pytest.mark.parametrize("soft_target", ["clip", "segment"])
def test_a_transfer_set_trains_through_the_soft_term(transfer, tiny_data, tmp_path, soft_target, no_plots):
    ds, unlabelled, _ = transfer
    train = ds.split("train")
    assert (~train.labelled).sum() == len(unlabelled) >= 10 and train.labelled.sum() >= 10
    cfg = TrainConfig(**{**TINY_TRAIN, "soft_target": soft_target})
    result = train_mod.train_run(tmp_path / "run", ds, cfg, tiny_data[2], TINY_MODEL, resume=False)
    h = pd.read_csv(tmp_path / "run" / "history.csv")
    assert result["epochs_run"] == 3 and np.isfinite(h.drop(columns="seconds").to_numpy()).all()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["n_train"] == len(train)  # all of them
    assert h["train_hard"].iloc[-1] < h["train_hard"].iloc[0]  # it learns


def sentinel_run(ds, audio_cfg, run_dir, sentinel) -> Path:
    """A run on `ds` whose unlabelled train clips carry `sentinel` as their (never read) hard label."""
    cfg = TrainConfig(**TINY_TRAIN)
    train_m = ds.split("train")
    train_set, val_set = (data.ClipDataset(m, ds.features, ds.soft) for m in (train_m, ds.split("val")))
    train_set.labels = [y if has else sentinel for y, has in zip(train_set.labels, train_set.has_label)]
    seed_everything(cfg.seed)
    model = ClipClassifier(audio_cfg, TINY_MODEL)
    train_mod.Trainer(model, train_set, val_set, cfg, run_dir, audio_cfg, TINY_MODEL).fit(resume=False)
    return run_dir


def test_the_label_an_unlabelled_clip_carries_cannot_matter(transfer, tiny_data, tmp_path, no_plots):
    ds, _, _ = transfer
    runs = [sentinel_run(ds, tiny_data[2], tmp_path / f"s{i}", s) for i, s in enumerate([UNLABELLED, 0, 1, 99])]
    for other in runs[1:]:
        assert_same_run(runs[0], other)


def test_hard_only_training_leaves_the_unlabelled_clips_out(transfer, tiny_data, tmp_path, no_plots, capsys):
    """alpha = 0: the run equals one on the labelled clips alone, to the last digit."""
    ds, unlabelled, _ = transfer
    cfg = TrainConfig(**{**TINY_TRAIN, "alpha": 0.0})
    train_mod.train_run(tmp_path / "with", ds, cfg, tiny_data[2], TINY_MODEL, resume=False)
    assert f"left out {len(unlabelled)} clip(s) without a hard label" in capsys.readouterr().out
    kept = ds.manifest.df[ds.manifest.labelled].reset_index(drop=True)
    labelled_only = data.Dataset(data.Manifest(ds.manifest.root, kept), ds.features, ds.soft)
    train_mod.train_run(tmp_path / "without", labelled_only, cfg, tiny_data[2], TINY_MODEL, resume=False)
    assert_same_run(tmp_path / "with", tmp_path / "without")
    config = json.loads((tmp_path / "with" / "config.json").read_text())
    assert config["n_train"] == len(ds.split("train")) - len(unlabelled)


def test_training_refuses_unlabelled_clips_without_a_soft_label(transfer, tiny_data, tmp_path):
    ds, unlabelled, _ = transfer
    no_teacher = data.Dataset(ds.manifest, ds.features)
    with pytest.raises(DataError, match=rf"{len(unlabelled)} clip\(s\) have neither .*'{unlabelled[0]}' \(row"):
        train_mod.train_run(tmp_path / "run", no_teacher, TrainConfig(**TINY_TRAIN), tiny_data[2], TINY_MODEL)
    assert not (tmp_path / "run").exists()


def test_train_hard_is_the_mean_over_the_labelled_clips(transfer, tiny_data, tmp_path):
    """A training pass with lr = 0: train_hard is the cross-entropy summed over the labelled clips of every
    batch divided by their number (not by all clips), train_soft likewise over the clips with a teacher."""
    ds, _, _ = transfer
    cfg = TrainConfig(**{**TINY_TRAIN, "random_segment": False})  # lr: SGD at 0 below; 8 clips a batch
    train_set = data.ClipDataset(ds.split("train"), ds.features, ds.soft)
    seed_everything(0)
    model = ClipClassifier(tiny_data[2], dataclasses.replace(TINY_MODEL, dropout=0.0))
    trainer = train_mod.Trainer(model, train_set, train_set, cfg, tmp_path / "run", tiny_data[2], TINY_MODEL)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches, to_device = [], trainer._batch
    trainer._batch = lambda batch, train: (batches.append(batch), to_device(batch, train))[1]
    out = trainer._run_epoch(model, train_set, True, 0, torch.optim.SGD(model.parameters(), lr=0.0))
    model.load_state_dict(state)  # the BatchNorm running statistics moved; training mode uses batch statistics
    model.train()
    t, ce_sum, kl_sum, n_labelled, n = cfg.temperature, 0.0, 0.0, 0, 0
    labelled_per_batch = []
    with torch.no_grad():
        for batch in batches:  # the batches the trainer saw
            logits, _ = model(batch["features"], batch["segment_mask"])
            has = batch["label_mask"]
            ce_sum += float(torch.nn.functional.cross_entropy(logits[has], batch["label"][has], reduction="sum"))
            q = torch.softmax(torch.log(batch["soft_clip"].clamp_min(1e-6)) / t, 1)
            kl_sum += t * t * float(torch.nn.functional.kl_div(torch.log_softmax(logits / t, 1), q, reduction="sum"))
            n_labelled, n = n_labelled + int(has.sum()), n + len(has)
            labelled_per_batch.append(int(has.sum()))
    assert len(set(labelled_per_batch)) > 1 and n_labelled < n  # the batches differ in their labelled share
    assert out["hard"] == pytest.approx(ce_sum / n_labelled, rel=1e-5)
    assert out["soft"] == pytest.approx(kl_sum / n, rel=1e-5)  # every clip has a teacher label here


# ----------------------------------------------------------------------------- what else reads train labels

def test_dnsmos_calibrates_on_the_labelled_train_clips_and_labels_every_clip(tmp_path, monkeypatch):
    from mark2_lib import dnsmos

    labels = [0, 1, "", 0, 1, "", 1, 0, 0, 1]
    splits = ["train"] * 8 + ["val"] * 2
    m = data.load_labels(make_folder(tmp_path, labels, splits))
    bak = np.array([4.1, 1.9, 4.4, 3.0, 2.6, 1.2, 2.2, 3.7, 3.9, 1.5])
    scores = pd.DataFrame({"clip_id": m.clip_ids, "split": splits, "sig": 3.0, "bak": bak, "ovr": 3.0,
                           "cached": False})
    monkeypatch.setattr(dnsmos, "score_manifest", lambda *a, **k: (scores.copy(), {}))
    out = dnsmos.dnsmos_soft_labels(m, CFG, tmp_path / "cache", tmp_path / "soft.csv", progress=False)
    train = m.labelled & (np.array(splits) == "train")
    a, b = dnsmos.fit_platt(bak[train], m.df["label"][train])
    assert (out["a"], out["b"]) == (a, b)
    assert out["ece_train"] == pytest.approx(
        dnsmos.expected_calibration_error(m.df["label"][train], dnsmos.platt(bak[train], a, b)))
    soft = data.load_soft_labels(tmp_path / "soft.csv", m)
    assert set(soft.clip) == set(m.clip_ids)  # the unlabelled clips get their soft labels too
    assert data.without_soft_label(m, soft) == []


def test_label_balance_counts_the_unlabelled_clips(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from mark2_lib.plots import plot_label_balance

    m = data.load_labels(make_folder(tmp_path, [0, "", 1, "", 0, 1], ["train"] * 4 + ["val", "test"]))
    ax = plot_label_balance(m.df)
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert heights == {"clean": [1, 1, 0], "noise": [1, 0, 1], "unlabelled": [2, 0, 0]}  # train, val, test


def test_label_vs_snr_draws_the_labelled_clips_as_dots_and_all_on_the_curve():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from mark2_lib.plots import plot_label_vs_snr

    truth = pd.DataFrame({"clip_id": list("abcde"), "noise_type": ["fan"] * 4 + ["none"],
                          "snr_db": [0.0, 5.0, 10.0, 15.0, None], "label": ["noise", None, "clean", None, "clean"],
                          "p_noise_annotator": [0.9, 0.7, 0.3, 0.1, 0.0]})
    ax = plot_label_vs_snr(truth).axes[0]
    dots = ax.collections[0].get_offsets()
    assert list(dots[:, 0]) == [0.0, 10.0] and list(dots[:, 1].round()) == [1.0, 0.0]  # the unlabelled: no dot
    assert list(ax.lines[0].get_xdata()) == [0.0, 5.0, 10.0, 15.0]
