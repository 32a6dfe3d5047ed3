"""Single-modality reference rows: ``ir`` (IR only, shown as grey) and ``vis`` (visible only)."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.registry import register_fusion_model


class IROnly(nn.Module):
    """Returns the IR image; the harness does not recolour it (no visible information leaks in)."""

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return ir


class VisOnly(nn.Module):
    """Returns the visible RGB image unchanged."""

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return vis


@register_fusion_model("ir", vis_input="y", output="y", recolor=False, trainable=False,
                       description="IR image only (reference row)")
def ir() -> nn.Module:
    return IROnly()


@register_fusion_model("vis", vis_input="rgb", output="rgb", trainable=False,
                       description="visible image only (reference row)")
def vis() -> nn.Module:
    return VisOnly()
