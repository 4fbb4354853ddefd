"""Models: Audio -> Encoder -> Flatten -> Head -> per-segment logits -> pooled clip logits.

One set of building blocks makes both the tiny student and the large teacher
(`build_model("student" | "teacher")`), each with its own front end (`audio_config(size)`).
The student's encoder also takes each segment's mean level off its input (`level_norm`) and
sums up its last map by mean and std (`stats_pooling`). With `clip_context` (context.py) the head also reads
statistics of the whole clip beside each segment's embedding. Class index 1 is "noise".

Training runs each conv and then its BatchNorm. For inference `fuse()` folds each such BatchNorm into
its conv once (`layers.fold_batchnorm`) and runs the stem as one matrix product; `run_folders.load_classifier`
loads a run's encoder.pt and head.pt (the unfused model's state_dict), then fuses.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .audio import LogMel
from .config import AudioConfig, ModelConfig, audio_config, model_config
from .context import clip_context, context_size
from .layers import SeparableBlock, fold_batchnorm

STD_EPS = 1e-5  # added to the variance under stats pooling's square root


class Encoder(nn.Module):
    """CNN over one segment's log-mel `[N, n_mels, frames]` -> summary `[N, out_channels, 1, 1]` (see `pool_map`)."""

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
        self.level_norm, self.stats_pooling, self.std_eps = cfg.level_norm, cfg.stats_pooling, STD_EPS
        self.out_channels = 2 * c_in if cfg.stats_pooling else c_in
        self.fused = False  # set by `fuse`: BatchNorm folded into the convs, the stem run by `stem_matmul`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.level_norm:  # mixtures are peak-normalised: a segment's overall level says nothing, its shape does
            x = x - x.mean(dim=(1, 2), keepdim=True)
        x = self.input_norm(x)
        x = self.stem_matmul(x) if self.fused else self.stem(x.unsqueeze(1))
        return self.pool_map(self.blocks(x))

    def fuse(self) -> Encoder:
        """Fold every BatchNorm that follows a conv into that conv, once, for inference; returns self.

        Eval mode only: the running statistics are folded in, so the output equals the unfused eval one up
        to float rounding. The folded BatchNorms leave the state_dict (load weights first) and training."""
        if self.fused:
            return self
        if self.training:
            raise RuntimeError("Encoder.fuse() folds in BatchNorm's running statistics: call eval() first")
        self.stem[0], self.stem[1] = fold_batchnorm(self.stem[0], self.stem[1]), nn.Identity()
        for block in self.blocks:
            block.fuse()
        self.fused = True
        return self

    def train(self, mode: bool = True) -> Encoder:
        if mode and self.fused:  # nn.Module.train, refusing training mode once the BatchNorms are folded away
            raise RuntimeError("a fused encoder is for inference only: its BatchNorms are folded into its convs")
        return super().train(mode)

    def stem_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused stem conv's weight `[C, 1, 3, 3]` and bias `[C]` (its BatchNorm folded in by `fuse`)."""
        bias = self.stem[0].bias
        if bias is None:
            raise RuntimeError("the stem has no folded bias: call Encoder.fuse() first")
        return self.stem[0].weight, bias

    def stem_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The fused stem as im2col + one matrix product: normalised log-mel `[N, n_mels, frames]` -> `[N, C, h, t]`.

        With one input channel that beats the library conv on CPU, and it leaves the map channels-last, the
        layout the depthwise convs run fastest in. The columns are 9 strided slices stacked (a copy each):
        cheaper than copying a 5-d unfold view."""
        w, b = self.stem_weights()
        n, c, h, t = x.shape[0], w.shape[0], (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
        xp = F.pad(x, (1, 1, 1, 1))
        taps: list[torch.Tensor] = []
        for i in range(3):
            for j in range(3):
                taps.append(xp[:, i:i + 2 * h - 1:2, j:j + 2 * t - 1:2])
        cols = torch.stack(taps, dim=-1)                                      # [N, h, t, 9], tap = 3 * row + col
        x = torch.addmm(b, cols.reshape(n * h * t, 9), w.reshape(c, 9).t())
        return F.relu_(x.reshape(n, h, t, c).permute(0, 3, 1, 2))            # [N, C, h, t], channels-last

    def pool_map(self, y: torch.Tensor) -> torch.Tensor:
        """Feature map `[N, C, h, t]` -> `[N, C, 1, 1]`: its mean, with `stats_pooling` also its std (`[N, 2C, 1, 1]`).

        The std tells a map that varies over the segment (speech over a quiet floor) from an even one."""
        mean = self.pool(y)
        if not self.stats_pooling:
            return mean
        std = (y - mean).square_().mean(dim=(2, 3), keepdim=True).add_(self.std_eps).sqrt_()  # eps: finite grad at 0
        return torch.cat([mean, std], dim=1)

    def forward_clip_frames(self, frames: torch.Tensor, frame_step: int, n_frames: int) -> torch.Tensor:
        """Fused encoder, clip framing: log-mel frames of whole clips `[B, F, n_mels]` -> the feature maps
        `[B * S, C, 1, 1]` of their segments (segment s = frames s * frame_step onwards, `n_frames` long).

        Equals `forward` on each segment's frames up to float rounding, with less copying: the input norm
        runs once per frame rather than once per segment holding it (segments overlap), and the stem's im2col
        columns are gathered straight from the clip's frames. Taps that reach past a segment's own frames
        read a neighbour's there, so they are zeroed, as `forward`'s padding has them."""
        norm = self.input_norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        x = torch.addcmul(norm.bias - norm.running_mean * scale, frames, scale)   # [B, F, n_mels]
        w, b = self.stem_weights()
        c, n_mels = w.shape[0], x.shape[2]
        h, t = (n_mels - 1) // 2 + 1, (n_frames - 1) // 2 + 1
        # each segment's frames with one more on either side, and a zero band above and below
        seg = F.pad(x, (1, 1, 1, 1)).unfold(1, n_frames + 2, frame_step)      # [B, S, n_mels + 2, n_frames + 2]
        cols = x.new_empty(10, seg.shape[0], seg.shape[1], h, t)                # 9 taps + a row of ones (the bias)
        for i in range(3):
            for j in range(3):
                cols[3 * i + j].copy_(seg[:, :, i:i + 2 * h - 1:2, j:j + 2 * t - 1:2])
        if self.level_norm:
            # Segment s's mean level m_s, subtracted before the input norm, takes m_s * scale[band] off
            # every value the segment's taps read (nothing off the zero bands: scale is 0 there).
            level = frames.mean(dim=2).unfold(1, n_frames, frame_step).mean(dim=2)  # [B, S]
            band_scale = F.pad(scale, (1, 1))
            level = level.reshape(1, level.shape[0], level.shape[1], 1, 1)
            for i in range(3):  # the three taps of kernel row i read the same bands
                cols[3 * i:3 * i + 3].sub_(level * band_scale[i:i + 2 * h - 1:2].reshape(h, 1))
        for j in range(3):  # frame 2t + j - 1 of a segment outside [0, n_frames): the neighbour's, zero it
            cols[j:9:3, :, :, :, :max(1 - j, 0)].zero_()
            cols[j:9:3, :, :, :, (n_frames + 2 - j) // 2:].zero_()
        cols[9].fill_(1.0)
        weight = torch.cat([w.reshape(c, 9).t(), b.unsqueeze(0)])               # [10, C], tap = 3 * row + col
        y = torch.mm(cols.reshape(10, -1).t(), weight)                          # [B * S * h * t, C]
        y = F.relu_(y).reshape(-1, h, t, c).permute(0, 3, 1, 2)                 # [B * S, C, h, t], channels-last
        return self.pool_map(self.blocks(y))


class Head(nn.Module):
    """MLP from a flattened segment embedding to class logits (+ the attention-pooling scorer)."""

    def __init__(self, in_features: int, cfg: ModelConfig):
        super().__init__()
        k = context_size(cfg.clip_context)  # a clip context joins the embedding (`join`)
        in_features += k
        self.net = nn.Sequential(
            nn.Linear(in_features, cfg.head_hidden), nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, cfg.n_classes),
        )
        # Attention pooling scores each segment from its embedding; here, encoder.pt + head.pt hold the whole model.
        self.attention = nn.Linear(in_features, 1) if cfg.pooling == "attention" else None
        self.context_norm = nn.BatchNorm1d(k) if k else None  # the clip context, standardised (learned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def join(self, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Segment embeddings `[N, D]` + their clips' context `[N, K]` -> what the head reads `[N, D + K]`."""
        norm = self.context_norm
        if norm is None:
            raise RuntimeError("this head takes no clip context (ModelConfig.clip_context is 'none')")
        return torch.cat([emb, norm(context)], dim=1)


