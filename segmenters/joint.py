"""The segmenter side of joint fusion + segmentation training: smp DeepLabV3+ with cross-entropy
(optionally + Dice, or OHEM cross-entropy), differentiable with respect to its input image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segmenters.transforms import MEAN, STD

LOSSES = ("ce", "ce+dice", "ohem")
OHEM_THRESHOLD = -math.log(0.7)


class SegmentationLoss(nn.Module):
    """``forward(images (N,3,H,W) in [0,1], masks (N,H,W) int64) -> loss``.

    Args:
        num_classes: number of classes.
        encoder: smp encoder name (random init: joint training never downloads weights).
        loss: "ce", "ce+dice" (CE + smp's multiclass Dice) or "ohem" (BiSeNet's OHEM cross-entropy, used by
            SeAFusion: the mean over pixels whose loss exceeds -log(0.7), at least the hardest 1/16).
        ignore_index: mask value that does not count.
    """

    def __init__(self, num_classes: int, encoder: str = "resnet18", loss: str = "ce", ignore_index: int = 255):
        super().__init__()
        import segmentation_models_pytorch as smp

        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes)
        self.loss_name, self.ignore_index = loss, ignore_index
        self.dice = smp.losses.DiceLoss("multiclass", ignore_index=ignore_index) if loss == "ce+dice" else None
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = self.logits(images)
        if self.loss_name == "ohem":
            per_pixel = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="none").flatten()
            valid = per_pixel[masks.flatten() != self.ignore_index]
            hard = valid[valid > OHEM_THRESHOLD]
            n_min = max(valid.numel() // 16, 1)
            return (hard if hard.numel() >= n_min else valid.topk(min(n_min, valid.numel())).values).mean()
        loss = F.cross_entropy(logits, masks, ignore_index=self.ignore_index)
        if self.dice is not None:
            loss = loss + self.dice(logits, masks)
        return loss
