"""Corpus jobs at scale: hours of audio per second for DNSMOS and for the student, under each engine.

    python benchmarks/bench_scale.py                 # DNSMOS on 96 files of 2 s; the student on 1,000 files of 10 s
    python benchmarks/bench_scale.py --student-run runs/student --dnsmos-files 48
    python benchmarks/bench_scale.py --quick         # smoke run: 2 + 16 files of 2 s, numbers meaningless

Each configuration runs the whole job as `mark2 soft-labels` / `mark2 predict` do (jobs.shards.run_sharded:
shards, parts written, rows read back), on synthetic clips (builders.synth, 16 kHz) in a temporary folder:

  serial      one process, one torch thread
  local  N    a process pool of N spawned workers, one model and one torch thread each
  ray    N    Ray Data with N actors (1 CPU, one model each) on a local Ray started once (its start
              time is printed apart: a cluster is started once, not per job)

Seconds are wall time for the job, model loading and worker start included. DNSMOS reads a fresh
content cache each time, so it scores every file; its files are all different. The student's files
are `--student-unique` different clips repeated under other names (it has no cache). The student is
untrained unless `--student-run` names a run (the speed is the same). Core-hours per 1,000 h:
1,000 h / (audio h/s) x the cores the configuration keeps busy (its workers).

Ray binds to 127.0.0.1. Run as root (as CI does), the benchmark re-executes itself in a network
namespace that holds only loopback, and a PID namespace, so no traffic leaves and no process survives it.
Goals of issue 19 on 2 cores: DNSMOS with 2 workers >= 1.7x the throughput of 1; Ray at 1 worker
takes <= 1.15x the serial time; for the student on 1,000 files, Ray takes <= 1.2x the local time.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import quick  # noqa: E402  (benchmarks/quick.py)

GOAL_WORKERS, GOAL_RAY_SERIAL, GOAL_RAY_LOCAL = 1.7, 1.15, 1.2
QUICK = dict(dnsmos_files=2, student_files=16, student_unique=4, student_seconds=2.0, dnsmos_shard=1, student_shard=4)
CONFIGS = [("serial", 1), ("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
NETNS_ENV = "MARK2_BENCH_NETNS"


def reexec_in_namespace(argv: list[str]) -> None:
    """As root, run this script again inside new network (loopback only) and PID namespaces."""
    if os.environ.get(NETNS_ENV) or os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "ip"))):
        return
    os.environ[NETNS_ENV] = "1"
    sys.stdout.flush()
    script = 'ip link set lo up && exec "$@"'
    os.execvp("unshare", ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c",
                          script, "bash", sys.executable, str(Path(__file__).resolve()), *argv])


def network() -> str:
    names = sorted(name for _, name in socket.if_nameindex())
    if names == ["lo"]:
        return "a loopback-only network namespace"
    return f"this machine's network ({', '.join(names)}); Ray bound to 127.0.0.1"


def make_files(folder: Path, n_files: int, n_unique: int, seconds: float, seed: int) -> list[Path]:
    """`n_files` wav files: `n_unique` different synthetic clips, repeated as hard links under other names."""
    from mark2_lib.builders.synth import make_default_dataset

    data = make_default_dataset(folder / "data", n_clips=n_unique, seed=seed, clip_seconds=seconds,
                                progress=False, workers=1)
    clips = sorted((data / "audio").glob("*.wav"))
    out = folder / "files"
    out.mkdir()
    files = []
    for i in range(n_files):
        target = out / f"f{i:05d}.wav"
        os.link(clips[i % len(clips)], target)
        files.append(target)
    return files


def make_student_run(folder: Path) -> Path:
    """An untrained student run folder (config.json, encoder.pt, head.pt): the trained one's speed."""
    import torch

    from mark2_lib.config import audio_config, model_config
    from mark2_lib.models import ClipClassifier

    torch.manual_seed(0)
    audio, cfg = audio_config("student"), model_config("student")
    model = ClipClassifier(audio, cfg)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {}, "audio": audio.to_dict(), "model": cfg.to_dict()}))
    torch.save(model.encoder.state_dict(), folder / "encoder.pt")
    torch.save(model.head.state_dict(), folder / "head.pt")
    return folder


def time_job(items, make_spec, engine: str, workers: int, shard: int, tmp: Path, tag: str) -> float:
    """Wall seconds of one whole job; SystemExit when any row has an error."""
    from mark2_lib.jobs.shards import run_sharded

    spec = make_spec(tmp / f"cache_{tag}")
    t0 = time.perf_counter()
    rows = run_sharded(items, spec, tmp / f"{tag}.jsonl", engine=engine, workers=workers, shard_size=shard,
                       progress=False)
    seconds = time.perf_counter() - t0
    bad = [r["error"] for r in rows if r["error"]]
    if bad or len(rows) != len(items):
        sys.exit(f"{tag}: {len(bad)} error rows ({bad[:3]}), {len(rows)} rows for {len(items)} items")
    return seconds


