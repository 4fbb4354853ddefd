"""Data in: the labels CSV, teachers' soft labels, the feature cache and the PyTorch dataset.

Users bring a folder of audio files plus a `labels.csv` (format: data/README.md). Every
problem in it raises a DataError naming the CSV file and row; with on_error="skip" the
row is left out instead, recorded in `.skipped` and reported.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm.auto import tqdm

from . import audio
from .atomic import atomic_write
from .audio import AudioConfig, DataError

__all__ = [
    "DataError", "LABELS", "SPLITS", "parse_label", "check_audio_file", "Manifest", "load_labels",
    "SoftLabels", "load_soft_labels", "write_soft_labels", "FeatureCache", "ClipDataset",
    "collate_clips",
]

LABELS = {"0": 0, "1": 1, "clean": 0, "noise": 1}  # hard label spellings; class 1 is noise
SPLITS = ("train", "val", "test")
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

def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, dict, str]]]:
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


class _Problems:
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
    df: pd.DataFrame           # clip_id, path (absolute), label (0/1), split, row (CSV line)
    skipped: list[dict] = field(default_factory=list)  # row, clip_id, path, reason

    def __len__(self) -> int:
        return len(self.df)

    @property
    def clip_ids(self) -> list[str]:
        return self.df["clip_id"].tolist()

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
    """Stratified seeded split that depends on the set of (clip_id, label), not on row order."""
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
    split train/val/test, stratified by label and seeded by `split_seed`.
    """
    bad = _Problems(Path(csv_path), on_error)
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(f"need val_fraction, test_fraction >= 0 with a sum < 1, "
                         f"got {val_fraction}, {test_fraction}")
    csv_path = Path(csv_path)
    header, records = _read_csv(csv_path)
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
            label = parse_label(r["label"])
            split = r["split"].strip().lower() if has_split else ""
            if has_split and split not in SPLITS:
                raise DataError(f"unknown split {r['split']!r}; use train, val or test")
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


# ----------------------------------------------------------------------------- soft labels

@dataclass
class SoftLabels:
    """Teacher probabilities over (clean, noise), per clip and per segment, averaged over teachers."""

    clip: dict[str, np.ndarray] = field(default_factory=dict)                # clip_id -> (2,)
    segment: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # clip_id -> seg -> (2,)
    teachers: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)  # the CSV files read
    skipped: list[dict] = field(default_factory=list)  # file, row, clip_id, reason

    def has_clip(self, clip_id: str) -> bool:
        return clip_id in self.clip

    def restrict(self, clip_ids) -> "SoftLabels":
        keep = set(clip_ids)
        return SoftLabels({c: p for c, p in self.clip.items() if c in keep},
                          {c: s for c, s in self.segment.items() if c in keep},
                          list(self.teachers), list(self.source), list(self.skipped))


def _parse_segment(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)  # pandas writes 3.0 when the column also has empty cells
    except ValueError:
        value = float("nan")
    if not (value.is_integer() and value >= 0):
        raise DataError(f"segment must be a whole number >= 0 (or empty for the whole clip), got {text!r}")
    return int(value)


def _parse_probs(r: dict, logits: bool) -> np.ndarray:
    names = ("logit_clean", "logit_noise") if logits else ("p_clean", "p_noise")
    try:
        x = np.array([float(r[n]) for n in names])
    except ValueError:
        raise DataError(f"{names[0]}, {names[1]} must be numbers, got {r[names[0]]!r}, {r[names[1]]!r}") from None
    if not np.isfinite(x).all():
        raise DataError(f"{names[0]}, {names[1]} must be finite, got {x[0]}, {x[1]}")
    if logits:
        e = np.exp(x - x.max())
        return e / e.sum()
    if (x < 0).any():
        raise DataError(f"negative probability: p_clean={x[0]}, p_noise={x[1]}")
    if abs(x.sum() - 1) > 1e-3:
        raise DataError(f"p_clean + p_noise = {x.sum():.6g}; must be 1 (within 1e-3)")
    return x / x.sum()


