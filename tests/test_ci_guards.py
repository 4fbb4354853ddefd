"""CI cannot pass by skipping: tests of optional parts fail under CI when their prerequisite is missing.

The DNSMOS and ONNX tests run in a pytest subprocess with their extra hidden (a `speechmos` or `onnxscript`
module on PYTHONPATH whose import fails), once with CI=true and once without $CI; the two run side by side.
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
    """.ci/run exports CI=true before any `make`, so the browser, DNSMOS and ONNX tests fail there, never skip;
    it installs the optional extras whose tests would otherwise fail."""
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "export CI=true" in lines
    assert lines.index("export CI=true") < next(i for i, line in enumerate(lines) if line.startswith("make "))
    for target in ("make setup-dnsmos", "make setup-scale", "make setup-onnx"):
        assert lines.index(target) < lines.index("make test"), target


@pytest.mark.parametrize("module, test_file, what, hint", [
    ("speechmos", "tests/test_dnsmos.py", "the DNSMOS tests", "pip install -e '.[dnsmos]'"),
    ("onnxscript", "tests/test_onnx.py", "the ONNX tests", "pip install -e '.[onnx]'"),
])
def test_extra_tests_fail_under_ci_and_skip_elsewhere_without_the_extra(tmp_path, module, test_file, what, hint):
    """A `module` of the extra that cannot be imported: with CI=true every test of `test_file` errors (exit 1),
    saying why and how to install the extra; without $CI every one skips with that message (exit 0)."""
    fake = tmp_path / "fake_modules"
    fake.mkdir()
    (fake / f"{module}.py").write_text(f'raise ImportError("simulated: {module} is not installed")\n')
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    base["PYTHONPATH"] = os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])
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
    # under CI: every test errors with the reason and the install hint; pytest exits 1 (tests failed)
    assert out["ci_rc"] == 1, out["ci"]
    assert f"{what} ({test_file}) cannot run in CI" in out["ci"], out["ci"]
    assert hint in out["ci"] and f"simulated: {module} is not installed" in out["ci"], out["ci"]
    assert " passed" not in out["ci"] and " skipped" not in out["ci"], out["ci"]
    # elsewhere: every test skips, saying how to install the extra; exit status 0
    assert out["local_rc"] == 0, out["local"]
    assert " skipped" in out["local"] and " passed" not in out["local"] and "error" not in out["local"], out["local"]
    assert hint in out["local"], out["local"]
