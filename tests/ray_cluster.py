"""A real two-node Ray cluster on this machine for tests/test_ray.py, and the drivers that run in it.

    cluster = RayCluster(tmp_dir)         # starts a head and a second node, 1 CPU each, in the background
    result = cluster.driver([{"job": "predict", ...}], timeout=120)   # a driver process inside, to the end
    cluster.stop()                        # ray stop, then every process of the cluster is gone

Both nodes live in their own network namespace, which holds only loopback (`unshare --net`, root
only), so that no traffic can leave the machine, and in their own PID namespace: when its first
process (the shell that ran `ray start` twice) ends, the kernel ends every process left in it, so
no Ray process outlives the cluster, even if pytest itself is killed (its stdin then closes). `ray
stop` runs inside, where it sees only this cluster's processes. Ray 2.60 turns token authentication
on by default; RAY_AUTH_MODE=disabled lets the second node join.

Drivers (`python tests/ray_cluster.py JOBS_JSON` under `nsenter` into the namespaces) import this
checkout's mark2_lib: the nodes and the drivers run with PYTHONPATH=<repo>:<repo>/tests, so the
actors also find the test scorer specs defined here (SlowStudentSpec, KillOnceSpec).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PORT = 6390
ADDRESS = f"127.0.0.1:{PORT}"
START_TIMEOUT_S = 240
EXTRA = "Ray is not installed (the optional 'scale' extra): pip install -e '.[scale]' or 'make setup-scale'"

SCRIPT = """
set -u
ip link set lo up || exit 1
trap 'ray stop --force >/dev/null 2>&1' EXIT
common="--node-ip-address=127.0.0.1 --num-cpus=1 --object-store-memory=100000000 --disable-usage-stats"
ray start --head --port={port} --include-dashboard=false --temp-dir={tmp} $common || exit 1
ray start --address=127.0.0.1:{port} $common || exit 1
echo CLUSTER-READY
cat >/dev/null  # until the tests close our stdin (or die)
"""


def missing() -> str | None:
    """Why the cluster cannot start here (and how to fix it), or None."""
    if importlib.util.find_spec("ray") is None:
        return EXTRA
    if os.geteuid() != 0:
        return "the two-node Ray cluster runs in a loopback-only network namespace (unshare --net), which needs root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"the two-node Ray cluster needs '{tool}' (util-linux / iproute2), not found on PATH"
    return None


def environment() -> dict:
    """What the nodes and the drivers run with."""
    path = os.pathsep.join([str(ROOT), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    bindir = str(Path(sys.executable).parent)  # the venv's `ray` command
    return {**os.environ, "PYTHONPATH": path, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class RayCluster:
    """A head and a second Ray node, 1 CPU each, in loopback-only network and PID namespaces."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        # Ray's unix socket paths live under the temp dir and must stay short (under 107 characters)
        self.tmp = Path(tempfile.mkdtemp(prefix="mk2ray"))
        self.log_path = self.workdir / "cluster.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c",
             SCRIPT.format(port=PORT, tmp=self.tmp)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=environment(), cwd=ROOT)
        self.init_pid = None  # the namespace's first process (host pid), found once it runs
        self.ready = False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until both nodes are up; RuntimeError with the log when the start fails."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.init_pid is None and children(self.proc.pid):
                self.init_pid = children(self.proc.pid)[0]
            if "CLUSTER-READY" in self.log_text():
                self.ready = True
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster did not start (exit {self.proc.poll()}):\n{self.log_text()[-4000:]}")
            else:
                time.sleep(0.2)

    def command(self, args: list[str]) -> list[str]:
        """`args` run inside the cluster's namespaces, from the repo root."""
        self.wait_ready()
        return ["nsenter", f"--target={self.init_pid}", "--net", "--pid", "--mount", f"--wd={ROOT}", "--", *args]

    def start_driver(self, jobs: list[dict], log: Path) -> subprocess.Popen:
        """A driver running `jobs` (see run_jobs), its output to `log`; nsenter forks it as its child."""
        out = open(log, "w")
        return subprocess.Popen(self.command([sys.executable, str(TESTS / "ray_cluster.py"), json.dumps(jobs)]),
                                stdout=out, stderr=subprocess.STDOUT, env=environment(), stdin=subprocess.DEVNULL)

    def driver(self, jobs: list[dict], log: Path, timeout: float = 180) -> str:
        """Run a driver to the end; its output, or AssertionError with it when it failed."""
        proc = self.start_driver(jobs, log)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_driver(proc)
            raise AssertionError(f"driver still running after {timeout} s:\n{Path(log).read_text()[-4000:]}") from None
        text = Path(log).read_text(errors="replace")
        assert rc == 0 and "DRIVER-DONE" in text, f"driver exited {rc}:\n{text[-6000:]}"
        return text

    def stop(self) -> None:
        """`ray stop` (closing the shell's stdin), then make sure no process of the cluster is left."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                if self.init_pid is not None:  # the namespace's init: the kernel ends all the rest with it
                    os.kill(self.init_pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def kill_driver(proc: subprocess.Popen) -> None:
    """SIGKILL a driver started by start_driver: the process nsenter forked, then nsenter."""
    for pid in children(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- test scorer specs
# Defined here, not in test_ray.py, so that the actors import them (tests/ is on the nodes' PYTHONPATH).

def _student_spec_class():
    from mark2_lib.jobs.scorers import StudentSpec
    return StudentSpec


class SlowScorer:
    """Another scorer's rows, after a pause per shard: a job slow enough to be killed half way."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def score(self, items):
        time.sleep(self.delay)
        return self.inner.score(items)


