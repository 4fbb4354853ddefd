"""Knowledge-distillation loss: total = alpha * SoftLoss + (1 - alpha) * HardLoss.

SoftLoss is T^2 * KL(teacher_T || student_T) on temperature-softened distributions
(Hinton et al. 2015); HardLoss is cross-entropy against the ground-truth labels.
The teacher arrives as *probabilities* (cached teacher outputs), so it is softened in
log space: teacher_T = softmax(log(p) / T), i.e. p^(1/T) renormalised.

`DistillationLoss.distill` is the trainer's objective: the soft term on each clip's or on each
segment's logits (`TrainConfig.soft_target`), the hard term always on the clip's.

Either term can be masked: `soft_mask` marks the rows with a teacher label, `hard_mask` the rows
with a hard label (a transfer set holds clips nobody labelled; see data/README.md). Masked-out rows
are never read by their term, which averages over its masked-in rows only.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

PROB_SUM_TOL = 1e-3  # how far a teacher probability row may sum from 1


def check_alpha(alpha) -> float:
    """alpha as a float, or ValueError unless it is a real number in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a real number in [0, 1], got {alpha!r}")
    if not (0.0 <= float(alpha) <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def check_temperature(temperature) -> float:
    """temperature as a float, or ValueError unless it is finite and > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a real number, got {temperature!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"eps must be a real number, got {eps!r}")
    e = float(eps)
    if not (0 < e < 1):  # also rejects NaN
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    return e


def temper(probs: torch.Tensor, temperature: float, eps: float = 1e-6) -> torch.Tensor:
    """Soften (T > 1) or sharpen (T < 1) probabilities over the last dim: softmax(log(p) / T).

    Zeros are clamped to `eps` before the log, so exact 0/1 inputs stay finite.
    T = 1 returns `probs` (up to the clamp); T -> inf tends to uniform.
    """
    t, e = check_temperature(temperature), _check_eps(eps)
    if not torch.is_tensor(probs) or not probs.is_floating_point():
        raise ValueError("probs must be a floating-point tensor")
    return torch.softmax(torch.log(probs.clamp_min(e)) / t, dim=-1)


class DistillationLoss(nn.Module):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    Note on alpha: torchdistill and EfficientAT put alpha on the CE (hard) term; here,
    as in the mark2 seed and README, alpha weights the KD (soft) term.

    Call as `loss(student_logits [N, C], soft_targets [N, C], hard_targets [N],
    soft_mask=None, return_parts=False, hard_mask=None)`, where `soft_targets` are teacher
    probabilities, `soft_mask` (bool [N]) marks the rows that have a teacher label and
    `hard_mask` (bool [N]) the rows that have a hard label.
    - soft: batchmean over the masked-in rows only; masked-out rows are never read
      (they may hold NaN). If no row is masked in, soft is a zero tensor that is still
      attached to the graph (its gradient is 0), so backward() always works.
    - hard: mean cross-entropy over the rows `hard_mask` marks (all N rows without one);
      masked-out rows are never read (their target may be any sentinel, e.g. -1) and get no
      gradient from this term. `class_weights` [C] weight this term only, with F.cross_entropy
      semantics (weighted mean over the masked-in rows: divided by their summed weights). If
      no row is masked in, hard is a zero tensor attached to the graph, as soft is.
      hard_mask=None computes exactly what it did before masks existed.
    - return_parts=True returns {"total", "soft", "hard"}; otherwise the total.
    Computation runs in at least float32 (bf16/fp16 logits are upcast).

    `validate=True` (the default) checks every call's tensors and raises a ValueError naming
    the bad argument. Each check reads the data (a device sync on GPU), so the trainer, whose
    data was checked once when it was loaded, builds its loss with `validate=False`.
    """

    def __init__(self, alpha: float = 0.7, temperature: float = 4.0,
                 class_weights: torch.Tensor | None = None, eps: float = 1e-6, validate: bool = True):
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.temperature = check_temperature(temperature)
        self.eps = _check_eps(eps)
        self.validate = bool(validate)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights)
            if not class_weights.is_floating_point():
                class_weights = class_weights.to(torch.get_default_dtype())
            if class_weights.ndim != 1 or class_weights.numel() == 0:
                raise ValueError("class_weights must be a non-empty 1-D tensor [C], "
                                 f"got shape {tuple(class_weights.shape)}")
            if not torch.isfinite(class_weights).all() or (class_weights < 0).any():
                raise ValueError("class_weights must be finite and >= 0")
            if not (class_weights > 0).any():
                raise ValueError("class_weights must have at least one weight > 0")
        # a buffer so .to(device) moves it; not persistent, so it never enters checkpoints
        self.register_buffer("class_weights", class_weights, persistent=False)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}, eps={self.eps}, validate={self.validate}"

    def combine(self, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        """The total loss from its two terms: alpha * soft + (1 - alpha) * hard."""
        return self.alpha * soft + (1.0 - self.alpha) * hard

    def _validate(self, logits, probs, labels, mask, hard_mask=None):
        if not torch.is_tensor(logits) or logits.ndim != 2 or not logits.is_floating_point():
            raise ValueError("student_logits must be a float tensor [N, C], got "
                             f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
        n, c = logits.shape
        if n == 0 or c < 2:
            raise ValueError(f"student_logits must have N >= 1 rows and C >= 2 classes, got {(n, c)}")
        if not torch.is_tensor(probs) or tuple(probs.shape) != (n, c) or not probs.is_floating_point():
            raise ValueError(f"soft_targets must be a float tensor of shape {(n, c)} like student_logits, got "
                             f"{tuple(probs.shape) if torch.is_tensor(probs) else type(probs).__name__}")
        if not torch.is_tensor(labels) or tuple(labels.shape) != (n,):
            raise ValueError(f"hard_targets must be a tensor of shape {(n,)}, got "
                             f"{tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"hard_targets must hold integer class indices, got dtype {labels.dtype}")
        for name, m in (("soft_mask", mask), ("hard_mask", hard_mask)):
            if m is not None and (not torch.is_tensor(m) or m.dtype != torch.bool or tuple(m.shape) != (n,)):
                raise ValueError(f"{name} must be a bool tensor of shape {(n,)}, got "
                                 f"{(tuple(m.shape), m.dtype) if torch.is_tensor(m) else type(m).__name__}")
        if hard_mask is not None:
            labels = labels[hard_mask.to(labels.device)]  # rows without a hard label are never read
        if labels.numel() and ((labels < 0) | (labels >= c)).any():
            raise ValueError(f"hard_targets must be class indices in [0, {c - 1}], got "
                             f"min {int(labels.min())} max {int(labels.max())}")
        if self.class_weights is not None and self.class_weights.numel() != c:
            raise ValueError(f"class_weights has {self.class_weights.numel()} entries "
                             f"but student_logits has C={c} classes")

    def forward(self, student_logits: torch.Tensor, soft_targets: torch.Tensor,
                hard_targets: torch.Tensor, soft_mask: torch.Tensor | None = None,
                return_parts: bool = False, hard_mask: torch.Tensor | None = None):
        """The loss of one batch of rows (see the class docstring)."""
        if self.validate:
            self._validate(student_logits, soft_targets, hard_targets, soft_mask, hard_mask)
        dtype = torch.promote_types(student_logits.dtype, torch.float32)
        logits = student_logits.to(dtype)
        t = self.temperature

        # soft term: only the rows with a teacher label are read or validated
        s_logits, p = logits, soft_targets
        if soft_mask is not None:
            soft_mask = soft_mask.to(logits.device)
            s_logits, p = logits[soft_mask], soft_targets.to(logits.device)[soft_mask]
        p = p.to(device=logits.device, dtype=dtype)
        if self.validate:
            _check_probabilities(p)
        teacher_t = torch.softmax(torch.log(p.clamp_min(self.eps)) / t, dim=1)
        log_student_t = F.log_softmax(s_logits / t, dim=1)
        # 'sum' / rows == 'batchmean'; with zero rows the sum is a graph-attached 0
        kl = F.kl_div(log_student_t, teacher_t, reduction="sum") / max(p.shape[0], 1)
        soft = kl * (t * t)

        weight = None if self.class_weights is None else self.class_weights.to(logits.device, dtype)
        if hard_mask is None:
            hard = F.cross_entropy(logits, hard_targets.to(logits.device).long(), weight=weight)
        else:  # only the rows with a hard label are read; with none, 'sum' is a graph-attached 0
            hard_mask = hard_mask.to(logits.device)
            h_logits, h_labels = logits[hard_mask], hard_targets.to(logits.device)[hard_mask].long()
            hard = F.cross_entropy(h_logits, h_labels, weight=weight,
                                   reduction="mean" if h_logits.shape[0] else "sum")

        total = self.combine(soft, hard)
        if return_parts:
            return {"total": total, "soft": soft, "hard": hard}
        return total

    def distill(self, clip_logits: torch.Tensor, hard_targets: torch.Tensor, clip_soft: torch.Tensor,
                clip_soft_mask: torch.Tensor, soft_target: str = "clip", segment_logits: torch.Tensor | None = None,
                segment_mask: torch.Tensor | None = None, segment_soft: torch.Tensor | None = None,
                segment_soft_mask: torch.Tensor | None = None, hard_mask: torch.Tensor | None = None) -> dict:
        """The training objective of one batch of clips: {"total", "soft", "hard", "soft_rows", "hard_rows"}.

        The hard term is the cross-entropy of the clip logits `[B, C]` against `hard_targets [B]`, over
        the clips `hard_mask [B]` marks as labelled (all of them when it is None).
        The soft term is the KL term of `soft_target`:
        - "clip": the clip logits against the clip's teacher probabilities `clip_soft [B, C]`
          (rows where `clip_soft_mask [B]` is set);
        - "segment": each real segment's logits (`segment_logits [B, S, C]`, real where
          `segment_mask [B, S]` is set) against its own teacher probabilities `segment_soft [B, S, C]`
          (where `segment_soft_mask [B, S]` is set).
        total = alpha * soft + (1 - alpha) * hard. "soft_rows" and "hard_rows" (0-d tensors) count the
        rows each term averages over, for weighting batch means. Logits are upcast to float32 at least.
        """
        parts = self(_upcast(clip_logits), clip_soft, hard_targets, soft_mask=clip_soft_mask, return_parts=True,
                     hard_mask=hard_mask)
        hard_rows = hard_mask.sum() if hard_mask is not None else torch.tensor(hard_targets.shape[0])
        if soft_target == "clip":
            return {**parts, "soft_rows": clip_soft_mask.sum(), "hard_rows": hard_rows}
        if soft_target != "segment":
            raise ValueError(f"soft_target={soft_target!r}: expected 'clip' or 'segment'")
        seg_hard = hard_targets.unsqueeze(1).expand(segment_mask.shape)[segment_mask]
        seg_hard_mask = None if hard_mask is None else hard_mask.unsqueeze(1).expand(segment_mask.shape)[segment_mask]
        seg_soft_mask = segment_soft_mask[segment_mask]
        seg = self(_upcast(segment_logits[segment_mask]), segment_soft[segment_mask], seg_hard,
                   soft_mask=seg_soft_mask, return_parts=True, hard_mask=seg_hard_mask)
        return {"total": self.combine(seg["soft"], parts["hard"]), "soft": seg["soft"], "hard": parts["hard"],
                "soft_rows": seg_soft_mask.sum(), "hard_rows": hard_rows}


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 when they are (bf16 logits of autocast become float32)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _check_probabilities(p: torch.Tensor) -> None:
    """ValueError unless every row of `p` is finite, >= 0 and sums to 1 (within PROB_SUM_TOL)."""
    if not torch.isfinite(p).all():
        raise ValueError("soft_targets must be finite on the rows with a teacher label")
    if (p < 0).any():
        raise ValueError("soft_targets must be probabilities >= 0")
    if p.shape[0] and ((p.sum(dim=1) - 1).abs() > PROB_SUM_TOL).any():
        raise ValueError(f"soft_targets rows must sum to 1 (tolerance {PROB_SUM_TOL}); "
                         "pass teacher probabilities, not logits")
