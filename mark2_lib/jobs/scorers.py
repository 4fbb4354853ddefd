"""What scores a shard of a corpus job: picklable specs, whose `key()` names the model and its settings
(part of the job key) and whose `create()` loads the model once per worker, and the scorers they make,
which turn a shard of `Item`s into one row of plain values per item, in order.

- StudentSpec: a trained run (or its ONNX export), streamed by inference.predict: `mark2 predict`'s columns
- TeacherRunSpec: a trained run as teacher: p_noise per clip and, with segments, per segment
- TorchScriptSpec: a TorchScript teacher (waveform [B, samples] -> logits [B, 2], index 1 = noise)
- DnsmosSpec: DNSMOS SIG, BAK, OVR per clip (and BAK per segment), through its content cache

Every row has clip_id, path and error ("" when scored); an item with `error`, or a file that cannot be
read, gets a row with its message and empty (None) scores.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..audio import load_audio, segment_waveform
from ..config import AudioConfig
from ..errors import DataError

if TYPE_CHECKING:
    from .inputs import Item

RUN_FILES = ("config.json", "encoder.pt", "head.pt")


def _abs(path) -> str:
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


def _key(**parts) -> str:
    return json.dumps(parts, sort_keys=True)


def _error_row(item: Item, message: str, **empty) -> dict:
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

    def __post_init__(self):
        object.__setattr__(self, "run_dir", _abs(self.run_dir))

    @property
    def name(self) -> str:
        return f"student:{self.run_dir}"

    def key(self) -> str:
        return _key(scorer="student", run_dir=self.run_dir, run_sha1=run_hash(self.run_dir),
                    batch_size=self.batch_size, segments=self.segments, threshold=self.threshold)

    def create(self) -> "RunScorer":
        return RunScorer(self.run_dir, self.batch_size, self.segments, self.threshold, teacher=False)


@dataclass(frozen=True)
class TeacherRunSpec:
    """A trained run as teacher: p_noise per clip and, with `segments`, per segment (segment_p_noise)."""

    run_dir: str
    segments: bool = False
    batch_size: int = 64

    def __post_init__(self):
        object.__setattr__(self, "run_dir", _abs(self.run_dir))

    @property
    def name(self) -> str:
        return f"run:{self.run_dir}"

    @property
    def teacher(self) -> str:
        """The name soft_labels.csv gives this teacher: the run folder's name."""
        return Path(self.run_dir).name

    def key(self) -> str:
        return _key(scorer="teacher-run", run_dir=self.run_dir, run_sha1=run_hash(self.run_dir),
                    batch_size=self.batch_size, segments=self.segments)

    def create(self) -> "RunScorer":
        return RunScorer(self.run_dir, self.batch_size, self.segments, 0.5, teacher=True)


class RunScorer:
    """A run (or an ONNX export) loaded once; scores shards with `inference.predict.predict_paths` (streamed,
    bounded memory)."""

    def __init__(self, run_dir, batch_size: int, segments: bool, threshold: float, teacher: bool):
        from ..inference.onnx_model import OnnxClassifier, is_onnx_file
        from ..run_folders import load_classifier

        self.model = OnnxClassifier(run_dir) if is_onnx_file(run_dir) else load_classifier(run_dir)
        self.batch_size, self.segments, self.threshold, self.teacher = batch_size, segments, threshold, teacher

    def score(self, items: list[Item]) -> list[dict]:
        from ..inference.predict import predict_paths

        todo = list(dict.fromkeys(str(Path(it.path)) for it in items if not it.error and not Path(it.path).is_dir()))
        clips, segs = predict_paths(self.model, todo, batch_size=self.batch_size, segments=self.segments,
                                    progress=False, threshold=self.threshold) if todo else (None, None)
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
            return _error_row(item, item.error, **empty)
        if r is None:  # a folder given where a file was expected
            return _error_row(item, f"{item.path}: is a folder, not an audio file", **empty)
        if r["error"]:
            return _error_row(item, r["error"], **empty)
        p, segs = float(r["p_noise"]), seg_by_path.get(str(Path(item.path)))
        if self.teacher:
            seg_p = [s[2] for s in segs] if self.segments else None
            return {"clip_id": item.clip_id, "path": item.path, "p_noise": p, "segment_p_noise": seg_p, "error": ""}
        row = {"clip_id": item.clip_id, "path": item.path, "p_noise": p, "label": r["label"],
               "n_segments": int(r["n_segments"])}
        if self.segments:
            row["segments"] = segs or []
        return {**row, "error": ""}


# ----------------------------------------------------------------------------- TorchScript teacher