def measure(models: dict, tmp: Path) -> tuple[dict, float]:
    """{(model, engine, workers): seconds} for every model and configuration, and Ray's start time."""
    import torch

    from mark2_lib.jobs import ray_engine

    torch.set_num_threads(1)  # serial: one core, as each worker of the other engines
    times, ray_start = {}, 0.0
    for engine, workers in CONFIGS:
        if engine == "ray" and not ray_start:
            ray = ray_engine.require_ray()
            t0 = time.perf_counter()
            ray_engine.start_ray(ray, 2, None)  # kept for every Ray run; the jobs find it running
            ray_start = time.perf_counter() - t0
        for name, (items, make_spec, shard) in models.items():
            tag = f"{name}_{engine}_{workers}"
            times[(name, engine, workers)] = time_job(items, make_spec, engine, workers, shard, tmp, tag)
            print(f"  {tag:<20} {times[(name, engine, workers)]:8.2f} s", flush=True)
    if ray_start:
        ray_engine.require_ray().shutdown()
    return times, ray_start


def report(times: dict, audio_h: dict, n_files: dict, ray_start: float, args) -> None:
    print(f"\n{'model':<8}{'engine':<8}{'workers':>8}{'files':>7}{'audio h':>9}{'seconds':>9}"
          f"{'audio h/s':>11}{'x real time':>13}{'core-h / 1,000 h':>18}")
    for (name, engine, workers), seconds in times.items():
        rate = audio_h[name] / seconds
        core_h = 1000 / rate / 3600 * workers
        print(f"{name:<8}{engine:<8}{workers:>8}{n_files[name]:>7}{audio_h[name]:>9.4f}{seconds:>9.2f}"
              f"{rate:>11.6f}{rate * 3600:>12.1f}x{core_h:>18.2f}")
    print(f"\nRay start (local, 2 CPUs, once, not in the rows above): {ray_start:.1f} s")
    print("goals (2 cores):")
    if ("dnsmos", "local", 1) in times:
        t = {k[1:]: v for k, v in times.items() if k[0] == "dnsmos"}
        print(f"  DNSMOS, 2 workers vs 1: {t[('local', 1)] / t[('local', 2)]:.2f}x local, "
              f"{t[('ray', 1)] / t[('ray', 2)]:.2f}x ray (goal >= {GOAL_WORKERS}x)")
        print(f"  DNSMOS, Ray at 1 worker vs serial: {t[('ray', 1)] / t[('serial', 1)]:.2f}x the time "
              f"(goal <= {GOAL_RAY_SERIAL}x)")
    t = {k[1:]: v for k, v in times.items() if k[0] == "student"}
    print(f"  student, Ray at 1 worker vs serial: {t[('ray', 1)] / t[('serial', 1)]:.2f}x the time")
    print(f"  student on {n_files['student']:,} files, Ray vs local: {t[('ray', 1)] / t[('local', 1)]:.2f}x the time "
          f"at 1 worker, {t[('ray', 2)] / t[('local', 2)]:.2f}x at 2 (goal <= {GOAL_RAY_LOCAL}x)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dnsmos-files", type=int, default=96, help="different clips DNSMOS scores (default 96)")
    ap.add_argument("--dnsmos-seconds", type=float, default=2.0,
                    help="their length (default 2, as the default data: DNSMOS pads each to 9 s)")
    ap.add_argument("--student-files", type=int, default=1000, help="files the student scores (default 1000)")
    ap.add_argument("--student-unique", type=int, default=50, help="different clips among them (default 50)")
    ap.add_argument("--student-seconds", type=float, default=10.0, help="length of the student's files (default 10)")
    ap.add_argument("--dnsmos-shard", type=int, default=2, help="DNSMOS files per shard (default 2)")
    ap.add_argument("--student-shard", type=int, default=64, help="student files per shard (default 64)")
    ap.add_argument("--student-run", type=Path, help="a trained student run (default: an untrained one)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = quick.parse_args(ap, argv, QUICK)
    reexec_in_namespace(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # Ray's workers
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import soundfile as sf

    from mark2_lib import dnsmos
    from mark2_lib.jobs.inputs import read_inputs
    from mark2_lib.jobs.scorers import StudentSpec
    from mark2_lib.jobs.teachers import DnsmosSpec

    print(f"{os.cpu_count()} CPUs; network: {network()}")
    with tempfile.TemporaryDirectory(prefix="mark2_bench_scale_") as tmp:
        tmp = Path(tmp)
        print(f"data in {tmp}", flush=True)
        run = args.student_run or make_student_run(tmp / "student")
        models, audio_h, n_files = {}, {}, {}
        try:
            dnsmos.require_dnsmos()
            files = make_files(tmp / "dnsmos", args.dnsmos_files, args.dnsmos_files, args.dnsmos_seconds, seed=1)
            models["dnsmos"] = (read_inputs(files), lambda cache: DnsmosSpec(str(cache)), args.dnsmos_shard)
        except ImportError as e:
            print(f"DNSMOS left out: {e}; run 'make setup-dnsmos'")
        files = make_files(tmp / "student", args.student_files, args.student_unique, args.student_seconds, seed=2)
        models["student"] = (read_inputs(files), lambda cache: StudentSpec(str(run)), args.student_shard)
        for name, (items, _, shard) in models.items():
            n_files[name] = len(items)
            audio_h[name] = sum(sf.info(it.path).duration for it in items) / 3600
            print(f"{name}: {len(items)} files, {audio_h[name] * 3600:.0f} s of audio, shards of {shard}")
        times, ray_start = measure(models, tmp)
    report(times, audio_h, n_files, ray_start, args)
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_scale.py", *argv]))


if __name__ == "__main__":
    main()
