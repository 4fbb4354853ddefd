"""Soft labels in and out: the teachers' probabilities per clip and per segment (format: data/README.md).

Several CSVs (teachers) are averaged per clip and segment. Bad rows raise a DataError naming the
file and row, or with on_error="skip" are recorded in `.skipped` and reported, as in labels.py.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError
from .labels import Manifest, RowProblems, read_csv_rows

__all__ = ["SoftLabels", "load_soft_labels", "write_soft_labels"]


@dataclass
class SoftLabels:
    """Teacher probabilities over (clean, noise), per clip and per segment, averaged over teachers."""

    clip: dict[str, np.ndarray] = field(default_factory=dict)                # clip_id -> (2,)
    segment: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # clip_id -> seg -> (2,)
    teachers: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)  # the CSV files read
    skipped: list[dict] = field(default_factory=list)  # file, row, clip_id, reason

    def p_noise(self, clip_ids) -> np.ndarray:
        """The teachers' clip-level P(noise) of each clip; DataError when a clip has none."""
        clip_ids = list(clip_ids)
        missing = [c for c in clip_ids if c not in self.clip]
        if missing:
            raise DataError(f"the teacher has no clip-level soft label for {len(missing)} of {len(clip_ids)} "
                            f"clips, e.g. {missing[:3]}")
        return np.array([self.clip[c][1] for c in clip_ids])

    def restrict(self, clip_ids) -> "SoftLabels":
        """Only the labels of `clip_ids` (the same teachers, sources and skipped rows)."""
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
        bad = RowProblems(path, on_error)
        header, records = read_csv_rows(path)
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
