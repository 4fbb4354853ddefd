"""What a corpus job scores: folders, audio files, file lists, labels.csv and JSON-lines manifests -> `Item`s.

    items = read_inputs(["recordings/", "more.txt", "train_manifest.jsonl"], root="recordings/")

Every record of every input becomes exactly one Item, in input order; a record that cannot be
scored (bad JSON, no audio_filepath, a file that is not there, a clip_id used twice) is an Item
with `error` set, naming the file and line, so the job writes an error row for it and nothing
is dropped. Blank lines (and '#' comments in file lists) are not records.

clip_id: labels.csv's clip_id column, a manifest's "clip_id" field, else the audio path
relative to `root` (a path outside `root` keeps its absolute path), else the path as written
in the input. A record with no usable path at all gets its source ("m.jsonl line 7") as clip_id.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..data.labels import read_csv_rows
from ..errors import DataError
from ..inference.files import find_audio

LIST_SUFFIXES = (".txt",)
CSV_SUFFIXES = (".csv",)
MANIFEST_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class Item:
    """One input of a corpus job: an audio file and what the input said about it."""

    index: int      # position in input order, 0-based, over all inputs given
    path: str       # the audio file, absolute ("" when the record had none)
    clip_id: str    # see the module docstring
    fields: dict    # the input record: a JSONL object as read, a labels.csv row (all columns); {} otherwise
    source: str     # where it came from: "recordings/ (folder)", "list.txt line 4", "m.jsonl line 7"
    error: str = ""  # a problem with the record itself; the job writes an error row for it
    shown: str = ""  # the path as the input gave it (joined to its list's or manifest's folder): what outputs show


def read_inputs(inputs, root=None) -> list[Item]:
    """Every record of `inputs` (a path or a list of them) as an Item, in order; see the module docstring.

    Folders are recursed (sorted, audio extensions as inference.files.AUDIO_EXTENSIONS); *.txt is a
    file list (one path per line, relative to the list's folder, '#' comments); *.csv is mark2's
    labels.csv (clip_id and path columns; relative paths against its folder; the audio is not checked
    here, the scorer reads it); *.jsonl / *.json is a NeMo-style manifest (one JSON object per line,
    audio_filepath required, relative to the manifest's folder, every field kept in Item.fields);
    anything else is an audio file. An input that does not exist raises DataError naming it.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    root = Path(os.path.abspath(root)) if root is not None else None
    records = []  # (path as written or None, base folder, clip_id or None, fields, source, error)
    for given in inputs:
        p = Path(given)
        if not p.exists():
            raise DataError(f"{given}: input not found (a folder, audio file, .txt list, labels .csv "
                            f"or .jsonl manifest)")
        suffix = p.suffix.lower()
        if p.is_dir():
            records += _folder(p, given)
        elif suffix in LIST_SUFFIXES:
            records += _file_list(p)
        elif suffix in CSV_SUFFIXES:
            records += _labels_csv(p)
        elif suffix in MANIFEST_SUFFIXES:
            records += _manifest(p)
        else:
            records.append((str(given), None, None, {}, str(given), ""))
    items, first_source = [], {}
    for index, (written, base, clip_id, fields, source, error) in enumerate(records):
        path = shown = ""
        if written:
            shown = os.path.join(base, written) if base is not None else written
            path = os.path.abspath(shown)
            if not error and not os.path.isfile(path):
                error = f"{source}: {path}: file not found"
        if clip_id is None:
            clip_id = _clip_id(path, written, root) if written else source
        if clip_id in first_source:
            dup = f"{source}: duplicate clip_id {clip_id!r}, already used by {first_source[clip_id]}"
            error = f"{error}; {dup}" if error else dup
        else:
            first_source[clip_id] = source
        items.append(Item(index, path, clip_id, fields, source, error, shown))
    return items


def total_seconds(items) -> float:
    """Seconds of audio in `items`: each one's "duration" field where it has a usable one, else
    soundfile.info(path).duration; 0 for error items and files soundfile cannot read."""
    total = 0.0
    for item in items:
        if item.error:
            continue
        seconds = _number(item.fields.get("duration"))
        if seconds is None:
            try:
                seconds = sf.info(item.path).duration
            except Exception:  # unreadable: the scorer reports it as that item's error row
                seconds = 0.0
        total += seconds
    return total


# ----------------------------------------------------------------------------- one input kind each
# Each returns records: (path as written or None, base folder or None, clip_id or None, fields, source, error)


def _folder(p: Path, given) -> list[tuple]:
    entries, _ = find_audio([p])  # err: only for a folder without audio files, and it names the folder
    return [(str(f), None, None, {}, f"{given} (folder)", err) for f, err in entries]


def _file_list(p: Path) -> list[tuple]:
    records = []
    for line, text in _lines(p):
        written = text.strip()
        if written and not written.startswith("#"):
            records.append((written, p.parent, None, {}, f"{p} line {line}", ""))
    return records


def _labels_csv(p: Path) -> list[tuple]:
    header, rows = read_csv_rows(p)
    missing = [c for c in ("clip_id", "path") if c not in header]
    if missing:
        raise DataError(f"{p}: missing column(s) {', '.join(missing)} (found: {', '.join(header)}); "
                        f"a labels.csv needs clip_id and path")
    records = []
    for line, row, problem in rows:
        source = f"{p} line {line}"
        clip_id, written = row["clip_id"].strip(), row["path"].strip().replace("\\", "/")
        error = problem or ("" if clip_id else "empty clip_id") or ("" if written else "empty path")
        records.append((written or None, p.parent, clip_id or None, row, source,
                        f"{source}: {error}" if error else ""))
    return records


def _manifest(p: Path) -> list[tuple]:
    records = []
    for line, text in _lines(p):
        if not text.strip():
            continue
        source, obj, problem = f"{p} line {line}", {}, ""
        try:
            obj = json.loads(text)
        except ValueError as e:
            problem = f"not valid JSON ({e})"
        if problem:
            obj = {}
        elif not isinstance(obj, dict):
            problem, obj = f"not a JSON object (got {type(obj).__name__})", {}
        elif "audio_filepath" not in obj:
            problem = "no audio_filepath field"
        elif not isinstance(obj["audio_filepath"], str) or not obj["audio_filepath"].strip():
            problem = f"audio_filepath must be a non-empty string, not {obj['audio_filepath']!r}"
        written = None if problem else obj["audio_filepath"]
        clip_id = str(obj["clip_id"]) if "clip_id" in obj and obj["clip_id"] not in (None, "") else None
        records.append((written, p.parent, clip_id, obj, source, f"{source}: {problem}" if problem else ""))
    return records


def _lines(p: Path):
    """(line number, text) of a UTF-8 text file (a BOM is fine); DataError naming it otherwise."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e})") from None
    return enumerate(text.splitlines(), start=1)


def _clip_id(path: str, written: str, root: Path | None) -> str:
    if root is None:
        return written
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:  # outside root: the absolute path is still a unique id
        return path


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x >= 0 else None
