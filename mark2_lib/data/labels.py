"""Hard labels in: reading and checking a labels.csv into a `Manifest` (format: data/README.md).

A transfer set: a train clip may have no hard label (an empty `label` cell). It is kept with the
label UNLABELLED (-1) and trains through the teacher's soft labels only; val and test clips are
scored against hard labels, so an empty label there is an error. Without a split column the
unlabelled clips all go to train. (Whether each unlabelled clip has a soft label is checked where
the soft labels are joined: data/dataset.py.)

Every problem in it raises a DataError naming the CSV file and row; with on_error="skip" the
row is left out instead, recorded in `.skipped` and reported. The CSV plumbing here (`read_csv_rows`,
`RowProblems`) also reads the teachers' soft-label CSVs (soft_labels.py).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from .. import audio
from ..errors import DataError

__all__ = ["DataError", "LABELS", "SPLITS", "UNLABELLED", "parse_label", "check_audio_file", "Manifest", "load_labels"]

LABELS = {"0": 0, "1": 1, "clean": 0, "noise": 1}  # hard label spellings; class 1 is noise
SPLITS = ("train", "val", "test")
UNLABELLED = -1  # the label of a train clip without a hard label (an empty label cell)
INTEGER_SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW"}


def parse_label(value) -> int:
    """A hard label as 0 (clean) or 1 (noise): 0/1 as int or text, or clean/noise in any case."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    label = LABELS.get(str(value).strip().lower())
    if label is None:
        raise DataError(f"unknown label {value!r}; use 0/1 or clean/noise (1 = noise)")
    return label


# ----------------------------------------------------------------------------- CSV plumbing

def read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict, str]]]:
    """Header (stripped, lower-case) and one (line number, fields, problem) per non-blank record.

    Line numbers are what an editor shows (header = line 1), counting blank lines too.
    """
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: file not found")
    header, records, line = None, [], 0
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for fields in reader:
                start, line = line + 1, reader.line_num
                if not any(x.strip() for x in fields):
                    continue
                if header is None:
                    header = [h.strip().lower() for h in fields]
                    dupes = sorted({h for h in header if h and header.count(h) > 1})
                    if dupes:
                        raise DataError(f"{csv_path}: column(s) {', '.join(dupes)} appear twice")
                    continue
                problem = ""
                if len(fields) > len(header) and any(x.strip() for x in fields[len(header):]):
                    problem = f"has {len(fields)} fields but the header has {len(header)}"
                fields = fields + [""] * (len(header) - len(fields))
                records.append((start, dict(zip(header, fields)), problem))
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{csv_path} line {line + 1}: not valid CSV ({e})") from None
    if header is None:
        raise DataError(f"{csv_path}: file is empty (no header line)")
    return header, records


