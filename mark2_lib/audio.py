"""Audio in: reading files, fixed-window segmentation and the log-mel front end.

Every path from a waveform to model input goes through `segment_waveform` and
`LogMel`, so cached training features and the deployed classifier agree exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio


class DataError(ValueError):
    """Bad input data; the message names the file (and CSV row where there is one)."""


@dataclass(frozen=True)
class AudioConfig:
    """Every setting of the audio front end; saved with each run and part of the cache key."""

    sample_rate: int = 16000      # Hz; all audio is resampled to this
    segment_seconds: float = 1.0  # window length of one segment
    hop_seconds: float = 0.5      # step between segment starts
    n_fft: int = 512              # STFT size
    win_length: int = 512         # 32 ms analysis window
    hop_length: int = 320         # 20 ms frame step (51 frames per 1 s segment)
    n_mels: int = 64              # mel bands
    f_min: float = 20.0           # lowest mel edge, Hz
    f_max: float = 8000.0         # highest mel edge, Hz

    def __post_init__(self):
        checks = {
            "sample_rate": self.sample_rate > 0,
            "segment_seconds": self.segment_seconds * self.sample_rate >= 1,
            "hop_seconds": self.hop_seconds * self.sample_rate >= 1,
            "n_fft": self.n_fft > 0,
            "win_length": 0 < self.win_length <= self.n_fft,
            "hop_length": self.hop_length > 0,
            "n_mels": self.n_mels > 0,
            "f_max": 0 <= self.f_min < self.f_max <= self.sample_rate / 2,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"AudioConfig.{name}={getattr(self, name)!r} is invalid")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Log-mel frames per segment (centred STFT)."""
        return self.segment_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AudioConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown AudioConfig fields: {sorted(unknown)}")
        return cls(**d)

    def key(self) -> str:
        """A short stable hash of the settings, used in cache keys."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def check_wav_size(path: Path) -> None:
    """libsndfile silently shortens a truncated WAV, so compare the data chunk's size with the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return  # RF64 / W64 / not RIFF: leave it to libsndfile
        order, pos = "<" if head[:4] == b"RIFF" else ">", 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack(order + "4sI", f.read(8))
            if chunk == b"data":
                if n not in (0, 0xFFFFFFFF) and pos + 8 + n > size:  # 0 / -1: streamed, size unknown
                    raise DataError(f"{path}: truncated: the WAV header promises {n} bytes of audio "
                                    f"but the file holds {size - pos - 8}")
                return
            pos += 8 + n + (n & 1)


def require_file(path: Path) -> None:
    """DataError naming the file when it is missing or empty (0 bytes)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Read a file with soundfile, mix to mono, resample; returns 1-D float32 audio.

    Raises DataError naming the file when it is missing, empty, truncated, not audio,
    or holds NaN/inf samples.
    """
    path = Path(path)
    require_file(path)
    try:
        info = sf.info(str(path))
        if info.format in ("WAV", "WAVEX"):
            check_wav_size(path)
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except DataError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio has 0 samples")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: audio contains NaN or inf samples")
    wave = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy())
    return resample(wave, sr, sample_rate)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling with torchaudio; a no-op when the rates match."""
    if orig_rate == new_rate:
        return wave.contiguous()
    return torchaudio.functional.resample(wave, orig_rate, new_rate).contiguous()


def n_segments(n_samples: int, cfg: AudioConfig) -> int:
    """Number of windows for a clip: at least 1; the last window is zero-padded."""
    win, hop = cfg.segment_samples, cfg.hop_samples
    if n_samples <= win:
        return 1
    return 1 + math.ceil((n_samples - win) / hop)


def segment_waveform(wave: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Cut `[..., samples]` into `[..., S, segment_samples]` windows, zero-padding the last."""
    win, hop = cfg.segment_samples, cfg.hop_samples
    s = n_segments(wave.shape[-1], cfg)
    total = (s - 1) * hop + win
    if total > wave.shape[-1]:
        wave = torch.nn.functional.pad(wave, (0, total - wave.shape[-1]))
    return wave[..., :total].unfold(-1, win, hop)


def segment_times(n_samples: int, cfg: AudioConfig) -> list[tuple[float, float]]:
    """(start, end) seconds of every segment, end clipped to the clip's length."""
    dur = n_samples / cfg.sample_rate
    return [
        (i * cfg.hop_seconds, min(i * cfg.hop_seconds + cfg.segment_seconds, dur))
        for i in range(n_segments(n_samples, cfg))
    ]


class LogMel(torch.nn.Module):
    """Waveform windows `[..., samples]` -> log-mel in dB `[..., n_mels, frames]` (torchaudio)."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
            hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max,
            n_mels=cfg.n_mels, power=2.0, center=True,
        )
        # No top_db: its clamp is relative to a batch maximum, which would make a
        # clip's features depend on what else is in the batch.
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.to_db(self.mel(wave))


def clip_features(wave: torch.Tensor, cfg: AudioConfig, logmel: LogMel | None = None) -> torch.Tensor:
    """One clip's features `[S, n_mels, frames]`: segment, then log-mel each window."""
    logmel = logmel if logmel is not None else LogMel(cfg)
    with torch.no_grad():
        return logmel(segment_waveform(wave, cfg))
