"""Classic training-free fusion rules in torch (batched, any device): average, max, Laplacian pyramid,
guided-filter fusion (GFF). Each fuses the IR image with the visible luminance; the harness recolours.

All take ``ir`` and ``vis_y`` as (N,1,H,W) float in [0,1] and return (N,1,H,W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.registry import register_fusion_model

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = _BINOMIAL.to(x)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = torch.zeros(*x.shape[:2], size[0], size[1], dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x
    return _blur(up) * 4.0


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[L_0, ..., L_{levels-1}, G_levels]: band-pass layers, finest first, then the low-pass residual."""
    pyr = []
    cur = x
    for _ in range(levels):
        if min(cur.shape[-2:]) < 6:  # reflect padding of the 5-tap kernel needs >= 3 pixels per side
            break
        nxt = _down(cur)
        pyr.append(cur - _up(nxt, cur.shape[-2:]))
        cur = nxt
    pyr.append(cur)
    return pyr


def reconstruct(pyr: list[torch.Tensor]) -> torch.Tensor:
    cur = pyr[-1]
    for band in reversed(pyr[:-1]):
        cur = band + _up(cur, band.shape[-2:])
    return cur


def _window_sum(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sum over a window of radius r along ``dim`` (clipped at the border), via a cumulative sum: O(1)/pixel."""
    n = x.shape[dim]
    c = torch.cumsum(x, dim=dim)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    c = torch.cat([zero, c], dim=dim)
    idx = torch.arange(n, device=x.device)
    hi, lo = (idx + r + 1).clamp(max=n), (idx - r).clamp(min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def box_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, windows clipped at the border (as the guided-filter papers do)."""
    ones = torch.ones_like(x[:1, :1])
    num = _window_sum(_window_sum(x, r, -2), r, -1)
    den = _window_sum(_window_sum(ones, r, -2), r, -1)
    return num / den


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter (grey guide), (N,1,H,W)."""
    mean_i, mean_p = box_filter(guide, r), box_filter(src, r)
    cov_ip = box_filter(guide * src, r) - mean_i * mean_p
    var_i = box_filter(guide * guide, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, r) * guide + box_filter(b, r)


class AverageFusion(nn.Module):
    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return 0.5 * (ir + vis)


class MaxFusion(nn.Module):
    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return torch.maximum(ir, vis)


class LaplacianFusion(nn.Module):
    """Laplacian-pyramid fusion (Burt & Adelson): band-pass coefficients by max-absolute, low-pass averaged."""

    def __init__(self, levels: int = 4):
        super().__init__()
        self.levels = levels

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        pa, pb = laplacian_pyramid(ir, self.levels), laplacian_pyramid(vis, self.levels)
        fused = [torch.where(a.abs() >= b.abs(), a, b) for a, b in zip(pa[:-1], pb[:-1])]
        fused.append(0.5 * (pa[-1] + pb[-1]))
        return reconstruct(fused).clamp(0, 1)


class GuidedFilterFusion(nn.Module):
    """GFF (Li, Kang & Hu, TIP 2013): two-scale decomposition, saliency weights refined by guided filtering.

    Base = 31x31 mean; detail = image - base. Saliency = Gaussian-smoothed |Laplacian|; the binary
    weight maps (argmax of saliency) are refined with the guided filter using the source as guide,
    (r1, eps1) = (45, 0.3) for the base and (r2, eps2) = (7, 1e-6) for the detail layer, then normalised.
    """

    def __init__(self, r1: int = 45, eps1: float = 0.3, r2: int = 7, eps2: float = 1e-6, base_r: int = 15):
        super().__init__()
        self.r1, self.eps1, self.r2, self.eps2, self.base_r = r1, eps1, r2, eps2, base_r

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=ir.dtype, device=ir.device)
        srcs = [ir, vis]
        sal = []
        for s in srcs:
            h = F.conv2d(F.pad(s, (1, 1, 1, 1), mode="replicate"), lap.view(1, 1, 3, 3)).abs()
            sal.append(_blur(_blur(h)))
        p_ir = (sal[0] >= sal[1]).to(ir.dtype)
        weights = [p_ir, 1.0 - p_ir]
        r1, r2 = min(self.r1, min(ir.shape[-2:]) // 2), min(self.r2, min(ir.shape[-2:]) // 2)
        wb = [guided_filter(s, w, r1, self.eps1) for s, w in zip(srcs, weights)]
        wd = [guided_filter(s, w, r2, self.eps2) for s, w in zip(srcs, weights)]
        wb_sum, wd_sum = (wb[0] + wb[1]).clamp_min(1e-6), (wd[0] + wd[1]).clamp_min(1e-6)
        base = [box_filter(s, self.base_r) for s in srcs]
        detail = [s - b for s, b in zip(srcs, base)]
        fused = (wb[0] * base[0] + wb[1] * base[1]) / wb_sum + (wd[0] * detail[0] + wd[1] * detail[1]) / wd_sum
        return fused.clamp(0, 1)


_META = dict(vis_input="y", output="y", trainable=False, licence="MIT (taskeval)")


@register_fusion_model("average", description="mean of IR and visible luminance", **_META)
def average() -> nn.Module:
    return AverageFusion()


@register_fusion_model("max", description="pixel-wise maximum of IR and visible luminance", **_META)
def max_rule() -> nn.Module:
    return MaxFusion()


@register_fusion_model("laplacian", paper="Burt & Adelson, IEEE Trans. Commun. 1983",
                       description="Laplacian pyramid, max-abs detail, mean base", **_META)
def laplacian(levels: int = 4) -> nn.Module:
    return LaplacianFusion(levels)


@register_fusion_model("gff", paper="Li, Kang & Hu, Image fusion with guided filtering, IEEE TIP 2013",
                       description="guided-filter fusion (two-scale, saliency weights)", **_META)
def gff(r1: int = 45, eps1: float = 0.3, r2: int = 7, eps2: float = 1e-6) -> nn.Module:
    return GuidedFilterFusion(r1, eps1, r2, eps2)
