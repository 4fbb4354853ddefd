"""Run folders and feature caches written before the library's modules moved still load, resume and
are reused. tests/fixtures/legacy/ was written by that code (legacy.json names the commit): a finished
KD run named by `run_name`, the same run killed after its second epoch (last.pt, no result.json), and
the cache keys and logits the old code computed."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mark2_lib import load_classifier, train
from mark2_lib.builders import synth
from mark2_lib.config import TrainConfig, audio_config, model_config
from mark2_lib.data import open_dataset, write_soft_labels
from mark2_lib.experiments import cached_train
from mark2_lib.train import train_run

FIXTURE = Path(__file__).parent / "fixtures" / "legacy"
META = json.loads((FIXTURE / "legacy.json").read_text())
CFG = TrainConfig(epochs=3, patience=10, batch_size=16, seed=0, progress=False)  # as the fixture's runs


@pytest.fixture(scope="module")
def legacy_data(tmp_path_factory):
    """The data the fixture's runs were trained on, rebuilt: 48 synthetic clips, soft labels from truth.csv."""
    root = tmp_path_factory.mktemp("legacy")
    data_dir = synth.make_default_dataset(root / "data", n_clips=48, seed=7, progress=False,
                                          splits=(("val", 0.15), ("test", 0.15)))
    truth = pd.read_csv(data_dir / "truth.csv")
    write_soft_labels(data_dir / "soft_labels.csv", truth["clip_id"], truth["p_noise_annotator"].to_numpy(),
                      teacher="annotator")
    return open_dataset(data_dir, audio_config("student"), root / "cache", progress=False)


def weights(run_dir: Path) -> dict:
    return {name: torch.load(run_dir / name, weights_only=True) for name in ("encoder.pt", "head.pt")}


def test_feature_cache_and_data_keys_are_unchanged(legacy_data, tmp_path_factory):
    """A feature cache is a folder named by AudioConfig.key(), and runs are named with the data key:
    the same keys find the caches and runs the old code made."""
    assert audio_config("student").key() == META["audio_key"]
    assert audio_config("teacher").key() == META["teacher_audio_key"]
    assert legacy_data.key == META["data_key"]


def test_old_run_loads_and_predicts_as_it_did(legacy_data):
    model = load_classifier(FIXTURE / META["run_name"])
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.1)[None]
    with torch.no_grad():
        logits = model(wave)[0]
    assert logits.tolist() == META["logits"]  # the same fold, so the same float operations


def test_finished_old_run_is_reused_not_retrained(legacy_data, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE / META["run_name"], root / META["run_name"])
    before = {p.name: p.read_bytes() for p in (root / META["run_name"]).iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run with the same settings was trained again")

    monkeypatch.setattr(train.Trainer, "fit", no_training)
    result = cached_train(root, "kd", legacy_data, CFG, audio_config("student"), model_config("student"))
    assert Path(result["run_dir"]).name == META["run_name"]
    assert {p.name: p.read_bytes() for p in (root / META["run_name"]).iterdir()} == before


def test_killed_old_run_resumes_to_the_old_uninterrupted_result(legacy_data, tmp_path):
    run = tmp_path / "killed"
    shutil.copytree(FIXTURE / "killed", run)
    assert len(pd.read_csv(run / "history.csv")) == 2 and not (run / "result.json").exists()
    result = train_run(run, legacy_data, CFG, audio_config("student"), model_config("student"), resume=True,
                       extra_config={"data_key": legacy_data.key})
    full = FIXTURE / META["run_name"]
    expected = json.loads((full / "result.json").read_text())
    assert (result["epochs_run"], result["best_epoch"]) == (expected["epochs_run"], expected["best_epoch"])
    a, b = pd.read_csv(run / "history.csv"), pd.read_csv(full / "history.csv")
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=True)
    for name, tensors in weights(full).items():
        for key, value in tensors.items():
            torch.testing.assert_close(weights(run)[name][key], value, rtol=0, atol=0, msg=f"{name} {key}")