@dataclass(frozen=True)
class TorchScriptSpec:
    """A TorchScript teacher file: each clip scored whole and, with `segments`, window by window.

    Audio is read at the module's `sample_rate` attribute (what `mark2 export` writes), else at
    `audio.sample_rate`; segments follow `audio` (default: 1 s windows every 0.5 s)."""

    path: str
    segments: bool = False
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self):
        object.__setattr__(self, "path", _abs(self.path))

    @property
    def name(self) -> str:
        return f"torchscript:{self.path}"

    @property
    def teacher(self) -> str:
        """The name soft_labels.csv gives this teacher: the file's stem."""
        return Path(self.path).stem

    def key(self) -> str:
        with open(self.path, "rb") as f:
            sha1 = hashlib.sha1(f.read()).hexdigest()
        return _key(scorer="torchscript", path=self.path, sha1=sha1, segments=self.segments,
                    audio=self.audio.to_dict())

    def create(self) -> "TorchScriptScorer":
        return TorchScriptScorer(self.path, self.segments, self.audio)


def load_torchscript(path):
    """torch.jit.load on the CPU, in eval mode; DataError naming the file when it is not TorchScript."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise DataError(f"{path}: not a loadable TorchScript teacher ({e})") from None


class TorchScriptScorer:
    """A TorchScript teacher loaded once; p_noise per clip (and segment_p_noise) for each item."""

    def __init__(self, path, segments: bool, audio: AudioConfig):
        self.path, self.segments, self.module = path, segments, load_torchscript(path)
        rate = getattr(self.module, "sample_rate", None)
        self.audio = AudioConfig(**{**audio.to_dict(), "sample_rate": int(rate)}) if rate else audio

    def score(self, items: list[Item]) -> list[dict]:
        return [self._row(it) for it in items]

    def _row(self, item: Item) -> dict:
        empty = {"p_noise": None, "segment_p_noise": None}
        if item.error:
            return _error_row(item, item.error, **empty)
        try:
            wave = load_audio(item.path, self.audio.sample_rate)
            with torch.no_grad():
                logits = [self.module(wave[None])]
                if self.segments:
                    logits.append(self.module(segment_waveform(wave, self.audio)))
            logits = torch.cat(logits)
            if logits.ndim != 2 or logits.shape[-1] != 2 or not torch.isfinite(logits).all():
                raise DataError(f"{self.path}: teacher output for {item.path} has shape {tuple(logits.shape)} "
                                f"or non-finite values; expected finite logits [B, 2]")
        except (DataError, OSError) as e:
            return _error_row(item, str(e), **empty)
        p = torch.softmax(logits.double(), dim=-1)[:, 1].tolist()
        return {"clip_id": item.clip_id, "path": item.path, "p_noise": p[0],
                "segment_p_noise": p[1:] if self.segments else None, "error": ""}


# ----------------------------------------------------------------------------- DNSMOS


@dataclass(frozen=True)
class DnsmosSpec:
    """DNSMOS P.835 per clip (sig, bak, ovr) and, with `segments`, BAK per `audio` segment (segment_bak).

    Scores come from / go to the content cache under `<cache_dir>/dnsmos/` (shared with notebook 02),
    so a rerun rescores nothing. Calibration (Platt) is not done here: it needs the whole train split."""

    cache_dir: str
    segments: bool = False
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self):
        object.__setattr__(self, "cache_dir", _abs(self.cache_dir))

    name = "dnsmos"
    teacher = "dnsmos"

    def key(self) -> str:
        from ..dnsmos import METHOD_VERSION

        return _key(scorer="dnsmos", method_version=METHOD_VERSION, segments=self.segments,
                    segment_seconds=self.audio.segment_seconds, hop_seconds=self.audio.hop_seconds)

    def create(self) -> "DnsmosScorer":
        return DnsmosScorer(self.cache_dir, self.segments, self.audio)


class DnsmosScorer:
    """DNSMOS through its content cache; the model (one thread, see mark2_lib.dnsmos) loads on first need."""

    def __init__(self, cache_dir, segments: bool, audio: AudioConfig):
        from ..dnsmos import DnsmosCache, require_dnsmos

        require_dnsmos()
        self.segments = segments
        self.cache = DnsmosCache(cache_dir, audio)

    def score(self, items: list[Item]) -> list[dict]:
        return [self._row(it) for it in items]

    def _row(self, item: Item) -> dict:
        empty = {"sig": None, "bak": None, "ovr": None, "segment_bak": None, "cached": None}
        if item.error:
            return _error_row(item, item.error, **empty)
        try:
            entry, cached = self.cache.scores(item.path, self.segments)
        except FileNotFoundError:
            return _error_row(item, f"{item.path}: file not found", **empty)
        except (DataError, OSError) as e:
            return _error_row(item, str(e), **empty)
        sig, bak, ovr = map(float, entry["clip"])
        seg = [float(b) for b in np.asarray(entry["segments"], np.float64)] if self.segments else None
        return {"clip_id": item.clip_id, "path": item.path, "sig": sig, "bak": bak, "ovr": ovr,
                "segment_bak": seg, "cached": bool(cached), "error": ""}
