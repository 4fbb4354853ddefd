"""What scores a shard of a corpus job: picklable specs, whose `key()` names the model and its settings
(part of the job key) and whose `create()` loads the model once per worker, and the scorers they make,
which turn a shard of `Item`s into one row of plain values per item, in order.

- StudentSpec: a trained run (or its ONNX export), streamed by inference.predict: `mark2 predict`'s columns
- TeacherRunSpec: a trained run as teacher: p_noise per clip and, with segments, per segment
- in teachers.py, TorchScriptSpec (a TorchScript teacher) and DnsmosSpec (DNSMOS, through its content cache)

Every row has clip_id, path and error ("" when scored); an item with `error`, or a file that cannot be
read, gets a row with its message and empty (None) scores.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING


from ..config import MIN_SECONDS, SILENCE_DBFS

if TYPE_CHECKING:
    from .inputs import Item

RUN_FILES = ("config.json", "encoder.pt", "head.pt")


def absolute(path) -> str:
    """`path` as an absolute path string (specs hold these, so that workers anywhere read the same file)."""
    return os.path.abspath(os.fspath(path))


def run_hash(run_dir) -> str:
    """sha1 over a run folder's config.json, encoder.pt and head.pt, or over an ONNX export's bytes (a `.onnx`
    path); FileNotFoundError names a missing one."""
    h = hashlib.sha1()
    for name in [""] if Path(run_dir).suffix.lower() == ".onnx" else RUN_FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {run_dir} a finished training run?")
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def spec_key(**parts) -> str:
    """A spec's key: its parts as canonical JSON."""
    return json.dumps(parts, sort_keys=True)


def error_row(item: Item, message: str, **empty) -> dict:
    """The row of an item that could not be scored: its message and the scorer's empty values."""
    return {"clip_id": item.clip_id, "path": item.path, **empty, "error": message}


# ----------------------------------------------------------------------------- trained runs (streamed)


@dataclass(frozen=True)
class StudentSpec:
    """The student (any trained run, or its `.onnx` export in ONNX Runtime) scoring files as `mark2 predict` does:
    path, p_noise, label, n_segments, error."""

    run_dir: str
    batch_size: int = 64
    segments: bool = False
    threshold: float = 0.5
    min_seconds: float = MIN_SECONDS         # shorter files get an error row (predict_paths)
    silence_dbfs: float | None = SILENCE_DBFS  # quieter files are labelled "silent" (predict_paths)

    def __post_init__(self):
        object.__setattr__(self, "run_dir", absolute(self.run_dir))

    @property
    def name(self) -> str:
        return f"student:{self.run_dir}"

    def key(self) -> str:
        return spec_key(scorer="student", run_dir=self.run_dir, run_sha1=run_hash(self.run_dir),
                    batch_size=self.batch_size, segments=self.segments, threshold=self.threshold,
                    min_seconds=self.min_seconds, silence_dbfs=self.silence_dbfs)

    def create(self) -> "RunScorer":
        return RunScorer(self.run_dir, self.batch_size, self.segments, self.threshold, teacher=False,
                         min_seconds=self.min_seconds, silence_dbfs=self.silence_dbfs)


@dataclass(frozen=True)
class TeacherRunSpec:
    """A trained run as teacher: p_noise per clip and, with `segments`, per segment (segment_p_noise)."""

    run_dir: str
    segments: bool = False
    batch_size: int = 64

    def __post_init__(self):
        object.__setattr__(self, "run_dir", absolute(self.run_dir))

    @property
    def name(self) -> str:
        return f"run:{self.run_dir}"

    @property
    def teacher(self) -> str:
        """The name soft_labels.csv gives this teacher: the run folder's name."""
        return Path(self.run_dir).name

    def key(self) -> str:
        return spec_key(scorer="teacher-run", run_dir=self.run_dir, run_sha1=run_hash(self.run_dir),
                    batch_size=self.batch_size, segments=self.segments)

    def create(self) -> "RunScorer":
        return RunScorer(self.run_dir, self.batch_size, self.segments, 0.5, teacher=True)


class RunScorer:
    """A run (or an ONNX export) loaded once; scores shards with `inference.predict.predict_paths` (streamed,
    bounded memory). As a teacher it scores every readable file: no minimum length, no "silent" label."""

    def __init__(self, run_dir, batch_size: int, segments: bool, threshold: float, teacher: bool,
                 min_seconds: float = 0.0, silence_dbfs: float | None = None):
        from ..inference.onnx_model import OnnxClassifier, is_onnx_file
        from ..run_folders import load_classifier

        self.model = OnnxClassifier(run_dir) if is_onnx_file(run_dir) else load_classifier(run_dir)
        self.batch_size, self.segments, self.threshold, self.teacher = batch_size, segments, threshold, teacher
        self.min_seconds, self.silence_dbfs = min_seconds, silence_dbfs

    def score(self, items: list[Item]) -> list[dict]:
        from ..inference.predict import predict_paths

        todo = list(dict.fromkeys(str(Path(it.path)) for it in items if not it.error and not Path(it.path).is_dir()))
        clips, segs = predict_paths(self.model, todo, batch_size=self.batch_size, segments=self.segments,
                                    progress=False, threshold=self.threshold, min_seconds=self.min_seconds,
                                    silence_dbfs=self.silence_dbfs) if todo else (None, None)
        by_path = {} if clips is None else {r["path"]: r for r in clips.to_dict("records")}
        seg_by_path = {}
        if segs is not None:
            for path, g in segs.groupby("path", sort=False):
                seg_by_path[path] = [[float(a), float(b), float(p)]
                                     for a, b, p in zip(g["start_s"], g["end_s"], g["p_noise"])]
        return [self._row(it, by_path.get(str(Path(it.path))), seg_by_path) for it in items]

    def _row(self, item: Item, r: dict | None, seg_by_path: dict) -> dict:
        empty = ({"p_noise": None, "segment_p_noise": None} if self.teacher else
                 {"p_noise": None, "label": "", "n_segments": None, **({"segments": None} if self.segments else {})})
        if item.error:
            return error_row(item, item.error, **empty)
        if r is None:  # a folder given where a file was expected
            return error_row(item, f"{item.path}: is a folder, not an audio file", **empty)
        if r["error"]:
            return error_row(item, r["error"], **empty)
        p, segs = float(r["p_noise"]), seg_by_path.get(str(Path(item.path)))
        if p != p:  # NaN: a "silent" file, whose p_noise (and its segments') is left empty
            p, segs = None, [[a, b, None] for a, b, _ in segs or []]
        if self.teacher:
            seg_p = [s[2] for s in segs] if self.segments else None
            return {"clip_id": item.clip_id, "path": item.path, "p_noise": p, "segment_p_noise": seg_p, "error": ""}
        row = {"clip_id": item.clip_id, "path": item.path, "p_noise": p, "label": r["label"],
               "n_segments": int(r["n_segments"])}
        if self.segments:
            row["segments"] = segs or []
        return {**row, "error": ""}
