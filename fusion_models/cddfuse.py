"""CDDFuse (Zhao et al., CVPR 2023): correlation-driven dual-branch feature decomposition.

Port of Zhaozixiang1228/MMIF-CDDFuse @ fd8da1f (``net.py``, ``test_IVF.py``,
``utils/img_read_save.py``). Four sub-networks, checkpointed side by side in one file
(``models/CDDFuse_IVF.pth``, shipped in that repository):

* ``DIDF_Encoder``, shared by both modalities: 3x3 patch embedding 1 -> 64, four Restormer blocks
  (channel attention "MDTA" + gated depth-wise feed-forward), then a base branch (one
  :class:`BaseFeatureExtraction`: channel attention whose q/k/v come from a FULL 3x3 convolution
  192 -> 192, and a feed-forward whose 3x3 convolution has groups = hidden, i.e. 2 channels per
  group) and a detail branch (three invertible :class:`DetailNode` couplings).
* ``BaseFuseLayer`` (one :class:`BaseFeatureExtraction`) on the summed base features and
  ``DetailFuseLayer`` (one :class:`DetailNode`) on the summed detail features.
* ``DIDF_Decoder``: 1x1 128 -> 64 on ``cat(base, detail)``, four Restormer blocks, 3x3 64 -> 32,
  LeakyReLU(0.01), 3x3 32 -> 1, plus the VISIBLE INPUT, then a sigmoid.

Parameter names are ``<checkpoint key>.<official key without "module.">``; the official file loads
strictly through :meth:`CDDFuse.convert_official_checkpoint`. Every parameter takes part in the
forward pass. Numerics follow the official operations (layer norm as mean and biased variance over
the channels of each pixel, exact GELU) except one deliberate difference: the sums over all pixels
inside the channel attention are taken in blocks (see :func:`transposed_attention`), which keeps the
port within 6e-6 of exact (float64) evaluation on both dev pairs, where the official float32 code
lands up to 2.9e-4 away, by an amount that depends on the CPU.

Two ways to run it:

* :func:`official_image` (``spec.official_image``) is ``test_IVF.py`` end to end: the rounded 8-bit
  grey inputs of the official reader, batch size 1, per-image min-max, and the 8-bit conversion of
  the writer of the authors' environment (scikit-image 0.19 -> imageio: min-max again, ROUNDING).
* ``forward(ir, vis_y)`` is the harness's float path: the unrounded BT.601 luma instead of the
  rounded 8-bit grey (up to 0.5/255 apart, and the decoder adds the visible input to its logits),
  the sigmoid output in (0,1) without min-max (the harness applies it, ``normalize="minmax_y"``) and
  no 8-bit rounding; it is differentiable, so the network can be trained jointly. On the random
  reference checkpoint and dev pair 00091D its 8-bit result (not recoloured) differs from the
  official PNG by at most 6 grey levels, mean 0.32, more than 1 level on 1.7% of the pixels; what
  exceeds 1 level comes from the unrounded luma (with a grey visible image both agree within 1 level).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The blocked reductions over the pixels (see transposed_attention), shared with SMFNet and FILM.
from fusion_models.layers import apply_channel_matrix, attention_matrix, pixel_gram, pixel_rows
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model

# Top-level keys of the official checkpoint, in the order test_IVF.py loads them.
CHECKPOINT_KEYS = ("DIDF_Encoder", "DIDF_Decoder", "BaseFuseLayer", "DetailFuseLayer")
WEIGHTS_URL = "https://github.com/Zhaozixiang1228/MMIF-CDDFuse/tree/main/models"


# --- layers shared with EMMA (same authors, same code) ----------------------------------------------

class _LayerNormParams(nn.Module):
    """The affine parameters of a layer norm under the official names ``body.weight`` / ``body.bias``."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelLayerNorm(nn.Module):
    """Layer norm over the C channels of each pixel (official ``LayerNorm(dim, 'WithBias')``).

    ``(x - mean) / sqrt(var + 1e-5) * weight + bias`` with the biased variance, computed as the
    official code does (mean, then variance, on the pixel-major view). Shapes: (N,C,H,W) ->
    (N,C,H,W); the result is a channels-last-strided view, as in the official code, so the next
    convolution runs the same channels-last kernel.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.body = _LayerNormParams(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)
        mu = t.mean(-1, keepdim=True)
        var = t.var(-1, keepdim=True, unbiased=False)
        return ((t - mu) / torch.sqrt(var + 1e-5) * self.body.weight + self.body.bias).permute(0, 3, 1, 2)


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                         heads: int) -> torch.Tensor:
    """Restormer's attention across channels, per head of C/heads channels.

    ``softmax(temperature * cos(q_i, k_j)) @ v`` where the cosines are taken over all H*W pixels
    (q and k L2-normalised over the pixels, norm floored at 1e-12 as ``F.normalize``).

    Deliberate numerical difference: the sums over the pixels are taken as a blocked Gram matrix and
    cascade-summed norms (:func:`fusion_models.layers.pixel_gram`), the cosines formed after the sums
    (:func:`fusion_models.layers.attention_matrix`), not by ``F.normalize`` and one matmul. Same arithmetic, but the
    float32 error of those 307200-term sums depends on the CPU's kernels and dominates the official
    output's error. Measured on the CDDFuse dev pairs (max |x - float64| of the network output,
    00016N / 00091D): official code on the machine that made the references 2.3e-6 / 1.7e-4, on an
    AMD EPYC (AVX-512 kernels) 6.9e-6 / 2.9e-4; blocked: 8.4e-7 / 5.7e-6.

    Args:
        q, k, v: (N, C, H, W).
        temperature: (heads, 1, 1) learned scale.
        heads: number of heads; C must be divisible by it.

    Returns:
        (N, C, H, W).
    """
    n, c = q.shape[:2]
    q_rows, k_rows = pixel_rows(q), pixel_rows(k)
    qq = q_rows.square().sum(dim=1).view(n, heads, c // heads)
    kk = k_rows.square().sum(dim=1).view(n, heads, c // heads)
    mix = attention_matrix(qq, kk, pixel_gram(q_rows, k_rows, heads), temperature)
    return apply_channel_matrix(v, mix)


class DenseQKVAttention(nn.Module):
    """Official ``AttentionBase``: 1x1 q/k/v, then a FULL 3x3 convolution 3C -> 3C (zero padding, not
    depth-wise), channel attention with a learned ``scale`` per head, 1x1 projection; no biases."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv2(self.qkv1(x)).chunk(3, dim=1)
        return self.proj(transposed_attention(q, k, v, self.scale, self.num_heads))


