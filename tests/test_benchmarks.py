"""Smoke runs of every benchmark in benchmarks/: `--quick` (tiny inputs, one repeat) end to end.

The scripts run side by side in subprocesses (one torch thread each) from the repo root, with TMPDIR
pointing into pytest's tmp_path, so what they generate never lands in the repo's data/ or runs/.
Each test checks its script's exit status and that it printed its table: every ratio parsed,
finite and positive. No speed targets: a quick run's numbers say nothing about speed.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about 20 s for all four on 2 cores: in `make test`, out of `make test-fast`
SCRIPTS = {  # test name -> script
    "test_bench_features_quick": "bench_features.py",
    "test_bench_inference_quick": "bench_inference.py",
    "test_bench_student_options_quick": "bench_student_options.py",
    "test_bench_train_quick": "bench_train.py",
    "test_bench_scale_quick": "bench_scale.py",
    "test_bench_baselines_quick": "bench_baselines.py",
}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict:
    """{script: (exit status, stdout + stderr, TMPDIR it ran with, wall seconds)} of the selected
    tests' scripts, all started at once and all finished before any test looks at one."""
    wanted = sorted({SCRIPTS[item.originalname] for item in request.session.items
                     if item.module is request.module and item.originalname in SCRIPTS})
    procs, out = {}, {}
    t0 = time.monotonic()
    for script in wanted:
        tmp = tmp_path_factory.mktemp(script.removesuffix(".py"))
        env = {**os.environ, "TMPDIR": str(tmp), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        log = open(tmp / "output.txt", "w+")  # a file, not a pipe: nothing blocks while the others are read
        proc = subprocess.Popen([sys.executable, f"benchmarks/{script}", "--quick"], cwd=ROOT, env=env,
                                text=True, stdout=log, stderr=subprocess.STDOUT)
        procs[script] = (proc, log, tmp)
    try:
        while len(out) < len(procs):
            for script, (proc, log, tmp) in procs.items():
                if script not in out and proc.poll() is not None:
                    log.seek(0)
                    out[script] = (proc.returncode, log.read(), tmp, time.monotonic() - t0)
            assert time.monotonic() - t0 < TIMEOUT_S, f"benchmarks still running after {TIMEOUT_S} s: " + \
                ", ".join(sorted(set(procs) - set(out)))
            time.sleep(0.05)
    finally:
        for proc, log, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    print("\nbenchmark --quick wall times (side by side): " + ", ".join(f"{s} {r[3]:.1f} s" for s, r in out.items()))
    return out


def finished(runs: dict, script: str) -> str:
    """The script's output, after checking that it exited 0 without a traceback."""
    rc, text, _, _ = runs[script]
    assert rc == 0, f"benchmarks/{script} --quick exited {rc}:\n{text[-4000:]}"
    assert "Traceback" not in text, text
    assert f"reproduce: python benchmarks/{script}" in text and "--quick" in text.splitlines()[-1], text
    return text


def rows(text: str, pattern: str) -> list[re.Match]:
    return [m for line in text.splitlines() if (m := re.fullmatch(pattern, line.rstrip()))]


def positive(*values: str) -> None:
    for v in values:
        x = float(v.replace(",", ""))
        assert math.isfinite(x) and x > 0, values


def finite(*values: str) -> None:
    assert all(math.isfinite(float(v.replace(",", ""))) for v in values), values


def under(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


NUM = r"(-?\d+(?:\.\d+)?|inf|nan)"


def test_bench_features_quick(runs):
    text = finished(runs, "bench_features.py")
    head = re.search(r"^(\d+) files, (\d+) s of audio, from (\S+)$", text, re.M)
    assert head and head[1] == "8" and head[2] == "8", text  # 8 clips of 1 s
    assert under(head[3], runs["bench_features.py"][2]), f"clips generated outside the test's TMPDIR: {head[3]}"
    assert "stage / torch threads" in text and "warm/cold" in text
    table = rows(text, rf"(.+?) / 1\s+{NUM}\s+{NUM}(?:\s+{NUM}x)?")
    assert [m[1] for m in table] == ["read + mono", "resample", "segment + log-mel", "cold cache (all)",
                                     "warm cache"], text
    for m in table:
        finite(m[2], m[3])  # seconds and audio h/s: rounded, a tiny run may print 0.00
        assert float(m[2]) >= 0 and float(m[3]) >= 0, m[0]
    assert table[-1][4] is not None, text  # only the warm cache row has a ratio
    positive(table[-1][4])


def test_bench_inference_quick(runs):
    text = finished(runs, "bench_inference.py")
    assert re.search(r"^3 waveforms x 2 s = 6 s of audio", text, re.M), text
    table = {m[1]: m for m in rows(text, rf"(student|teacher)\s+1\s+{NUM}x\s+\({NUM}x\)\s+{NUM}x\s+{NUM}x"
                                          rf"\s+{NUM}x\s+([\d,]+)\s+{NUM}\s+{NUM}")}
    assert set(table) == {"student", "teacher"}, text
    for m in table.values():
        positive(m[2], m[3], m[4], m[5], m[6], m[7], m[8])  # x real time (e2e, best, features, model), ratio, ...
        finite(m[9])  # peak MB: a rise of the RSS high-water mark, may round to 0 or below
    assert float(table["teacher"][6]) == 1.0  # the teacher against itself, round by round
    summary = re.search(rf"^1 thread\(s\): student {NUM}x real time end to end .*, {NUM}x faster than the teacher "
                        rf".*model only {NUM}x", text, re.M)
    assert summary, text
    positive(summary[1], summary[2], summary[3])
    onnx = rows(text, rf"onnx student\s+1\s+{NUM}x\s+\({NUM}x\)\s+{NUM}x")
    if "ONNX rows skipped:" in text:  # without the onnx extra: the reason, and no rows
        assert not onnx and "pip install -e '.[onnx]'" in text, text
    else:
        assert len(onnx) == 1, text
        positive(onnx[0][1], onnx[0][2], onnx[0][3])  # x real time (e2e, best), vs PyTorch


def test_bench_student_options_quick(runs):
    text = finished(runs, "bench_student_options.py")
    assert "10 s of audio, batches of 8, 1 thread(s), median of 1 rounds of 1 passes" in text, text
    table = rows(text, rf"(previous \(both off\)|level norm only|stats pooling only|both \(the default\))"
                       rf"\s+([\d,]+)\s+{NUM}x\s+{NUM}x\s+{NUM}x\s+{NUM}x")
    assert [m[1] for m in table] == ["previous (both off)", "level norm only", "stats pooling only",
                                     "both (the default)"], text
    for m in table:
        positive(*m.groups()[1:])
    assert float(table[0][5]) == 1.0 and float(table[0][6]) == 1.0  # the baseline against itself


def test_bench_train_quick(runs):
    text = finished(runs, "bench_train.py")
    head = re.search(r"^data: 24 clips \(\d+ train, \d+ val, \d+ segments\) from (\S+) ", text, re.M)
    assert head, text
    assert under(head[1], runs["bench_train.py"][2]), f"data generated outside the test's TMPDIR: {head[1]}"
    table = rows(text, rf"(bare loop .*?|train_run, .*?)\s+{NUM}\s+{NUM}x(?:\s+{NUM})?")
    assert len(table) == 5 and table[0][1].startswith("bare loop"), text
    for m in table:
        positive(m[2], m[3])
        assert (m[4] is None) == (m is table[0]), m[0]  # history.csv's passes: trainer rows only
        if m[4] is not None:
            positive(m[4])
    assert float(table[0][3]) == 1.0  # the bare loop against itself
    costs = re.search(rf"^written after every epoch \(s each\):\s+last.pt checkpoint {NUM},\s+history.csv {NUM},"
                      rf"\s+loss_curves.png {NUM}$", text, re.M)
    assert costs, text
    finite(*costs.groups())
    assert "peak RSS" not in text  # --quick leaves out the memory runs


def test_bench_scale_quick(runs):
    """Serial, local and Ray engines (Ray needs the scale extra, as CI installs it) for the student, and
    DNSMOS too when its extra is there, with the goal ratios."""
    text = finished(runs, "bench_scale.py")
    assert re.search(r"^student: 16 files, 32 s of audio, shards of 4$", text, re.M), text
    table = rows(text, rf"(dnsmos|student)\s+(serial|local|ray)\s+([12])\s+(\d+)\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}x\s+{NUM}")
    want = [("serial", "1"), ("local", "1"), ("local", "2"), ("ray", "1"), ("ray", "2")]
    models = sorted({m[1] for m in table})
    assert "student" in models, text
    for model in models:
        assert [(m[2], m[3]) for m in table if m[1] == model] == want, model
    for m in table:
        positive(m[5], m[6], m[7], m[9])
        finite(m[8])
    assert re.search(rf"^Ray start \(local, 2 CPUs, once, not in the rows above\): {NUM} s$", text, re.M), text
    goal = re.search(rf"^  student on 16 files, Ray vs local: {NUM}x the time at 1 worker, {NUM}x at 2", text, re.M)
    assert goal, text
    positive(goal[1], goal[2])


def test_bench_baselines_quick(runs):
    text = finished(runs, "bench_baselines.py")
    assert re.search(r"^8 clips, 8 s of audio, generated speech \+ white noise$", text, re.M), text
    table = rows(text, rf"(stnr|wada)\s+([\d,]+)x\s+{NUM}")
    assert [m[1] for m in table] == ["stnr", "wada"], text
    for m in table:
        positive(m[2], m[3])  # x real time, microseconds per second of audio
