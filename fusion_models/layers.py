"""Layers and CPU helpers shared by several ported fusion networks."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


# ----------------------------------------------------------------------------- channels-last CPU helpers


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 convolution, through oneDNN for float32 CPU tensors.

    PyTorch sends a 1x1 convolution of a batch below 16 on one thread to its GEMM (MKL), which ran
    2-3x slower than oneDNN on our AMD CPUs; with more threads it picks oneDNN itself. Same values up
    to float rounding; differentiable either way.

    Args:
        x: (N, Cin, H, W); channels-last input gives channels-last output.
        weight: (Cout, Cin, 1, 1).
        bias: (Cout,) or None.
    """
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], 1)
    return F.conv2d(x, weight, bias)


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C): a free view for channels-last maps (and channel slices of them)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


def rows_to_map(rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H*W, C) contiguous -> (N, C, H, W) channels-last view (inverse of :func:`pixel_rows`)."""
    n, _, c = rows.shape
    return rows.view(n, height, width, c).permute(0, 3, 1, 2)


PIXEL_BLOCK = 4096
"""Pixels per partial sum in :func:`pixel_gram`."""


def pixel_gram(a: torch.Tensor, b: torch.Tensor, heads: int, block: int = PIXEL_BLOCK) -> torch.Tensor:
    """Per-head sums over pixels of ``a_p b_p^T``: the Gram blocks of a channel attention.

    Head ``h`` takes channels ``[h*da, (h+1)*da)`` of ``a`` and ``[h*db, (h+1)*db)`` of ``b``. The
    pixels are summed in blocks of ``block``, then the blocks: with P = H*W large and a tiny output,
    a BLAS kernel may accumulate the whole P-long dot product in one float32 register (9e-4 relative
    error for unit vectors over 640x480 seen with MKL); block partial sums keep it near 1e-6.

    Args:
        a: (N, P, heads*da) with unit channel stride (e.g. :func:`pixel_rows` of a channels-last map).
        b: (N, P, heads*db), same P.
        heads: number of channel groups.
        block: pixels per partial sum.

    Returns:
        (N, heads, da, db).
    """
    n, pixels, ca = a.shape
    da, db = ca // heads, b.shape[2] // heads
    full = pixels - pixels % block
    grams = []
    for i in range(n):
        for h in range(heads):
            ah, bh = a[i, :, h * da:(h + 1) * da], b[i, :, h * db:(h + 1) * db]
            g = ah[full:].transpose(0, 1) @ bh[full:]
            if full:
                ab = ah[:full].unflatten(0, (-1, block))
                bb = bh[:full].unflatten(0, (-1, block))
                g = g + torch.bmm(ab.transpose(1, 2), bb).sum(dim=0)
            grams.append(g)
    return torch.stack(grams).view(n, heads, da, db)


def head_pair_order(channels: int, heads: int) -> list[int]:
    """Order of q (channels 0..C-1) and k (C..2C-1) putting each head's q then k channels side by side.

    A QKV projection whose output channels are permuted this way gives, per head, one block of 2d
    consecutive channels, so one Gram block (:func:`pixel_gram`) holds that head's |q|^2, |k|^2 and q.k.
    """
    d = channels // heads
    return [part * channels + h * d + i for h in range(heads) for part in range(2) for i in range(d)]


def attention_matrix(qq: torch.Tensor, kk: torch.Tensor, qk: torch.Tensor, scale: torch.Tensor,
                     proj: torch.Tensor | None = None) -> torch.Tensor:
    """Restormer's transposed (channel) attention as one (N, Cout, C) matrix, times the output projection.

    ``softmax(scale * cos(q_i, k_j))`` over the channels j of each head, cosines over all pixels:
    ``cos = q_i.k_j / (max(|q_i|, 1e-12) max(|k_j|, 1e-12))``, i.e. ``F.normalize`` then a product (the
    official form), normalised after the sums here. The heads form a block-diagonal (C, C) matrix.

    Args:
        qq, kk: (N, heads, d) squared norms of the q and k channels.
        qk: (N, heads, d, d) dot products.
        scale: (heads, 1, 1) learned temperature.
        proj: (Cout, C) output projection (a bias-free 1x1 convolution) or None.

    Returns:
        (N, Cout, C) ``M`` with C = heads * d; ``v_rows @ M^T`` applies attention and projection.
    """
    n, heads, d = qq.shape
    # Clamped before the root so an all-zero channel has a finite gradient.
    cos = qk / (qq.clamp_min(1e-24).sqrt().unsqueeze(-1) * kk.clamp_min(1e-24).sqrt().unsqueeze(-2))
    attn = (cos * scale).softmax(dim=-1)
    same_head = torch.eye(heads, dtype=attn.dtype, device=attn.device).view(1, heads, 1, heads, 1)
    mix = (attn.unsqueeze(3) * same_head).reshape(n, heads * d, heads * d)
    return mix if proj is None else proj @ mix


def paired_attention_matrix(qk: torch.Tensor, scale: torch.Tensor, heads: int,
                            proj: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attention_matrix` of a (N, 2C, H, W) map whose channels follow :func:`head_pair_order`."""
    g = pixel_gram(pixel_rows(qk), pixel_rows(qk), heads)  # (N, heads, 2d, 2d)
    d = g.shape[-1] // 2
    qq = g[..., :d, :d].diagonal(dim1=-2, dim2=-1)
    kk = g[..., d:, d:].diagonal(dim1=-2, dim2=-1)
    return attention_matrix(qq, kk, g[..., :d, d:], scale, proj)


