"""Models: Audio -> Encoder -> Flatten -> Head -> per-segment logits -> pooled clip logits.

One set of building blocks makes both the tiny student and the large teacher
(`build_model("student" | "teacher")`). Class index 1 is "noise".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .audio import AudioConfig, LogMel

POOLINGS = ("mean", "max", "attention")


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

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; expected one of {POOLINGS}")
        if self.blocks_per_stage < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError("channels must be positive and blocks_per_stage >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


SIZES = {
    "student": ModelConfig(),
    "teacher": ModelConfig(stem_channels=48, channels=(96, 160, 256), blocks_per_stage=2,
                           head_hidden=128, dropout=0.2),
}


def model_config(size: str = "student", **overrides) -> ModelConfig:
    """The named size ("student" or "teacher") with any field overridden."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}; expected one of {sorted(SIZES)}")
    return dataclasses.replace(SIZES[size], **overrides)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 conv + pointwise 1x1 conv, each with BatchNorm; residual when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.depthwise(x)))
        y = self.bn2(self.pointwise(y))
        return F.relu(y + x) if self.residual else F.relu(y)


class Encoder(nn.Module):
    """CNN over one segment's log-mel `[N, n_mels, frames]` -> feature map `[N, C, 1, 1]`."""

    def __init__(self, audio: AudioConfig, cfg: ModelConfig):
        super().__init__()
        self.input_norm = nn.BatchNorm1d(audio.n_mels)  # per-mel-band standardisation, learned
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cfg.stem_channels), nn.ReLU(),
        )
        blocks, c_in = [], cfg.stem_channels
        for c_out in cfg.channels:
            for i in range(cfg.blocks_per_stage):
                blocks.append(SeparableBlock(c_in, c_out, stride=2 if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x).unsqueeze(1)
        return self.pool(self.blocks(self.stem(x)))


class Head(nn.Module):
    """MLP from a flattened segment embedding to class logits (+ the attention-pooling scorer)."""

    def __init__(self, in_features: int, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, cfg.head_hidden), nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, cfg.n_classes),
        )
        # Attention pooling scores each segment from its embedding; it lives here so that
        # encoder.pt + head.pt hold the whole model.
        self.attention = nn.Linear(in_features, 1) if cfg.pooling == "attention" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClipClassifier(nn.Module):
    """Segment features `[B, S, n_mels, frames]` + mask `[B, S]` -> (clip logits, segment logits)."""

    def __init__(self, audio: AudioConfig, cfg: ModelConfig):
        super().__init__()
        self.encoder = Encoder(audio, cfg)
        self.flatten = nn.Flatten()
        self.head = Head(self.encoder.out_channels, cfg)
        self.pooling = cfg.pooling

    def segment_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel segments `[N, n_mels, frames]` -> (logits `[N, C]`, embeddings `[N, D]`)."""
        emb = self.flatten(self.encoder(x))
        return self.head(emb), emb

    def forward(self, features: torch.Tensor, segment_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S = features.shape[0], features.shape[1]
        # Only real segments go through the encoder, so padding never touches BatchNorm.
        logits, emb = self.segment_forward(features[segment_mask])
        seg_logits = features.new_zeros(B, S, logits.shape[-1])
        seg_logits[segment_mask] = logits
        return self.pool(seg_logits, emb, segment_mask), seg_logits

    def pool(self, seg_logits: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Combine segment logits `[B, S, C]` into clip logits `[B, C]`, ignoring padding."""
        m = mask.unsqueeze(-1).to(seg_logits.dtype)
        if self.pooling == "max":
            return seg_logits.masked_fill(~mask.unsqueeze(-1), -1e9).amax(dim=1)
        attention = self.head.attention
        if attention is not None:
            scores = seg_logits.new_full(mask.shape, -1e9)
            scores[mask] = attention(emb).squeeze(-1)
            weights = torch.softmax(scores, dim=1).unsqueeze(-1)
            return (weights * seg_logits).sum(dim=1)
        return (seg_logits * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class WaveformClassifier(nn.Module):
    """Waveform batch `[B, samples]` at the run's sample rate -> clip logits `[B, 2]`, front end included."""

    def __init__(self, audio: AudioConfig, model: ClipClassifier):
        super().__init__()
        self.logmel = LogMel(audio)
        self.model = model
        self.segment_samples = audio.segment_samples
        self.hop_samples = audio.hop_samples
        self.sample_rate = audio.sample_rate

    def segments(self, wave: torch.Tensor) -> torch.Tensor:
        """`[B, samples]` -> `[B, S, segment_samples]`, the last window zero-padded (as audio.segment_waveform)."""
        n, win, hop = wave.shape[-1], self.segment_samples, self.hop_samples
        s = 1 if n <= win else 1 + (n - win + hop - 1) // hop
        total = (s - 1) * hop + win
        if total > n:
            wave = F.pad(wave, (0, total - n))
        return wave[:, :total].unfold(1, win, hop)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logmel(self.segments(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.segment_and_clip_logits(wave)[0]

    @torch.jit.export
    def segment_and_clip_logits(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (clip logits `[B, C]`, segment logits `[B, S, C]`)."""
        feats = self.features(wave)
        mask = torch.ones(feats.shape[0], feats.shape[1], dtype=torch.bool, device=feats.device)
        return self.model(feats, mask)


def build_model(size: str | ModelConfig = "student", audio: AudioConfig | None = None, **overrides) -> ClipClassifier:
    """Build a student or teacher (or any ModelConfig) for the given AudioConfig."""
    cfg = size if isinstance(size, ModelConfig) else model_config(size, **overrides)
    return ClipClassifier(audio or AudioConfig(), cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_second(model: ClipClassifier, audio: AudioConfig | None = None) -> float:
    """Multiply-accumulates of the model (no front end) per second of audio, counted with hooks."""
    audio = audio or AudioConfig()
    macs = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            macs[0] += out.numel() * k
        elif isinstance(mod, nn.Linear):
            macs[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.segment_forward(torch.zeros(1, audio.n_mels, audio.n_frames))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    segments_per_second = 1.0 / audio.hop_seconds  # long recordings: one segment per hop
    return macs[0] * segments_per_second


def load_classifier(run_dir) -> WaveformClassifier:
    """Rebuild a trained model from `config.json` + `encoder.pt` + `head.pt` (weights_only loading).

    Returns a WaveformClassifier in eval mode: waveform batch `[B, samples]` at the run's
    sample rate -> clip logits `[B, 2]` (index 1 = noise).
    """
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    for name in ("config.json", "encoder.pt", "head.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} is missing: is {run_dir} a finished training run?")
    config = json.loads((run_dir / "config.json").read_text())
    audio = AudioConfig.from_dict(config["audio"])
    model = ClipClassifier(audio, ModelConfig(**config["model"]))
    model.encoder.load_state_dict(torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True))
    model.head.load_state_dict(torch.load(run_dir / "head.pt", map_location="cpu", weights_only=True))
    return WaveformClassifier(audio, model).eval()
