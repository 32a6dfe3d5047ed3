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

Deliberate differences, all within float rounding of the official output: the network runs
channels-last, and the channel attention is computed from Gram matrices (see
:func:`_channel_attention`); the decoder does not take the visible image it ignores officially.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.registry import register_fusion_model

# Checkpoint top-level keys, in the order of the official pipeline.
CHECKPOINT_KEYS = ("DIDF_Encoder", "DIDF_Decoder", "BaseFuseLayer", "DetailFuseLayer", "GraphModel")


def _channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
                       heads: int) -> torch.Tensor:
    """Transposed (channel) attention of Restormer, per head of C/heads channels.

    ``softmax(scale * cos(q_i, k_j))`` over the channels j of the head, with cosines taken over
    all pixels, then applied to ``v``. Computed on (B, H*W, C) views, which are free for the
    channels-last features of this network: the similarities come from Gram matrices (one GEMM
    over the pixels, normalised afterwards, equal to normalising first up to float rounding) and
    the heads are applied at once as a block-diagonal (C, C) matrix. This is 3-5x faster than
    the official row-wise normalisation and batched products, which need NCHW copies here.

    Args:
        q, k, v: (B, C, H, W).
        scale: (heads, 1, 1) learned temperature.
        heads: number of heads; C must be divisible by it.

    Returns:
        (B, C, H, W), channels-last.
    """
    b, c, h, w = q.shape
    d = c // heads
    qt, kt, vt = (t.permute(0, 2, 3, 1).reshape(b, h * w, c) for t in (q, k, v))
    # max(norm, 1e-12) as F.normalize, clamped before the root so an all-zero channel has a finite gradient.
    q_norm = (qt.transpose(1, 2) @ qt).diagonal(dim1=1, dim2=2).clamp_min(1e-24).sqrt()
    k_norm = (kt.transpose(1, 2) @ kt).diagonal(dim1=1, dim2=2).clamp_min(1e-24).sqrt()
    dots = (qt.transpose(1, 2) @ kt).view(b, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
    cos = dots / (q_norm.view(b, heads, d, 1) * k_norm.view(b, heads, 1, d))
    attn = (cos * scale).softmax(dim=-1)
    same_head = torch.eye(heads, dtype=attn.dtype, device=attn.device).view(1, heads, 1, heads, 1)
    mix = (attn.unsqueeze(3) * same_head).reshape(b, c, c)
    return (vt @ mix.transpose(1, 2)).view(b, h, w, c).permute(0, 3, 1, 2)


class _LayerNormParams(nn.Module):
    """Holds the affine parameters under the official names ``body.weight`` / ``body.bias``."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of each pixel (biased variance, eps 1e-5 inside the root).

    Args:
        dim: number of channels C. Input and output (B, C, H, W); for the channels-last features
            of this network the permutations are free views.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.body = _LayerNormParams(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.body.weight, self.body.bias, eps=1e-5)
        return y.permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Restormer multi-Dconv-head transposed attention (1x1 then depth-wise 3x3 QKV, no bias)."""

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(_channel_attention(q, k, v, self.temperature, self.num_heads))


class DenseQKVAttention(nn.Module):
    """Transposed attention whose QKV goes through a dense 3x3 convolution (the costly layer)."""

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv2(self.qkv1(x)).chunk(3, dim=1)
        return self.proj(_channel_attention(q, k, v, self.scale, self.num_heads))


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: GELU(1x1) -> GELU(depth-wise 3x3) -> GELU(1x1), plus the input."""

    def __init__(self, dim: int = 64, hidden_dim: int = 64):
        super().__init__()
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim), nn.GELU()
        )
        self.linear2 = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dwconv(self.linear1(x))) + x


class PointwiseFeedForward(nn.Module):
    """1x1 expansion, GELU, 1x1 projection (no bias; official ``FeedForward``)."""

    def __init__(self, dim: int = 64, factor: int = 2):
        super().__init__()
        self.project_in = nn.Conv2d(dim, dim * factor, 1, bias=False)
        self.project_out = nn.Conv2d(dim * factor, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.gelu(self.project_in(x)))


class RestormerBlock(nn.Module):
    """Pre-norm MDTA + LeFF block (official ``TransformerBlock``)."""

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = MDTA(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn_leff = LeFF(dim, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn_leff(self.norm2(x))


class BaseFuseBlock(nn.Module):
    """The base-feature fusion layer: a :class:`RestormerBlock` whose LeFF is named ``mlp``.

    ``reduce_channel`` is an unused official parameter.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = MDTA(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = LeFF(dim, 64)
        self.reduce_channel = nn.Conv2d(dim * 2, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DenseAttentionBlock(nn.Module):
    """Pre-norm DenseQKVAttention + PointwiseFeedForward block (official ``TransformerBase``)."""

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = DenseQKVAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = PointwiseFeedForward(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _three_conv(dim: int) -> nn.Sequential:
    """3x3 (dim -> dim/4), 1x1, 3x3 (-> dim) with LeakyReLU(0.2) between; biased."""
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(dim // 4, dim // 4, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(dim // 4, dim, 3, padding=1),
    )


class ResidualGroup(nn.Module):
    """``depth`` x (RestormerBlock, DenseAttentionBlock), a three-convolution tail and a skip."""

    def __init__(self, dim: int = 64, num_heads: int = 8, depth: int = 2):
        super().__init__()
        self.residual_group = nn.ModuleList(
            nn.Sequential(RestormerBlock(dim, num_heads), DenseAttentionBlock(dim, num_heads))
            for _ in range(depth)
        )
        self.conv = _three_conv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for blk in self.residual_group:
            y = blk(y)
        return self.conv(y) + x


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
        q = self.q_dwconv(self.q(guide))
        k, v = self.kv_dwconv(self.kv(feat)).chunk(2, dim=1)
        return self.project_out(_channel_attention(q, k, v, self.temperature, self.num_heads))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck without batch norm: 1x1, ReLU6, reflect-padded depth-wise 3x3, ReLU6, 1x1."""

    def __init__(self, inp: int = 32, oup: int = 32, expand: int = 2):
        super().__init__()
        hidden = inp * expand
        self.bottleneckBlock = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.ReLU6(),
            nn.ReflectionPad2d(1), nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False), nn.ReLU6(),
            nn.Conv2d(hidden, oup, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneckBlock(x)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the channels into two halves."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


class DetailNode(nn.Module):
    """Affine coupling node of the encoder's detail branch (CDDFuse ``DetailNode``)."""

    def __init__(self, half: int = 32):
        super().__init__()
        self.theta_phi = InvertedResidual(half, half)
        self.theta_rho = InvertedResidual(half, half)
        self.theta_eta = InvertedResidual(half, half)
        self.shffleconv = nn.Conv2d(half * 2, half * 2, 1)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = _halves(self.shffleconv(torch.cat((z1, z2), dim=1)))
        z2 = z2 + self.theta_phi(z1)
        z1 = z1 * torch.exp(self.theta_rho(z2)) + self.theta_eta(z2)
        return z1, z2


class EncoderDetailBranch(nn.Module):
    """Cross attention between the two channel halves, then one :class:`DetailNode`."""

    def __init__(self, half: int = 32, num_heads: int = 8):
        super().__init__()
        self.TCA = CrossAttention(half, num_heads)
        self.layer = DetailNode(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = _halves(x)
        f1 = self.TCA(z2, z1)
        f2 = self.TCA(z1, z2)
        return torch.cat(self.layer(f1, f2), dim=1)


class ConvLeaky(nn.Module):
    """3x3 convolution (biased) followed by LeakyReLU(0.2); the convolution lives in ``.conv``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.2)


class Conv1x1(nn.Module):
    """Biased 1x1 convolution stored in ``.conv`` (official parameter layout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


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
        return self.convx(x).abs() + self.convy(x).abs()


class GradientDenseBlock(nn.Module):
    """Dense branch plus Sobel-gradient branch, summed, LeakyReLU(0.1) (official ``RGBD``)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.dense = DenseBlock(channels)
        self.convdown = Conv1x1(3 * channels, channels)
        self.sobelconv = SobelMagnitude(channels)
        self.convup = Conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.convdown(self.dense(x)) + self.convup(self.sobelconv(x)), 0.1)


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
        self.encoder_level1 = nn.Sequential(RestormerBlock(dim, num_heads))
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
        self.encoder_level1 = nn.Sequential(RestormerBlock(dim, num_heads))
        self.output = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.LeakyReLU(),
            nn.Conv2d(dim // 2, dim // 4, 3, padding=1, bias=False), nn.LeakyReLU(),
            nn.Conv2d(dim // 4, 1, 3, padding=1, bias=False),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.output(self.encoder_level1(feature)))


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
        return torch.exp(self.clamp * 2 * (torch.sigmoid(s) - 0.5))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = _halves(self.shffleconv(torch.cat((x1, x2), dim=1)))
        y2 = (x2 - self.y(x1)) / self._scale(self.r(x1))
        y1 = (x1 - self.f(y2)) / self._scale(self.p(y2))
        return y1, y2


class DetailFuse(nn.Module):
    """Detail fusion layer: GRDB, then two invertible affine blocks on the channel halves."""

    def __init__(self, dim: int = 64, num_layers: int = 2):
        super().__init__()
        self.net = nn.Sequential(*(InvertibleAffineBlock(dim // 2) for _ in range(num_layers)))
        self.GRDB = GRDB(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = _halves(self.GRDB(x))
        for block in self.net:
            z1, z2 = block(z1, z2)
        return torch.cat((z1, z2), dim=1)


def _conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class PyramidNodes(nn.Module):
    """Graph nodes: one dilated 3x3 conv-BN-ReLU per dilation (official ``PPM``)."""

    def __init__(self, channels: int = 64, dilations: tuple[int, ...] = (4, 8, 16)):
        super().__init__()
        self.convs = nn.ModuleList(_conv_bn_relu(channels, channels, d) for d in dilations)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [conv(x) for conv in self.convs]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell with 1x1 gates; ``h' = (1 - u) h + u tanh(W [m, r h])``."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.ConvGates = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.Conv_ct = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, msg: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        reset, update = torch.sigmoid(self.ConvGates(torch.cat((msg, hidden), dim=1))).chunk(2, dim=1)
        cand = torch.tanh(self.Conv_ct(torch.cat((msg, reset * hidden), dim=1)))
        return (1 - update) * hidden + update * cand


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

    def forward(self, nodes: list[torch.Tensor]) -> list[torch.Tensor]:
        n_edges = self.num_nodes - 1
        out = []
        for idx, node in enumerate(nodes):
            others = [nodes[j] for j in range(self.num_nodes) if j != idx]
            diff = torch.cat([node - o for o in others], dim=1)
            # The official code tiles the (B, n_edges, H, W) edge weights over the concatenated
            # neighbours, so channel k of every neighbour is gated by edge k % n_edges (not by
            # its own edge); broadcasting over (C / n_edges, n_edges) channel groups does the same.
            gate = torch.sigmoid(self.C_wgt(diff)).unsqueeze(1)
            msg = sum((o.unflatten(1, (-1, n_edges)) * gate).flatten(1, 2) for o in others)
            out.append(self.ConvGRU(msg, node) * self.gamma + node)
        return out


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
        new_b = a * torch.sigmoid(self.C_pa[0](a - b)) + b
        new_a = b * torch.sigmoid(self.C_pa[1](b - a)) + a
        return new_a, new_b

    def forward(self, feat_a: torch.Tensor,
                feat_b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        nodes_a, nodes_b = self.ppm_rgb(feat_a), self.ppm_dep(feat_b)
        for i in range(len(nodes_a)):
            for _ in range(2):
                nodes_a[i], nodes_b[i] = self._interact(nodes_a[i], nodes_b[i])
        for _ in range(self.n_iter):
            nodes_a = self.graph_rgb(nodes_a)
        for _ in range(self.n_iter):
            nodes_b = self.graph_dep(nodes_b)
        return nodes_a, nodes_b


class CrossGraph(nn.Module):
    """Graph reasoning and node merging (official ``CGR``); only ``C_cat[0]`` and ``C_cat[1]`` run."""

    def __init__(self, channels: int = 64, dilations: tuple[int, ...] = (4, 8, 16)):
        super().__init__()
        self.graph = GraphReasoning(channels, dilations)
        self.C_cat = nn.ModuleList(_conv_bn_relu(channels * len(dilations), channels) for _ in range(6))
        self.C_cls = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_ir: torch.Tensor, feat_vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes_ir, nodes_vis = self.graph(feat_ir, feat_vis)
        return self.C_cat[0](torch.cat(nodes_ir, dim=1)), self.C_cat[1](torch.cat(nodes_vis, dim=1))


class GraphBranch(nn.Module):
    """Graph feature of the two shallow features (official ``CGR_backbone`` with ``flag=True``)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.graph = CrossGraph(channels)
        self.C_cls = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_ir: torch.Tensor, feat_vis: torch.Tensor) -> torch.Tensor:
        return self.C_cls(torch.cat(self.graph(feat_ir, feat_vis), dim=1))


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
        base_v, detail_v, shallow_v = self.DIDF_Encoder(vis_y)
        base_i, detail_i, shallow_i = self.DIDF_Encoder(ir)
        graph = self.GraphModel(shallow_i, shallow_v)
        base = self.BaseFuseLayer(base_i + base_v)
        detail = self.DetailFuseLayer(detail_i + detail_v)
        return self.DIDF_Decoder(detail + base + graph)

    @staticmethod
    def convert_official_checkpoint(obj):
        """Flatten the official file (five DataParallel state dicts) into this module's keys.

        ``{"DIDF_Encoder": {"module.x": t}, ...}`` becomes ``{"DIDF_Encoder.x": t, ...}``;
        anything else (e.g. a state dict saved from this module) is returned unchanged.
        """
        if not (isinstance(obj, dict) and all(isinstance(obj.get(k), dict) for k in CHECKPOINT_KEYS)):
            return obj
        flat = {}
        for top in CHECKPOINT_KEYS:
            for key, value in obj[top].items():
                flat[f"{top}.{key.removeprefix('module.')}"] = value
        return flat


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
)
def smfnet(**kwargs) -> nn.Module:
    return SMFNet()
