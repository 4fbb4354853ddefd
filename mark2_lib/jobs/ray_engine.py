"""The "ray" engine: the shards of a corpus job scored by Ray Data, one stateful actor per worker.

    for shard, rows, node in ray_shard_results(shards, spec, workers=2, ray_address=None): ...

The shards become a Ray dataset with one row (and one block) per shard: its number and its Items as
JSON text (plain data, whatever fields a manifest carried). `map_batches` runs `ShardScorer`, a
callable class, on an actor pool of `workers` actors (1 CPU each, one shard per call): each actor
calls `spec.create()` once, then scores shard after shard, and returns the rows as JSON text with the
Ray node id it ran on. An actor whose process dies is restarted and its shard retried
(max_restarts / max_task_retries -1), so no shard is lost; the driver keys results by shard number
and drops a repeat, so none is duplicated.

`ray_address=None` starts a Ray for this call only (num_cpus=workers, no dashboard, node address
127.0.0.1) and shuts it down at the end; an address ("auto", "127.0.0.1:6379") joins a running cluster,
and a Ray this process already started is used as it is. Workers import `mark2_lib` as their node
does (installed there, or on the PYTHONPATH that `ray start` saw). Ray is the optional `scale` extra:
without it this engine raises ImportError saying how to install it, and nothing else needs it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Iterator

from .inputs import Item

ACTORS_TIMEOUT_S = 600  # for the pool's actors to start (the model loads there), else a clear error
IN_FLIGHT = 2  # shards queued at each actor: one scoring, one waiting
EXTRA_HINT = "pip install -e '.[scale]' (or 'make setup-scale')"


def require_ray():
    """The `ray` module with Ray Data, or ImportError naming the `scale` extra and how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"engine 'ray' needs Ray Data, the optional 'scale' extra ({e}): {EXTRA_HINT}") from e
    return ray


def encode_items(items: list[Item]) -> str:
    """Items as JSON text (a list of their fields), for a dataset row; see decode_items."""
    try:
        return json.dumps([dataclasses.asdict(it) for it in items])
    except TypeError as e:
        first = items[0].source if items else "?"
        raise TypeError(f"the shard starting at {first} holds a value that is not plain JSON data: {e}") from e


def decode_items(text: str) -> list[Item]:
    """The Items encode_items wrote."""
    return [Item(**d) for d in json.loads(text)]


def one_thread() -> None:
    """One torch thread in this actor, when torch is loaded: one CPU per actor, as in the local engine."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class ShardScorer:
    """A Ray Data actor: creates the scorer once, then scores one shard per call."""

    spec = None  # set by bound_scorer

    def __init__(self):
        import ray
        one_thread()  # the spec's module may have imported torch already; the scorer may import it
        self.scorer = self.spec.create()
        one_thread()
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        """Score each shard of the batch (one, with batch_size=1). A scorer that raises gives the
        shard an error text instead of rows, for the driver to raise: Ray would not say which shard."""
        import numpy as np
        shards, texts, failures = [], [], []
        for shard, items_text in zip(batch["shard"], batch["items"]):
            items = decode_items(str(items_text))
            rows, failure = [], ""
            try:
                rows = self.scorer.score(items)
                if len(rows) != len(items):
                    raise RuntimeError(f"{len(rows)} rows for {len(items)} items")
            except Exception as e:
                failure = f"{type(e).__name__}: {e}"
            shards.append(int(shard))
            texts.append(json.dumps(rows))
            failures.append(failure)
        return {"shard": np.array(shards, dtype=np.int64), "rows": np.array(texts, dtype=object),
                "node": np.array([self.node] * len(shards), dtype=object),
                "failure": np.array(failures, dtype=object)}


def bound_scorer(spec) -> type:
    """A ShardScorer subclass that carries `spec`: it travels with the class definition, so that a
    restarted actor never depends on constructor arguments kept in the object store."""
    return type("ShardScorer", (ShardScorer,), {"spec": spec, "__doc__": f"ShardScorer for {spec.name}."})


def spread_over_actors(ctx) -> None:
    """Leave out Ray Data's resource-budget backpressure. On a small cluster whose CPUs the actor pool
    takes in full (2 actors on 2 CPUs), it admits one shard at a time, so one actor did nearly all
    the work while the other idled (measured with Ray 2.60). The inputs are on the driver already
    and a shard's rows are small, so the other policies (concurrency cap, downstream capacity) suffice."""
    try:
        from ray.data._internal.execution import backpressure_policy as bp
        keep = [p for p in bp.ENABLED_BACKPRESSURE_POLICIES if p is not bp.ResourceBudgetBackpressurePolicy]
        ctx.set_config(bp.ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, keep)
    except (ImportError, AttributeError):  # another Ray version: its defaults
        pass


def start_ray(ray, workers: int | None, ray_address: str | None) -> bool:
    """Connect to `ray_address`, or start a local Ray bound to 127.0.0.1; False when this process
    already had Ray running (then it is used as it is, and left running)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent anywhere
    common = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    if ray_address is None:
        ray.init(num_cpus=workers or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **common)
    else:
        try:
            ray.init(address=ray_address, **common)
        except ConnectionError as e:
            raise ConnectionError(f"--ray-address {ray_address}: no Ray cluster there ({e}); start one with "
                                  f"'ray start --head', or leave the address out for a local Ray") from e
    return True


def ray_shard_results(shards: list[list[Item]], spec, workers: int | None,
                      ray_address: str | None) -> Iterator[tuple[int, list[dict], str]]:
    """Yield (shard number, rows, node id) as shards finish, in any order, each shard exactly once.

    `workers` actors (None: one per CPU of the cluster), each creating `spec`'s scorer once.
    See the module docstring for `ray_address`.
    """
    ray = require_ray()
    todo = [(number, shard) for number, shard in enumerate(shards) if shard]
    for number, shard in enumerate(shards):
        if not shard:
            yield number, [], ""
    if not todo:
        return
    started = start_ray(ray, workers, ray_address)
    try:
        from ray.data import DataContext
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the job's own bar is on the driver
        ctx.print_on_execution_start = False
        ctx.wait_for_min_actors_s = ACTORS_TIMEOUT_S  # every actor up before the first shard: all share
        spread_over_actors(ctx)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = max(1, min(workers, len(todo)))
        ds = ray.data.from_items([{"shard": number, "items": encode_items(shard)} for number, shard in todo],
                                 override_num_blocks=len(todo))
        # Ray Data 2.60 gives actor pools max_restarts=-1 and max_task_retries=-1 by default (passing
        # them is deprecated): a dead actor is restarted and its shards retried. Every actor is up before
        # the first shard goes out (wait_for_min_actors_s); each then holds IN_FLIGHT shards, so that it
        # starts the next one as soon as it finishes one instead of idling while the driver schedules.
        pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=IN_FLIGHT)
        scored = ds.map_batches(bound_scorer(spec), batch_size=1, batch_format="numpy", compute=pool, num_cpus=1)
        wanted, seen = {number for number, _ in todo}, set()
        for row in scored.iter_rows():
            number = int(row["shard"])
            if number in seen or number not in wanted:
                continue
            seen.add(number)
            items = shards[number]
            if str(row["failure"]):
                raise RuntimeError(f"scoring items {items[0].index}-{items[-1].index} with {spec.name} failed on "
                                   f"Ray node {row['node']}: {row['failure']}")
            yield number, json.loads(str(row["rows"])), str(row["node"])
        if seen != wanted:
            raise RuntimeError(f"Ray returned no rows for shard(s) {sorted(wanted - seen)[:10]}")
    finally:
        if started:
            ray.shutdown()