def load_soft_labels(csv_or_list, manifest: Manifest | None = None, *, on_error: str = "raise") -> SoftLabels:
    """Read one or more soft-label CSVs; several teachers are averaged per (clip, segment).

    The combination is the arithmetic mean of the probabilities of the teachers that
    cover that clip or segment (an equal-weight ensemble). Clips without any soft label
    stay absent. With `manifest`, clip_ids must be in it (rows for clips that
    load_labels skipped are dropped with a note).
    """
    paths = [csv_or_list] if isinstance(csv_or_list, (str, os.PathLike)) else list(csv_or_list)
    if not paths:
        raise ValueError("no soft-label files given")
    known = set(manifest.clip_ids) if manifest is not None else None
    dropped = {s["clip_id"] for s in manifest.skipped} - known if manifest is not None else set()
    total: dict[tuple[str, int | None], list] = {}  # (clip_id, segment) -> [sum of p, teachers]
    first: dict[tuple[str, int | None, str], str] = {}  # (clip_id, segment, teacher) -> "file row n"
    out, n_dropped = SoftLabels(), 0
    for path in map(Path, paths):
        bad = _Problems(path, on_error)
        header, records = _read_csv(path)
        has_p, has_logit = {"p_clean", "p_noise"} <= set(header), {"logit_clean", "logit_noise"} <= set(header)
        found = f"(found: {', '.join(header)})"
        if "clip_id" not in header:
            raise DataError(f"{path}: missing column clip_id {found}")
        if has_p == has_logit:
            which = "has both" if has_p else "needs one of the column pairs"
            raise DataError(f"{path}: {which} p_clean,p_noise and logit_clean,logit_noise; "
                            f"use exactly one pair {found}")
        for row, r, problem in records:
            clip_id = r["clip_id"].strip()
            try:
                if problem:
                    raise DataError(problem)
                if not clip_id:
                    raise DataError("empty clip_id")
                if known is not None and clip_id not in known:
                    if clip_id in dropped:
                        n_dropped += 1
                        continue
                    raise DataError(f"clip_id {clip_id!r} is not in the labels manifest")
                segment = _parse_segment(r.get("segment", ""))
                teacher = r.get("teacher", "").strip() or path.stem
                p = _parse_probs(r, logits=has_logit)
                key = (clip_id, segment, teacher)
                if key in first:
                    where = "the whole clip" if segment is None else f"segment {segment}"
                    raise DataError(f"duplicate soft label for {where}, teacher {teacher!r}: also {first[key]}")
            except DataError as e:
                bad(row, clip_id, str(e), file=str(path))
                continue
            first[key] = f"{path} row {row}"
            if teacher not in out.teachers:
                out.teachers.append(teacher)
            acc = total.setdefault((clip_id, segment), [np.zeros(2), 0])
            acc[0] += p
            acc[1] += 1
        bad.report(len(records))
        out.skipped += bad.skipped
        out.source.append(str(path))
    if n_dropped:
        print(f"soft labels: ignored {n_dropped} row(s) for clips that load_labels skipped")
    for (clip_id, segment), (p_sum, n) in total.items():
        if segment is None:
            out.clip[clip_id] = p_sum / n
        else:
            out.segment.setdefault(clip_id, {})[segment] = p_sum / n
    return out


def write_soft_labels(path: str | Path, clip_ids, p_noise_clip, segment_p_noise=None,
                      teacher: str = "teacher") -> Path:
    """Write soft labels as CSV (clip_id, segment, teacher, p_clean, p_noise), atomically.

    One whole-clip row per clip (empty segment), then one row per segment when
    `segment_p_noise` (a list of 1-D arrays, one per clip) is given.
    """
    clip_ids = [str(c) for c in clip_ids]
    p_clip = np.asarray(p_noise_clip, dtype=np.float64).reshape(-1)
    segs = [None] * len(clip_ids) if segment_p_noise is None else list(segment_p_noise)
    if len(p_clip) != len(clip_ids) or len(segs) != len(clip_ids):
        raise ValueError(f"{len(clip_ids)} clip_ids but {len(p_clip)} clip probabilities "
                         f"and {len(segs)} segment arrays")
    rows = []
    for clip_id, p, seg in zip(clip_ids, p_clip, segs):
        items = [("", p)]
        if seg is not None:
            items += [(str(s), q) for s, q in enumerate(np.asarray(seg, np.float64).reshape(-1))]
        for segment, q in items:
            if not 0 <= q <= 1:  # also refuses NaN
                raise ValueError(f"p_noise for clip_id {clip_id!r} segment {segment or '-'} is {q}, not in [0, 1]")
            rows.append([clip_id, segment, teacher, f"{1 - q:.8f}", f"{q:.8f}"])

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["clip_id", "segment", "teacher", "p_clean", "p_noise"])
        w.writerows(rows)

    path = Path(path)
    atomic_write(path, write, mode="w")
    return path


