"""SMFNet (IEEE TMM 2025): graph reasoning plus base/detail decomposition for IR-visible fusion.

Port of Abraham-Einstein/SMFNet @ 5097711 (``net_final.py``, ``utils/graph.py``, ``utils/ConvGRU.py``,
``test.py``). Five sub-networks, each checkpointed separately by the official code:

* ``DIDF_Encoder`` (shared by both modalities): a 3x3 patch embedding and one Restormer block give
  the shallow feature; a two-stage Restormer/attention body gives the base feature and a
  gradient residual dense block followed by cross attention and an invertible node gives the
  detail feature.
* ``GraphModel``: dilated-convolution nodes of the IR and visible shallow features exchange
  messages (gated edges, a ConvGRU update) and are merged into one graph feature.
* ``BaseFuseLayer`` / ``DetailFuseLayer``: fuse the summed base / detail features.
* ``DIDF_Decoder``: one Restormer block and three convolutions, sigmoid output.

Parameter names follow the official state dicts, so the module's keys are
``<checkpoint key>.<official key without "module.">``. These official parameters never take part in
the forward pass and are kept only so the official file loads strictly:
``DIDF_Encoder.baseFeature.{reduce_channel, norm, conv_after_body}``, ``BaseFuseLayer.reduce_channel``,
``GraphModel.graph.graph.C_ca`` (leader-node attention, not run), ``GraphModel.graph.C_cat.{2..5}``
(one graph stage runs, using ``C_cat.0`` and ``C_cat.1``) and ``GraphModel.graph.C_cls``.

How the port computes it (same arithmetic as the official code up to float rounding; the fidelity
tests hold the raw output within 1e-4 of the official one). The official forward costs 3.1 TFLOP
per 640x480 pair and allocates about a thousand feature maps of 80-240 MB; here:

* Channels-last throughout, so depth-wise convolutions and the per-pixel layer norms are fast and
  (B, H*W, C) pixel rows are free views.
* The Restormer pieces (layer norm, MDTA, dense-QKV attention, detail node) are the ones SMFNet shares
  with CDDFuse, EMMA and FILM, in :mod:`fusion_models.layers`.
* Channel attention from per-head Gram blocks summed over the pixels in blocks
  (:func:`fusion_models.layers.pixel_gram`), normalised afterwards; the heads' softmax weights form a
  block-diagonal (C, C) matrix that is multiplied into the output projection, so attention and
  projection are one matrix product, with the residual added by the same call.
* The dense-QKV attention's 1x1 and 3x3 convolutions (no bias, zero padding) are one composed 3x3
  convolution 64 -> 128 for q, k (a third of the official 1.6 TFLOP), and its v, attention and
  projection one data-dependent 3x3 convolution 64 -> 64.
* Eval-mode BatchNorm folded into the preceding convolution; graph edge weights from per-node
  projections (``w . (a - b) = w . a - w . b``) instead of difference maps; activations and sums in
  place and concatenations avoided when no autograd graph is recorded.
* Inference forwards serve their large tensors from the heap
  (:func:`fusion_models.layers.large_tensors_on_heap`): fresh pages for every map cost as much as
  the arithmetic on our machines.

The decoder does not take the visible image it ignores officially.
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.layers import (
    MDTA,
    DenseQKVAttention,
    DetailNode,
    InvertedResidual,
    PreNormBlock,
    add_fresh,
    apply_channel_matrix,
    attention_matrix,
    channel_halves,
    gelu_fresh,
    large_tensors_on_heap,
    overwrite_ok,
    pixel_gram,
    pixel_rows,
    pointwise_conv,
    release_free_heap,
    rows_to_map,
)
from fusion_models.official_io import as_8bit, check_official_pair, official_inference, opencv_rounded_grey
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model
from fusion_models.weights import flatten_parallel_checkpoint

# Checkpoint top-level keys, in the order of the official pipeline.
CHECKPOINT_KEYS = ("DIDF_Encoder", "DIDF_Decoder", "BaseFuseLayer", "DetailFuseLayer", "GraphModel")


# ----------------------------------------------------------------------------- functional helpers


def _leaky(x: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu(x, slope, inplace=overwrite_ok())


# ----------------------------------------------------------------------------- Restormer parts


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: GELU(1x1) -> GELU(depth-wise 3x3) -> GELU(1x1), plus the input.

    ``forward(x, residual)`` returns ``residual + LeFF(x)``.
    """

    def __init__(self, dim: int = 64, hidden_dim: int = 64):
        super().__init__()
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim), nn.GELU()
        )
        self.linear2 = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1), nn.GELU())

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        conv1, dw, conv2 = self.linear1[0], self.dwconv[0], self.linear2[0]
        h = gelu_fresh(pointwise_conv(x, conv1.weight, conv1.bias))
        h = gelu_fresh(F.conv2d(h, dw.weight, dw.bias, padding=1, groups=dw.groups))
        h = gelu_fresh(pointwise_conv(h, conv2.weight, conv2.bias))
        return add_fresh(add_fresh(h, x), residual)


