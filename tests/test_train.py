"""Tests for mark2_lib.train: learning, run folder, best weights, determinism, resume after a real
SIGKILL, atomic checkpoints, early stopping, NaN, load_classifier round trip, no test-label leakage.

Most tests stub loss_curves.png (matplotlib costs ~0.1-0.5 s per redraw here); the shared reference
run and test_run_directory_contents use the real plot.
"""
import copy
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mark2_lib
from mark2_lib import train as train_mod
from mark2_lib.audio import AudioConfig
from mark2_lib.data import ClipDataset, Manifest, SoftLabels, collate_clips, load_soft_labels, write_soft_labels
from mark2_lib.losses import DistillationLoss
from mark2_lib.models import ClipClassifier, ModelConfig, model_config
from mark2_lib.train import TrainConfig, train_run

ROOT = Path(__file__).resolve().parents[1]
# The shared reference run: tiny model, KD with soft labels, dropout and random segments (both use
# the global RNG, so resume must restore it). Its validation losses make a resume from epoch 3
# depend on the restored state: the best epoch (3) is not the last (6), and the learning rate is
# halved after epochs 4 and 5, which a freshly built scheduler or early stopper would do differently.
# (The model is kept without level norm and stats pooling, as when these properties were chosen.)
REF_MODEL = ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16, pooling="attention", dropout=0.1,
                        level_norm=False, stats_pooling=False)
REF_TRAIN = dict(alpha=0.5, temperature=2.0, epochs=6, patience=100, batch_size=8, lr=2e-2, seed=5,
                 lr_patience=0, random_segment=True, soft_target="clip", progress=False)
HISTORY_COLUMNS = {"epoch", "lr", "seconds", "train_total", "train_soft", "train_hard", "val_total", "val_soft",
                   "val_hard", "val_accuracy", "val_macro_f1", "val_roc_auc"}


# ----------------------------------------------------------------------------- helpers and fixtures

@pytest.fixture(scope="module")
def soft(tiny_data, tmp_path_factory):
    """Teacher soft labels for every clip (the synthetic annotator's P(noise)), read back from a CSV."""
    manifest = tiny_data[0]
    truth = pd.read_csv(manifest.root / "truth.csv")
    path = write_soft_labels(tmp_path_factory.mktemp("soft") / "soft_labels.csv", truth["clip_id"],
                             truth["p_noise_annotator"])
    return load_soft_labels(path, manifest)


class CountingCurves:
    """Stands in for plots.LossCurves: records which epochs were drawn, optionally slowly, and draws nothing."""

    drawn: list = []
    cost = 0.0

    def __init__(self, *a, **k):
        pass

    def update(self, history):
        CountingCurves.drawn.append(len(history))

    def save(self, path, dpi=80):
        time.sleep(CountingCurves.cost)


@pytest.fixture
def no_plots(monkeypatch):
    """Skip loss_curves.png (slow, and not what these tests check); yields the stand-in class."""
    import mark2_lib.plots
    monkeypatch.setattr(mark2_lib.plots, "LossCurves", CountingCurves)
    CountingCurves.drawn, CountingCurves.cost = [], 0.0
    yield CountingCurves


def run_ref(run_dir, tiny_data, soft, resume=True, **overrides):
    manifest, features, audio_cfg = tiny_data
    return train_run(run_dir, manifest, features, soft, TrainConfig(**{**REF_TRAIN, **overrides}),
                     audio_cfg, REF_MODEL, resume=resume)


