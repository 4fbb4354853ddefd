"""Shards of a corpus job, the `<out>.parts/` folder that a killed job resumes from, and the rows
put back together in input order.

    rows = run_sharded(items, spec, "soft_labels.csv", engine="local", shard_size=64)

The items are cut into shards of `shard_size`, in input order. Each finished shard is written under
`<out>.parts/`: first `part-NNNNN.jsonl` (its rows, one JSON object per line; floats are written as
repr, so they read back exactly), then its record `part-NNNNN.json` (which items it covers, a sha1
of its rows, the node that scored it). Both are atomic, the record last, so a shard with a record
is complete. `job.json` holds the job key: the scorer's key, the shard size and a sha1 of every
item. Rerunning the same command skips the shards whose record and part match and scores the
rest; a folder made by a different job is refused, never mixed in. The rows returned are those read
back from the parts, so a resumed run returns exactly what an uninterrupted one does.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_write
from .engines import ShardError, check_engine, shard_results
from .inputs import total_seconds

FORMAT = 1  # of the parts folder; part of the job key


def parts_dir(out) -> Path:
    """The folder that holds `out`'s shards while the job runs: `<out>.parts`."""
    return Path(f"{out}.parts")


def items_sha1(items) -> str:
    """sha1 of what defines the items: path, clip_id, input fields and error of each, in order."""
    text = json.dumps([[it.path, it.clip_id, it.fields, it.error] for it in items],
                      sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def job_key(items, spec, shard_size: int) -> dict:
    """What `<out>.parts/job.json` holds: a rerun with another key may not reuse the parts."""
    return {"format": FORMAT, "scorer": spec.key(), "shard_size": shard_size,
            "items": len(items), "items_sha1": items_sha1(items)}


def run_sharded(items: list, spec, out, *, engine: str = "local", workers: int | None = None,
                shard_size: int = 64, ray_address: str | None = None, progress: bool = True) -> list[dict]:
    """Score `items` with `spec`'s scorer in shards of `shard_size`, writing each finished shard under
    `<out>.parts/`, and return every row in input order (one per item). Shards already finished by an
    earlier run of the same job are read back instead of scored. Raises ShardError when a shard fails
    or its rows do not match its items, ValueError for bad parameters or a parts folder of another job."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size={shard_size!r}: must be a whole number >= 1")
    check_engine(engine, workers)
    items = list(items)
    shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    folder = parts_dir(out)
    _claim(folder, job_key(items, spec, shard_size))

    rows_of = {n: _finished(folder, n, shard) for n, shard in enumerate(shards)}
    todo = [n for n, rows in rows_of.items() if rows is None]
    bar = _Progress([n for n in rows_of if n not in todo], shards, spec, progress)
    started = time.monotonic()
    try:
        results = shard_results([shards[n] for n in todo], spec, engine, workers, ray_address)
        for k, rows, node in results:
            if not isinstance(k, int) or not 0 <= k < len(todo) or rows_of[todo[k]] is not None:
                raise ShardError(f"the {engine} engine returned shard {k!r}, which is not one still to do "
                                 f"(a shard returned twice, or an unknown one)")
            n = todo[k]
            rows_of[n] = _write_part(folder, n, shards[n], rows, node, time.monotonic() - started)
            bar.done(n)
    except ShardError as e:
        if e.shard is None or not 0 <= e.shard < len(todo):
            raise
        n = todo[e.shard]  # the engine numbers the shards it was given; name the job's shard
        raise ShardError(f"shard {n}: {e.detail}", shard=n, detail=e.detail) from (e.__cause__ or e)
    finally:
        bar.close()
    missing = [n for n, rows in rows_of.items() if rows is None]
    if missing:
        raise ShardError(f"the {engine} engine finished without returning shard(s) "
                         f"{', '.join(map(str, missing[:10]))}; rerun to score them")
    return [row for n in range(len(shards)) for row in rows_of[n]]


def _claim(folder: Path, key: dict) -> None:
    """Write `job.json` in a new folder; check it in an existing one (ValueError on any difference)."""
    path = folder / "job.json"
    text = json.dumps(key, indent=1, sort_keys=True) + "\n"
    if not path.exists():
        if folder.is_dir() and any(folder.glob("part-*")):
            raise ValueError(f"{folder}: has parts but no job.json, so they cannot be checked against "
                             f"this job; delete the folder or choose another --out")
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); delete {folder} or choose another --out") from None
    if old == key:
        return
    what = {"format": "the parts format", "scorer": "the scorer (model or its settings)",
            "shard_size": "the shard size", "items": "the number of inputs", "items_sha1": "the inputs"}
    diffs = [f"{what.get(k, k)}: {old.get(k)!r} then, {key.get(k)!r} now"
             for k in sorted(set(old) | set(key)) if old.get(k) != key.get(k)]
    raise ValueError(f"{folder} holds the parts of a different job ({'; '.join(diffs)}); "
                     f"delete the folder to start over, or choose another --out")


def _names(folder: Path, n: int) -> tuple[Path, Path]:
    return folder / f"part-{n:05d}.jsonl", folder / f"part-{n:05d}.json"


def _record_fields(n: int, shard: list) -> dict:
    """What a shard's record must say for it to be reused: which items it covers."""
    return {"shard": n, "first": shard[0].index, "count": len(shard), "items_sha1": items_sha1(shard)}


def _finished(folder: Path, n: int, shard: list) -> list[dict] | None:
    """The rows of shard `n` when an earlier run finished it (record and part complete and matching
    this shard), else None: it is scored again."""
    part, record = _names(folder, n)
    try:
        rec = json.loads(record.read_text(encoding="utf-8"))
        data = part.read_bytes()
    except (OSError, ValueError):
        return None
    if (not isinstance(rec, dict) or any(rec.get(k) != v for k, v in _record_fields(n, shard).items())
            or rec.get("rows_sha1") != hashlib.sha1(data).hexdigest()):
        return None
    try:
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        _check_rows(n, shard, rows)
    except (ValueError, ShardError):
        return None
    return rows


def _check_rows(n: int, shard: list, rows) -> None:
    """ShardError unless `rows` is one dict with an "error" per item, in the items' order (a row
    that has a clip_id or path must have its item's)."""
    where = f"shard {n} (items {shard[0].index}-{shard[-1].index})"
    if not isinstance(rows, list) or len(rows) != len(shard):
        got = f"{len(rows)} rows" if isinstance(rows, list) else f"a {type(rows).__name__}"
        raise ShardError(f"{where}: the scorer returned {got} for {len(shard)} items")
    for item, row in zip(shard, rows):
        if not isinstance(row, dict) or "error" not in row:
            raise ShardError(f"{where}: the row for item {item.index} ({item.clip_id}) is not a dict "
                             f"with an 'error' field: {row!r:.200}")
        for key in ("clip_id", "path"):
            if key in row and row[key] != getattr(item, key):
                raise ShardError(f"{where}: the row for item {item.index} has {key} {row[key]!r}, not "
                                 f"{getattr(item, key)!r}: rows out of order or not this shard's")


def _write_part(folder: Path, n: int, shard: list, rows, node: str, seconds: float) -> list[dict]:
    """Check shard `n`'s rows, write its part then its record (each atomic); return the rows as read
    back from the part's text, so fresh and resumed runs return the same values."""
    _check_rows(n, shard, rows)
    lines = []
    for item, row in zip(shard, rows):
        try:
            lines.append(json.dumps(row, ensure_ascii=False))
        except (TypeError, ValueError) as e:
            raise ShardError(f"shard {n}: the row for item {item.index} ({item.clip_id}) is not plain "
                             f"JSON values: {e}") from None
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    part, record = _names(folder, n)
    atomic_write(part, lambda f: f.write(data))
    rec = {**_record_fields(n, shard), "rows_sha1": hashlib.sha1(data).hexdigest(),
           "node": node, "seconds": round(seconds, 3)}
    atomic_write(record, lambda f: f.write((json.dumps(rec, indent=1) + "\n").encode("utf-8")))
    return [json.loads(line) for line in lines]


class _Progress:
    """The driver's bar: files done of all, hours of audio done (and the total, extrapolated until
    every shard is done), ETA from tqdm's rate. Audio lengths come from jobs.inputs.total_seconds,
    computed for each shard as it finishes so that a large corpus does not wait before it starts."""

    def __init__(self, finished: list[int], shards: list, spec, enabled: bool):
        self.shards, self.enabled = shards, enabled
        self.n_items = sum(map(len, shards))
        self.seconds, self.files, self.bar = 0.0, 0, None
        for n in finished:
            self.done(n)
        # initial=: what earlier runs finished shows as done but does not count towards the rate
        self.bar = tqdm(total=self.n_items, initial=self.files, unit="file", dynamic_ncols=True,
                        desc=f"scoring with {getattr(spec, 'name', spec)}", disable=not enabled)
        self._postfix()

    def done(self, n: int) -> None:
        """Shard `n` is finished."""
        self.files += len(self.shards[n])
        if self.enabled:
            self.seconds += total_seconds(self.shards[n])
        if self.bar is not None:
            self._postfix()
            self.bar.update(len(self.shards[n]))

    def _postfix(self) -> None:
        if self.enabled and self.files:
            total = self.seconds * self.n_items / self.files
            approx = "" if self.files == self.n_items else "~"
            self.bar.set_postfix_str(f"{self.seconds / 3600:.2f} of {approx}{total / 3600:.2f} h audio",
                                     refresh=False)

    def close(self) -> None:
        self.bar.close()
