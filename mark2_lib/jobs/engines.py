"""Who scores the shards of a corpus job: "serial" (this process), "local" (a process pool, one
scorer per worker process) or "ray" (Ray Data actors, in jobs/ray_engine.py).

Every engine yields `(shard number, rows, node)` as shards finish, in any order; shards.py checks
the rows, writes the parts and puts everything back in input order. A shard whose scoring raises
stops the job with a `ShardError` naming the shard: nothing is skipped silently, and the shards
finished before it are already on disk for the rerun.

The local engine starts its workers with the "spawn" method. Forking a process that has already
imported torch (its thread pools, OpenMP and CUDA state) can deadlock or crash the child; a spawned
worker starts a fresh interpreter instead, and "spawn" is also the only method that works the same
on Linux, macOS and Windows. Its cost, a fresh import per worker, is paid once per worker.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import os
import socket
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator

ENGINES = ("serial", "local", "ray")
RAY_MISSING = "the Ray engine needs the scale extra: pip install -e '.[scale]'"

_scorer = None  # the scorer of this worker process (local engine), made once by _init_worker


class ShardError(RuntimeError):
    """Scoring a shard failed, or its rows do not match its items; the message names the shard.

    `shard` is the shard's position in the list the engine was given (None when not about one shard),
    `detail` the message without it, so that run_sharded can name the shard of the whole job."""

    def __init__(self, message: str, shard: int | None = None, detail: str = ""):
        super().__init__(message)
        self.shard, self.detail = shard, detail or message


def shard_failed(number: int, items: list, e: BaseException, where: str = "") -> ShardError:
    """The ShardError for an exception `e` raised while scoring shard `number` (of the list given)."""
    detail = f"scoring items {span(items)} failed{where}: {type(e).__name__}: {e}"
    return ShardError(f"shard {number}: {detail}", shard=number, detail=detail)


def node_name() -> str:
    """Where a shard was scored: `hostname:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_engine(engine: str, workers: int | None) -> None:
    """Raise ValueError naming the parameter when `engine` or `workers` is not valid, ImportError when
    the engine is "ray" and Ray is not installed: before a job creates anything."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: must be one of {', '.join(ENGINES)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r}: must be a whole number >= 1, or None for every core")
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ImportError(RAY_MISSING)


def shard_results(shards: list, spec, engine: str = "local", workers: int | None = None,
                  ray_address: str | None = None) -> Iterator[tuple[int, list[dict], str]]:
    """Score `shards` (lists of Items) with scorers made by `spec`; yield (shard number, rows, node)
    as shards finish, in any order. The engine and workers are checked now, before anything starts."""
    check_engine(engine, workers)
    if engine == "serial":
        return _serial(shards, spec)
    if engine == "local":
        return _local(shards, spec, workers or os.cpu_count() or 1)
    from mark2_lib.jobs import ray_engine

    return ray_engine.ray_shard_results(shards, spec, workers, ray_address)


def _serial(shards: list, spec) -> Iterator[tuple[int, list[dict], str]]:
    """Every shard in this process, in order, with one scorer."""
    if not shards:
        return
    scorer = spec.create()
    node = node_name()
    for number, items in enumerate(shards):
        try:
            rows = scorer.score(items)
        except Exception as e:
            raise shard_failed(number, items, e) from e
        yield number, rows, node


def _init_worker(spec) -> None:
    """Process-pool initializer: one torch thread per worker (the pool is the parallelism) and the
    worker's scorer, made once and kept in a module global."""
    global _scorer
    import torch

    torch.set_num_threads(1)
    _scorer = spec.create()


def _score_in_worker(number: int, items: list) -> tuple[int, list[dict], str]:
    """Score one shard in a pool worker with the scorer `_init_worker` made."""
    return number, _scorer.score(items), node_name()


def _local(shards: list, spec, workers: int) -> Iterator[tuple[int, list[dict], str]]:
    """A process pool of `workers` spawned processes. At most two shards per worker are in flight,
    so a failure stops the job soon and the input is not all pickled at once."""
    if not shards:
        return
    workers = min(workers, len(shards))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(spec,))
    pending, todo = {}, iter(enumerate(shards))
    try:
        while True:
            for number, items in todo:
                pending[pool.submit(_score_in_worker, number, items)] = (number, items)
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: pending[f][0]):
                number, items = pending.pop(future)
                try:
                    result = future.result()
                except Exception as e:
                    raise shard_failed(number, items, e, " in a worker") from e
                yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def span(items: list) -> str:
    """The input indices a shard covers, e.g. "64-127"."""
    return f"{items[0].index}-{items[-1].index}" if items else "none"
