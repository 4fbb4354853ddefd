"""CI cannot pass by skipping: tests of optional parts fail under CI when their prerequisite is missing.

The DNSMOS and ONNX tests run in a pytest subprocess with their extra hidden (a `speechmos` or `onnxscript`
module on PYTHONPATH whose import fails), and the Ray tests with the `scale` extra hidden (a sitecustomize.py
that marks `ray` as not importable), each once with CI=true and once without $CI, side by side.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("YES", True), (" True ", True),
                                             ("", False), ("0", False), ("false", False), (None, False)])
def test_in_ci_reads_the_CI_variable(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_ci_script_sets_CI_itself():
    """.ci/run exports CI=true before any `make`, so the browser and DNSMOS tests fail there, never skip."""
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "export CI=true" in lines
    assert lines.index("export CI=true") < next(i for i, line in enumerate(lines) if line.startswith("make "))
    for target in ("make setup-dnsmos", "make setup-scale", "make setup-onnx"):
        assert lines.index(target) < lines.index("make test"), target


def hidden_extra_runs(tmp_path: Path, test_file: str, fake: dict[str, str]) -> dict:
    """Run `test_file` in two pytest subprocesses with the modules in `fake` (file name: source) first
    on PYTHONPATH, one with CI=true and one without $CI; their outputs and exit statuses."""
    folder = tmp_path / "fake_modules"
    folder.mkdir()
    for name, source in fake.items():
        (folder / name).write_text(source)
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    base["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    procs = {}
    for name, ci in (("ci", {"CI": "true"}), ("local", {})):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / name),
               test_file]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env={**base, **ci}, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = {}
    for name, p in procs.items():
        out[name] = p.communicate(timeout=300)[0]
        out[name + "_rc"] = p.returncode
    return out


@pytest.mark.parametrize("module, test_file, what, hint", [
    ("speechmos", "tests/test_dnsmos.py", "the DNSMOS tests", "pip install -e '.[dnsmos]'"),
    ("onnxscript", "tests/test_onnx.py", "the ONNX tests", "pip install -e '.[onnx]'"),
])
def test_extra_tests_fail_under_ci_and_skip_elsewhere_without_the_extra(tmp_path, module, test_file, what, hint):
    """A `module` of the extra that cannot be imported: with CI=true every test of `test_file` errors (exit 1),
    saying why and how to install the extra; without $CI every one skips with that message (exit 0)."""
    out = hidden_extra_runs(tmp_path, test_file,
                            {f"{module}.py": f'raise ImportError("simulated: {module} is not installed")\n'})
    # under CI: every test errors with the reason and the install hint; pytest exits 1 (tests failed)
    assert out["ci_rc"] == 1, out["ci"]
    assert f"{what} ({test_file}) cannot run in CI" in out["ci"], out["ci"]
    assert hint in out["ci"] and f"simulated: {module} is not installed" in out["ci"], out["ci"]
    assert " passed" not in out["ci"] and " skipped" not in out["ci"], out["ci"]
    # elsewhere: every test skips, saying how to install the extra; exit status 0
    assert out["local_rc"] == 0, out["local"]
    assert " skipped" in out["local"] and " passed" not in out["local"] and "error" not in out["local"], out["local"]
    assert hint in out["local"], out["local"]


def test_ray_tests_fail_under_ci_and_skip_elsewhere_without_the_extra(tmp_path):
    """`ray` marked as not importable (None in sys.modules, so find_spec says it is not there): with CI=true
    every test that needs the cluster errors, naming the `scale` extra; without $CI they skip. The two
    tests that need no Ray (the item encoding, the install hint) pass either way."""
    out = hidden_extra_runs(tmp_path, "tests/test_ray.py", {"sitecustomize.py": 'import sys\nsys.modules["ray"] = None\n'})
    hint = "pip install -e '.[scale]'"
    assert out["ci_rc"] == 1, out["ci"]
    assert "the Ray cluster tests (tests/test_ray.py) cannot run in CI" in out["ci"] and hint in out["ci"], out["ci"]
    assert "2 passed" in out["ci"] and " skipped" not in out["ci"], out["ci"]
    assert out["local_rc"] == 0, out["local"]
    assert "2 passed" in out["local"] and " skipped" in out["local"] and "error" not in out["local"], out["local"]
    assert hint in out["local"], out["local"]