class ClipClassifier(nn.Module):
    """Segment features `[B, S, n_mels, frames]` + mask `[B, S]` -> (clip logits, segment logits)."""

    def __init__(self, audio: AudioConfig, cfg: ModelConfig):
        super().__init__()
        self.audio, self.config = audio, cfg  # the front end it reads and its architecture; not in the state_dict
        self.encoder = Encoder(audio, cfg)
        self.flatten = nn.Flatten()
        self.head = Head(self.encoder.out_channels, cfg)
        self.pooling, self.clip_context = cfg.pooling, cfg.clip_context

    def fuse(self) -> ClipClassifier:
        """Eval mode, with BatchNorm folded into the convs once (`Encoder.fuse`): in place, for inference."""
        self.eval().encoder.fuse()
        return self

    def segment_forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel segments `[N, n_mels, frames]` (+ their clips' context `[N, K]` with `clip_context`) ->
        (logits `[N, C]`, embeddings `[N, D]`, the context joined in)."""
        emb = self.flatten(self.encoder(x))
        if context is not None:
            emb = self.head.join(emb, context)
        return self.head(emb), emb

    def forward(self, features: torch.Tensor, segment_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S = features.shape[0], features.shape[1]
        context = None
        if self.head.context_norm is not None:  # each segment reads its whole clip's statistics
            context = clip_context(self.clip_context, features, segment_mask)
            context = context.unsqueeze(1).expand(B, S, context.shape[1])[segment_mask]
        # Only real segments go through the encoder, so padding never touches BatchNorm.
        logits, emb = self.segment_forward(features[segment_mask], context)
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
        self.audio = audio  # not part of the state_dict
        self.logmel = LogMel(audio)
        self.model = model
        self.segment_samples, self.hop_samples = audio.segment_samples, audio.hop_samples
        self.sample_rate = audio.sample_rate  # also read by those who load an exported (TorchScript) module
        self.clip_framing = audio.framing == "clip"
        self.frame_step, self.n_frames = audio.hop_samples // audio.hop_length, audio.n_frames

    def fuse(self) -> WaveformClassifier:
        """Eval mode, with BatchNorm folded into the convs once (`Encoder.fuse`): in place, for inference."""
        self.model.fuse()
        return self.eval()

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """`[B, samples]` -> log-mel segments `[B, S, n_mels, n_frames]` (as the feature cache holds them)."""
        return self.logmel(wave)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.segment_and_clip_logits(wave)[0]

    @torch.jit.export
    def segment_and_clip_logits(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (clip logits `[B, C]`, segment logits `[B, S, C]`)."""
        b, with_context = wave.shape[0], self.model.head.context_norm is not None
        if self.clip_framing and self.model.encoder.fused:  # frames once per clip, the encoder reads them there
            frames = self.logmel.clip_frames(wave)
            emb = self.model.flatten(self.model.encoder.forward_clip_frames(frames, self.frame_step, self.n_frames))
            s = emb.shape[0] // b
            if with_context:  # the segments' frames, as the feature cache holds them: [B, S, n_mels, n_frames]
                segments = frames.unfold(1, self.n_frames, self.frame_step)
                emb = self.model.head.join(emb, clip_context(self.model.clip_context, segments).repeat_interleave(s, 0))
            logits = self.model.head(emb)
        else:
            feats = self.features(wave)
            s = feats.shape[1]
            context = clip_context(self.model.clip_context, feats).repeat_interleave(s, 0) if with_context else None
            # Every segment is real: no mask to gather by, the segments go through as one batch.
            logits, emb = self.model.segment_forward(feats.reshape(b * s, feats.shape[2], feats.shape[3]), context)
        seg_logits = logits.reshape(b, s, logits.shape[-1])
        mask = torch.ones(b, s, dtype=torch.bool, device=wave.device)
        return self.model.pool(seg_logits, emb, mask), seg_logits


def build_model(size: str | ModelConfig = "student", audio: AudioConfig | None = None, **overrides) -> ClipClassifier:
    """Build a student or teacher (or any ModelConfig) for the given AudioConfig (default: the size's own)."""
    cfg = size if isinstance(size, ModelConfig) else model_config(size, **overrides)
    return ClipClassifier(audio or (audio_config(size) if isinstance(size, str) else AudioConfig()), cfg)
