"""Every numbered notebook, executed through papermill with small parameters, in workbook order,
and the notebooks' training parameters against TrainConfig's defaults (parsed, not executed).

Each test checks the artifacts its notebook must leave. A notebook that raises fails its
test with papermill's report of the failing cell.
"""
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mark2_lib.config import TrainConfig
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
    for f in ("encoder.pt", "head.pt", "loss_curves.png", "history.csv"):
        assert (ws["runs"] / "teacher" / f).exists(), f


def test_03_train_from_repo_root(ws):
    """Run from the repository root, as `papermill notebooks/03_train.ipynb ...` would."""
    run(ws, "03_train.ipynb", cwd=ROOT, data_dir=str(ws["data"]), epochs=2, run_name=str(ws["runs"] / "student"),
        cache_dir=str(ws["cache"]))
    run_dir = ws["runs"] / "student"
    for f in ("encoder.pt", "head.pt", "last.pt", "loss_curves.png", "history.csv", "config.json", "result.json"):
        assert (run_dir / f).exists(), f
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["alpha"] == 0.7 and config["train"]["temperature"] == 4.0


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


def test_05_evaluate(ws):
    ts = ws["runs"] / "student.ts"
    run(ws, "05_evaluate.ipynb", data_dir=str(ws["data"]), seeds=[0], epochs=2, compare_name=str(ws["runs"] / "compare"),
        teacher_run=str(ws["runs"] / "teacher"), export_path=str(ts), cache_dir=str(ws["cache"]))
    assert ts.exists() and ts.stat().st_size > 0
    executed = json.loads((ws["out"] / "05_evaluate.ipynb").read_text())
    text = json.dumps(executed)
    assert "kd_student" in text and "hard_only_student" in text and "teacher" in text
