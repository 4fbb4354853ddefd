"""Building blocks of the encoder (models.py): the depthwise-separable block, and `fold_batchnorm`, which
folds an eval-mode BatchNorm into the conv before it for inference."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of `conv` with the eval-mode `bn` after it folded in: weight * s, bias b - mean * s, where
    s = gamma / sqrt(var + eps). As torch.nn.utils.fusion.fuse_conv_bn_eval (tests compare them), but
    with the bias's products in the order every published run was validated and scored with, so those
    results reproduce to the last digit; torch's order differs by an ulp, which moves soft labels."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(conv)  # not a new Conv2d: its initialisation would draw from the global RNG
    fused.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    fused.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
    return fused


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
        # In place: y is always a fresh output that nothing else holds (BatchNorm's backward does not read it).
        y = F.relu_(self.bn1(self.depthwise(x)))
        y = self.bn2(self.pointwise(y))
        return F.relu_(y.add_(x)) if self.residual else F.relu_(y)

    def fuse(self) -> None:
        """Fold each BatchNorm into the conv before it (eval mode, called by `Encoder.fuse`)."""
        self.depthwise, self.bn1 = fold_batchnorm(self.depthwise, self.bn1), nn.Identity()
        self.pointwise, self.bn2 = fold_batchnorm(self.pointwise, self.bn2), nn.Identity()
