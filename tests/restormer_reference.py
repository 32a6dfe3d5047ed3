"""Restormer layers as the official code of CDDFuse, EMMA, SMFNet and FILM writes them, for float64 tests of
the ports' shared layers (``fusion_models.layers``), which compute the same arithmetic another way."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def official_channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
                               heads: int) -> torch.Tensor:
    """``softmax(normalize(q) normalize(k)^T * scale) @ v`` per head, q and k normalised over the pixels.

    Args:
        q, k, v: (N,C,H,W). scale: (heads,1,1). heads: C / heads channels each.

    Returns:
        (N,C,H,W).
    """
    b, c, h, w = q.shape

    def split(t):
        return t.reshape(b, heads, c // heads, h * w)

    attn = (F.normalize(split(q), dim=-1) @ F.normalize(split(k), dim=-1).transpose(-2, -1)) * scale
    return (attn.softmax(dim=-1) @ split(v)).reshape(b, c, h, w)