def slow_student_spec(delay: float):
    """A StudentSpec subclass (same key, same rows) whose scorer pauses `delay` s per shard."""
    base = _student_spec_class()

    @dataclass(frozen=True)
    class SlowStudentSpec(base):
        """The student, slowed down."""

        def create(self):
            return SlowScorer(base.create(self), delay)

    return SlowStudentSpec


@dataclass(frozen=True)
class KillOnceSpec:
    """A fake scorer: rows naming the item and the worker's pid; the first worker to reach item
    `kill_index` writes `marker` and SIGKILLs its own process (a retry finds the marker and scores)."""

    marker: str
    kill_index: int
    delay: float = 0.05
    name = "kill-once"

    def key(self) -> str:
        return f"kill-once:{self.kill_index}"

    def create(self) -> "KillOnceScorer":
        return KillOnceScorer(self.marker, self.kill_index, self.delay)


class KillOnceScorer:
    """KillOnceSpec's scorer."""

    def __init__(self, marker: str, kill_index: int, delay: float):
        self.marker, self.kill_index, self.delay = Path(marker), kill_index, delay

    def score(self, items):
        if any(it.index == self.kill_index for it in items) and not self.marker.exists():
            self.marker.write_text(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay)
        return [{"clip_id": it.clip_id, "index": it.index, "pid": os.getpid(), "error": it.error} for it in items]


# ----------------------------------------------------------------------------- the driver

def run_jobs(jobs: list[dict]) -> None:
    """Run each job against the cluster (engine "ray", ADDRESS), one after the other.

    {"job": "predict", "run": DIR, "inputs": [...], "out": PATH, "shard_size": N, "delay": s (0: the plain student)}
    {"job": "dnsmos", "inputs": [...], "out": PATH, "cache": DIR, "shard_size": N}   rows to PATH + ".rows.json"
    {"job": "kill-once", "inputs": [...], "out": PATH, "marker": PATH, "kill_index": I, "shard_size": N}  same
    """
    from mark2_lib.jobs import inputs, score, shards, teachers

    for job in jobs:
        kind, workers, size = job["job"], job.get("workers", 2), job.get("shard_size", 4)
        if kind == "predict":
            if job.get("delay"):
                score.StudentSpec = slow_student_spec(job["delay"])
            score.predict_job(job["run"], job["inputs"], job["out"], engine="ray", workers=workers,
                               shard_size=size, ray_address=ADDRESS, progress=False, keep_parts=True)
            continue
        items = inputs.read_inputs(job["inputs"])
        spec = (teachers.DnsmosSpec(job["cache"]) if kind == "dnsmos"
                else KillOnceSpec(job["marker"], job["kill_index"]))
        rows = shards.run_sharded(items, spec, job["out"], engine="ray", workers=workers, shard_size=size,
                                  ray_address=ADDRESS, progress=False)
        Path(job["out"] + ".rows.json").write_text(json.dumps(rows))
    print("DRIVER-DONE", flush=True)


if __name__ == "__main__":
    run_jobs(json.loads(sys.argv[1]))