class PointwiseFeedForward(nn.Module):
    """1x1 expansion, GELU, 1x1 projection (no bias; official ``FeedForward``).

    ``forward(x, residual)`` returns ``residual + FFN(x)``.
    """

    def __init__(self, dim: int = 64, factor: int = 2):
        super().__init__()
        self.project_in = nn.Conv2d(dim, dim * factor, 1, bias=False)
        self.project_out = nn.Conv2d(dim * factor, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = gelu_fresh(pointwise_conv(x, self.project_in.weight))
        return add_fresh(pointwise_conv(h, self.project_out.weight), residual)


def restormer_block(dim: int = 64, num_heads: int = 8) -> PreNormBlock:
    """Pre-norm MDTA + LeFF block (official ``TransformerBlock``)."""
    return PreNormBlock(dim, MDTA(dim, num_heads), LeFF(dim, 64), ffn_name="ffn_leff")


class BaseFuseBlock(PreNormBlock):
    """The base-feature fusion layer: a :func:`restormer_block` whose LeFF is named ``mlp``.

    ``reduce_channel`` is an unused official parameter.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__(dim, MDTA(dim, num_heads), LeFF(dim, 64), ffn_name="mlp")
        self.reduce_channel = nn.Conv2d(dim * 2, dim, 1, bias=False)


def dense_attention_block(dim: int = 64, num_heads: int = 8) -> PreNormBlock:
    """Pre-norm DenseQKVAttention + PointwiseFeedForward block (official ``TransformerBase``)."""
    return PreNormBlock(dim, DenseQKVAttention(dim, num_heads), PointwiseFeedForward(dim, 2), ffn_name="mlp")


def _three_conv(dim: int) -> nn.Sequential:
    """3x3 (dim -> dim/4), 1x1, 3x3 (-> dim) with LeakyReLU(0.2) between; biased."""
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(dim // 4, dim // 4, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(dim // 4, dim, 3, padding=1),
    )


class ResidualGroup(nn.Module):
    """``depth`` x (:func:`restormer_block`, :func:`dense_attention_block`), a three-convolution tail and a skip."""

    def __init__(self, dim: int = 64, num_heads: int = 8, depth: int = 2):
        super().__init__()
        self.residual_group = nn.ModuleList(
            nn.Sequential(restormer_block(dim, num_heads), dense_attention_block(dim, num_heads))
            for _ in range(depth)
        )
        self.conv = _three_conv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for blk in self.residual_group:
            y = blk(y)
        conv1, conv2, conv3 = self.conv[0], self.conv[2], self.conv[4]
        y = _leaky(conv1(y), 0.2)
        y = _leaky(pointwise_conv(y, conv2.weight, conv2.bias), 0.2)
        return add_fresh(conv3(y), x)


class BaseBranch(nn.Module):
    """Base (global) feature branch of the encoder: a 3x3 convolution and two residual groups.

    ``reduce_channel``, ``norm`` and ``conv_after_body`` are unused official parameters.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8, num_groups: int = 2, depth: int = 2):
        super().__init__()
        self.conv_first = nn.Conv2d(dim, dim, 3, padding=1)
        self.reduce_channel = nn.Conv2d(dim * 2, dim, 1, bias=False)
        self.layers = nn.ModuleList(ResidualGroup(dim, num_heads, depth) for _ in range(num_groups))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = _three_conv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x)
        for layer in self.layers:
            x = layer(x)
        return x


