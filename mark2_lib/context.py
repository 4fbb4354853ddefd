"""Clip context: what the whole clip says, beside each segment's own embedding (`ModelConfig.clip_context`).

A student judges each 1 s segment on its own, with the segment's mean level taken off (`level_norm`), and
then pools the segments. A blind SNR estimator looks at the whole clip instead: speech has pauses, and a
pause shows the noise floor, so the spread between loud and quiet frames across the clip says how noisy
it is. `clip_context="level_stats"` gives the head that view: statistics of the frame energy over every
frame of the clip's (valid) segments, from the log-mel features the model already reads, joined to each
segment's embedding before the head and the attention scorer (`Head.join`).

The frame energy is the power summed over the mel bands, in dB. The statistics are level free (a clip's
gain moves every frame's energy alike): the spread between its 95th and 10th percentiles (an STNR-like
estimate), between the 95th and the median, between the median and the 10th, and the standard deviation.
A frame shared by two overlapping segments counts twice, the same in training (cached segment features)
and in `WaveformClassifier` (segments sliced from the clip's frames), so both see the same numbers.
(`TrainConfig.random_segment` trains on one segment per clip: the context then describes that segment.)
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .config import CLIP_CONTEXTS



def context_size(clip_context: str) -> int:
    """Numbers a clip context adds to each segment's embedding (0 for "none")."""
    if clip_context not in CLIP_CONTEXTS:
        raise ValueError(f"clip_context={clip_context!r}; expected one of {CLIP_CONTEXTS}")
    return 0 if clip_context == "none" else 4


def frame_energy_db(features: torch.Tensor) -> torch.Tensor:
    """Log-mel segments `[..., n_mels, frames]` in dB -> each frame's energy `[..., frames]`, in dB:
    10 log10 of the power summed over the mel bands (a logsumexp, so no band overflows)."""
    db_per_neper = 10.0 / math.log(10.0)  # 10 log10(x) = db_per_neper * ln(x); a local: TorchScript reads no globals
    return torch.logsumexp(features / db_per_neper, dim=-2) * db_per_neper


def level_stats(features: torch.Tensor, segment_mask: torch.Tensor) -> torch.Tensor:
    """Segment features `[B, S, n_mels, frames]` + mask `[B, S]` -> per clip `[B, 4]`: p95 - p10, p95 - p50,
    p50 - p10 and the std of the frame energy (dB) over every frame of the clip's valid segments.

    Percentiles interpolate linearly (torch.quantile). A clip without a valid segment is an error."""
    if not bool(segment_mask.any(dim=1).all()):
        raise ValueError("level_stats: every clip needs at least one valid segment")
    energy = frame_energy_db(features)                                       # [B, S, frames]
    valid = segment_mask.unsqueeze(-1).expand_as(energy)
    energy = energy.masked_fill(~valid, float("nan")).flatten(1)             # [B, S * frames], NaN: padding
    q = torch.nanquantile(energy, torch.tensor([0.10, 0.50, 0.95], dtype=energy.dtype, device=energy.device), dim=1)
    n = valid.flatten(1).sum(dim=1)
    mean = torch.nansum(energy, dim=1) / n
    var = torch.nansum((energy - mean.unsqueeze(1)).square(), dim=1) / n
    p10, p50, p95 = q[0], q[1], q[2]
    return torch.stack([p95 - p10, p95 - p50, p50 - p10, var.sqrt()], dim=1)


def dense_level_stats(features: torch.Tensor) -> torch.Tensor:
    """`level_stats` of segment features `[B, S, n_mels, frames]` whose segments are all valid, branch-free in the
    input's shape (percentiles from one sort, interpolated as torch.quantile does), so that it exports to ONNX."""
    energy = frame_energy_db(features).flatten(1)                              # [B, S * frames]
    ranked = torch.sort(energy, dim=1).values
    pos = torch.tensor([0.10, 0.50, 0.95], dtype=energy.dtype) * (energy.shape[1] - 1)
    below = pos.floor()
    low, high = ranked.index_select(1, below.long()), ranked.index_select(1, pos.ceil().long())
    q = low + (high - low) * (pos - below)                                    # [B, 3]: p10, p50, p95
    std = (energy - energy.mean(dim=1, keepdim=True)).square().mean(dim=1).sqrt()
    p10, p50, p95 = q[:, 0], q[:, 1], q[:, 2]
    return torch.stack([p95 - p10, p95 - p50, p50 - p10, std], dim=1)


def clip_context(name: str, features: torch.Tensor, segment_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The named clip context `[B, context_size(name)]` of segment features `[B, S, n_mels, frames]`
    (`segment_mask` `[B, S]` marks the valid segments; None: all of them)."""
    if segment_mask is None:
        segment_mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    if name == "level_stats":
        return level_stats(features, segment_mask)
    raise ValueError("clip_context=" + name + " has no statistics (see context.CLIP_CONTEXTS)")  # TorchScript: no f-string