def apply_channel_matrix(v: torch.Tensor, matrix: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """``add + matrix @ v`` at every pixel, by one batched BLAS call on pixel rows.

    Args:
        v: (N, C, H, W) channels-last map (or a channel slice of one).
        matrix: (N, Cout, C).
        add: None, a (N, Cout, H, W) channels-last map (e.g. a residual) or a (Cout,) bias.

    Returns:
        (N, Cout, H, W) channels-last.
    """
    h, w = v.shape[-2:]
    rows, mt = pixel_rows(v), matrix.transpose(1, 2)
    if add is None:
        out = torch.bmm(rows, mt)
    else:
        out = torch.baddbmm(pixel_rows(add) if add.ndim == 4 else add, rows, mt)
    return rows_to_map(out, h, w)


def overwrite_ok() -> bool:
    """Whether fresh temporaries may be overwritten in place (no autograd graph is being recorded)."""
    return not torch.is_grad_enabled()


# ----------------------------------------------------------------------------- allocation of large tensors


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_MMAP_MAX_DEFAULT = 65536
# The largest mmap threshold glibc accepts on 64-bit, where its dynamic threshold ends up in a process
# that frees large blocks, and the trim threshold that goes with it (twice that); setting any threshold
# by mallopt switches the dynamic adjustment off.
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_GLIBC_TRIM_THRESHOLD = 2 * _GLIBC_MMAP_THRESHOLD_MAX
_heap_lock = threading.Lock()
_heap_depth = 0


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def release_free_heap() -> None:
    """Give the free pages of the process heap back to the system (glibc ``malloc_trim(0)``); no-op elsewhere.

    Inside :func:`large_tensors_on_heap`, freed maps stay resident for reuse; releasing them between the
    phases of a forward pass keeps the resident size near the live tensors (re-touching released heap
    pages was cheap on our machines, unlike fresh mmap'ed ones).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@contextmanager
def large_tensors_on_heap() -> Iterator[None]:
    """Serve large CPU tensors from the process heap while inside.

    glibc maps every allocation above its mmap threshold (at most 32 MiB) to fresh pages and unmaps
    them on free, so each new 640x480 feature map (80-240 MB) is paid again: a 64-channel addition took
    230 ms with a fresh output against 23 ms from the heap on our machines, and an SMFNet forward pass
    allocates about a thousand such maps (twice the CPU time of the whole pass). Inside this context
    glibc serves them from its heap (``M_MMAP_MAX = 0``, trimming off) and reuses freed maps.

    The settings are process-wide while inside (nesting and threads are counted). On leaving, the free
    heap pages are released (:func:`release_free_heap`) and mmap is allowed again, with the mmap and trim
    thresholds at 32 and 64 MiB, where glibc's own dynamic thresholds end up in a process that frees large
    blocks (setting them switches that adjustment off). No-op outside glibc.
    """
    global _heap_depth
    if _LIBC is None:
        yield
        return
    with _heap_lock:
        if _heap_depth == 0:
            _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            _LIBC.mallopt(_M_MMAP_MAX, 0)
        _heap_depth += 1
    try:
        yield
    finally:
        with _heap_lock:
            _heap_depth -= 1
            if _heap_depth == 0:
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX)
                _LIBC.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT)
                _LIBC.malloc_trim(0)