class GatedConvFFN(nn.Module):
    """Gated feed-forward: 1x1 to 2*hidden, grouped 3x3, ``GELU(first half) * second half``, 1x1 back.

    Args:
        dim: input and output channels.
        hidden: hidden channels (the 3x3 convolution sees 2*hidden).
        groups: groups of the 3x3 convolution: 2*hidden (depth-wise, Restormer's ``FeedForward``)
            or hidden (2 channels per group, the official ``Mlp``).
        padding_mode: of the 3x3 convolution (``"zeros"``; EMMA's ``Mlp`` uses ``"reflect"``).
    """

    def __init__(self, dim: int, hidden: int, groups: int, padding_mode: str = "zeros"):
        super().__init__()
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=groups, bias=False,
                                padding_mode=padding_mode)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class BaseFeatureExtraction(nn.Module):
    """Official ``BaseFeatureExtraction`` (EMMA: ``GlobalFeatureExtraction``): pre-norm
    :class:`DenseQKVAttention` and a gated feed-forward with ffn factor 1, both residual.

    Args:
        dim: channels C. Shapes (N,C,H,W) -> (N,C,H,W).
        num_heads: attention heads (C/heads channels each).
        padding_mode: of the feed-forward's grouped 3x3 convolution.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8, padding_mode: str = "zeros"):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = DenseQKVAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = GatedConvFFN(dim, dim, groups=dim, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --- CDDFuse --------------------------------------------------------------------------------------

class MDTA(nn.Module):
    """Restormer multi-Dconv-head transposed attention (official ``Attention``): 1x1 then depth-wise 3x3
    q/k/v, channel attention with a learned ``temperature`` per head, 1x1 projection; no biases."""

    def __init__(self, dim: int = 64, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(transposed_attention(q, k, v, self.temperature, self.num_heads))


class RestormerBlock(nn.Module):
    """Official ``TransformerBlock``: pre-norm MDTA and gated depth-wise feed-forward (factor 2), residual."""

    def __init__(self, dim: int = 64, num_heads: int = 8, expansion: int = 2):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = MDTA(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedConvFFN(dim, dim * expansion, groups=2 * dim * expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class InvertedResidualBlock(nn.Module):
    """MobileNetV2 bottleneck without norms: 1x1, ReLU6, reflection pad 1 + depth-wise 3x3, ReLU6, 1x1."""

    def __init__(self, inp: int = 32, oup: int = 32, expand_ratio: int = 2):
        super().__init__()
        hidden = inp * expand_ratio
        self.bottleneckBlock = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.ReLU6(),
            nn.ReflectionPad2d(1), nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False), nn.ReLU6(),
            nn.Conv2d(hidden, oup, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneckBlock(x)


class DetailNode(nn.Module):
    """Invertible affine coupling on two 32-channel halves.

    ``(z1, z2)`` are mixed by a biased 1x1 convolution and split again; then
    ``z2 += phi(z1)`` and ``z1 = z1 * exp(rho(z2)) + eta(z2)``.
    """

    def __init__(self, half: int = 32):
        super().__init__()
        self.theta_phi = InvertedResidualBlock(half, half)
        self.theta_rho = InvertedResidualBlock(half, half)
        self.theta_eta = InvertedResidualBlock(half, half)
        self.shffleconv = nn.Conv2d(2 * half, 2 * half, 1)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = self.shffleconv(torch.cat((z1, z2), dim=1)).chunk(2, dim=1)
        z2 = z2 + self.theta_phi(z1)
        z1 = z1 * torch.exp(self.theta_rho(z2)) + self.theta_eta(z2)
        return z1, z2


class DetailFeatureExtraction(nn.Module):
    """``num_layers`` :class:`DetailNode` couplings on the channel halves of a (N,64,H,W) feature."""

    def __init__(self, num_layers: int = 3):
        super().__init__()
        self.net = nn.Sequential(*(DetailNode() for _ in range(num_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = x.chunk(2, dim=1)
        for node in self.net:
            z1, z2 = node(z1, z2)
        return torch.cat((z1, z2), dim=1)


class Encoder(nn.Module):
    """Official ``Restormer_Encoder``: (N,1,H,W) -> base and detail features, each (N,64,H,W)."""

    def __init__(self, dim: int = 64, num_heads: int = 8, num_blocks: int = 4):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, 3, padding=1, bias=False)
        self.encoder_level1 = nn.Sequential(*(RestormerBlock(dim, num_heads) for _ in range(num_blocks)))
        self.baseFeature = BaseFeatureExtraction(dim, num_heads)
        self.detailFeature = DetailFeatureExtraction(3)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shallow = self.encoder_level1(self.patch_embed.proj(img))
        return self.baseFeature(shallow), self.detailFeature(shallow)


class Decoder(nn.Module):
    """Official ``Restormer_Decoder``: fused base and detail (N,64,H,W) each, plus the visible input
    (N,1,H,W) added to the logits -> sigmoid (N,1,H,W)."""

    def __init__(self, dim: int = 64, num_heads: int = 8, num_blocks: int = 4):
        super().__init__()
        self.reduce_channel = nn.Conv2d(2 * dim, dim, 1, bias=False)
        self.encoder_level2 = nn.Sequential(*(RestormerBlock(dim, num_heads) for _ in range(num_blocks)))
        self.output = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.LeakyReLU(),
            nn.Conv2d(dim // 2, 1, 3, padding=1, bias=False),
        )

    def forward(self, vis: torch.Tensor, base: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        x = self.encoder_level2(self.reduce_channel(torch.cat((base, detail), dim=1)))
        return torch.sigmoid(self.output(x) + vis)


class CDDFuse(nn.Module):
    """CDDFuse for infrared-visible fusion: the four official sub-networks under their checkpoint names."""

    def __init__(self):
        super().__init__()
        self.DIDF_Encoder = Encoder()
        self.DIDF_Decoder = Decoder()
        self.BaseFuseLayer = BaseFeatureExtraction(64, 8)
        self.DetailFuseLayer = DetailFeatureExtraction(1)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fuse a batch (IR first; the official script encodes the visible image first, same result).

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis_y: (N,1,H,W) visible luminance in [0,1] (the official reader gives the rounded 8-bit
                grey value; see :func:`official_image`). Any H, W >= 2.

        Returns:
            (N,1,H,W) sigmoid output in (0,1); the official script min-max normalises it per image.

        Raises:
            ValueError: shapes differ, are not one-channel, or H or W is below 2 (reflection padding).
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(f"CDDFuse expects IR and visible luminance of one shape (N,1,H,W), got IR "
                             f"{tuple(ir.shape)} and visible {tuple(vis_y.shape)}")
        if min(ir.shape[-2:]) < 2:
            raise ValueError(f"CDDFuse needs H, W >= 2 (reflection padding), got {tuple(ir.shape)}")
        base_v, detail_v = self.DIDF_Encoder(vis_y)
        base_i, detail_i = self.DIDF_Encoder(ir)
        base = self.BaseFuseLayer(base_v + base_i)
        detail = self.DetailFuseLayer(detail_v + detail_i)
        return self.DIDF_Decoder(vis_y, base, detail)

    @staticmethod
    def convert_official_checkpoint(obj):
        """Flatten the official file (four DataParallel state dicts) into this module's keys.

        ``{"DIDF_Encoder": {"module.x": t}, ...}`` becomes ``{"DIDF_Encoder.x": t, ...}``;
        anything else (e.g. a state dict saved from this module) is returned unchanged.
        """
        if not (isinstance(obj, dict) and all(isinstance(obj.get(k), dict) for k in CHECKPOINT_KEYS)):
            return obj
        return {f"{top}.{key.removeprefix('module.')}": value
                for top in CHECKPOINT_KEYS for key, value in obj[top].items()}


# --- the official test script around the network (shared with EMMA: same reader and writer) ---------

def _as_uint8(x: torch.Tensor) -> np.ndarray:
    """Float image(s) in [0,1] that are 8-bit files / 255 -> the uint8 values (nearest level)."""
    return np.rint(x.detach().float().cpu().clamp(0, 1).numpy() * 255.0).astype(np.uint8)


def _cv2_grey(bgr: np.ndarray) -> np.ndarray:
    """``image_read_cv2(mode='GRAY') / 255``: float32 BGR -> OpenCV grey -> rounded -> / 255 (float64)."""
    return np.round(cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY)) / 255.0


def official_grey_inputs(ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network inputs the official readers make from the 8-bit files behind ``ir`` and ``vis``.

    ``cv2.imread`` (three channels, also for the grey IR) -> float32 -> ``BGR2GRAY`` on the float image
    -> ``np.round`` -> / 255 -> ``torch.FloatTensor``: the ROUNDED grey level / 255.

    Args:
        ir: (N,1,H,W) float, 8-bit IR / 255 (values off the 8-bit grid are rounded to it).
        vis: (N,3,H,W) RGB float, 8-bit visible / 255.

    Returns:
        (ir_in, vis_in), each (N,1,H,W) float32 on the CPU.
    """
    if ir.ndim != 4 or ir.shape[1] != 1 or vis.ndim != 4 or vis.shape[1] != 3 or \
            ir.shape[0] != vis.shape[0] or ir.shape[-2:] != vis.shape[-2:]:
        raise ValueError(f"expected IR (N,1,H,W) and visible RGB (N,3,H,W) of one size, got "
                         f"{tuple(ir.shape)} and {tuple(vis.shape)}")
    ir8, vis8 = _as_uint8(ir[:, 0]), _as_uint8(vis)
    ir_in = np.stack([_cv2_grey(np.repeat(img[..., None], 3, axis=2)) for img in ir8])
    vis_in = np.stack([_cv2_grey(img.transpose(1, 2, 0)[..., ::-1]) for img in vis8])
    return (torch.from_numpy(ir_in).float().unsqueeze(1), torch.from_numpy(vis_in).float().unsqueeze(1))


