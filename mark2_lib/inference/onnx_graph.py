"""The classifier as one export-friendly graph, for ONNX: waveform batch in, clip and segment logits out.

`WaveformClassifier` is written for speed in PyTorch: its front end windows frames out of the clip in
place and branches on the clip's length, and its fused encoder gathers the stem's columns by in-place
copies. Exported with dynamic shapes, such code is fixed to the branches of the example it was traced
with. `ExportGraph` computes the same function without a branch on the input's size: the clip is
zero-padded to whole segments and reflect-padded by n_fft // 2 (as `LogMel`) in one concatenation,
frames are cut by reshaping, segments gathered by index, and each segment goes through the fused
encoder as a plain batch (`Encoder.forward`'s layers, the stem as its convolution). A model with a clip
context (`ModelConfig.clip_context`) reads the statistics of all its input's frames (`context.dense_level_stats`),
so each graph run is one whole clip to it.

The log-mel is a factored real DFT in a few matrix products (`onnx_stft.FactoredLogMel`): ONNX's DFT
operator exports, but ONNX Runtime's CPU kernel for it took two thirds of the student's time.
It reads the model's own weights and buffers, so it never drifts from it; its results agree with the
model's up to float rounding (the ONNX export checks this on every file it writes). PyTorch inference
does not use it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import dense_level_stats
from ..models import WaveformClassifier
from .onnx_stft import FactoredLogMel


class ExportGraph(nn.Module):
    """A fused WaveformClassifier, branch-free in the input's shape: `[B, samples]` -> (clip logits `[B, C]`,
    segment logits `[B, S, C]`, attention-pooling scores `[B, S]`, zeros for mean and max pooling)."""

    def __init__(self, model: WaveformClassifier):
        super().__init__()
        if not model.model.encoder.fused:
            raise ValueError("ExportGraph takes a fused WaveformClassifier (load_classifier returns one)")
        cfg = model.audio
        self.encoder, self.head, self.pooling = model.model.encoder, model.model.head, model.model.pooling
        if model.model.clip_context not in ("none", "level_stats"):
            raise ValueError(f"ExportGraph has no clip context {model.model.clip_context!r}")
        self.clip_context = model.model.clip_context != "none"
        self.clip_framing = cfg.framing == "clip"
        self.segment_samples, self.hop_samples = cfg.segment_samples, cfg.hop_samples
        self.n_fft, self.hop_length, self.n_frames = cfg.n_fft, cfg.hop_length, cfg.n_frames
        self.frame_step = cfg.hop_samples // cfg.hop_length
        self.stft = FactoredLogMel(cfg.n_fft, model.logmel.window, model.logmel.fb)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n = wave.shape[0], wave.shape[1]
        win, hop = self.segment_samples, self.hop_samples
        s = 1 + (torch.sym_max(n, win) - win + hop - 1) // hop      # audio.n_segments: at least 1
        zeros = (s - 1) * hop + win - n                               # zero-padded to whole segments
        if self.clip_framing:
            mel = self.log_mel(wave, zeros)                             # [B, F, n_mels], framed once per clip
            idx = torch.arange(s).unsqueeze(1) * self.frame_step + torch.arange(self.n_frames)
            x = mel.index_select(1, idx.reshape(-1)).reshape(b * s, self.n_frames, mel.shape[2])
        else:                                                           # each segment framed on its own
            idx = torch.arange(s).unsqueeze(1) * hop + torch.arange(win)
            x = self.log_mel(F.pad(wave, (0, zeros)).index_select(1, idx.reshape(-1)).reshape(b * s, win), 0)
            x = x[:, :self.n_frames]
        x = x.transpose(1, 2)                                           # [B * S, n_mels, n_frames]
        context = None
        if self.clip_context:  # the whole clip's level statistics, from every segment's frames (context.py)
            stats = dense_level_stats(x.reshape(b, s, x.shape[1], x.shape[2]))          # [B, K]
            context = stats.unsqueeze(1).expand(b, s, stats.shape[1]).reshape(b * s, stats.shape[1])
        logits, emb = self.segment_forward(x, context)
        seg = logits.reshape(b, s, logits.shape[-1])
        attention = self.head.attention
        if attention is not None:
            scores = attention(emb).reshape(b, s)
            clip_logits = (torch.softmax(scores, dim=1).unsqueeze(-1) * seg).sum(dim=1)
        else:
            scores = torch.zeros_like(seg[..., 0])
            clip_logits = seg.amax(dim=1) if self.pooling == "max" else seg.mean(dim=1)
        return clip_logits, seg, scores

    def log_mel(self, x: torch.Tensor, zeros) -> torch.Tensor:
        """`[N, samples]` followed by `zeros` zero samples -> log-mel `[N, frames + 1, n_mels]` of its centred
        frames (reflect-padded by n_fft // 2 at both ends), as `LogMel.frames_db(x, centre=True)`, and one
        frame more (past the end, of zeros and the padding; no segment reads it)."""
        return self.stft(self.frames(x, zeros))

    def frames(self, x: torch.Tensor, zeros) -> torch.Tensor:
        """The centred STFT frames `[N, F + 1, width]` of `x` and `zeros` zeros, their first n_fft samples the
        frame, and one frame more: one concatenation pads the signal (reflection, x, zeros, reflection, then
        zeros up to F + q blocks of hop_length, at least one zero, so that no slice cuts the copy), a reshape
        cuts it into blocks, and a frame is q = ceil(n_fft / hop_length) consecutive blocks (width
        q * hop_length; with q = 1, no copy)."""
        c, h, n = self.n_fft // 2, self.hop_length, x.shape[1]
        q = -(-self.n_fft // h)
        length = n + zeros + 2 * c
        n_frames = (length - self.n_fft) // h + 1
        head = F.pad(x[:, :c + 1], (0, torch.sym_max(c + 1 - n, 0)))[:, 1:c + 1].flip(1)
        end = torch.cat([x[:, torch.sym_max(n - c - 1, 0):], x.new_zeros(x.shape[0], zeros)], dim=1)
        tail = end[:, end.shape[1] - c - 1:end.shape[1] - 1].flip(1)
        fill = (n_frames + q) * h - length                            # >= 1: n_frames * h > length - n_fft
        x = torch.cat([head, x, x.new_zeros(x.shape[0], zeros), tail, x.new_zeros(x.shape[0], fill)], dim=1)
        blocks = x.reshape(x.shape[0], n_frames + q, h)
        return blocks if q == 1 else torch.cat([blocks[:, j:j + n_frames + 1] for j in range(q)], dim=2)

    def segment_forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel segments `[N, n_mels, frames]` (+ their clips' context `[N, K]`) -> (logits `[N, C]`, embeddings
        `[N, D]`, the context joined in), as `ClipClassifier.segment_forward` on the fused encoder, with the stem
        as its convolution."""
        enc = self.encoder
        if enc.level_norm:
            x = x - x.mean(dim=(1, 2), keepdim=True)
        x = enc.stem(enc.input_norm(x).unsqueeze(1))  # fused conv, Identity (its folded BatchNorm), ReLU
        emb = enc.pool_map(enc.blocks(x)).flatten(1)
        if context is not None:
            emb = self.head.join(emb, context)
        return self.head(emb), emb
