"""A corpus job's rows to a file, in the format its extension names: `.csv` or `.jsonl`.

    write_rows(rows, "scores.jsonl", ["clip_id", "p_noise", "label", "error"], items)

`.csv` holds `columns` only, in that order. `.jsonl` holds one JSON object per line: the input
record's fields first (every one, as read, so the file can feed the next step of a curation
pipeline), then our columns. When an input field has the same name as one of our columns, ours
keeps the name and the input's value moves to "input_<name>" (again prefixed while that is taken).
Floats are written as repr(float) in both, so they read back exactly; None is an empty CSV cell
or JSON null. The same rows always give the same bytes, and every write is atomic.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_write
from ..errors import DataError

FORMATS = (".csv", ".jsonl")


def write_rows(rows: list[dict], out, columns: list[str] | None, items=None,
               float_format: str | None = None) -> Path:
    """Write `rows` to `out` (.csv or .jsonl, by its extension) atomically; returns the path.

    columns: ours, in order (None: every key of the rows, in the order they first appear).
    items: the jobs.inputs Items the rows belong to, same order; their `fields` lead each JSON line
    (not used for .csv). float_format: e.g. "%.6f" for CSV cells (default repr, which round-trips).
    Raises ValueError for another extension, or when items and rows differ in length.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: unknown output format {out.suffix!r}; use one of {', '.join(FORMATS)}")
    rows = list(rows)
    if items is not None and len(items) != len(rows):
        raise ValueError(f"{out}: {len(rows)} rows but {len(items)} items; need one row per item")
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    text = _csv_text(rows, columns, float_format) if suffix == ".csv" else _jsonl_text(rows, columns, items)
    return atomic_write(out, lambda f: f.write(text.encode("utf-8")))


def read_rows(path) -> list[dict]:
    """The objects of a JSON-lines file (as write_rows writes), in order; blank lines skipped.
    A line that is not a JSON object raises DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as e:
            raise DataError(f"{path} line {line}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {line}: not a JSON object (got {type(row).__name__})")
        rows.append(row)
    return rows


def json_line(obj: dict) -> str:
    """One JSON line, as write_rows writes them (key order kept, floats as repr, UTF-8 text as is)."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


def merged_record(fields: dict, row: dict, columns: list[str]) -> dict:
    """The input's `fields`, then our `columns` from `row`; an input field named like one of ours
    is kept as "input_<name>"."""
    ours = set(columns)
    record = {}
    for name, value in fields.items():
        while name in ours or name in record:
            name = f"input_{name}"
        record[name] = value
    for c in columns:
        record[c] = row.get(c)
    return record


def _jsonl_text(rows, columns, items) -> str:
    return "".join(json_line(merged_record(items[i].fields if items is not None else {}, row, columns))
                   for i, row in enumerate(rows))


def _csv_text(rows, columns, float_format) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), float_format) for c in columns])
    return buf.getvalue()


def _cell(value, float_format):
    if value is None:
        return ""
    if isinstance(value, float):
        return float_format % value if float_format else float.__repr__(value)  # numpy floats too
    return value