def legacy_png_uint8(img: np.ndarray) -> np.ndarray:
    """The 8-bit image the authors' ``img_save`` wrote for a float array (their pinned scikit-image
    0.19 hands it to imageio, whose PNG writer calls ``image_as_uint``).

    A float image outside [0,1] (here: the official 0..255 array) is min-max scaled once more in
    float64 and ROUNDED: ``uint8((x - min) / (max - min) * 255 + 0.499999999)``, with min and max
    taken in the array's own dtype; one within [0,1] becomes ``uint8(x * 255 + 0.499999999)``. (Current scikit-image refuses float PNGs; the common community
    fix ``astype(np.uint8)`` truncates instead and differs by 1 on about half the pixels.)

    Args:
        img: (H,W) float array.

    Returns:
        (H,W) uint8.

    Raises:
        ValueError: NaN or infinite values (the official writer fails on them too, e.g. for a
            constant network output, whose min-max is 0/0; it ignores isolated NaN, we do not).
    """
    if not np.isfinite(img).all():
        raise ValueError(f"image has {int((~np.isfinite(img)).sum())} non-finite values: the official writer "
                         f"fails on them")
    lo, hi = np.min(img), np.max(img)
    if 0 <= lo and hi <= 1:
        return (img.astype(np.float64) * 255.0 + 0.499999999).astype(np.uint8)
    if hi == lo:
        return img.astype(np.uint8)
    return ((img.astype(np.float64) - lo) / (hi - lo) * 255.0 + 0.499999999).astype(np.uint8)


