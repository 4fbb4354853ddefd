"""jobs/shards.py and jobs/engines.py with a fake scorer: engines agree, parts resume, a killed driver
resumes to the same bytes, other jobs' parts are refused, bad rows are errors."""
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from mark2_lib.jobs import engines
from mark2_lib.jobs.engines import ShardError
from mark2_lib.jobs.shards import parts_dir, run_sharded

ROOT = Path(__file__).resolve().parents[1]


def make_items(n, errors=()):
    """`n` Items of clips that need not exist (the fake scorer reads nothing); `errors` are bad records."""
    from mark2_lib.jobs.inputs import Item

    return [Item(i, f"/data/clip{i:03d}.wav", f"clip{i:03d}", {"duration": 1.5, "speaker": f"s{i % 3}"},
                 f"m.jsonl line {i + 1}", "m.jsonl line {}: no audio_filepath field".format(i + 1) if i in errors
                 else "") for i in range(n)]


def fake_row(item) -> dict:
    """The fake scorer's row: p from the sha1 of the path (a float with a long repr), or the item's error."""
    if item.error:
        return {"clip_id": item.clip_id, "path": item.path, "p": None, "p3": None, "error": item.error}
    p = int(hashlib.sha1(item.path.encode()).hexdigest(), 16) / 2 ** 160
    return {"clip_id": item.clip_id, "path": item.path, "p": p, "p3": p / 3, "error": ""}


@dataclass(frozen=True)
class FakeSpec:
    """A picklable scorer spec for tests; only `version` is part of its key, the rest are test knobs."""

    version: str = "1"
    calls: str = ""       # a folder: each score() call leaves a file named by its shard's first index
    sleep: float = 0.0    # seconds each score() call takes
    crash_at: int = -1    # score() raises on the shard holding this item index
    mess: str = ""        # "drop": one row too few; "swap": two rows swapped
    name: str = "fake"

    def key(self) -> str:
        return f"fake v{self.version}"

    def create(self):
        return FakeScorer(self)


class FakeScorer:
    """Scores by FakeSpec's rules."""

    def __init__(self, spec):
        self.spec = spec

    def score(self, items):
        s = self.spec
        if s.calls:
            Path(s.calls, f"{items[0].index:05d}-{uuid.uuid4().hex}").touch()
        time.sleep(s.sleep)
        if any(it.index == s.crash_at for it in items):
            raise RuntimeError(f"fake crash at item {s.crash_at}")
        rows = [fake_row(it) for it in items]
        if s.mess == "drop":
            rows.pop()
        elif s.mess == "swap":
            rows[0], rows[1] = rows[1], rows[0]
        return rows


def calls_of(folder) -> list[int]:
    """First item index of every score() call recorded in `folder`, sorted."""
    return sorted(int(p.name.split("-")[0]) for p in Path(folder).iterdir())


def parts_of(out) -> dict:
    """name -> bytes of the `.jsonl` parts of `out`."""
    return {p.name: p.read_bytes() for p in sorted(parts_dir(out).glob("part-*.jsonl"))}


def test_local_gives_the_parts_serial_does_and_a_worker_error_names_its_shard(tmp_path):
    """One process pool only (each spawned worker imports torch: seconds): the local run crashes on the
    last shard, which names it; the serial engine finishes the job; every part equals a serial run's."""
    items = make_items(10, errors={4})
    serial = run_sharded(items, FakeSpec(), tmp_path / "a" / "out.jsonl", engine="serial", shard_size=2,
                         progress=False)
    assert serial == [fake_row(it) for it in items]  # input order, floats exact, the error row kept
    assert serial[4]["error"] == "m.jsonl line 5: no audio_filepath field"

    out = tmp_path / "b" / "out.jsonl"
    with pytest.raises(ShardError, match=r"^shard 4: scoring items 8-9 failed in a worker: .*fake crash at item 9"):
        run_sharded(items, FakeSpec(crash_at=9), out, engine="local", workers=2, shard_size=2, progress=False)
    by_workers = [json.loads(p.read_text()) for p in sorted(parts_dir(out).glob("part-*.json"))]
    assert by_workers and all(r["node"].rsplit(":", 1)[1] != str(os.getpid()) for r in by_workers)
    assert run_sharded(items, FakeSpec(), out, engine="serial", shard_size=2, progress=False) == serial
    assert parts_of(out) == parts_of(tmp_path / "a" / "out.jsonl") and len(parts_of(out)) == 5
    records = [json.loads(p.read_text()) for p in sorted(parts_dir(out).glob("part-*.json"))]
    assert [(r["shard"], r["first"], r["count"]) for r in records] == [(n, 2 * n, 2) for n in range(5)]
    assert all(r in records for r in by_workers)  # the serial rerun kept the shards the workers wrote


def test_resume_rescores_only_the_missing_or_damaged_shards(tmp_path):
    items, calls, out = make_items(12), tmp_path / "calls", tmp_path / "out.csv"
    calls.mkdir()
    spec = FakeSpec(calls=str(calls))
    first = run_sharded(items, spec, out, engine="serial", shard_size=3, progress=False)
    before = parts_of(out)
    folder = parts_dir(out)
    (folder / "part-00001.jsonl").unlink()                            # a part gone
    damaged = (folder / "part-00002.jsonl").read_bytes().replace(b"clip", b"clap", 1)
    (folder / "part-00002.jsonl").write_bytes(damaged)                # a part changed after its record
    (folder / "part-00003.json").unlink()                             # killed between part and record
    for p in calls.iterdir():
        p.unlink()
    assert run_sharded(items, spec, out, engine="serial", shard_size=3, progress=False) == first
    assert calls_of(calls) == [3, 6, 9]
    assert parts_of(out) == before