class RowProblems:
    """Bad rows of one CSV: raises on the first (on_error="raise") or records each ("skip")."""

    def __init__(self, csv_path: Path, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.csv_path, self.on_error, self.skipped = csv_path, on_error, []

    def __call__(self, row: int, clip_id: str, reason: str, **extra):
        if self.on_error == "raise":
            raise DataError(f"{self.csv_path} row {row} (clip_id {clip_id!r}): {reason}")
        self.skipped.append(dict(row=row, clip_id=clip_id, **extra, reason=reason))

    def report(self, n_rows: int):
        if self.skipped:
            print(f"{self.csv_path}: skipped {len(self.skipped)} of {n_rows} rows:")
            for s in self.skipped:
                print(f"  row {s['row']} (clip_id {s['clip_id']!r}): {s['reason']}")


def _rows(rows: list[int], limit: int = 10) -> str:
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


# ----------------------------------------------------------------------------- audio checks

def check_audio_file(path: str | Path, sample_rate: int = 16000):
    """Raise DataError naming the file if it is missing, empty, truncated, not audio or non-finite.

    Catches what `audio.load_audio` catches plus truncated WAVs, but only decodes files
    whose samples could be NaN/inf (float or compressed); integer PCM WAVs are checked
    from the header alone.
    """
    path = Path(path)
    audio.require_file(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    if info.frames == 0:
        raise DataError(f"{path}: audio has 0 samples")
    if info.format in ("WAV", "WAVEX"):
        audio.check_wav_size(path)
        if info.subtype in INTEGER_SUBTYPES:
            return
    audio.load_audio(path, sample_rate)


# ----------------------------------------------------------------------------- labels.csv

@dataclass
class Manifest:
    """The usable clips of one labels.csv (one row each) plus the rows that were skipped."""

    root: Path                 # the CSV's folder; every audio path lies inside it
    df: pd.DataFrame           # clip_id, path (absolute), label (0/1, or UNLABELLED), split, row (CSV line)
    skipped: list[dict] = field(default_factory=list)  # row, clip_id, path, reason

    def __len__(self) -> int:
        return len(self.df)

    @property
    def clip_ids(self) -> list[str]:
        return self.df["clip_id"].tolist()

    @property
    def labelled(self) -> np.ndarray:
        """bool per clip: True where it has a hard label (False for the unlabelled clips of a transfer set)."""
        return self.df["label"].to_numpy() != UNLABELLED

    def split(self, name: str) -> "Manifest":
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return Manifest(self.root, self.df[self.df["split"] == name].reset_index(drop=True), self.skipped)


def _inside(root: Path, rel: str) -> Path:
    """Resolve a CSV path against the CSV's folder; refuse anything that ends up outside it."""
    full = (root / rel.replace("\\", "/")).resolve()  # follows symlinks and ..
    if not full.is_relative_to(root):
        raise DataError(f"path {rel!r} leads outside the CSV's folder {root} (to {full})")
    return full


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for one class: rounded, at least 1 each once there are 3 clips, train kept."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        n_val, n_test = max(n_val, val_fraction > 0), max(n_test, test_fraction > 0)
    while n > 0 and n_val + n_test > n - 1:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return int(n_val), int(n_test)


def _auto_split(clip_ids: list[str], labels: list[int], seed: int, val_fraction: float,
                test_fraction: float) -> list[str]:
    """Stratified seeded split that depends on the set of (clip_id, label), not on row order.
    Unlabelled clips (UNLABELLED) stay in train."""
    ids, labels = np.array(clip_ids, dtype=object), np.asarray(labels)
    split = np.full(len(ids), "train", dtype=object)
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(ids[idx], kind="stable")]
        idx = idx[np.random.default_rng([seed, label]).permutation(len(idx))]
        n_val, n_test = _split_sizes(len(idx), val_fraction, test_fraction)
        split[idx[:n_val]] = "val"
        split[idx[n_val:n_val + n_test]] = "test"
    return split.tolist()


def load_labels(csv_path: str | Path, *, on_error: str = "raise", check_audio: bool = True,
                split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                sample_rate: int = 16000) -> Manifest:
    """Read and check a labels.csv (clip_id, path, label[, split]); see data/README.md.

    Each bad row raises a DataError naming the CSV and row, or with on_error="skip" is
    recorded in `manifest.skipped` and reported. Without a split column the clips are
    split train/val/test, stratified by label and seeded by `split_seed`. An empty label marks
    a clip without a hard label (UNLABELLED): allowed in train only; without a split column such
    clips all go to train.
    """
    bad = RowProblems(Path(csv_path), on_error)
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(f"need val_fraction, test_fraction >= 0 with a sum < 1, "
                         f"got {val_fraction}, {test_fraction}")
    csv_path = Path(csv_path)
    header, records = read_csv_rows(csv_path)
    missing = [c for c in ("clip_id", "path", "label") if c not in header]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)}); "
                        f"need clip_id, path, label and optionally split")
    has_split = "split" in header and any(r["split"].strip() for _, r, _ in records)
    if has_split:
        empty = [row for row, r, _ in records if not r["split"].strip()]
        if empty:
            raise DataError(f"{csv_path}: the split column is empty on row(s) {_rows(empty)} but filled on "
                            f"others; fill it on every row, or leave it empty everywhere for an automatic split")
    root = csv_path.resolve().parent
    first_row, kept = {}, []
    for row, r, problem in records:
        clip_id, rel = r["clip_id"].strip(), r["path"].strip()
        try:
            if problem:
                raise DataError(problem)
            if not clip_id:
                raise DataError("empty clip_id")
            if clip_id in first_row:
                raise DataError(f"duplicate clip_id: rows {first_row[clip_id]} and {row} both use it")
            first_row[clip_id] = row
            label = parse_label(r["label"]) if r["label"].strip() else UNLABELLED
            split = r["split"].strip().lower() if has_split else ""
            if has_split and split not in SPLITS:
                raise DataError(f"unknown split {r['split']!r}; use train, val or test")
            if label == UNLABELLED and has_split and split != "train":
                raise DataError(f"empty label in the {split} split; only train clips may be unlabelled "
                                f"({split} clips are scored against their hard labels)")
            if not rel:
                raise DataError("empty path")
            full = _inside(root, rel)
            if not full.is_file():
                raise DataError(f"audio file not found: {full}")
            if check_audio:
                check_audio_file(full, sample_rate)
        except DataError as e:
            bad(row, clip_id, str(e), path=rel)
            continue
        kept.append(dict(clip_id=clip_id, path=str(full), label=label, split=split, row=row))
    bad.report(len(records))
    if not kept:
        raise DataError(f"{csv_path}: no usable rows" + (f" ({len(bad.skipped)} skipped)" if bad.skipped else ""))
    df = pd.DataFrame(kept, columns=["clip_id", "path", "label", "split", "row"])
    if not has_split:
        df["split"] = _auto_split(df["clip_id"].tolist(), df["label"].tolist(), split_seed,
                                  val_fraction, test_fraction)
    return Manifest(root, df.astype({"label": "int64", "row": "int64"}), bad.skipped)