@pytest.fixture(scope="module")
def ref_run(tiny_data, soft, tmp_path_factory):
    """One uninterrupted reference run (real plots); also captures, in memory, the encoder/head
    state dicts the trainer chose as best."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    saved = {}
    real_save = train_mod.atomic_save

    def spy(obj, path):
        if Path(path).name in ("encoder.pt", "head.pt"):
            saved[Path(path).name] = copy.deepcopy(obj)
        return real_save(obj, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "atomic_save", spy)
        result = run_ref(run_dir, tiny_data, soft, resume=False)
    return run_dir, result, saved


def history(run_dir) -> pd.DataFrame:
    """history.csv without the wall-clock column."""
    return pd.read_csv(Path(run_dir) / "history.csv").drop(columns="seconds")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(run_a, run_b):
    for name in ("encoder.pt", "head.pt"):
        a, b = load(Path(run_a) / name), load(Path(run_b) / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs"
    a, b = load(Path(run_a) / "last.pt"), load(Path(run_b) / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"last.pt model:{k} differs"
    for k in ("epoch", "finished", "early_stopping"):
        assert a[k] == b[k], k


def same_result(a: dict, b: dict) -> bool:
    """Equal apart from run_dir (compared as JSON text, so NaN equals NaN)."""
    return json.dumps({**a, "run_dir": None}) == json.dumps({**b, "run_dir": None})


def assert_same_run(run_a, run_b):
    pd.testing.assert_frame_equal(history(run_a), history(run_b))
    assert_same_weights(run_a, run_b)
    a, b = (json.loads((Path(r) / "result.json").read_text()) for r in (run_a, run_b))
    assert same_result(a, b), (a, b)


def best_model(run_dir, audio_cfg, model_cfg) -> ClipClassifier:
    model = ClipClassifier(audio_cfg, model_cfg)
    model.encoder.load_state_dict(load(Path(run_dir) / "encoder.pt"))
    model.head.load_state_dict(load(Path(run_dir) / "head.pt"))
    return model.eval()


def batch_of(manifest, features, soft_labels=None) -> dict:
    ds = ClipDataset(manifest, features, soft_labels)
    return collate_clips([ds[i] for i in range(len(ds))])


# ----------------------------------------------------------------------------- it learns

def test_overfits_16_clips(tiny_data, tmp_path, no_plots):
    manifest, features, audio_cfg = tiny_data
    df = manifest.split("train").df
    df16 = pd.concat([df[df["label"] == 0].head(8), df[df["label"] == 1].head(8)])
    assert len(df16) == 16
    same = Manifest(manifest.root, pd.concat([df16, df16.assign(split="val")], ignore_index=True))  # val = train
    cfg = TrainConfig(alpha=0.0, epochs=30, patience=1000, batch_size=8, lr=5e-3, seed=0, progress=False)
    result = train_run(tmp_path / "overfit", same, features, None, cfg, audio_cfg,
                       model_config("student", dropout=0.0), resume=False)
    h = history(tmp_path / "overfit")
    assert result["epochs_run"] == 30
    assert h["train_total"].iloc[0] > 0.3                     # it started far from zero ...
    assert h["train_total"].iloc[-1] < 0.05                   # ... and fit the 16 clips
    assert h["val_total"].iloc[-1] < 0.05 and h["val_accuracy"].iloc[-1] == 1.0
    assert h["train_soft"].isna().all()                       # alpha = 0 and no teacher: no soft term


# ----------------------------------------------------------------------------- what a run leaves behind

def test_run_directory_contents(ref_run, tiny_data):
    run_dir, result, _ = ref_run
    manifest, _, audio_cfg = tiny_data
    assert {"config.json", "encoder.pt", "head.pt", "last.pt", "history.csv", "loss_curves.png",
            "result.json"} <= {p.name for p in run_dir.iterdir()}
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")], "temp files left behind"

    config = json.loads((run_dir / "config.json").read_text())
    assert AudioConfig.from_dict(config["audio"]) == audio_cfg
    assert ModelConfig.from_dict(config["model"]) == REF_MODEL
    assert TrainConfig(**config["train"]) == TrainConfig(**REF_TRAIN)
    assert config["n_train"] == len(manifest.split("train")) and config["n_val"] == len(manifest.split("val"))

    h = pd.read_csv(run_dir / "history.csv")
    assert HISTORY_COLUMNS <= set(h.columns)
    assert h["epoch"].tolist() == list(range(1, REF_TRAIN["epochs"] + 1))
    assert (h["seconds"] > 0).all() and h[sorted(HISTORY_COLUMNS - {"val_roc_auc"})].notna().all().all()

    png = (run_dir / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

    for name in ("encoder.pt", "head.pt", "last.pt"):
        load(run_dir / name)  # weights_only=True: plain tensors and Python values only
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result)) and on_disk["epochs_run"] == len(h)
    assert "epoch budget" in on_disk["stop_reason"]


def test_reference_run_has_the_schedule_the_resume_tests_rely_on(ref_run):
    """As the REF_TRAIN comment says: best epoch 3 of 6 and the learning rate halved after epochs 4 and 5
    (history's lr is the rate each epoch trained with), so a resume from epoch 3 depends on restored state."""
    run_dir, result, _ = ref_run
    lr = REF_TRAIN["lr"]
    want = [lr] * 4 + [lr / 2, lr / 4]
    assert [row["lr"] for row in load(run_dir / "last.pt")["history"]] == want
    np.testing.assert_allclose(pd.read_csv(run_dir / "history.csv")["lr"], want, rtol=1e-6)
    assert result["best_epoch"] == 3 and result["epochs_run"] == 6


def test_saved_encoder_and_head_are_the_best_epoch(ref_run, tiny_data, soft):
    run_dir, result, _ = ref_run
    manifest, features, audio_cfg = tiny_data
    last = load(run_dir / "last.pt")
    val_total = [row["val_total"] for row in last["history"]]  # full precision
    best = int(np.argmin(val_total))
    assert result["best_epoch"] == best + 1
    assert best + 1 != len(val_total), "the reference run should have its best epoch before its last"

    # Recompute the validation loss (one batch: n_val <= batch_size) with the saved weights.
    batch = batch_of(manifest.split("val"), features, soft)
    loss_fn = DistillationLoss(REF_TRAIN["alpha"], REF_TRAIN["temperature"])

    def val_loss(model):
        with torch.no_grad():
            logits, _ = model.eval()(batch["features"], batch["segment_mask"])
            return float(loss_fn(logits, batch["soft_clip"], batch["label"], soft_mask=batch["soft_clip_mask"]))

    assert len(manifest.split("val")) <= REF_TRAIN["batch_size"]
    assert val_loss(best_model(run_dir, audio_cfg, REF_MODEL)) == pytest.approx(val_total[best], rel=1e-5)
    final = ClipClassifier(audio_cfg, REF_MODEL)
    final.load_state_dict(last["model"])
    assert val_loss(final) == pytest.approx(val_total[-1], rel=1e-5)
    encoder = load(run_dir / "encoder.pt")
    assert any(not torch.equal(encoder[k], last["model"][f"encoder.{k}"]) for k in encoder)


# ----------------------------------------------------------------------------- reproducibility

def test_same_seed_gives_identical_run(ref_run, tiny_data, soft, tmp_path, no_plots):
    run_ref(tmp_path / "again", tiny_data, soft, resume=False)
    assert_same_run(ref_run[0], tmp_path / "again")
    run_ref(tmp_path / "other_seed", tiny_data, soft, resume=False, seed=2)
    assert not history(tmp_path / "other_seed").equals(history(ref_run[0]))


DRIVER = textwrap.dedent('''
    """Train the reference run in its own process; "slow" sleeps per batch so it can be killed mid-epoch."""
    import json, sys, time, types
    args = json.loads(sys.argv[1])
    # loss_curves.png is not compared; skip matplotlib (its import alone takes seconds)
    class NoCurves:
        def __init__(self, *a, **k): pass
        def update(self, history): pass
        def save(self, path, dpi=80): pass
    sys.modules["mark2_lib.plots"] = types.SimpleNamespace(LossCurves=NoCurves)
    import torch
    torch.set_num_threads(args["threads"])
    import mark2_lib.train as T
    from mark2_lib.audio import AudioConfig
    from mark2_lib.data import FeatureCache, load_labels, load_soft_labels
    from mark2_lib.models import ModelConfig
    if args["slow"]:
        real_collate = T.collate_clips
        T.collate_clips = lambda batch: (time.sleep(0.05), real_collate(batch))[1]
    audio_cfg = AudioConfig.from_dict(args["audio"])
    manifest = load_labels(args["labels"], sample_rate=audio_cfg.sample_rate)
    features = FeatureCache(args["cache"], audio_cfg).features(manifest, progress=False)
    soft = load_soft_labels(args["soft"], manifest)
    T.train_run(args["run_dir"], manifest, features, soft, T.TrainConfig(**args["train"]), audio_cfg,
                ModelConfig.from_dict(args["model"]), resume=True)
''')


def test_resume_after_sigkill_matches_uninterrupted_run(ref_run, tiny_data, soft, tmp_path, no_plots):
    manifest, _, audio_cfg = tiny_data
    run_dir = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    args = dict(labels=str(manifest.root / "labels.csv"), cache=str(manifest.root.parent / "cache"),
                soft=soft.source[0], run_dir=str(run_dir), audio=audio_cfg.to_dict(), train=REF_TRAIN,
                model=REF_MODEL.to_dict(), threads=torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    proc = subprocess.Popen([sys.executable, str(driver), json.dumps({**args, "slow": True})], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"driver exited early:\n{proc.stdout.read().decode()}"
            assert time.monotonic() < deadline, "driver did not finish 3 epochs in time"
            try:
                if len(pd.read_csv(run_dir / "history.csv")) >= 3:
                    break
            except (FileNotFoundError, pd.errors.EmptyDataError):
                pass
            time.sleep(0.01)
        time.sleep(0.2)  # land inside the fourth epoch (~0.35 s long with --slow)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    state = load(run_dir / "last.pt")
    assert not state["finished"] and state["epoch"] >= 2  # killed in epoch 4 (or, on a busy machine, later)
    assert not (run_dir / "result.json").exists()

    # Resume in this process (same thread count; train_run keeps no state between calls).
    run_ref(run_dir, tiny_data, soft)
    assert_same_run(ref_run[0], run_dir)


@pytest.mark.parametrize("crash_in", ["torch.save", "os.replace"])
def test_crash_while_writing_checkpoint_keeps_previous_last_pt(crash_in, ref_run, tiny_data, soft, tmp_path,
                                                               monkeypatch, no_plots):
    """The 4th epoch's last.pt write dies (half the bytes written, or before the rename)."""
    run_dir = tmp_path / "run"
    real_save, real_replace = torch.save, os.replace
    seen = {"n": 0}

    def is_last_pt_tmp(name) -> bool:
        return Path(name).name.startswith(".last.pt.") and str(name).endswith(".tmp")

    def crashing_save(obj, f, *a, **k):
        if is_last_pt_tmp(getattr(f, "name", "")):
            seen["n"] += 1
            if seen["n"] == 4:
                seen["previous"] = (run_dir / "last.pt").read_bytes()
                buf = io.BytesIO()
                real_save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                raise OSError("simulated crash in torch.save")
        return real_save(obj, f, *a, **k)

    def crashing_replace(src, dst, *a, **k):
        if is_last_pt_tmp(src):
            seen["n"] += 1
            if seen["n"] == 4:
                seen["previous"] = (run_dir / "last.pt").read_bytes()
                raise OSError("simulated crash in os.replace")
        return real_replace(src, dst, *a, **k)

    with monkeypatch.context() as mp:
        if crash_in == "torch.save":
            mp.setattr(torch, "save", crashing_save)
        else:
            mp.setattr(os, "replace", crashing_replace)
        with pytest.raises(OSError, match="simulated crash"):
            run_ref(run_dir, tiny_data, soft)

    assert seen["n"] == 4
    assert (run_dir / "last.pt").read_bytes() == seen["previous"]  # untouched by the failed write
    state = load(run_dir / "last.pt")
    assert state["epoch"] == 2 and not state["finished"] and len(state["history"]) == 3
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temp file left
    run_ref(run_dir, tiny_data, soft)  # resume finishes the run
    assert_same_run(ref_run[0], run_dir)


# ----------------------------------------------------------------------------- resume rules

def test_resume_refuses_a_different_configuration(ref_run, tiny_data, soft, tmp_path):
    run_dir = shutil.copytree(ref_run[0], tmp_path / "run")
    last = (run_dir / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="config.json"):
        run_ref(run_dir, tiny_data, soft, lr=1e-3)
    with pytest.raises(ValueError, match="config.json"):
        train_run(run_dir, tiny_data[0], tiny_data[1], soft, TrainConfig(**REF_TRAIN), tiny_data[2],
                  model_config("student"), resume=True)
    assert (run_dir / "last.pt").read_bytes() == last


class RunsCode:
    """Unpickling this calls os.mkdir(path): a visible side effect, as a malicious checkpoint's code would have."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_resume_refuses_a_last_pt_that_would_run_code(ref_run, tiny_data, soft, tmp_path):
    """last.pt is read with weights_only=True: a pickled custom object is refused before its code runs."""
    run_dir, sentinel = shutil.copytree(ref_run[0], tmp_path / "run"), tmp_path / "code_ran"
    torch.save({**load(run_dir / "last.pt"), "payload": RunsCode(sentinel)}, run_dir / "last.pt")
    with pytest.raises(pickle.UnpicklingError, match="weights_only|Weights only"):
        run_ref(run_dir, tiny_data, soft)
    assert not sentinel.exists(), "resuming ran code from last.pt"


def _no_training(*a, **k):
    raise AssertionError("a finished run must not train again")


def test_resuming_a_finished_run_returns_its_result_without_training(ref_run, tiny_data, soft, tmp_path,
                                                                     monkeypatch):
    run_dir = shutil.copytree(ref_run[0], tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.suffix in (".pt", ".csv")}

    monkeypatch.setattr(train_mod.Trainer, "_run_epoch", _no_training)
    result = run_ref(run_dir, tiny_data, soft, progress=True)  # runtime-only settings may differ
    assert same_result(result, ref_run[1])
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.suffix in (".pt", ".csv")} == before


# ----------------------------------------------------------------------------- stopping

def expected_epochs(val_total, patience) -> int:
    """Epochs an early stopper with Lightning's rules runs (strict improvement, min_delta 0)."""
    best, wait = float("inf"), 0
    for i, v in enumerate(val_total):
        if v < best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return i + 1
    return len(val_total)


@pytest.mark.parametrize("patience", [0, 1, 2])
def test_early_stopping_stops_training(patience, tiny_data, tmp_path, monkeypatch, no_plots):
    manifest, features, audio_cfg = tiny_data
    cfg = TrainConfig(alpha=0.0, epochs=30, patience=patience, batch_size=8, lr=3e-2, seed=0, progress=False)
    result = train_run(tmp_path / "run", manifest, features, None, cfg, audio_cfg,
                       ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16), resume=False)
    val_total = [row["val_total"] for row in load(tmp_path / "run" / "last.pt")["history"]]
    assert len(history(tmp_path / "run")) == result["epochs_run"] == len(val_total) < 30
    assert result["epochs_run"] == expected_epochs(val_total, patience)
    assert result["best_epoch"] == int(np.argmin(val_total)) + 1
    assert "did not improve" in result["stop_reason"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["stop_reason"] == result["stop_reason"]

    # resuming the stopped run trains no further epochs and returns the same result
    monkeypatch.setattr(train_mod.Trainer, "_run_epoch", _no_training)
    again = train_run(tmp_path / "run", manifest, features, None, cfg, audio_cfg,
                      ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16), resume=True)
    assert same_result(again, result) and again["run_dir"] == result["run_dir"]

    # a run started with another model (here the same widths with level norm and stats pooling off)
    # is never resumed or overwritten: the error names the config file and what differs
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match=r"config\.json: cannot resume.*differs in \['model'\]"):
        train_run(tmp_path / "run", manifest, features, None, cfg, audio_cfg,
                  ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16, level_norm=False,
                              stats_pooling=False), resume=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_min_delta_reaches_early_stopping(tiny_data, tmp_path, no_plots):
    """TrainConfig.min_delta is the early stopper's: with a gain of at most 100 not counting, epoch 2 is no
    improvement although its validation loss is lower, so patience 1 stops there."""
    manifest, features, audio_cfg = tiny_data
    cfg = TrainConfig(alpha=0.0, epochs=4, patience=1, min_delta=100.0, batch_size=8, lr=3e-2, seed=0,
                      progress=False)
    result = train_run(tmp_path / "run", manifest, features, None, cfg, audio_cfg,
                       ModelConfig(stem_channels=8, channels=(12, 16), head_hidden=16), resume=False)
    last = load(tmp_path / "run" / "last.pt")
    val_total = [row["val_total"] for row in last["history"]]
    assert val_total[1] < val_total[0]  # an improvement with min_delta 0: only min_delta stops this run
    assert result["epochs_run"] == 2 and result["best_epoch"] == 1
    assert "did not improve by more than 100.0 for 1 epoch" in result["stop_reason"], result["stop_reason"]
    assert last["early_stopping"]["min_delta"] == 100.0 and last["finished"]


def test_diverging_run_stops_with_nan_reason(tiny_data, tmp_path, no_plots):
    manifest, features, audio_cfg = tiny_data
    cfg = TrainConfig(alpha=0.0, epochs=5, patience=100, batch_size=8, lr=1e6, seed=0, progress=False)
    result = train_run(tmp_path / "run", manifest, features, None, cfg, audio_cfg, REF_MODEL, resume=False)
    assert "nan" in result["stop_reason"].lower()
    h = history(tmp_path / "run")
    assert result["epochs_run"] == len(h) < 5
    assert h.iloc[-1][["val_total", "val_accuracy", "val_macro_f1", "val_roc_auc"]].isna().all()  # no made-up metrics


def test_nan_loss_stops_and_keeps_the_last_good_weights(tiny_data, soft, tmp_path, monkeypatch, no_plots):
    manifest, features, audio_cfg = tiny_data
    n_train_batches = -(-len(manifest.split("train")) // REF_TRAIN["batch_size"])
    calls = {"n": 0}

    class NaNAfterTwoEpochs(DistillationLoss):
        def forward(self, logits, *a, **k):
            if torch.is_grad_enabled():  # training steps only
                calls["n"] += 1
                if calls["n"] > 2 * n_train_batches:
                    logits = logits * float("nan")
            return super().forward(logits, *a, **k)

    monkeypatch.setattr(train_mod, "DistillationLoss", NaNAfterTwoEpochs)
    result = run_ref(tmp_path / "run", tiny_data, soft, resume=False, epochs=6)
    assert "nan" in result["stop_reason"].lower()
    assert result["epochs_run"] == 3 and result["best_epoch"] in (1, 2)
    model = mark2_lib.load_classifier(tmp_path / "run")  # the best weights are still finite and usable
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())


# ----------------------------------------------------------------------------- deployment and leakage

def test_load_classifier_round_trips_predictions_bit_for_bit(ref_run, tiny_data):
    run_dir, _, saved = ref_run
    manifest, features, audio_cfg = tiny_data
    in_process = ClipClassifier(audio_cfg, REF_MODEL)
    in_process.encoder.load_state_dict(saved["encoder.pt"])  # captured in memory during training
    in_process.head.load_state_dict(saved["head.pt"])
    in_process.eval()
    loaded = mark2_lib.load_classifier(run_dir)
    assert not loaded.training
    batch = batch_of(manifest, features)  # every clip, train/val/test
    with torch.no_grad():
        expected, _ = in_process(batch["features"], batch["segment_mask"])
        got, _ = loaded.model(batch["features"], batch["segment_mask"])
        assert torch.equal(got, expected)
        # and from the audio file, through the bundled front end (float tolerance: other batching)
        from mark2_lib.audio import load_audio
        wave = load_audio(manifest.df["path"].iloc[0], audio_cfg.sample_rate)
        torch.testing.assert_close(loaded(wave[None])[0], expected[0], atol=1e-5, rtol=1e-5)


class RecordingDict(dict):
    """A dict that records every key looked up through it."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.looked_up = set()

    def __getitem__(self, key):
        self.looked_up.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.looked_up.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.looked_up.add(key)
        return super().__contains__(key)


def test_training_never_reads_soft_labels_of_test_clips(tiny_data, soft, tmp_path, monkeypatch, no_plots):
    manifest, features, audio_cfg = tiny_data
    test_ids = set(manifest.split("test").clip_ids)
    assert test_ids
    nan = np.array([np.nan, np.nan])  # a test label that reached the loss would raise (not finite)
    clip = RecordingDict({c: nan if c in test_ids else p for c, p in soft.clip.items()})
    segment = RecordingDict({c: {0: nan if c in test_ids else p} for c, p in soft.clip.items()})
    spied = SoftLabels(clip, segment, list(soft.teachers), list(soft.source))
    datasets = []

    class SpyDataset(ClipDataset):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            datasets.append(self)

    monkeypatch.setattr(train_mod, "ClipDataset", SpyDataset)
    run_ref(tmp_path / "run", tiny_data, spied, resume=False, epochs=1)
    assert not (clip.looked_up | segment.looked_up) & test_ids
    assert len(datasets) == 2
    for ds in datasets:
        assert not (set(ds.clip_ids) | set(ds.soft.clip) | set(ds.soft.segment)) & test_ids


# ----------------------------------------------------------------------------- loss_curves.png redraws

def test_loss_curves_redrawn_every_epoch_within_budget(tiny_data, soft, tmp_path, no_plots):
    run_ref(tmp_path / "every", tiny_data, soft, curves_budget=1.0)
    assert no_plots.drawn == list(range(1, REF_TRAIN["epochs"] + 1))


def test_slow_redraws_are_skipped_but_the_last_epoch_is_drawn(tiny_data, soft, tmp_path, no_plots):
    no_plots.cost = 0.3  # each redraw costs far more than 5 % of these tiny epochs
    run_ref(tmp_path / "budget", tiny_data, soft)
    assert no_plots.drawn[-1] == REF_TRAIN["epochs"]
    assert len(no_plots.drawn) < REF_TRAIN["epochs"]
    assert len(pd.read_csv(tmp_path / "budget" / "history.csv")) == REF_TRAIN["epochs"]  # history: every epoch


def test_failed_run_draws_its_last_epoch(tiny_data, soft, tmp_path, monkeypatch, no_plots):
    no_plots.cost = 0.3
    real_epoch, calls = train_mod.Trainer._run_epoch, []

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) > 6:  # train + val of three epochs, then the fourth training pass fails
            raise RuntimeError("disk full")
        return real_epoch(self, *a, **k)

    monkeypatch.setattr(train_mod.Trainer, "_run_epoch", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        run_ref(tmp_path / "failed", tiny_data, soft)
    assert no_plots.drawn[-1] == 3


def test_curves_budget_is_validated():
    with pytest.raises(ValueError, match="curves_budget"):
        TrainConfig(curves_budget=0)


def test_spec_augment_masks_one_band_run_and_one_frame_run_per_segment():
    torch.manual_seed(0)
    feats = torch.randn(4, 3, 32, 41) * 10 - 40
    out = train_mod.spec_augment(feats, freq_mask=6, time_mask=8)
    assert out.shape == feats.shape and not torch.equal(out, feats)
    fill = float(feats.mean())
    changed = out != feats
    for seg_in, seg_out, ch in zip(feats.reshape(-1, 32, 41), out.reshape(-1, 32, 41), changed.reshape(-1, 32, 41)):
        bands = ch.all(dim=1).nonzero().flatten()     # rows masked over every frame
        frames = ch.all(dim=0).nonzero().flatten()    # columns masked over every band
        assert len(bands) < 6 and len(frames) < 8     # torchaudio draws widths in [0, mask_param)
        for idx in (bands, frames):                   # each mask is one contiguous run
            assert len(idx) == 0 or idx[-1] - idx[0] == len(idx) - 1
        keep = torch.ones_like(ch)
        keep[bands] = False
        keep[:, frames] = False
        assert torch.equal(seg_out[keep], seg_in[keep])          # nothing outside the two runs changes
        assert torch.allclose(seg_out[~keep], torch.full_like(seg_out[~keep], fill))
    assert torch.equal(train_mod.spec_augment(feats, 0, 0), feats)
    with pytest.raises(ValueError, match="time_mask"):
        TrainConfig(time_mask=-1)


def test_spec_augment_runs_in_training_only_and_is_seeded(tiny_data, soft, tmp_path, no_plots, monkeypatch):
    calls = []
    real = train_mod.spec_augment
    monkeypatch.setattr(train_mod, "spec_augment", lambda *a: calls.append(a[1:]) or real(*a))
    a = run_ref(tmp_path / "a", tiny_data, soft, epochs=2, freq_mask=4, time_mask=6)
    n_train_batches = len(calls)
    assert n_train_batches > 0 and set(calls) == {(4, 6)}
    b = run_ref(tmp_path / "b", tiny_data, soft, epochs=2, freq_mask=4, time_mask=6)
    assert len(calls) == 2 * n_train_batches   # the validation passes are never masked
    assert_same_run(a["run_dir"], b["run_dir"])
    plain = run_ref(tmp_path / "plain", tiny_data, soft, epochs=2)
    assert len(calls) == 2 * n_train_batches and not history(plain["run_dir"]).equals(history(a["run_dir"]))


# ----------------------------------------------------------------------------- segment-level distillation

def _val_trainer(tiny_data, soft_labels, tmp_path, **overrides):
    manifest, features, audio_cfg = tiny_data
    torch.manual_seed(0)
    model = ClipClassifier(audio_cfg, REF_MODEL)
    val = ClipDataset(manifest.split("val"), features, soft_labels)
    cfg = TrainConfig(**{**REF_TRAIN, **overrides})
    return train_mod.Trainer(model, val, val, cfg, tmp_path / "run", audio_cfg, REF_MODEL), model, val


def test_segment_soft_target_matches_a_per_segment_reference(tiny_data, tmp_path):
    manifest, features, _ = tiny_data
    val_ids = manifest.split("val").clip_ids
    rng = np.random.default_rng(0)
    seg_p = {c: rng.uniform(0.01, 0.99, features[c].shape[0]) for c in val_ids}
    soft = SoftLabels({c: np.array([0.5, 0.5]) for c in val_ids},
                      {c: {k: np.array([1 - q, q]) for k, q in enumerate(seg_p[c])} for c in val_ids})
    trainer, model, _ = _val_trainer(tiny_data, soft, tmp_path, soft_target="segment")
    out = trainer._run_epoch(trainer.val_set, train=False, epoch=0)

    model.eval()
    loss = DistillationLoss(REF_TRAIN["alpha"], REF_TRAIN["temperature"])
    labels = manifest.split("val").df.set_index("clip_id")["label"]
    with torch.no_grad():
        seg_logits = torch.cat([model.segment_forward(torch.tensor(np.array(features[c])))[0] for c in val_ids])
    targets = torch.tensor(np.concatenate([np.stack([1 - seg_p[c], seg_p[c]], 1) for c in val_ids]), dtype=torch.float32)
    hard = torch.tensor(np.concatenate([[labels[c]] * len(seg_p[c]) for c in val_ids]))
    expected = loss(seg_logits, targets, hard, return_parts=True)["soft"]
    assert out["soft"] == pytest.approx(float(expected), rel=1e-5)
    clip_mode = _val_trainer(tiny_data, soft, tmp_path, soft_target="clip")[0]._run_epoch(
        trainer.val_set, train=False, epoch=0)
    assert clip_mode["soft"] != pytest.approx(out["soft"], rel=1e-3)  # the option really switches targets
    assert clip_mode["hard"] == pytest.approx(out["hard"], rel=1e-6)  # the hard term is always per clip


def test_segments_without_teacher_labels_use_the_clip_label(tiny_data, tmp_path):
    manifest, features, _ = tiny_data
    val_ids = manifest.split("val").clip_ids
    p = {c: np.array([0.3, 0.7]) if i % 2 else np.array([0.9, 0.1]) for i, c in enumerate(val_ids)}
    clip_only = SoftLabels(dict(p), {})
    spelled_out = SoftLabels(dict(p), {c: {k: p[c] for k in range(features[c].shape[0])} for c in val_ids})
    a_trainer, b_trainer = (_val_trainer(tiny_data, s, tmp_path, soft_target="segment")[0]
                            for s in (clip_only, spelled_out))
    a = a_trainer._run_epoch(a_trainer.val_set, train=False, epoch=0)
    b = b_trainer._run_epoch(b_trainer.val_set, train=False, epoch=0)
    assert a["soft"] == pytest.approx(b["soft"], rel=1e-6) and a["soft"] > 0


def test_unknown_soft_target_is_rejected():
    with pytest.raises(ValueError, match="soft_target"):
        TrainConfig(soft_target="frame")