def official_png(out: torch.Tensor) -> np.ndarray:
    """``test_IVF.py`` after the forward pass: min-max in torch, x255, float32 numpy, ``img_save``.

    Args:
        out: (1,1,H,W) raw network output.

    Returns:
        (H,W) uint8, the grey PNG the official script writes.
    """
    fused = (out - torch.min(out)) / (torch.max(out) - torch.min(out))
    return legacy_png_uint8(np.squeeze((fused * 255).cpu().numpy()))


def model_device(model: nn.Module) -> torch.device:
    """Device of a model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def official_image(model: nn.Module, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test_IVF.py`` end to end for a batch of 8-bit pairs: official reader, one image at a time,
    forward, min-max, the authors' PNG conversion.

    Args:
        model: a :class:`CDDFuse`.
        ir: (N,1,H,W) float IR, 8-bit / 255. vis: (N,3,H,W) RGB float, 8-bit / 255.
        text: unused (CDDFuse has no text input).

    Returns:
        (N,H,W) uint8: the grey images the official script writes.
    """
    ir_in, vis_in = official_grey_inputs(ir, vis)
    device = model_device(model)
    with torch.no_grad():
        return np.stack([official_png(model(ir_in[i:i + 1].to(device), vis_in[i:i + 1].to(device)))
                         for i in range(ir_in.shape[0])])


@register_fusion_model(
    "cddfuse",
    vis_input="y",
    output="y",
    normalize="minmax_y",
    trainable=True,
    paper="Zhao, Bai, Zhang, Zhang, Xu, Lin, Timofte, Van Gool: CDDFuse: Correlation-Driven Dual-Branch "
          "Feature Decomposition for Multi-Modality Image Fusion, CVPR 2023",
    licence="none stated (the repository has no LICENSE file)",
    url="https://github.com/Zhaozixiang1228/MMIF-CDDFuse",
    weights_file="CDDFuse_IVF.pth",
    description="Restormer encoder, Lite-Transformer base / INN detail branches, decoder adds the visible "
                f"input; official weights: {WEIGHTS_URL}",
    official_image=official_image,
    verified=VERIFIED_RANDOM_WEIGHTS,
)
def cddfuse() -> nn.Module:
    return CDDFuse()