# ----------------------------------------------------------------------------- detail branch


class CrossAttention(nn.Module):
    """Transposed cross attention: queries from a guide feature, keys/values from another (biased)."""

    def __init__(self, dim: int = 32, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kv = nn.Conv2d(dim, dim * 2, 1)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.project_out = nn.Conv2d(dim, dim, 1)

    def forward(self, guide: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        dim = guide.shape[1]
        q = self.q_dwconv(pointwise_conv(guide, self.q.weight, self.q.bias))
        kv = self.kv_dwconv(pointwise_conv(feat, self.kv.weight, self.kv.bias))
        q_rows, k_rows = pixel_rows(q), pixel_rows(kv[:, :dim])
        heads = self.num_heads
        qq = pixel_gram(q_rows, q_rows, heads).diagonal(dim1=-2, dim2=-1)
        kk = pixel_gram(k_rows, k_rows, heads).diagonal(dim1=-2, dim2=-1)
        qk = pixel_gram(q_rows, k_rows, heads)
        weights = attention_matrix(qq, kk, qk, self.temperature, self.project_out.weight[:, :, 0, 0])
        return apply_channel_matrix(kv[:, dim:], weights, self.project_out.bias)


class EncoderDetailBranch(nn.Module):
    """Cross attention between the two channel halves, then one :class:`DetailNode`."""

    def __init__(self, half: int = 32, num_heads: int = 8):
        super().__init__()
        self.TCA = CrossAttention(half, num_heads)
        self.layer = DetailNode(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = channel_halves(x)
        return self.layer(torch.cat((self.TCA(z2, z1), self.TCA(z1, z2)), dim=1))


# ----------------------------------------------------------------------------- gradient dense block


class ConvLeaky(nn.Module):
    """3x3 convolution (biased) followed by LeakyReLU(0.2); the convolution lives in ``.conv``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _leaky(self.conv(x), 0.2)


class Conv1x1(nn.Module):
    """Biased 1x1 convolution stored in ``.conv`` (official parameter layout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.conv.weight, self.conv.bias)


class DenseBlock(nn.Module):
    """Two densely connected ConvLeaky layers: output has 3x the input channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLeaky(channels, channels)
        self.conv2 = ConvLeaky(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x, self.conv1(x)), dim=1)
        return torch.cat((x, self.conv2(x)), dim=1)


class SobelMagnitude(nn.Module):
    """|x-gradient| + |y-gradient| per channel with depth-wise 3x3 kernels.

    The kernels are parameters (Sobel at initialisation, trainable and checkpointed officially).
    """

    def __init__(self, channels: int):
        super().__init__()
        sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.convx = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.convy = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.convx.weight.copy_(sobel.expand_as(self.convx.weight))
            self.convy.weight.copy_(sobel.t().expand_as(self.convy.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx, gy = self.convx(x), self.convy(x)
        if overwrite_ok():
            return gx.abs_().add_(gy.abs_())
        return gx.abs() + gy.abs()


class GradientDenseBlock(nn.Module):
    """Dense branch plus Sobel-gradient branch, summed, LeakyReLU(0.1) (official ``RGBD``)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.dense = DenseBlock(channels)
        self.convdown = Conv1x1(3 * channels, channels)
        self.sobelconv = SobelMagnitude(channels)
        self.convup = Conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _leaky(add_fresh(self.convdown(self.dense(x)), self.convup(self.sobelconv(x))), 0.1)


class GRDB(nn.Module):
    """ConvLeaky followed by a :class:`GradientDenseBlock` (official ``GRDB_module``)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.conv = ConvLeaky(channels, channels)
        self.GRDB = GradientDenseBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.GRDB(self.conv(x))


class PatchEmbed(nn.Module):
    """3x3 convolution (no bias) lifting the one-channel image to ``dim`` channels."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Encoder(nn.Module):
    """Shared encoder of both modalities (official ``Restormer_Encoder``).

    Forward: (B, 1, H, W) in [0,1] -> (base, detail, shallow), each (B, 64, H, W).
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.encoder_level1 = nn.Sequential(restormer_block(dim, num_heads))
        self.baseFeature = BaseBranch(dim, num_heads)
        self.detailFeature = EncoderDetailBranch(dim // 2, num_heads)
        self.GRDB_module = GRDB(dim)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shallow = self.encoder_level1(self.patch_embed(img))
        detail = self.detailFeature(self.GRDB_module(shallow))
        base = self.baseFeature(shallow)
        return base, detail, shallow


class Decoder(nn.Module):
    """One Restormer block and three 3x3 convolutions (LeakyReLU 0.01), sigmoid.

    Forward: (B, 64, H, W) -> (B, 1, H, W) in (0, 1). The official decoder also takes the visible
    image but discards it, so this one does not.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.encoder_level1 = nn.Sequential(restormer_block(dim, num_heads))
        self.output = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.LeakyReLU(),
            nn.Conv2d(dim // 2, dim // 4, 3, padding=1, bias=False), nn.LeakyReLU(),
            nn.Conv2d(dim // 4, 1, 3, padding=1, bias=False),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.encoder_level1(feature)
        x = _leaky(self.output[0](x), 0.01)
        x = _leaky(self.output[2](x), 0.01)
        return torch.sigmoid(self.output[4](x))


# ----------------------------------------------------------------------------- detail fusion


class InvertibleAffineBlock(nn.Module):
    """Affine coupling block run in its inverse direction, as the official fusion layer does.

    ``(x1, x2)`` are mixed by a 1x1 convolution and split; then
    ``y2 = (x2 - eta(x1)) / e(rho(x1))`` and ``y1 = (x1 - phi(y2)) / e(psi(y2))`` with
    ``e(s) = exp(2 * clamp * (sigmoid(s) - 0.5))``.
    """

    def __init__(self, half: int = 32, clamp: float = 2.0):
        super().__init__()
        self.clamp = clamp
        self.r = InvertedResidual(half, half)
        self.y = InvertedResidual(half, half)
        self.f = InvertedResidual(half, half)
        self.p = InvertedResidual(half, half)
        self.shffleconv = nn.Conv2d(half * 2, half * 2, 1)

    def _scale(self, s: torch.Tensor) -> torch.Tensor:
        if overwrite_ok():
            return s.sigmoid_().sub_(0.5).mul_(self.clamp * 2).exp_()
        return torch.exp(self.clamp * 2 * (torch.sigmoid(s) - 0.5))

    def _solve(self, shift: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``(target - shift) / scale`` for fresh temporaries ``shift`` and ``scale``."""
        if overwrite_ok():
            return shift.neg_().add_(target).div_(scale)
        return (target - shift) / scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2*half, H, W) = cat(x1, x2) -> cat(y1, y2)."""
        x1, x2 = channel_halves(pointwise_conv(x, self.shffleconv.weight, self.shffleconv.bias))
        y2 = self._solve(self.y(x1), x2, self._scale(self.r(x1)))
        y1 = self._solve(self.f(y2), x1, self._scale(self.p(y2)))
        return torch.cat((y1, y2), dim=1)


class DetailFuse(nn.Module):
    """Detail fusion layer: GRDB, then two invertible affine blocks on the channel halves."""

    def __init__(self, dim: int = 64, num_layers: int = 2):
        super().__init__()
        self.net = nn.Sequential(*(InvertibleAffineBlock(dim // 2) for _ in range(num_layers)))
        self.GRDB = GRDB(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.GRDB(x)
        for block in self.net:
            x = block(x)
        return x


# ----------------------------------------------------------------------------- graph reasoning


def _conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def _run_conv_bn_relu(block: nn.Sequential, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A :func:`_conv_bn_relu` block; in eval mode the BatchNorm is folded into the convolution.

    ``out``: a channels-last map (e.g. a channel slice of a larger buffer) the result is written to
    (eval mode without autograd only).
    """
    conv, bn = block[0], block[1]
    if bn.training:
        return block(x)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    y = F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale,
                 padding=conv.padding, dilation=conv.dilation)
    if out is not None:
        return torch.clamp_min(y, 0.0, out=out)
    return F.relu(y, inplace=overwrite_ok())


_BLOCK_PIXELS = 16384
"""Pixels per block of the graph update without autograd (its temporaries: a few MB, cache-sized)."""


def _map_like(x: torch.Tensor, channels: int) -> torch.Tensor:
    """An uninitialised channels-last (B, channels, H, W) map on ``x``'s device and dtype."""
    b, _, h, w = x.shape
    return torch.empty((b, channels, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


class PyramidNodes(nn.Module):
    """Graph nodes: one dilated 3x3 conv-BN-ReLU per dilation (official ``PPM``)."""

    def __init__(self, channels: int = 64, dilations: tuple[int, ...] = (4, 8, 16)):
        super().__init__()
        self.convs = nn.ModuleList(_conv_bn_relu(channels, channels, d) for d in dilations)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_run_conv_bn_relu(conv, x) for conv in self.convs]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell with 1x1 gates; ``h' = (1 - u) h + u tanh(W [m, r h])``."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.ConvGates = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.Conv_ct = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, msg: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if overwrite_ok():
            return self.packed(torch.cat((msg, hidden), dim=1), hidden)
        gates = pointwise_conv(torch.cat((msg, hidden), dim=1), self.ConvGates.weight, self.ConvGates.bias)
        reset, update = torch.sigmoid(gates).chunk(2, dim=1)
        cand = torch.tanh(pointwise_conv(torch.cat((msg, reset * hidden), dim=1),
                                         self.Conv_ct.weight, self.Conv_ct.bias))
        return (1 - update) * hidden + update * cand

    def packed(self, both: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """``forward(msg, hidden)`` from ``both = cat(msg, hidden)``, channels-last, which it overwrites
        with ``cat(msg, reset * hidden)`` and frees as soon as it can (pass it as a temporary; no autograd)."""
        c = hidden.shape[1]
        gates = pointwise_conv(both, self.ConvGates.weight, self.ConvGates.bias).sigmoid_()
        reset, update = gates[:, :c], gates[:, c:]
        torch.mul(reset, hidden, out=both[:, c:])
        cand = pointwise_conv(both, self.Conv_ct.weight, self.Conv_ct.bias).tanh_().mul_(update)
        del both, reset
        return torch.rsub(update, 1).mul_(hidden).add_(cand)


class NodeUpdate(nn.Module):
    """One round of message passing over fully connected nodes (official ``GraphModel`` of graph.py).

    Every node receives from each other node its features gated by a sigmoid edge weight computed
    from the feature difference, sums them, and updates its state with a ConvGRU;
    ``node' = gamma * GRU(msg, node) + node``. All nodes read the states of the previous round.
    """

    def __init__(self, num_nodes: int = 3, channels: int = 64):
        super().__init__()
        self.num_nodes = num_nodes
        n_edges = num_nodes - 1
        self.C_wgt = nn.Conv2d(channels * n_edges, n_edges, 1, groups=n_edges, bias=False)
        self.ConvGRU = ConvGRUCell(channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, nodes: list[torch.Tensor], out: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: ``nodes``, each (B, C, H, W); ``out``: a channels-last (B, num_nodes * C, H, W) map the new
        nodes are written to, side by side (without autograd only). Returns the new nodes.

        Without autograd the update, which is per pixel, runs on blocks of image rows written into the
        new maps: its 128-channel temporaries then stay small and in cache.
        """
        if not overwrite_ok():
            return [self._update(nodes, idx) for idx in range(self.num_nodes)]
        c, (h, w) = nodes[0].shape[1], nodes[0].shape[-2:]
        new_nodes = [_map_like(nodes[0], c) if out is None else out[:, i * c:(i + 1) * c]
                     for i in range(self.num_nodes)]
        rows = max(1, _BLOCK_PIXELS // w)
        for top in range(0, h, rows):
            block = [node[:, :, top:top + rows] for node in nodes]
            for idx, new in enumerate(new_nodes):
                self._update(block, idx, out=new[:, :, top:top + rows])
        return new_nodes

    def _update(self, nodes: list[torch.Tensor], idx: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Node ``idx`` after this round; written to ``out`` without autograd."""
        n_edges, node = self.num_nodes - 1, nodes[idx]
        others = [j for j in range(self.num_nodes) if j != idx]
        # Edge k of the node has the weight w_k . (node - neighbour_k) = w_k . node - w_k . neighbour_k:
        # per-node projections instead of difference maps.
        proj = [pixel_rows(pointwise_conv(nodes[j], self.C_wgt.weight)) for j in [idx, *others]]
        logits = torch.stack([proj[0][..., k] - proj[k + 1][..., k] for k in range(n_edges)], dim=-1)
        gate = torch.sigmoid(logits).unsqueeze(-2)  # (B, P, 1, n_edges)
        # The official code tiles the edge weights over the concatenated neighbours, so channel k of
        # every neighbour is gated by edge k % n_edges (not by its own edge): the sum of the neighbours
        # times the tiled gates.
        total = nodes[others[0]]
        for j in others[1:]:
            total = total + nodes[j]
        if not overwrite_ok():
            msg = rows_to_map((pixel_rows(total).unflatten(-1, (-1, n_edges)) * gate).flatten(-2), *node.shape[-2:])
            return self.ConvGRU(msg, node) * self.gamma + node
        new = self.ConvGRU.packed(self._gru_input(total, gate, node), node).mul_(self.gamma)
        return torch.add(new, node, out=out)

    @staticmethod
    def _gru_input(total: torch.Tensor, gate: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """``cat(msg, node)`` built in place: ``msg`` = neighbour sum ``total`` times the tiled gates."""
        c, n_edges = node.shape[1], gate.shape[-1]
        both = _map_like(node, 2 * c)
        torch.mul(pixel_rows(total).unflatten(-1, (-1, n_edges)), gate,
                  out=pixel_rows(both[:, :c]).unflatten(-1, (-1, n_edges)))
        both[:, c:].copy_(node)
        return both


class GraphReasoning(nn.Module):
    """IR and visible node sets: cross-modal interaction per node, then ``n_iter`` graph updates.

    ``C_ca`` (leader-node attention) is an unused official parameter.
    """

    def __init__(self, channels: int = 64, dilations: tuple[int, ...] = (4, 8, 16), n_iter: int = 2):
        super().__init__()
        self.n_iter = n_iter
        self.ppm_rgb = PyramidNodes(channels, dilations)
        self.ppm_dep = PyramidNodes(channels, dilations)
        self.graph_rgb = NodeUpdate(len(dilations), channels)
        self.graph_dep = NodeUpdate(len(dilations), channels)
        self.C_ca = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(2 * channels, channels // 2, 1, bias=False),
                nn.ReLU(),
                nn.Conv2d(channels // 2, channels, 1, bias=False),
            )
            for _ in range(2)
        )
        self.C_pa = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for _ in range(2))

    def _interact(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``b' = a sigmoid(w0 . (a - b)) + b``, ``a' = b sigmoid(w1 . (b - a)) + a``: one difference map."""
        w = torch.cat((self.C_pa[0].weight, -self.C_pa[1].weight))
        gates = torch.sigmoid(pointwise_conv(a - b, w))
        return torch.addcmul(a, b, gates[:, 1:]), torch.addcmul(b, a, gates[:, :1])

    def nodes(self, feat_a: torch.Tensor, feat_b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The two node sets after their pyramid convolutions and the cross-modal interaction."""
        nodes_a, nodes_b = self.ppm_rgb(feat_a), self.ppm_dep(feat_b)
        for i in range(len(nodes_a)):
            for _ in range(2):
                nodes_a[i], nodes_b[i] = self._interact(nodes_a[i], nodes_b[i])
        return nodes_a, nodes_b

    def propagate(self, update: NodeUpdate, nodes: list[torch.Tensor], out: torch.Tensor | None = None) -> None:
        """``n_iter`` rounds of ``update``, replacing the list's contents (so old states are freed);
        the last round writes to ``out`` when given (see :meth:`NodeUpdate.forward`)."""
        for i in range(self.n_iter):
            nodes[:] = update(nodes, out if i == self.n_iter - 1 else None)

    def forward(self, feat_a: torch.Tensor,
                feat_b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        nodes_a, nodes_b = self.nodes(feat_a, feat_b)
        self.propagate(self.graph_rgb, nodes_a)
        self.propagate(self.graph_dep, nodes_b)
        return nodes_a, nodes_b


class CrossGraph(nn.Module):
    """Graph reasoning and node merging (official ``CGR``); only ``C_cat[0]`` and ``C_cat[1]`` run."""

    def __init__(self, channels: int = 64, dilations: tuple[int, ...] = (4, 8, 16)):
        super().__init__()
        self.graph = GraphReasoning(channels, dilations)
        self.C_cat = nn.ModuleList(_conv_bn_relu(channels * len(dilations), channels) for _ in range(6))
        self.C_cls = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_ir: torch.Tensor, feat_vis: torch.Tensor,
                out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged IR and visible node features, each (B, C, H, W); written side by side to ``out``
        (a channels-last (B, 2C, H, W) map) when given, without autograd. Each side's nodes are merged as
        soon as they are final, and written straight into the merge's input (no concatenation)."""
        c = feat_ir.shape[1]
        merged = []
        for side, nodes in enumerate(self.graph.nodes(feat_ir, feat_vis)):
            update = self.graph.graph_rgb if side == 0 else self.graph.graph_dep
            stacked = _map_like(feat_ir, len(nodes) * c) if overwrite_ok() else None
            self.graph.propagate(update, nodes, stacked)
            nodes = torch.cat(nodes, dim=1) if stacked is None else stacked
            merged.append(_run_conv_bn_relu(self.C_cat[side], nodes,
                                            None if out is None else out[:, side * c:(side + 1) * c]))
        return merged[0], merged[1]


class GraphBranch(nn.Module):
    """Graph feature of the two shallow features (official ``CGR_backbone`` with ``flag=True``)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.graph = CrossGraph(channels)
        self.C_cls = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_ir: torch.Tensor, feat_vis: torch.Tensor) -> torch.Tensor:
        if overwrite_ok():
            both = _map_like(feat_ir, 2 * feat_ir.shape[1])
            self.graph(feat_ir, feat_vis, out=both)
        else:
            both = torch.cat(self.graph(feat_ir, feat_vis), dim=1)
        return pointwise_conv(both, self.C_cls.weight, self.C_cls.bias)


# ----------------------------------------------------------------------------- the network


class SMFNet(nn.Module):
    """SMFNet fusion network: the five official sub-networks under their checkpoint names."""

    def __init__(self):
        super().__init__()
        self.DIDF_Encoder = Encoder()
        self.DIDF_Decoder = Decoder()
        self.BaseFuseLayer = BaseFuseBlock()
        self.DetailFuseLayer = DetailFuse()
        self.GraphModel = GraphBranch()
        # Channels-last weights make every convolution output channels-last: depth-wise
        # convolutions and the per-pixel layer norm are then 2-4x faster on the CPU (same values).
        self.to(memory_format=torch.channels_last)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fuse a batch (IR first; the official code encodes the visible image first, same result).

        Args:
            ir: (B, 1, H, W) infrared in [0, 1].
            vis_y: (B, 1, H, W) visible luminance in [0, 1]. Any H, W >= 2.

        Returns:
            (B, 1, H, W) sigmoid output in (0, 1); the official test script min-max normalises it.

        Raises:
            ValueError: shapes differ, are not one-channel, or H or W is below 2.
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(f"SMFNet expects IR and visible luminance of one shape (N,1,H,W), got IR "
                             f"{tuple(ir.shape)} and visible {tuple(vis_y.shape)}")
        if min(ir.shape[-2:]) < 2:
            raise ValueError(f"SMFNet needs H, W >= 2 (reflection padding), got {tuple(ir.shape)}")
        if ir.shape[0] > 1 and ir.device.type == "cpu" and overwrite_ok():
            # One image at a time on the CPU: same result (eval mode mixes no images), a batch's speed,
            # and the memory of one image.
            return torch.cat([self(ir[i:i + 1], vis_y[i:i + 1]) for i in range(ir.shape[0])])
        with large_tensors_on_heap() if overwrite_ok() else contextlib.nullcontext():
            # Official order of the sums (IR + visible, then detail + base + graph); the graph runs last
            # so that fewer full-size maps are alive during it.
            # Freed heap pages are released between the phases, keeping the resident size near the live maps.
            base_v, detail_v, shallow_v = self.DIDF_Encoder(vis_y)
            release_free_heap()
            base_i, detail_i, shallow_i = self.DIDF_Encoder(ir)
            release_free_heap()
            base = self.BaseFuseLayer(add_fresh(base_i, base_v))
            del base_i, base_v
            fused = add_fresh(self.DetailFuseLayer(add_fresh(detail_i, detail_v)), base)
            del detail_i, detail_v, base
            release_free_heap()
            fused = add_fresh(fused, self.GraphModel(shallow_i, shallow_v))
            del shallow_i, shallow_v
            release_free_heap()
            return self.DIDF_Decoder(fused)

    @staticmethod
    def convert_official_checkpoint(obj):
        """Flatten the official file (five DataParallel state dicts) into this module's keys.

        ``{"DIDF_Encoder": {"module.x": t}, ...}`` becomes ``{"DIDF_Encoder.x": t, ...}``;
        anything else (e.g. a state dict saved from this module) is returned unchanged.
        """
        return flatten_parallel_checkpoint(obj, CHECKPOINT_KEYS)


def official_inputs(ir8: np.ndarray, vis8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``test.py``'s reading of one pair (``image_read_cv2`` of the repository's ``metrics.py``).

    Args:
        ir8: (H,W) uint8 IR file (``cv2.imread`` makes it 3 equal BGR channels).
        vis8: (H,W,3) uint8 visible RGB file.

    Returns:
        ``data_IR`` (rounded grey / 255), ``data_VIS`` (float YCrCb's unrounded Y / 255), ``Cr``, ``Cb``
        (OpenCV's float conversion, offset 0.5 on 0..255 data, / 255): (H,W) float32 each.
    """
    data_ir = opencv_rounded_grey(ir8)
    vis_bgr = np.ascontiguousarray(vis8[..., ::-1]).astype(np.float32)
    y, cr, cb = cv2.split(cv2.cvtColor(vis_bgr, cv2.COLOR_BGR2YCrCb))
    return data_ir, y / 255.0, cr / 255.0, cb / 255.0


def official_png_values(fused: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """``test.py``'s writing of one raw output: min-max, Y with the visible Cr/Cb, BGR, ``cv2.imwrite``.

    Args:
        fused: (H,W) float32 raw network output.
        cr, cb: (H,W) float32 from :func:`official_inputs`.

    Returns:
        (H,W,3) uint8 BGR, the pixels ``cv2.imwrite`` stores: OpenCV converts float to 8 bits by rounding
        half to even with saturation.
    """
    y = (fused - fused.min()) / (fused.max() - fused.min())
    merged = np.stack((y, cr, cb), axis=-1) * 255
    bgr = cv2.cvtColor(merged, cv2.COLOR_YCrCb2BGR)
    return np.clip(np.rint(bgr), 0, 255).astype(np.uint8)


def official_image(model: SMFNet, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test.py`` end to end: what the official code writes.

    Args:
        model: an :class:`SMFNet` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused (SMFNet takes no text).

    Returns:
        (N,H,W,3) uint8 RGB images, each fused on its own (batch 1) as the official loop does: the fused
        luminance, min-max normalised, with the visible image's chroma.

    Raises:
        ValueError: shapes that are not an IR/visible pair, or values that are not 8-bit / 255.
    """
    check_official_pair(ir, vis, "SMFNet")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:], 3), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            data_ir, data_vis, cr, cb = official_inputs(ir8[k, 0], vis8[k].transpose(1, 2, 0))
            fused = model(torch.from_numpy(data_ir)[None, None].to(device),
                          torch.from_numpy(data_vis)[None, None].to(device))
            out[k] = official_png_values(fused[0, 0].cpu().numpy(), cr, cb)[..., ::-1]
    return out


@register_fusion_model(
    "smfnet",
    vis_input="y",
    output="y",
    normalize="minmax_y",
    trainable=True,
    paper="Zhang, Wang, Zhao, Li, Ma: A Semantic-Aware and Multi-Guided Network for Infrared-Visible "
          "Image Fusion, IEEE Transactions on Multimedia 2025 (arXiv:2407.06159)",
    licence="none stated (no licence file; the README asks to follow those of CDDFuse, DeepMiH, IGNet, MGDN)",
    url="https://github.com/Abraham-Einstein/SMFNet",
    weights_file="model_VIF.pth",
    description="graph reasoning between IR/visible nodes plus base/detail decomposition (Restormer encoder)",
    official_image=official_image,
    verified=VERIFIED_RANDOM_WEIGHTS,
)
def smfnet(**kwargs) -> nn.Module:
    return SMFNet()
