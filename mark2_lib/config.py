"""Every setting in one place: the front end (AudioConfig), the model (ModelConfig), training
(TrainConfig), the student and teacher presets, and `configure` for FIELD=VALUE text.

Each field's default is written once, here, with a comment; notebooks, benchmarks and the command
line take theirs from these classes. `AudioConfig()` and `ModelConfig()` hold the values that
config.json files written before a field existed were made with; where a student or teacher is
meant, use the presets: `configure("student")`, `audio_config("teacher")`, `model_config("student")`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from .losses import check_alpha, check_temperature

CLASSES = ("clean", "noise")  # class names by index: a model's logit 1 and p_noise are "noise"

# The front end's numerics: bump when LogMel gives different output for the same AudioConfig (a new
# window, scale or padding), so that feature caches and cached runs made by the old code are not reused.
# tests/test_audio.py holds the current output of a fixed signal and fails until this is bumped.
FEATURES_VERSION = 1

# What `predict` will not judge (inference/predict.py). A file shorter than MIN_SECONDS would be mostly
# zero padding in its one segment: it gets an error row. A file whose peak stays below SILENCE_DBFS
# (dB full scale) holds nothing audible: it is labelled "silent" with no p_noise, not called noise or clean.
MIN_SECONDS = 0.5     # half the student's 1 s segment
SILENCE_DBFS = -60.0  # peak of the mono mix at the run's sample rate


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
    framing: str = "segment"      # "clip": one STFT per clip, segments slice its frames; "segment": per window

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
            "framing": self.framing in FRAMINGS,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"AudioConfig.{name}={getattr(self, name)!r} is invalid"
                                 + (f"; expected one of {FRAMINGS}" if name == "framing" else ""))
        if self.framing == "clip":
            for name, n in (("segment_seconds", self.segment_samples), ("hop_seconds", self.hop_samples)):
                if n % self.hop_length:
                    raise ValueError(f"AudioConfig.{name}={getattr(self, name)!r} is {n} samples, not a multiple "
                                     f"of hop_length={self.hop_length}: framing='clip' slices whole frames")
            if self.n_fft % 2 or self.n_fft // 2 >= self.segment_samples:
                raise ValueError(f"AudioConfig.n_fft={self.n_fft} must be even and below 2 x segment length "
                                 f"for framing='clip'")

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

    @property
    def context(self) -> int:
        """Samples each streamed window carries on either side of its segment (n_fft // 2 for clip framing)."""
        return self.n_fft // 2 if self.framing == "clip" else 0

    def to_dict(self) -> dict:
        """All fields; framing only when it is "clip", so that configs with per-segment framing are
        written exactly as before framing existed (same config.json, cache key and run names)."""
        d = dataclasses.asdict(self)
        if d["framing"] == "segment":
            del d["framing"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AudioConfig":
        """The inverse of to_dict; a dict without `framing` means framing="segment"."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown AudioConfig fields: {sorted(unknown)} (known: {sorted(names)})")
        return cls(**d)

    def key(self) -> str:
        """A short stable hash of the settings and FEATURES_VERSION, used in cache keys."""
        blob = json.dumps({"audio": self.to_dict(), "features_version": FEATURES_VERSION}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


FRAMINGS = ("clip", "segment")
POOLINGS = ("mean", "max", "attention")
CLIP_CONTEXTS = ("none", "level_stats")  # context.py computes them


@dataclass
class ModelConfig:
    """Architecture hyperparameters; saved in every run's config.json."""

    stem_channels: int = 16                 # channels of the strided first conv
    channels: tuple = (24, 32, 48)          # one stage per entry, each halves time and frequency
    blocks_per_stage: int = 1               # depthwise-separable blocks per stage
    head_hidden: int = 32                   # hidden units of the head MLP
    dropout: float = 0.1                    # dropout before the last layer of the head
    pooling: str = "mean"                   # how segment logits combine: mean | max | attention
    n_classes: int = 2                      # clean, noise
    level_norm: bool = True                 # subtract each segment's mean log-mel level first (level invariance)
    stats_pooling: bool = True              # the encoder summarises its map by mean and std (else mean only)
    clip_context: str = "none"              # whole-clip statistics beside each segment's embedding: none | level_stats

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if self.clip_context not in CLIP_CONTEXTS:
            raise ValueError(f"clip_context={self.clip_context!r}; expected one of {CLIP_CONTEXTS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; expected one of {POOLINGS}")
        if self.blocks_per_stage < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError("channels must be positive and blocks_per_stage >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    def to_dict(self) -> dict:
        """All fields, except those added later while they hold the value runs had before them: a model
        without level norm or stats pooling (the teacher) is written exactly as before they existed
        (same config.json and run names, so earlier runs resume and are reused)."""
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return {k: v for k, v in d.items() if not (k in LEGACY_MODEL_FIELDS and v == LEGACY_MODEL_FIELDS[k])}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The inverse of to_dict: a field added later and missing from `d` takes the value runs had before it."""
        return cls(**{**LEGACY_MODEL_FIELDS, **d})


# Fields added after runs were saved, and the value a config.json without them was trained with.
LEGACY_MODEL_FIELDS = {"level_norm": False, "stats_pooling": False, "clip_context": "none"}


@dataclass
class TrainConfig:
    """Training hyperparameters; every field lands in config.json."""

    alpha: float = 0.7            # weight of the soft (KD) term; 0 = hard labels only
    temperature: float = 4.0      # distillation temperature T
    epochs: int = 30              # maximum epochs
    patience: int = 6             # early stopping: epochs without improvement
    min_delta: float = 0.0        # early stopping: smallest improvement that counts
    lr: float = 2e-2              # AdamW learning rate (best val loss of KD and hard-only students, default data)
    weight_decay: float = 1e-2    # AdamW weight decay
    batch_size: int = 64          # clips per batch
    lr_factor: float = 0.5        # ReduceLROnPlateau factor
    lr_patience: int = 2          # ReduceLROnPlateau patience (epochs)
    seed: int = 0                 # seeds python, numpy and torch
    class_weights: list | None = None  # optional CE weights [clean, noise] for the hard term
    random_segment: bool = False  # train on one random segment per clip each step (faster; augmentation)
    freq_mask: int = 0            # SpecAugment in training: mask up to this many mel bands per segment (0 = off)
    time_mask: int = 0            # SpecAugment in training: mask up to this many frames per segment (0 = off)
    soft_target: str = "segment"  # KD target: "segment" labels on each segment's logits, or "clip" on clip logits
    device: str = "auto"          # "auto" = cuda if available, else cpu
    amp: bool = False             # bfloat16 autocast on CUDA
    num_workers: int = 0          # DataLoader workers
    progress: bool = True         # tqdm bars for epochs and batches
    curves_budget: float = 0.05   # share of training time loss_curves.png may take (1 = redraw every epoch)

    def __post_init__(self):
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        for name in ("freq_mask", "time_mask"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = no masking)")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.patience < 0 or self.lr_patience < 0:
            raise ValueError("patience and lr_patience must be >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr} must be a positive number")
        if not 0 < self.curves_budget <= 1:
            raise ValueError(f"curves_budget={self.curves_budget} must be in (0, 1]")
        if self.soft_target not in ("clip", "segment"):
            raise ValueError(f"soft_target={self.soft_target!r}: expected 'clip' or 'segment'")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor={self.lr_factor} must be in (0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Settings that do not change the result; a resumed run may differ in these.
RUNTIME_FIELDS = ("device", "amp", "num_workers", "progress", "curves_budget")


# The real-speech corpus (`make data-real`, builders/corpus.py): labelled clips, their val/test shares
# (the rest is train), the transfer set as a multiple of the labelled train split, and the seconds of
# candidate speech screened per speaker group. 600 + 5 x 300 = 2,100 clips: DNSMOS labels them all
# (one 9.01 s window per clip) in about 6 minutes on 2 cores.
REAL_N_CLIPS = 600
REAL_CLIP_SHARES = (("val", 0.25), ("test", 0.25))
REAL_TRANSFER_FACTOR = 5.0
REAL_SPEAKER_SECONDS = 30.0

SIZES = {
    "student": ModelConfig(),
    "teacher": ModelConfig(stem_channels=48, channels=(96, 160, 256), blocks_per_stage=2,
                           head_hidden=128, dropout=0.2, level_norm=False, stats_pooling=False),
}


# Front end per size. The teacher keeps the rich 64-band features it was trained on (32 ms
# windows every 20 ms, each segment framed on its own). The student reads 32 bands of short
# frames, a 16 ms window every 25 ms (n_fft = win_length = 256, hop_length = 400, 41 frames per
# segment), framed once per clip (`AudioConfig.framing`), so the STFT reads fewer samples, each once,
# and a segment holds fewer values (docs/speed.md measures what that buys). Segment length and hop
# are the same, so the teacher's per-segment soft labels line up with the student's segments.
AUDIO_SIZES = {
    "student": AudioConfig(n_fft=256, win_length=256, hop_length=400, n_mels=32, framing="clip"),
    "teacher": AudioConfig(),
}


def audio_config(size: str = "student", **overrides) -> AudioConfig:
    """The front end of the named size ("student" or "teacher") with any field overridden."""
    if size not in AUDIO_SIZES:
        raise ValueError(f"size={size!r}; expected one of {sorted(AUDIO_SIZES)}")
    return dataclasses.replace(AUDIO_SIZES[size], **overrides)


def model_config(size: str = "student", **overrides) -> ModelConfig:
    """The named size ("student" or "teacher") with any field overridden."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}; expected one of {sorted(SIZES)}")
    return dataclasses.replace(SIZES[size], **overrides)


def configure(size: str = "student", changes="", **fields) -> tuple[ModelConfig, AudioConfig]:
    """The named size's ModelConfig and front end (AudioConfig), with `fields` and then `changes` applied.

    `changes`: "FIELD=VALUE ..." text (space-separated) or a list of such items, each naming a field of
    either config, its value read as that field's type: "channels=32,48,64", "n_mels=48", "pooling=max".
    Notebooks and benchmarks take it as text, so a student's size and front end are one parameter.
    """
    base = {"model": model_config(size), "audio": audio_config(size)}
    out = {"model": {}, "audio": {}}
    items = changes.split() if isinstance(changes, str) else list(changes)
    for name, value in [*fields.items(), *(item.partition("=")[::2] for item in items)]:
        where = [k for k, cfg in base.items() if name in {f.name for f in dataclasses.fields(cfg)}]
        if not where:
            known = sorted(f.name for cfg in base.values() for f in dataclasses.fields(cfg))
            raise ValueError(f"{name}={value!r}: expected FIELD=VALUE with FIELD one of {', '.join(known)}")
        default = getattr(base[where[0]], name)
        out[where[0]][name] = _parse_field(name, value, default) if isinstance(value, str) else value
    return model_config(size, **out["model"]), audio_config(size, **out["audio"])


def _parse_field(name: str, text: str, default):
    """Text as the type of the field's default: a tuple of ints ("32,48,64"), a bool (true/false), an int,
    a float or text."""
    if isinstance(default, bool):
        value = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}.get(text.lower())
        if value is None:
            raise ValueError(f"{name}={text!r}: expected true or false (default {default!r})")
        return value
    try:
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.split(","))
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "whole numbers separated by commas" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(f"{name}={text!r}: expected {kind} (default {default!r})") from None
    return text