# ----------------------------------------------------------------------------- features

def file_sha1(path: str | Path) -> str:
    """sha1 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


class FeatureCache:
    """Log-mel features on disk, keyed by audio content + AudioConfig, read back memory-mapped."""

    def __init__(self, root: str | Path, cfg: AudioConfig):
        self.root, self.cfg = Path(root), cfg
        self.dir = self.root / cfg.key()

    def path_for(self, audio_path: str | Path) -> Path:
        return self.dir / f"{file_sha1(audio_path)}.npy"

    def features(self, manifest: Manifest, progress: bool = True) -> dict[str, np.ndarray]:
        """clip_id -> read-only memmap [S, n_mels, frames], computing what is not cached yet."""
        clips = list(zip(manifest.df["clip_id"], manifest.df["path"]))
        target = {clip_id: self.path_for(audio_path) for clip_id, audio_path in clips}
        todo = {}  # cache file -> (clip_id, audio path); clips with identical bytes share one
        for clip_id, audio_path in clips:
            if not target[clip_id].is_file():
                todo.setdefault(target[clip_id], (clip_id, audio_path))
        n_todo = sum(t in todo for t in target.values())
        print(f"features: {len(target) - n_todo} of {len(target)} clips cached, "
              f"{len(todo)} file(s) to compute ({self.dir})")
        if todo:
            self.dir.mkdir(parents=True, exist_ok=True)
            config = self.dir / "audio_config.json"
            if not config.is_file():
                atomic_write(config, lambda f: json.dump(self.cfg.to_dict(), f, indent=1), mode="w")
            logmel = audio.LogMel(self.cfg)
            for t, (clip_id, audio_path) in tqdm(todo.items(), desc="log-mel", unit="clip", disable=not progress):
                self._compute(clip_id, audio_path, t, logmel)
        return {c: np.load(t, mmap_mode="r") for c, t in target.items()}

    def _compute(self, clip_id: str, audio_path: str, out: Path, logmel: audio.LogMel):
        try:
            wave = audio.load_audio(audio_path, self.cfg.sample_rate)
        except DataError as e:
            raise DataError(f"clip_id {clip_id!r}: {e}") from None
        feats = audio.clip_features(wave, self.cfg, logmel).numpy().astype(np.float32, copy=False)
        atomic_write(out, lambda f: np.save(f, feats))


# ----------------------------------------------------------------------------- dataset

class ClipDataset(torch.utils.data.Dataset):
    """One item per clip: its features, hard label and (masked) teacher soft labels."""

    def __init__(self, manifest: Manifest, features: dict[str, np.ndarray], soft_labels: SoftLabels | None = None):
        self.clip_ids = manifest.clip_ids
        self.labels = manifest.df["label"].astype(int).tolist()
        missing = [c for c in self.clip_ids if c not in features]
        if missing:
            raise KeyError(f"no features for {len(missing)} clip(s), e.g. {missing[:5]}")
        self.features = {c: features[c] for c in self.clip_ids}
        self.soft = (soft_labels or SoftLabels()).restrict(self.clip_ids)
        for clip_id, segs in self.soft.segment.items():
            n = self.features[clip_id].shape[0]
            if max(segs) >= n:
                raise DataError(f"soft labels ({', '.join(self.soft.source)}): clip_id {clip_id!r} has a label "
                                f"for segment {max(segs)} but the clip has {n} segment(s) (0..{n - 1})")

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> dict:
        clip_id = self.clip_ids[i]
        x = torch.from_numpy(np.array(self.features[clip_id], dtype=np.float32))  # copy out of the memmap
        n = x.shape[0]
        soft_clip, soft_segment = torch.zeros(2), torch.zeros(n, 2)
        soft_segment_mask = torch.zeros(n, dtype=torch.bool)
        if clip_id in self.soft.clip:
            soft_clip = torch.as_tensor(self.soft.clip[clip_id], dtype=torch.float32)
        for s, p in self.soft.segment.get(clip_id, {}).items():
            soft_segment[s] = torch.as_tensor(p, dtype=torch.float32)
            soft_segment_mask[s] = True
        return dict(features=x, label=torch.tensor(self.labels[i], dtype=torch.long),
                    soft_clip=soft_clip, soft_clip_mask=torch.tensor(clip_id in self.soft.clip),
                    soft_segment=soft_segment, soft_segment_mask=soft_segment_mask,
                    clip_id=clip_id, index=i)

    def __getstate__(self):
        # DataLoader workers started by spawn (macOS, Windows) pickle the dataset: send the
        # memmaps' file names, not a copy of every feature array.
        state = dict(self.__dict__)
        state["features"] = {c: getattr(x, "filename", None) or x for c, x in self.features.items()}
        return state

    def __setstate__(self, state):
        state["features"] = {c: np.load(x, mmap_mode="r") if isinstance(x, (str, os.PathLike)) else x
                             for c, x in state["features"].items()}
        self.__dict__.update(state)


def collate_clips(batch: list[dict]) -> dict:
    """Stack items, zero-padding the segment axis to the longest clip; masks mark real segments."""
    n = [b["features"].shape[0] for b in batch]
    B, S = len(batch), max(n)
    features = batch[0]["features"].new_zeros((B, S) + tuple(batch[0]["features"].shape[1:]))
    segment_mask = torch.zeros(B, S, dtype=torch.bool)
    soft_segment, soft_segment_mask = torch.zeros(B, S, 2), torch.zeros(B, S, dtype=torch.bool)
    for i, (b, k) in enumerate(zip(batch, n)):
        features[i, :k] = b["features"]
        segment_mask[i, :k] = True
        soft_segment[i, :k] = b["soft_segment"]
        soft_segment_mask[i, :k] = b["soft_segment_mask"]
    return dict(features=features, segment_mask=segment_mask,
                label=torch.stack([b["label"] for b in batch]),
                soft_clip=torch.stack([b["soft_clip"] for b in batch]),
                soft_clip_mask=torch.stack([b["soft_clip_mask"] for b in batch]),
                soft_segment=soft_segment, soft_segment_mask=soft_segment_mask,
                clip_id=[b["clip_id"] for b in batch],
                index=torch.tensor([b["index"] for b in batch], dtype=torch.long))


# ----------------------------------------------------------------------------- one call for notebooks

def open_dataset(data_dir, audio_cfg: AudioConfig, cache_dir, soft_labels=None, *, on_error: str = "raise",
                 progress: bool = True) -> tuple[Manifest, dict, SoftLabels | None, str]:
    """labels.csv + cached features + soft labels of a data folder, and a key naming exactly this data.

    `soft_labels`: a CSV path or list of them; None uses `data_dir/soft_labels.csv` when it exists.
    The key hashes labels.csv, the soft labels and the AudioConfig, so cached runs are reused only
    for identical data.
    """
    data_dir = Path(data_dir)
    manifest = load_labels(data_dir / "labels.csv", on_error=on_error, sample_rate=audio_cfg.sample_rate)
    features = FeatureCache(cache_dir, audio_cfg).features(manifest, progress=progress)
    if soft_labels is None and (data_dir / "soft_labels.csv").is_file():
        soft_labels = data_dir / "soft_labels.csv"
    soft = load_soft_labels(soft_labels, manifest, on_error=on_error) if soft_labels else None
    files = [data_dir / "labels.csv"] + ([Path(p) for p in soft.source] if soft else [])
    key = hashlib.sha1("|".join([audio_cfg.key()] + [file_sha1(f) for f in files]).encode()).hexdigest()[:12]
    return manifest, features, soft, key
