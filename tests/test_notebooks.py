"""Every numbered notebook, executed through papermill with small parameters, in workbook order,
and the notebooks' training parameters against TrainConfig's defaults (parsed, not executed).

Each test checks the artifacts its notebook must leave. A notebook that raises fails its
test with papermill's report of the failing cell.
"""
import ast
import dataclasses
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import in_ci, onnx_missing
from sklearn.metrics import f1_score, roc_auc_score

from mark2_lib.baselines import noise_score, score_split
from mark2_lib.config import TrainConfig
from mark2_lib.metrics import ece_floor
from mark2_lib.run_folders import load_classifier
from mark2_lib.timing import count_parameters, macs_per_second
from mark2_lib.workbook import run_notebook

pytestmark = pytest.mark.notebook
ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
TIMEOUT = 300


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A scratch workspace shared by the notebooks of one test session, in workbook order."""
    root = tmp_path_factory.mktemp("workbook")
    return {
        "root": root, "data": root / "data", "pool": root / "pool", "cache": root / "cache",
        "runs": root / "runs", "out": root / "executed",
    }


def run(ws, name, cwd=NB, out=None, **params):
    return run_notebook(NB / name, ws["out"] / (out or name), {"progress": False, **params}, TIMEOUT, cwd=cwd)


def printed(executed: Path) -> str:
    """Everything the cells of an executed notebook printed."""
    cells = json.loads(executed.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o["output_type"] == "stream")


def parameters(notebook: Path) -> dict:
    """The defaults of a notebook's parameters cell, by name."""
    cell = next(c for c in json.loads(notebook.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    return {node.target.id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body
            if isinstance(node, ast.AnnAssign)}


def test_training_parameters_default_to_train_config():
    """Every parameter of notebooks 03 and 05 named like a TrainConfig field (alpha, temperature, epochs,
    patience, lr, batch_size, ...) has TrainConfig's default, so the two cannot drift apart. Only 03 and 05
    are compared: 04's sweep deliberately trains short runs (lr 0.003, epochs 5, patience 3) to compare
    alpha and T, and 02's teacher_* parameters are the teacher's own."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in ("03_train.ipynb", "05_evaluate.ipynb"):
        mirrored = {k: v for k, v in parameters(NB / name).items() if k in defaults}
        assert {"alpha", "temperature", "epochs", "patience", "lr", "batch_size"} <= set(mirrored), name
        drift = {k: {"notebook": v, "TrainConfig": defaults[k]} for k, v in mirrored.items() if v != defaults[k]}
        assert not drift, f"{name}: parameters that differ from TrainConfig's defaults: {drift}"


def outputs(ws, name):
    """(printed text, the text/plain of every displayed table, number of figures) of an executed notebook."""
    cells = json.loads((ws["out"] / name).read_text())["cells"]
    outs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    printed = "".join("".join(o["text"]) for o in outs if o["output_type"] == "stream")
    tables = ["".join(o["data"]["text/plain"]) for o in outs if "text/html" in o.get("data", {})]
    return printed, tables, sum("image/png" in o.get("data", {}) for o in outs)


def table_with_header(tables, *columns, whole=False):
    """The one displayed table whose header line starts with (`whole`: is) these columns."""
    found = [t for t in tables if t.splitlines()[0].split()[:None if whole else len(columns)] == list(columns)]
    assert len(found) == 1, f"{len(found)} displayed tables have the columns {columns}"
    return found[0]


def test_00_check_environment(ws):
    run_notebook(NB / "00_check_environment.ipynb", ws["out"] / "00_check_environment.ipynb", {}, TIMEOUT, cwd=NB)


def test_01_data(ws):
    run(ws, "01_data.ipynb", data_dir=str(ws["data"]), n_clips=60, cache_dir=str(ws["cache"]))
    labels = pd.read_csv(ws["data"] / "labels.csv")
    assert len(labels) == 60 and set(labels["split"]) == {"train", "val", "test"}
    assert (ws["data"] / "truth.csv").exists()
    assert any(ws["cache"].rglob("*.npy")), "features were not cached"
    # matplotlib figures land in the executed notebook even though the test process runs with MPLBACKEND=Agg
    outputs = [o for c in json.loads((ws["out"] / "01_data.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "the executed notebook shows no figures"


def test_02_teacher_soft_labels(ws):
    run(ws, "02_teacher_soft_labels.ipynb", data_dir=str(ws["data"]), pool_dir=str(ws["pool"]), pool_factor=2,
        teacher_epochs=2, teacher_run=str(ws["runs"] / "teacher"), cache_dir=str(ws["cache"]))
    soft = pd.read_csv(ws["data"] / "soft_labels.csv")
    clip_rows = soft[soft["segment"].isna()]
    assert set(clip_rows["clip_id"]) == set(pd.read_csv(ws["data"] / "labels.csv")["clip_id"])
    assert soft["segment"].notna().any(), "no per-segment soft labels"
    assert soft["p_noise"].between(0, 1).all() and np.allclose(soft["p_clean"] + soft["p_noise"], 1, atol=1e-6)
    for f in ("encoder.pt", "head.pt", "loss_curves.png", "history.csv"):
        assert (ws["runs"] / "teacher" / f).exists(), f
    assert len(pd.read_csv(ws["runs"] / "teacher" / "history.csv")) == 2  # teacher_epochs


def test_03_train_from_repo_root(ws):
    """Run from the repository root, as `papermill notebooks/03_train.ipynb ...` would."""
    run(ws, "03_train.ipynb", cwd=ROOT, data_dir=str(ws["data"]), epochs=2, run_name=str(ws["runs"] / "student"),
        cache_dir=str(ws["cache"]))
    run_dir = ws["runs"] / "student"
    for f in ("encoder.pt", "head.pt", "last.pt", "loss_curves.png", "history.csv", "config.json", "result.json"):
        assert (run_dir / f).exists(), f
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["alpha"] == 0.7 and config["train"]["temperature"] == 4.0
    result = json.loads((run_dir / "result.json").read_text())  # the best epoch's validation metrics
    assert result["epochs_run"] == 2 and result["best_epoch"] in (1, 2)
    best = history.set_index("epoch").loc[result["best_epoch"]]
    for k in ("val_accuracy", "val_macro_f1", "val_ece"):
        assert 0 <= result["best"][k] <= 1 and result["best"][k] == pytest.approx(best[k], abs=1e-5), k
    with torch.no_grad():  # the saved student loads and classifies waveforms
        logits = load_classifier(run_dir)(torch.randn(2, 40000, generator=torch.Generator().manual_seed(0)) * 0.1)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_03_train_beside_a_run_with_other_settings(ws):
    """After a change to the student, `make workbook` meets a run folder trained with other settings: notebook 03
    leaves it untouched, trains in <run_name>-<hash> beside it, and says so."""
    old = ws["runs"] / "changed"
    params = dict(data_dir=str(ws["data"]), run_name=str(old), cache_dir=str(ws["cache"]), epochs=1)
    run(ws, "03_train.ipynb", out="03_other_settings.ipynb", **params, alpha=0.5)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    run(ws, "03_train.ipynb", out="03_defaults.ipynb", **params)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    new = [p for p in ws["runs"].iterdir() if p.name.startswith("changed-")]
    assert len(new) == 1 and (new[0] / "encoder.pt").exists() and (new[0] / "loss_curves.png").exists()
    assert json.loads((new[0] / "config.json").read_text())["train"]["alpha"] == 0.7
    text = printed(ws["out"] / "03_defaults.ipynb")
    assert f"{old} holds a run trained with other settings (they differ in ['train'])" in text, text
    assert "left untouched" in text and f"this run goes to {new[0]} (a new run)" in text, text
    assert f"run folder: {new[0]}" in text, text


def test_03_train_rejects_bad_alpha(ws):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        run(ws, "03_train.ipynb", data_dir=str(ws["data"]), alpha=1.5, run_name=str(ws["runs"] / "bad"),
            cache_dir=str(ws["cache"]))
    assert "ValueError" in str(e.value) and "alpha" in str(e.value)
    assert not (ws["runs"] / "bad").exists(), "a bad alpha must stop before any training"


def test_03_train_cli_from_notebooks_folder(ws):
    """The documented command line: `cd notebooks && papermill 03_train.ipynb out.ipynb -p alpha 0.7`,
    here for a student with its size and front end changed through `student_config`."""
    out = ws["out"] / "03_cli.ipynb"
    cmd = [sys.executable, "-m", "papermill", "03_train.ipynb", str(out), "-k", "python3",
           "--execution-timeout", str(TIMEOUT), "-p", "alpha", "0.7", "-p", "epochs", "1",
           "-p", "data_dir", str(ws["data"]), "-p", "run_name", str(ws["runs"] / "cli"),
           "-p", "cache_dir", str(ws["cache"]), "-p", "progress", "False",
           "-p", "student_config", "channels=32,48,64 n_mels=48"]
    proc = subprocess.run(cmd, cwd=NB, capture_output=True, text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ws["runs"] / "cli" / "encoder.pt").exists()
    config = json.loads((ws["runs"] / "cli" / "config.json").read_text())
    assert config["model"]["channels"] == [32, 48, 64] and config["audio"]["n_mels"] == 48


def test_04_explore_alpha_T(ws):
    run(ws, "04_explore_alpha_T.ipynb", data_dir=str(ws["data"]), epochs=2, alphas=[0.0, 0.7],
        temperatures=[1.0, 4.0], sweep_name=str(ws["runs"] / "sweep"), cache_dir=str(ws["cache"]), interactive=False)
    table = pd.read_csv(ws["runs"] / "sweep" / "sweep.csv")
    assert len(table) == 4 and set(table["alpha"]) == {0.0, 0.7}
    # alpha = 0 ignores T: one run serves both T columns.
    assert table[table["alpha"] == 0.0]["run_dir"].nunique() == 1
    assert table[table["alpha"] == 0.7]["run_dir"].nunique() == 2
    for _, row in table.iterrows():  # each cell of the grid reports its run's best validation metrics
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
        assert row["best_epoch"] == result["best_epoch"] and row["epochs_run"] == result["epochs_run"] == 2
        for k in ("val_accuracy", "val_macro_f1", "val_roc_auc", "val_ece"):
            assert 0 <= row[k] <= 1 and row[k] == pytest.approx(result["best"][k], abs=1e-9), k


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated in favour of torch.export
def test_05_evaluate(ws):
    ts = ws["runs"] / "student.ts"
    run(ws, "05_evaluate.ipynb", data_dir=str(ws["data"]), seeds=[0], epochs=2, compare_name=str(ws["runs"] / "compare"),
        teacher_run=str(ws["runs"] / "teacher"), export_path=str(ts), cache_dir=str(ws["cache"]))
    check_05_outputs(ws, ts)


def check_05_outputs(ws, ts):
    """What notebook 05 showed and wrote, checked against the data, the runs and the models it names."""
    printed, tables, n_figures = outputs(ws, "05_evaluate.ipynb")
    labels = pd.read_csv(ws["data"] / "labels.csv")
    test = labels[labels["split"] == "test"]
    assert set(test["label"]) == {"clean", "noise"}
    y = (test["label"] == "noise").to_numpy().astype(int)
    metrics = ["accuracy", "macro_f1", "roc_auc", "ece"]

    # the per-seed comparison: one row per model, every metric a valid number in [0, 1]
    per_seed = pd.read_csv(io.StringIO(table_with_header(tables, "model", "seed", *metrics, whole=True)), sep=r"\s+")
    assert list(per_seed["model"]) == ["kd_student", "hard_only_student", "teacher"]
    assert per_seed["seed"].tolist()[:2] == [0.0, 0.0] and np.isnan(per_seed["seed"].iloc[2])
    assert per_seed[metrics].notna().all().all() and per_seed[metrics].apply(lambda c: c.between(0, 1)).all().all()
    # the teacher's row: its soft labels (soft_labels.csv) scored against the test split's labels
    soft = pd.read_csv(ws["data"] / "soft_labels.csv")
    p = soft[soft["segment"].isna()].set_index("clip_id").loc[test["clip_id"], "p_noise"].to_numpy()
    teacher = per_seed.set_index("model").loc["teacher"]
    assert teacher["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y), abs=6e-5)
    assert teacher["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro", zero_division=0), abs=6e-5)
    assert teacher["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=6e-5)
    # the mean ± std summary agrees with the per-seed rows (one seed: no spread)
    summary = table_with_header(tables, *metrics, whole=True).splitlines()[2:]
    assert [line.split()[0] for line in summary] == list(per_seed["model"])
    for line, (_, row) in zip(summary, per_seed.iterrows()):
        cells = re.findall(r"(\d\.\d{3}) ± (\d\.\d{3})", line)
        assert [float(s) for _, s in cells] == [0.0] * 4, line
        assert [float(m) for m, _ in cells] == pytest.approx(row[metrics].tolist(), abs=6e-4), line
    kd_ece, hard_ece = per_seed.set_index("model").loc[["kd_student", "hard_only_student"], "ece"]
    assert f"ECE {kd_ece:.4f} vs {hard_ece:.4f} for hard-only" in printed
    # the ECE floor printed for the test split's size and truth
    truth = pd.read_csv(ws["data"] / "truth.csv").set_index("clip_id")
    floor = re.search(r"perfectly calibrated model on (\d+) test clips: (\d\.\d{4}) ± (\d\.\d{4})", printed)
    expected = ece_floor(truth.loc[test["clip_id"], "p_noise_annotator"].to_numpy())
    assert int(floor[1]) == len(test) and [float(floor[2]), float(floor[3])] == pytest.approx(expected, abs=6e-5)

    # accuracy per noise type and per SNR band: every test clip counted once, accuracies in [0, 1]
    breakdowns = [t for t in tables if t.split()[:4] == ["n", "kd_student", "hard_only_student", "teacher"]]
    assert len(breakdowns) == 2
    for table in breakdowns:
        rows = [line.split() for line in table.splitlines()[1:]]
        assert sum(int(r[-4]) for r in rows) == len(test)
        assert all(0 <= float(v) <= 1 for r in rows for v in r[-3:])
    assert n_figures >= 2  # confusions + reliability, breakdowns

    # the blind SNR estimators beside the models: their rows, and the best one's ROC-AUC recomputed from
    # the estimates of the test clips (noisier = lower SNR)
    beside = [t for t in tables if "snr_threshold_db" in t.splitlines()[0].split()]
    assert len(beside) == 1
    assert [line.split()[0] for line in beside[0].splitlines()[2:]] == [
        "kd_student", "hard_only_student", "teacher", "stnr_baseline", "wada_baseline"]
    clips = score_split(ws["data"], "test").set_index("clip_id").loc[test["clip_id"]]
    auc = {f"{k}_baseline": roc_auc_score(y, noise_score(clips[f"{k}_db"])) for k in ("stnr", "wada")}
    best = re.search(r"best blind estimator: (\w+) \(ROC-AUC (\d\.\d{4})\)", printed)
    assert best[1] == max(auc, key=auc.get) and float(best[2]) == pytest.approx(max(auc.values()), abs=6e-5)

    # how close to the teacher: the teacher agrees with itself; each estimator's ROC-AUC in the lowest SNR band
    # recomputed from its estimates (the clips mixed at <= 5 dB against those with no noise mixed in)
    close = pd.read_csv(io.StringIO(table_with_header(tables, "model", "seed", "agrees_with_teacher")), sep=r"\s+")
    assert list(close["model"]) == list(per_seed["model"]) + ["stnr_baseline", "wada_baseline"]
    assert close.set_index("model").loc["teacher", ["agrees_with_teacher", "corr_with_teacher"]].tolist() == [1, 1]
    snr = truth.loc[test["clip_id"], "snr_db"].to_numpy()
    low, clean = snr <= 5, np.isnan(snr)
    for k in ("stnr", "wada"):
        score, got = noise_score(clips[f"{k}_db"]), close.set_index("model").loc[f"{k}_baseline", "auc<=5dB"]
        if not (low.any() and clean.any()):  # an empty band has no AUC
            assert np.isnan(got)
            continue
        want = roc_auc_score(np.r_[np.ones(low.sum()), np.zeros(clean.sum())], np.r_[score[low], score[clean]])
        assert got == pytest.approx(want, abs=6e-5)

    # the speed table: the seed-0 KD student's and the teacher's parameters and MACs
    (kd_run,) = (ws["runs"] / "compare").glob("kd_student_s0-*")
    models = {"student": load_classifier(kd_run), "teacher": load_classifier(ws["runs"] / "teacher")}
    speed = table_with_header(tables, "parameters", "M", "MACs").splitlines()[1:]
    assert [line.split()[0] for line in speed] == ["student", "teacher"]
    for line, (name, model) in zip(speed, models.items()):
        params, macs, realtime, faster = map(float, line.split()[1:])
        assert params == count_parameters(model.model)
        assert macs == pytest.approx(macs_per_second(model.model) / 1e6, abs=0.006)
        assert math.isfinite(realtime) and realtime > 0 and math.isfinite(faster) and faster > 0
    assert faster == 1.0  # the teacher against itself

    # the exported TorchScript student: loads without mark2_lib's classes, [B, 2] logits = the KD run's
    module = torch.jit.load(str(ts))
    assert module.sample_rate == 16000
    wave = torch.randn(3, 37000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        logits = module(wave)
        assert logits.shape == (3, 2) and torch.isfinite(logits).all()
        assert (logits - models["student"](wave)).abs().max() < 1e-5

    # the folder it classified: every file of the dataset, none failed
    classified = re.search(r"classified (\d+) files in .*: (\d+) noise, (\d+) clean, (\d+) failed", printed)
    n, noise, clean, failed = map(int, classified.groups())
    assert n == len(labels) and noise + clean == n and failed == 0

    # the ONNX student (the onnx extra; CI has it): the same predictions through ONNX Runtime
    missing = onnx_missing()
    if missing:
        assert "ONNX export skipped" in printed
        if in_ci():
            pytest.fail(f"notebook 05's ONNX export cannot be checked in CI: {missing}")
    else:
        onnx_line = re.search(r"ONNX student: (\S+); on the (\d+) files scored, max \|p_noise\(ONNX\) - "
                              r"p_noise\(PyTorch\)\| = (\S+); labels and errors the same", printed)
        assert onnx_line, printed
        assert Path(onnx_line[1]) == ts.with_suffix(".onnx") and Path(onnx_line[1]).is_file()
        assert int(onnx_line[2]) == len(labels) and float(onnx_line[3]) <= 1e-4
