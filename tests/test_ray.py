"""The "ray" engine of the corpus jobs on a real two-node Ray cluster (tests/ray_cluster.py): a head
and a second node, 1 CPU each, in a loopback-only network namespace, started once for this module.

- the student's predictions through Ray equal the serial and local engines' (p_noise within 1e-6,
  error rows included: a missing file and a file that is not audio), and DNSMOS BAK too (dnsmos extra);
- both nodes scored shards (the parts records name two Ray node ids);
- a driver SIGKILLed half way, then rerun, writes the same bytes as an uninterrupted run;
- a worker process killed mid-shard is restarted by Ray, and every row comes back exactly once.

Needs the `scale` extra (ray[data]) and root (for the namespace): without them these tests skip,
saying why, except under CI ($CI), where they fail. The cluster costs ~30 s to start on 2 cores.
"""
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import dnsmos_missing, require_or_skip
from ray_cluster import RayCluster, kill_driver, missing
from test_predict import make_run

from mark2_lib.jobs import inputs, outputs, ray_engine, score, shards

SHARD = 2  # 25 shards of the 50 inputs: both nodes get work, and a killed driver leaves some
N_DNSMOS = 6
KILL_INDEX = 31  # the kill-once job's worker dies on its first try at the shard holding this item




@pytest.fixture(scope="module")
def work(tiny_data, tmp_path_factory) -> dict:
    """A manifest of the 48 tiny clips (relative paths, extra fields) plus a missing file and a file
    that is not audio; a student run; a labels.csv of six clips for DNSMOS."""
    manifest, _, _ = tiny_data
    root = tmp_path_factory.mktemp("ray_work")
    data = Path(manifest.root)
    labels = list(inputs.read_inputs(data / "labels.csv"))
    (root / "not_audio.wav").write_text("this is not audio\n")
    lines = [{"audio_filepath": it.path, "duration": 2.0, "speaker": f"spk{it.index % 3}", "label": it.fields["label"]}
             for it in labels]
    lines.insert(5, {"audio_filepath": str(root / "gone.wav"), "speaker": "nobody"})
    lines.insert(20, {"audio_filepath": "not_audio.wav", "speaker": "text"})
    (root / "corpus.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    small = (data / "labels.csv").read_text().splitlines()
    train = [r for r in small[1:] if r.endswith(",train")]
    (root / "dnsmos_labels.csv").write_text("\n".join([small[0], *train[:N_DNSMOS]]).replace(
        "audio/", str(data / "audio") + "/") + "\n")
    return {"root": root, "manifest": str(root / "corpus.jsonl"), "n": len(lines),
            "run": str(make_run(root / "student")), "dnsmos_labels": str(root / "dnsmos_labels.csv")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The two-node cluster, started in the background (the first driver waits for it); stopped after."""
    why = missing()
    if why:
        require_or_skip(why, "the Ray cluster tests (tests/test_ray.py)")
    c = RayCluster(tmp_path_factory.mktemp("ray_cluster"))
    try:
        yield c
    finally:
        c.stop()


def predict_job(work, out, delay=0.0) -> dict:
    return {"job": "predict", "run": work["run"], "inputs": [work["manifest"]], "out": str(out),
            "shard_size": SHARD, "delay": delay}


@pytest.fixture(scope="module")
def results(cluster, work) -> dict:
    """The same jobs by the serial and local engines here (while the cluster starts), then by Ray there,
    in one driver: the student, DNSMOS (with the dnsmos extra), and the job whose worker kills itself."""
    root = work["root"]
    outs = {e: root / f"pred_{e}.jsonl" for e in ("serial", "local", "ray")}
    for engine in ("serial", "local"):
        score.predict_job(work["run"], [work["manifest"]], outs[engine], engine=engine, workers=2,
                           shard_size=SHARD, progress=False)
    jobs = [predict_job(work, outs["ray"])]
    bak = None
    if not dnsmos_missing():
        items = inputs.read_inputs(work["dnsmos_labels"])
        from mark2_lib.jobs.teachers import DnsmosSpec
        rows = shards.run_sharded(items, DnsmosSpec(str(root / "cache_serial")), root / "dnsmos_serial.jsonl",
                                  engine="serial", shard_size=SHARD, progress=False)
        bak = [r["bak"] for r in rows]
        jobs.append({"job": "dnsmos", "inputs": [work["dnsmos_labels"]], "out": str(root / "dnsmos_ray.jsonl"),
                     "cache": str(root / "cache_ray"), "shard_size": SHARD})
    jobs.append({"job": "kill-once", "inputs": [work["manifest"]], "out": str(root / "kill_once.jsonl"),
                 "marker": str(root / "killed.txt"), "kill_index": KILL_INDEX, "shard_size": 4})
    t0 = time.monotonic()
    log = cluster.driver(jobs, root / "driver_a.log", timeout=300)
    print(f"\nray driver ({', '.join(j['job'] for j in jobs)}): {time.monotonic() - t0:.1f} s, cluster start included")
    return {"outs": outs, "log": log, "bak_serial": bak, "dnsmos_rows": root / "dnsmos_ray.jsonl.rows.json",
            "kill_once": root / "kill_once.jsonl", "marker": root / "killed.txt"}


def test_ray_predictions_equal_serial_and_local(results, work):
    rows = {e: outputs.read_rows(p) for e, p in results["outs"].items()}
    assert len(rows["ray"]) == work["n"] == 50
    for engine in ("serial", "local"):
        assert len(rows[engine]) == len(rows["ray"])
        for a, b in zip(rows["ray"], rows[engine]):
            assert {k: v for k, v in a.items() if k != "p_noise"} == {k: v for k, v in b.items() if k != "p_noise"}
            if a["error"]:
                assert a["p_noise"] is None and b["p_noise"] is None
            else:
                assert abs(a["p_noise"] - b["p_noise"]) <= 1e-6, (engine, a, b)
    errors = [r for r in rows["ray"] if r["error"]]
    assert len(errors) == 2, errors  # the missing file and the text file, in their input positions
    assert "gone.wav" in rows["ray"][5]["error"] and "not found" in rows["ray"][5]["error"]
    assert rows["ray"][20]["error"] and rows["ray"][20]["speaker"] == "text"
    assert all(r["speaker"] for r in rows["ray"])  # the manifest's own fields are kept
    assert len({r["p_noise"] for r in rows["ray"] if not r["error"]}) > 10  # real, varied scores


def test_ray_dnsmos_bak_equals_serial(results):
    why = dnsmos_missing()
    if why:
        require_or_skip(why, "the Ray DNSMOS comparison")
    ray_bak = [r["bak"] for r in json.loads(Path(results["dnsmos_rows"]).read_text())]
    assert len(ray_bak) == N_DNSMOS and all(b is not None for b in ray_bak)
    assert max(abs(a - b) for a, b in zip(ray_bak, results["bak_serial"])) <= 1e-6, (ray_bak, results["bak_serial"])


def test_both_nodes_scored_shards(results):
    parts = shards.parts_dir(results["outs"]["ray"])
    records = [json.loads(p.read_text()) for p in sorted(parts.glob("part-*.json"))]
    assert len(records) == 25 and [r["shard"] for r in records] == list(range(25))
    nodes = {r["node"] for r in records}
    assert len(nodes) == 2 and all(len(n) == 56 for n in nodes), nodes  # two Ray node ids (hex)


def test_driver_killed_mid_run_resumes_to_the_same_bytes(results, cluster, work):
    out = work["root"] / "pred_killed.jsonl"
    parts = shards.parts_dir(out)
    job = predict_job(work, out, delay=0.25)  # slow shards, so that the kill lands half way
    proc = cluster.start_driver([job], work["root"] / "driver_c1.log")
    deadline = time.monotonic() + 180
    try:
        while len(list(parts.glob("part-*.json"))) < 3:
            assert proc.poll() is None, f"driver ended before the kill:\n{(work['root'] / 'driver_c1.log').read_text()}"
            assert time.monotonic() < deadline, "no shard finished within 180 s"
            time.sleep(0.05)
    finally:
        kill_driver(proc)
    before = {p.name: p.read_bytes() for p in parts.glob("part-*.json")}
    assert 3 <= len(before) < 25 and not out.exists(), sorted(before)
    cluster.driver([{**job, "delay": 0.0}], work["root"] / "driver_c2.log", timeout=180)  # the same job
    assert out.read_bytes() == results["outs"]["ray"].read_bytes()
    for name, data in before.items():  # shards finished before the kill were kept, not scored again
        assert (parts / name).read_bytes() == data, name


def test_worker_killed_mid_shard_every_row_exactly_once(results, work):
    rows = json.loads(Path(f"{results['kill_once']}.rows.json").read_text())
    assert [r["index"] for r in rows] == list(range(work["n"]))
    assert results["marker"].exists(), "the worker never reached the item it kills itself on"
    killed_pid = int(results["marker"].read_text())
    assert rows[KILL_INDEX]["pid"] != killed_pid  # scored by the restarted worker
    assert len(list(shards.parts_dir(results["kill_once"]).glob("part-*.json"))) == 13


def test_items_travel_as_plain_json():
    items = [inputs.Item(0, "/a.wav", "a", {"x": [1, {"y": None}], "f": 0.1 + 0.2}, "m.jsonl line 1"),
             inputs.Item(1, "", "m.jsonl line 2", {}, "m.jsonl line 2", "m.jsonl line 2: no audio_filepath")]
    assert ray_engine.decode_items(ray_engine.encode_items(items)) == items


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"scale.*pip install -e '\.\[scale\]'"):
        ray_engine.require_ray()
