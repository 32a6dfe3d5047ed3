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


def gelu_fresh(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU of a fresh temporary (in place when no autograd graph is recorded)."""
    return torch.ops.aten.gelu_(x) if overwrite_ok() else F.gelu(x)


def add_fresh(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y`` for a fresh temporary ``x`` (overwritten when no autograd graph is recorded)."""
    return x.add_(y) if overwrite_ok() else x + y


def channels_last(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in channels-last memory (a convolution with such a weight returns a channels-last map)."""
    return weight.contiguous(memory_format=torch.channels_last)


class DerivedWeight:
    """Caches a tensor computed from parameters while no autograd graph is recorded.

    Recomputed when any source parameter changes (in-place updates bump its version counter; loading
    or moving the module replaces its storage); computed afresh, differentiably, under autograd.
    """

    def __init__(self):
        self._key = None
        self._value = None

    def get(self, compute, *params: torch.Tensor) -> torch.Tensor:
        if not overwrite_ok():
            return compute()
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        if key != self._key:
            self._value, self._key = compute(), key
        return self._value


# ----------------------------------------------------------------------------- Restormer pieces
# One copy of the layers that CDDFuse, EMMA, SMFNet and FILM share (Restormer, Zamir et al. CVPR 2022, as
# their official code writes it). Parameter names are the official ones, so every port's checkpoint
# layout is unchanged. Attention and feed-forward layers take ``(x, residual)`` and return
# ``residual + f(x)``: the residual is added inside the last matrix product or in place.


class LayerNormParams(nn.Module):
    """The affine parameters of a layer norm under the official names ``body.weight`` / ``body.bias``."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelLayerNorm(nn.Module):
    """Layer norm over the C channels of each pixel (official ``LayerNorm(dim, 'WithBias')``).

    ``(x - mean) / sqrt(var + 1e-5) * weight + bias`` with the biased variance, by ``F.layer_norm`` on the
    pixel-major view ``(N,H,W,C)`` (free for channels-last maps). The result is a channels-last-strided
    (N,C,H,W) view, as the official code's is, so the next convolution runs a channels-last kernel.
    Measured against the official code's two passes (mean, then variance of the centred values): as
    accurate on FILM's features (its raw output 5.7e-5 / 7.33e-4 from the official one on 00016N / 00091D,
    against 6.1e-5 / 7.35e-4 with two passes) and about 4x faster on a 64-channel 640x480 map.

    Args:
        dim: channels C. Shapes: (N,C,H,W) -> (N,C,H,W).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.body = LayerNormParams(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.body.weight, self.body.bias, eps=1e-5)
        return y.permute(0, 3, 1, 2)


def _pair_then_v(dim: int, heads: int) -> torch.Tensor:
    """Output-channel order of a q/k/v projection: q and k head by head (:func:`head_pair_order`), then v."""
    return torch.tensor(head_pair_order(dim, heads) + list(range(2 * dim, 3 * dim)))


class MDTA(nn.Module):
    """Restormer multi-Dconv-head transposed attention (official ``Attention``): 1x1 then depth-wise 3x3
    q/k/v (no bias), attention across channels with a learned ``temperature`` per head, 1x1 projection.

    The q/k channels are reordered head by head, so one Gram block per head summed over the pixels in
    blocks (:func:`paired_attention_matrix`: same arithmetic as the official ``F.normalize`` and matmul,
    float32 error independent of the CPU's BLAS kernels) gives all norms and products; attention and
    projection are then one (C, C) matrix applied to v, the residual added by the same call.

    Args:
        dim: channels C; num_heads: heads of C / num_heads channels each.

    ``forward(x, residual)``: (N,C,H,W) twice -> ``residual + attention(x)``, channels-last.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)
        # A plain attribute, not a buffer: the module holds exactly the official tensors.
        self._order = _pair_then_v(dim, num_heads)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        dim = x.shape[1]
        order = self._order.to(x.device)
        qkv = pointwise_conv(x, self.qkv.weight[order])
        qkv = F.conv2d(qkv, self.qkv_dwconv.weight[order], padding=1, groups=3 * dim)
        matrix = paired_attention_matrix(qkv[:, :2 * dim], self.temperature, self.num_heads,
                                         self.project_out.weight[:, :, 0, 0])
        return apply_channel_matrix(qkv[:, 2 * dim:], matrix, residual)


class DenseQKVAttention(nn.Module):
    """Transposed attention whose q/k/v come from a 1x1 and then a FULL 3x3 convolution 3C -> 3C (no bias,
    zero padding, not depth-wise), a learned ``scale`` per head and a 1x1 projection (official
    ``AttentionBase`` of CDDFuse, EMMA and SMFNet).

    ``qkv2(qkv1(x))`` is computed as one 3x3 convolution with the composed weights, for q and k
    (C -> 2C; a third of the official multiply-adds); v, attention and projection are linear in v, so
    they are one per-image 3x3 convolution C -> C whose weights are the attention-and-projection matrix
    times the composed v weights. Same arithmetic as the official layers up to float rounding.

    ``forward(x, residual)``: (N,C,H,W) twice -> ``residual + attention(x)``.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)
        self._order = _pair_then_v(dim, num_heads)
        self._composed = DerivedWeight()

    def _compose(self) -> torch.Tensor:
        """(3C, C, 3, 3) weights of qkv2 o qkv1, q/k rows in head-pair order; composed in float64."""
        w2, w1 = self.qkv2.weight[self._order.to(self.qkv2.weight.device)], self.qkv1.weight[:, :, 0, 0]
        return torch.einsum("omhw,mi->oihw", w2.double(), w1.double()).to(w2.dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        dim = x.shape[1]
        w = self._composed.get(self._compose, self.qkv1.weight, self.qkv2.weight)
        qk = F.conv2d(x, channels_last(w[:2 * dim]), padding=1)
        weights = paired_attention_matrix(qk, self.scale, self.num_heads, self.proj.weight[:, :, 0, 0])
        del qk
        w_out = torch.einsum("boc,cihw->boihw", weights, w[2 * dim:])
        if x.shape[0] == 1:
            out = F.conv2d(x, channels_last(w_out[0]), padding=1)
        else:
            out = torch.cat([F.conv2d(x[i:i + 1], channels_last(w_out[i]), padding=1) for i in range(x.shape[0])])
        return add_fresh(out, residual)


class GatedConvFFN(nn.Module):
    """Gated feed-forward: 1x1 to 2*hidden, grouped 3x3, ``GELU(first half) * second half``, 1x1 back; no
    biases (Restormer's ``FeedForward``, CDDFuse's and EMMA's ``Mlp``).

    Args:
        dim: input and output channels.
        hidden: hidden channels (the 3x3 convolution sees 2*hidden).
        groups: groups of the 3x3 convolution: 2*hidden (depth-wise, Restormer's ``FeedForward``)
            or hidden (2 channels per group, the official ``Mlp``).
        padding_mode: of the 3x3 convolution (``"zeros"``; EMMA's ``Mlp`` uses ``"reflect"``).

    ``forward(x, residual)``: (N,dim,H,W) twice -> ``residual + FFN(x)``.
    """

    def __init__(self, dim: int, hidden: int, groups: int, padding_mode: str = "zeros"):
        super().__init__()
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=groups, bias=False,
                                padding_mode=padding_mode)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(pointwise_conv(x, self.project_in.weight)).chunk(2, dim=1)
        gated = gelu_fresh(gate).mul(value)
        del gate, value
        return add_fresh(pointwise_conv(gated, self.project_out.weight), residual)


class PreNormBlock(nn.Module):
    """Pre-norm residual pair: ``x = attn(norm1(x), x)``, then ``ffn(norm2(x), x)``; shape preserved.

    Args:
        dim: channels C of both layer norms.
        attn, ffn: layers called as ``layer(x, residual)`` (returning ``residual + f(x)``).
        ffn_name: attribute (checkpoint) name of ``ffn``: ``"ffn"`` in Restormer's ``TransformerBlock``,
            ``"mlp"`` in CDDFuse's ``BaseFeatureExtraction``, ``"ffn_leff"`` in SMFNet.
    """

    def __init__(self, dim: int, attn: nn.Module, ffn: nn.Module, ffn_name: str = "ffn"):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = attn
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn_name = ffn_name
        self.add_module(ffn_name, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x), x)
        return getattr(self, self.ffn_name)(self.norm2(x), x)


def restormer_block(dim: int, num_heads: int = 8, expansion: int = 2) -> PreNormBlock:
    """Restormer's ``TransformerBlock``: pre-norm :class:`MDTA` and a depth-wise gated feed-forward of
    ``expansion`` (CDDFuse 2, FILM 4). (N,dim,H,W) -> (N,dim,H,W)."""
    hidden = dim * expansion
    return PreNormBlock(dim, MDTA(dim, num_heads), GatedConvFFN(dim, hidden, groups=2 * hidden))


def base_feature_block(dim: int, num_heads: int = 8, padding_mode: str = "zeros") -> PreNormBlock:
    """CDDFuse's ``BaseFeatureExtraction`` (EMMA: ``GlobalFeatureExtraction``): pre-norm
    :class:`DenseQKVAttention` and a gated feed-forward of factor 1 with 2 channels per group, named ``mlp``.
    ``padding_mode`` is the feed-forward's (EMMA: ``"reflect"``). (N,dim,H,W) -> (N,dim,H,W)."""
    return PreNormBlock(dim, DenseQKVAttention(dim, num_heads),
                        GatedConvFFN(dim, dim, groups=dim, padding_mode=padding_mode), ffn_name="mlp")



# ----------------------------------------------------------------------------- invertible detail nodes (CDDFuse, SMFNet)


def channel_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,2C,H,W) -> its first and second C channels (views)."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck without batch norm: 1x1, ReLU6, reflect-padded depth-wise 3x3, ReLU6, 1x1;
    no biases (official ``InvertedResidualBlock``). (N,inp,H,W) -> (N,oup,H,W), H, W >= 2."""

    def __init__(self, inp: int = 32, oup: int = 32, expand: int = 2):
        super().__init__()
        hidden = inp * expand
        self.bottleneckBlock = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.ReLU6(),
            nn.ReflectionPad2d(1), nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False), nn.ReLU6(),
            nn.Conv2d(hidden, oup, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expand, dw, project = self.bottleneckBlock[0], self.bottleneckBlock[3], self.bottleneckBlock[5]
        h = F.hardtanh(pointwise_conv(x, expand.weight), 0.0, 6.0, inplace=overwrite_ok())
        h = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), dw.weight, groups=dw.groups)
        return pointwise_conv(F.hardtanh(h, 0.0, 6.0, inplace=overwrite_ok()), project.weight)


class DetailNode(nn.Module):
    """Invertible affine coupling on two channel halves (official ``DetailNode`` of CDDFuse and SMFNet).

    ``cat(z1, z2)`` is mixed by a biased 1x1 convolution and split again; then ``z2 += phi(z1)`` and
    ``z1 = z1 * exp(rho(z2)) + eta(z2)``. (N, 2*half, H, W) -> (N, 2*half, H, W) = ``cat(z1', z2')``.
    """

    def __init__(self, half: int = 32):
        super().__init__()
        self.theta_phi = InvertedResidual(half, half)
        self.theta_rho = InvertedResidual(half, half)
        self.theta_eta = InvertedResidual(half, half)
        self.shffleconv = nn.Conv2d(half * 2, half * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = channel_halves(pointwise_conv(x, self.shffleconv.weight, self.shffleconv.bias))
        z2 = add_fresh(self.theta_phi(z1), z2)
        scale = self.theta_rho(z2)
        scale = scale.exp_().mul_(z1) if overwrite_ok() else torch.exp(scale) * z1
        z1 = add_fresh(scale, self.theta_eta(z2))
        return torch.cat((z1, z2), dim=1)


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
