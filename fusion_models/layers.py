"""Layers shared by several ported fusion networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# How a ported network's BatchNorm behaves at inference: "instance" = each sample normalised with its own
# statistics (what official scripts that never call eval() do at batch size 1, made batch-independent);
# "running" = the stored running statistics.
BN_MODES = ("instance", "running")


class SampleNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in eval mode, can normalise each sample with its own statistics.

    Args:
        num_features: channels C.
        per_sample: in eval mode use per-sample, per-channel mean and biased variance over H, W
            (training-mode BatchNorm at batch size 1) instead of the running statistics.

    Shapes: (N,C,H,W) -> (N,C,H,W). Training mode is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, per_sample: bool) -> None:
        super().__init__(num_features)
        self.per_sample = per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.per_sample:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
