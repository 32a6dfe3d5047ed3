"""BT.601 colour conversions on [0,1] float tensors, the convention of the fusion literature.

``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cr = 0.713 (R - Y) + 0.5``, ``Cb = 0.564 (B - Y) + 0.5`` and the
inverse ``R = Y + 1.403 (Cr - .5)``, ``G = Y - 0.714 (Cr - .5) - 0.344 (Cb - .5)``, ``B = Y + 1.773 (Cb - .5)``
(SeAFusion, IGNet, TarDAL-style training code). All functions are differentiable, so joint training
recolours inside the autograd graph.
"""

from __future__ import annotations

import torch


def _check_rgb(rgb: torch.Tensor) -> None:
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an RGB tensor (N,3,H,W), got shape {tuple(rgb.shape)}")


def rgb_to_ycbcr(rgb: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,3,H,W) with channels (Y, Cb, Cr)."""
    _check_rgb(rgb)
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    out = torch.cat([y, cb, cr], dim=1)
    return out.clamp(0.0, 1.0) if clamp else out


def ycbcr_to_rgb(ycbcr: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """(N,3,H,W) (Y, Cb, Cr) -> RGB, clamped to [0,1] unless ``clamp=False``."""
    if ycbcr.ndim != 4 or ycbcr.shape[1] != 3:
        raise ValueError(f"expected a YCbCr tensor (N,3,H,W), got shape {tuple(ycbcr.shape)}")
    y, cb, cr = ycbcr[:, 0:1], ycbcr[:, 1:2] - 0.5, ycbcr[:, 2:3] - 0.5
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    out = torch.cat([r, g, b], dim=1)
    return out.clamp(0.0, 1.0) if clamp else out


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB -> (N,1,H,W) BT.601 luma."""
    _check_rgb(rgb)
    return 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]


def recolor(fused_y: torch.Tensor, vis_rgb: torch.Tensor) -> torch.Tensor:
    """Give a fused luminance ``(N,1,H,W)`` the chroma of the visible image ``(N,3,H,W)``; -> RGB in [0,1]."""
    if fused_y.ndim != 4 or fused_y.shape[1] != 1:
        raise ValueError(f"expected a fused luminance (N,1,H,W), got shape {tuple(fused_y.shape)}")
    _check_rgb(vis_rgb)
    if fused_y.shape[0] != vis_rgb.shape[0] or fused_y.shape[-2:] != vis_rgb.shape[-2:]:
        raise ValueError(
            f"fused luminance {tuple(fused_y.shape)} and visible {tuple(vis_rgb.shape)} differ in batch or size"
        )
    ycbcr = rgb_to_ycbcr(vis_rgb)
    return ycbcr_to_rgb(torch.cat([fused_y, ycbcr[:, 1:]], dim=1))
