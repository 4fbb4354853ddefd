"""The teachers a corpus job can run besides a trained run (scorers.py): picklable specs and their scorers.

- TorchScriptSpec: a TorchScript teacher (waveform [B, samples] -> logits [B, 2], index 1 = noise)
- DnsmosSpec: DNSMOS SIG, BAK, OVR per clip (and BAK per segment), through its content cache

Rows as scorers.py describes them: clip_id, path, the scores and error ("" when scored).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..audio import load_audio, segment_waveform
from ..config import AudioConfig
from ..errors import DataError
from .scorers import absolute, error_row, spec_key

if TYPE_CHECKING:
    from .inputs import Item


@dataclass(frozen=True)
class TorchScriptSpec:
    """A TorchScript teacher file: each clip scored whole and, with `segments`, window by window.

    Audio is read at the module's `sample_rate` attribute (what `mark2 export` writes), else at
    `audio.sample_rate`; segments follow `audio` (default: 1 s windows every 0.5 s)."""

    path: str
    segments: bool = False
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self):
        object.__setattr__(self, "path", absolute(self.path))

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
        return spec_key(scorer="torchscript", path=self.path, sha1=sha1, segments=self.segments,
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
            return error_row(item, item.error, **empty)
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
            return error_row(item, str(e), **empty)
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
        object.__setattr__(self, "cache_dir", absolute(self.cache_dir))

    name = "dnsmos"
    teacher = "dnsmos"

    def key(self) -> str:
        from ..dnsmos import METHOD_VERSION

        return spec_key(scorer="dnsmos", method_version=METHOD_VERSION, segments=self.segments,
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
            return error_row(item, item.error, **empty)
        try:
            entry, cached = self.cache.scores(item.path, self.segments)
        except FileNotFoundError:
            return error_row(item, f"{item.path}: file not found", **empty)
        except (DataError, OSError) as e:
            return error_row(item, str(e), **empty)
        sig, bak, ovr = map(float, entry["clip"])
        seg = [float(b) for b in np.asarray(entry["segments"], np.float64)] if self.segments else None
        return {"clip_id": item.clip_id, "path": item.path, "sig": sig, "bak": bak, "ovr": ovr,
                "segment_bak": seg, "cached": bool(cached), "error": ""}
