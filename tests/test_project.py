"""The project's promises: pinned environment, license text, notebook hygiene, CI wiring."""
import hashlib
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# sha256 of the verbatim PolyForm Noncommercial 1.0.0 text (shared/reference/PolyForm-Noncommercial-1.0.0.md)
POLYFORM_SHA256 = "c0ea4a896d2c8c394b29f9427589996db826cd501c512279ff0ed3ef48fabbe5"


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ;]", req, maxsplit=1)[0].lower()


def test_every_dependency_is_pinned_once():
    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    names = [_name(d) for d in deps]
    assert len(names) == len(set(names)), "a dependency is listed twice"
    unpinned = [d for d in deps if "==" not in d]
    assert not unpinned, f"unpinned dependencies: {unpinned}"
    assert "torch==2.14.1" in deps and "torchaudio==2.11.0" in deps
    for needed in ("jupyterlab", "ipywidgets", "matplotlib", "seaborn", "papermill", "ipykernel",
                   "soundfile", "tqdm", "scikit-learn", "pandas"):
        assert needed in names, needed
    assert {"pytest", "hypothesis"} <= {_name(d) for d in PYPROJECT["project"]["optional-dependencies"]["dev"]}


def test_environment_yml_parses_and_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert "pip" in conda
    pythons = [d for d in conda if d.startswith("python")]
    assert pythons == ["python=3.11"]
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    assert len(pip_sections) == 1 and "-e .[dev]" in pip_sections[0]
    assert "dev" in PYPROJECT["project"]["optional-dependencies"]
    # Nothing conda installs may shadow a pip pin with another version.
    conda_names = {_name(d) for d in conda} - {"python", "pip"}
    pinned = {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    assert not conda_names & pinned, f"pinned in pyproject.toml but installed by conda: {conda_names & pinned}"


def test_license_is_verbatim_polyform_noncommercial_with_notice():
    text = (ROOT / "LICENSE").read_bytes()
    notice, rest = text.split(b"\n", 1)
    assert re.fullmatch(rb"Required Notice: Copyright .* mark2 authors", notice)
    body = rest[1:] if rest.startswith(b"\n") else rest
    assert hashlib.sha256(body).hexdigest() == POLYFORM_SHA256
    reference = ROOT.parent / "shared" / "reference" / "PolyForm-Noncommercial-1.0.0.md"
    if reference.exists():
        assert body == reference.read_bytes()
    assert "PolyForm-Noncommercial-1.0.0" in json.dumps(PYPROJECT["project"]["license"])
    readme = (ROOT / "README.md").read_text()
    assert "## License" in readme and "Commercial use is not permitted" in readme


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_*.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_with_one_parameters_cell(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") for c in code), "committed with outputs"
    assert all(c.get("execution_count") is None for c in code), "committed with execution counts"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    # Every parameter is typed and documented, so `papermill --help-notebook` explains it.
    lines = [l for l in "".join(params[0]["source"]).splitlines() if l.strip() and not l.startswith("#")]
    assert lines
    for line in lines:
        assert re.match(r"^\w+: [\w\[\], |]+ = .+  # \S", line), f"untyped or undocumented parameter: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_documents_every_parameter(path):
    from papermill.inspection import inspect_notebook

    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    names = [l.split(":")[0] for l in "".join(cell["source"]).splitlines() if l.strip() and not l.startswith("#")]
    inferred = inspect_notebook(str(path))
    assert list(inferred) == names, "papermill could not parse some parameter lines (no '=' in comments)"
    for name, p in inferred.items():
        assert p["help"].strip(), f"{name} has no help comment"
        assert p["inferred_type_name"] != "None", f"{name} has no type"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    assert "|| true" not in ci
    readme = (ROOT / "README.md").read_text()
    assert "make workbook" in readme and "make test" in readme


def test_gitignore_keeps_generated_things_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (".venv/", "runs/", "data/default/", "data/cache/"):
        assert entry in ignored


def test_workbook_real_passes_only_parameters_its_notebooks_declare():
    """`make workbook-real` steers notebooks 01-05 with -p NAME=VALUE; a name none of them declares
    (a typo, or a parameter since renamed) would change nothing, so run-notebooks refuses it."""
    import shlex
    import subprocess

    from mark2_lib.workbook import UndeclaredParameterError, check_common_parameters, selected_notebooks

    line = subprocess.run(["make", "-n", "-s", "-o", "data-real", "-o", "setup-dnsmos", "workbook-real"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    args = shlex.split(line)
    assert "run-notebooks" in args, line
    # notebook 02 scores 2,100 clips with DNSMOS in one cell: 24.5 min on a slower 2-core machine
    assert int(args[args.index("--timeout") + 1]) >= 1800, line
    common = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-p")
    assert {"data_dir", "teacher", "alpha", "temperature", "student_config"} <= set(common)
    check_common_parameters(common, selected_notebooks(["01", "02", "03", "04", "05"]))
    with pytest.raises(UndeclaredParameterError, match="alpah: declared by none of 03_train.ipynb"):
        check_common_parameters({"alpah": "1.0", "alpha": "1.0"}, selected_notebooks(["03"]))


def test_run_notebooks_refuses_an_undeclared_parameter_before_running_anything(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "executed"
    r = subprocess.run([sys.executable, "-m", "mark2_lib", "run-notebooks", "--only", "01", "--out", str(out),
                        "-p", "datadir=x"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "datadir: declared by none of 01_data.ipynb" in r.stderr, r.stderr
    assert not out.exists()