def test_driver_killed_mid_run_resumes_to_the_same_bytes(tmp_path):
    items, calls = make_items(12, errors={5}), tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "killed" / "out.jsonl"
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
              "from test_jobs_shards import FakeSpec, make_items\n"
              "from mark2_lib.jobs.shards import run_sharded\n"
              f"run_sharded(make_items(12, errors={{5}}), FakeSpec(calls={str(calls)!r}, sleep=0.3), "
              f"{str(out)!r}, engine='serial', shard_size=2, progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(parts_dir(out).glob("part-*.json"))) < 2:
            assert proc.poll() is None, "the job ended before it was killed"
            assert time.monotonic() < deadline, "the job wrote no parts within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = len(list(parts_dir(out).glob("part-*.json")))
    assert 2 <= finished < 6, "the kill should land mid-run"
    for p in calls.iterdir():
        p.unlink()

    resumed = run_sharded(items, FakeSpec(calls=str(calls)), out, engine="serial", shard_size=2, progress=False)
    assert len(calls_of(calls)) == 6 - finished  # only the shards without a record were scored again
    clean_out = tmp_path / "clean" / "out.jsonl"
    clean = run_sharded(items, FakeSpec(), clean_out, engine="serial", shard_size=2, progress=False)
    assert json.dumps(resumed).encode() == json.dumps(clean).encode()
    assert parts_of(out) == parts_of(clean_out) and len(parts_of(out)) == 6
    assert not list(parts_dir(out).glob(".*.tmp"))  # no temp file of the killed write is left


def test_the_parts_of_a_different_job_are_refused(tmp_path):
    items, out = make_items(6), tmp_path / "out.csv"
    run_sharded(items, FakeSpec(), out, engine="serial", shard_size=2, progress=False)
    folder = str(parts_dir(out))
    for kwargs, what in [({"spec": FakeSpec(version="2")}, "the scorer"), ({"shard_size": 3}, "the shard size"),
                         ({"items": make_items(7)}, "the number of inputs")]:
        args = {"items": items, "spec": FakeSpec(), "shard_size": 2, **kwargs}
        with pytest.raises(ValueError, match=rf"(?s){folder}.*{what}.*delete the folder.*another --out"):
            run_sharded(args["items"], args["spec"], out, engine="serial", shard_size=args["shard_size"],
                        progress=False)
    changed = [items[0], items[2], items[1], *items[3:]]  # same count, other order
    with pytest.raises(ValueError, match=r"the inputs: '\w+' then"):
        run_sharded(changed, FakeSpec(), out, engine="serial", shard_size=2, progress=False)


@pytest.mark.parametrize("mess, message", [("drop", r"returned 2 rows for 3 items"),
                                           ("swap", r"item 3 has clip_id 'clip004', not 'clip003'")])
def test_rows_that_do_not_match_their_items_are_an_error(tmp_path, mess, message):
    out = tmp_path / "out.csv"
    with pytest.raises(ShardError, match=rf"shard 0 \(items 3-5\): .*{message}"):
        run_sharded(make_items(6)[3:], FakeSpec(mess=mess), out, engine="serial", shard_size=3, progress=False)
    assert not list(parts_dir(out).glob("part-*"))  # nothing of the bad shard is kept


def test_a_failing_shard_is_named_by_its_number_in_the_job_also_when_resuming(tmp_path):
    items, out = make_items(10), tmp_path / "out.csv"
    run_sharded(items[:6], FakeSpec(), tmp_path / "other.csv", engine="serial", shard_size=3, progress=False)
    with pytest.raises(ShardError, match=r"^shard 2: scoring items 6-8 failed: RuntimeError: fake crash at item 7"):
        run_sharded(items, FakeSpec(crash_at=7), out, engine="serial", shard_size=3, progress=False)
    assert sorted(p.name for p in parts_dir(out).glob("part-*.json")) == ["part-00000.json", "part-00001.json"]
    with pytest.raises(ShardError, match=r"^shard 2: scoring items 6-8"):  # the engine sees it as its shard 0
        run_sharded(items, FakeSpec(crash_at=7), out, engine="serial", shard_size=3, progress=False)


def test_bad_parameters_are_refused_by_name(tmp_path, monkeypatch):
    items, out = make_items(3), tmp_path / "out.csv"
    for kwargs, name in [({"engine": "threads"}, "engine='threads'"), ({"workers": 0}, "workers=0"),
                         ({"shard_size": 0}, "shard_size=0")]:
        with pytest.raises(ValueError, match=name):
            run_sharded(items, FakeSpec(), out, progress=False, **kwargs)
    real = engines.importlib.util.find_spec
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install -e '\.\[scale\]'"):
        run_sharded(items, FakeSpec(), out, engine="ray", progress=False)
    assert not parts_dir(out).exists()  # refused before anything was written


def test_an_empty_job_and_the_progress_bar(tmp_path, capsys):
    assert run_sharded([], FakeSpec(), tmp_path / "empty.csv", engine="local", progress=False) == []
    items = [dataclasses.replace(it, fields={"duration": 720}) for it in make_items(5)]
    rows = run_sharded(items, FakeSpec(), tmp_path / "out.csv", engine="serial", shard_size=2, progress=True)
    assert rows == [fake_row(it) for it in items]
    err = capsys.readouterr().err
    assert "5/5" in err and "1.00 of 1.00 h audio" in err  # 5 x 12 min
