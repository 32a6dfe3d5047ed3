"""SeAFusion: semantic-aware real-time IR/visible fusion (Tang, Yuan, Ma, Information Fusion 2022).

Re-implemented from the paper and the layout of the official checkpoint (Linfeng-Tang/SeAFusion
@ 5fd9c52, ``FusionNet``); module names follow the official state dict so ``SeAFusion.pth`` loads
with ``strict=True``.

Data flow (any ``H, W >= 1``; stride 1 everywhere, output the input size)::

    Y   (N,1,H,W) -> vis_conv (16) -> vis_rgbd1 (32) -> vis_rgbd2 (48) --\\
                                                                          cat (96) -> decode4 (64)
    IR  (N,1,H,W) -> inf_conv (16) -> inf_rgbd1 (32) -> inf_rgbd2 (48) --/  -> decode3 (32) -> decode2 (16)
                                                                             -> decode1 (1): tanh/2 + 1/2

Each ``rgbd`` block (gradient residual dense block) adds a dense path (two 3x3 convs, 1x1 down) and
a gradient path (learnable depthwise Sobel magnitude ``|Gx| + |Gy|``, 1x1 up).

Official inference (``test.py``) = :func:`official_image` (what ``taskeval fuse`` writes by default):

* Input order: the official ``forward(image_vis, image_ir)`` takes the visible image first; ours is
  ``forward(ir, vis_y)`` (IR first, like every taskeval model) and maps the order inside.
* Read: visible as RGB, IR as L, both ``/255`` in float32 (the harness's inputs are exactly these).
* Visible luminance: float BT.601 ``Y = .299 R + .587 G + .114 B`` on [0,1] RGB, with Cr, Cb, each
  clamped to [0,1] (:func:`fusion_models.official_io.ycrcb_of_rgb`; the clamp never acts on [0,1] input).
* Post-processing (:func:`official_postprocess`): recolour with the visible Cr/Cb as one 3x3 matrix
  product, clamp RGB to [0,1], min-max over all three channels of the image, ``x255`` and **truncate**
  to uint8. Output: an RGB PNG.

The float path (``apply_fusion``, joint training, ``--io float``): :func:`taskeval.color.luminance` is the
same expression as the official Y; ``normalize="minmax_rgb"`` recolours channel by channel, min-max
normalises the same way and ``tensor_to_uint8`` **rounds** instead of truncating, so its PNGs are 0 or
1 grey level above the official ones (13 reference pairs: never below, never more than 1).

Fidelity with ``SeAFusion.pth`` (``shared/reference/SeAFusion``, 13 pairs, ``tests/test_port_official_weights.py``):
raw output within ~1e-6 of the official one; :func:`official_image` within 1 grey level of the official
PNG on every pixel, equal on all but 10-134 pixels per image.

BatchNorm: ``decode1..4`` each own a BatchNorm2d that is in the official state dict but never applied
in the forward pass; they are kept (unused) only so that official checkpoints load strictly, and
train/eval mode does not change the output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.official_io import (
    as_8bit,
    check_official_pair,
    minmax_truncate,
    official_inference,
    rgb_of_ycrcb,
    ycrcb_of_rgb,
)
from fusion_models.registry import VERIFIED_OFFICIAL_WEIGHTS, register_fusion_model

VIS_CHANNELS = (16, 32, 48)
IR_CHANNELS = (16, 32, 48)
# Negative slopes of the official LeakyReLUs: 0.2 after convolutions, 0.1 after a block's sum.
CONV_SLOPE = 0.2
BLOCK_SLOPE = 0.1
SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR (N,1,H,W) and visible luminance (N,1,H,W) of the same batch and size, else ValueError."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"SeAFusion: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 1:
        raise ValueError(f"SeAFusion: visible must be (N,1,H,W) luminance, got shape {tuple(vis.shape)}")
    if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"SeAFusion: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch "
                         "or size")


class ConvLeakyReLU(nn.Module):
    """3x3 'same' convolution followed by LeakyReLU(0.2). (N,C_in,H,W) -> (N,C_out,H,W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), negative_slope=CONV_SLOPE)


class PointwiseConv(nn.Module):
    """1x1 convolution with bias (wrapped so the checkpoint key is ``<name>.conv.weight``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SobelMagnitude(nn.Module):
    """Depthwise gradient magnitude ``|Gx * x| + |Gy * x|`` with learnable kernels initialised to Sobel.

    The kernels are ordinary parameters (the official checkpoint holds trained, no longer exact
    Sobel values). (N,C,H,W) -> (N,C,H,W), zero padding.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convx = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.convy = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        sobel = torch.tensor(SOBEL_X)
        with torch.no_grad():
            self.convx.weight.copy_(sobel.expand_as(self.convx.weight))
            self.convy.weight.copy_(sobel.T.expand_as(self.convy.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convx(x).abs() + self.convy(x).abs()


class DenseBlock(nn.Module):
    """Two densely connected 3x3 conv layers: (N,C,H,W) -> (N,3C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLeakyReLU(channels, channels)
        self.conv2 = ConvLeakyReLU(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, self.conv1(x)], dim=1)
        return torch.cat([x, self.conv2(x)], dim=1)


class GradientResidualDenseBlock(nn.Module):
    """The paper's RGRDB: dense path + Sobel gradient path, summed. (N,C_in,H,W) -> (N,C_out,H,W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.dense = DenseBlock(c_in)
        self.convdown = PointwiseConv(3 * c_in, c_out)
        self.sobelconv = SobelMagnitude(c_in)
        self.convup = PointwiseConv(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.convdown(self.dense(x))
        gradient = self.convup(self.sobelconv(x))
        return F.leaky_relu(dense + gradient, negative_slope=BLOCK_SLOPE)


class DecoderConv(nn.Module):
    """3x3 conv then LeakyReLU(0.2), or ``tanh/2 + 1/2`` for the last layer.

    ``bn`` is part of the official checkpoint but the official forward never applies it; it is kept
    only so that checkpoints load with ``strict=True``.
    """

    def __init__(self, c_in: int, c_out: int, last: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return torch.tanh(x) / 2 + 0.5 if self.last else F.leaky_relu(x, negative_slope=CONV_SLOPE)


class SeAFusion(nn.Module):
    """SeAFusion fusion network (166,883 parameters).

    Example::

        model = SeAFusion().eval()
        fused_y = model(ir, vis_y)  # (N,1,H,W), (N,1,H,W) -> (N,1,H,W) in (0,1)
    """

    def __init__(self) -> None:
        super().__init__()
        v, i = VIS_CHANNELS, IR_CHANNELS
        self.vis_conv = ConvLeakyReLU(1, v[0])
        self.vis_rgbd1 = GradientResidualDenseBlock(v[0], v[1])
        self.vis_rgbd2 = GradientResidualDenseBlock(v[1], v[2])
        self.inf_conv = ConvLeakyReLU(1, i[0])
        self.inf_rgbd1 = GradientResidualDenseBlock(i[0], i[1])
        self.inf_rgbd2 = GradientResidualDenseBlock(i[1], i[2])
        # Decoder widths are those of the official code: 96 -> 64 -> 32 -> 16 -> 1.
        self.decode4 = DecoderConv(v[2] + i[2], 2 * v[1])
        self.decode3 = DecoderConv(2 * v[1], v[0] + i[0])
        self.decode2 = DecoderConv(v[0] + i[0], v[0])
        self.decode1 = DecoderConv(v[0], 1, last=True)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,1,H,W) visible luminance (BT.601 Y) in [0,1].

        Returns:
            (N,1,H,W) fused luminance in (0,1) (the official script recolours, then min-max normalises).
        """
        _check_inputs(ir, vis)
        v = self.vis_rgbd2(self.vis_rgbd1(self.vis_conv(vis)))
        i = self.inf_rgbd2(self.inf_rgbd1(self.inf_conv(ir)))
        x = self.decode4(torch.cat([v, i], dim=1))
        return self.decode1(self.decode2(self.decode3(x)))


def official_inputs(ir8: np.ndarray, vis8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``test.py``'s reading and colour split of one pair.

    Args:
        ir8: (H,W) uint8 IR file; vis8: (H,W,3) uint8 RGB visible file.

    Returns:
        ``(ir, vis_y, ycrcb)``: the network inputs in our order, (1,1,H,W) float32 each (``vis_y`` a view
        of ``ycrcb``'s channel 0, as the official network receives it), and (1,3,H,W) (Y, Cr, Cb).
    """
    ir = torch.from_numpy(ir8.astype(np.float32) / 255.0)[None, None]
    rgb = torch.from_numpy(np.ascontiguousarray(vis8.transpose(2, 0, 1)).astype(np.float32) / 255.0)[None]
    ycrcb = ycrcb_of_rgb(rgb, clamp=True)
    return ir, ycrcb[:, :1], ycrcb


def official_postprocess(net: torch.Tensor, ycrcb: torch.Tensor,
                         matmul: Callable = torch.mm) -> tuple[np.ndarray, np.ndarray]:
    """``test.py``'s output step: fused Y + visible Cr/Cb -> RGB, clamp, min-max over RGB, x255, truncate.

    Args:
        net: (1,1,H,W) fused Y (the network output).
        ycrcb: (1,3,H,W) the visible (Y, Cr, Cb) of :func:`official_inputs`.
        matmul: the colour-matrix product (see :func:`fusion_models.official_io.rgb_of_ycrcb`).

    Returns:
        ``(scaled, png)``: (H,W,3) float32 in 0..255 before the cast, and the (H,W,3) uint8 RGB written.
    """
    fused = torch.cat([net.detach().cpu().reshape(ycrcb[:, :1].shape), ycrcb[:, 1:]], dim=1)
    rgb = rgb_of_ycrcb(fused, matmul).clamp(0.0, 1.0)[0].permute(1, 2, 0).numpy()
    return minmax_truncate(rgb)


def official_image(model: SeAFusion, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test.py`` end to end: what the official code writes.

    Args:
        model: a :class:`SeAFusion` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused.

    Returns:
        (N,H,W,3) uint8 RGB images, each fused on its own (batch 1) as the official loop does.
    """
    check_official_pair(ir, vis, "SeAFusion")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:], 3), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            img_ir, img_y, ycrcb = official_inputs(ir8[k, 0], vis8[k].transpose(1, 2, 0))
            out[k] = official_postprocess(model(img_ir.to(device), img_y.to(device)), ycrcb)[1]
    return out


@register_fusion_model(
    "seafusion",
    vis_input="y",
    output="y",
    normalize="minmax_rgb",
    trainable=True,
    paper="Tang, Yuan, Ma: Image fusion in the loop of high-level vision tasks: a semantic-aware "
          "real-time infrared and visible image fusion network, Information Fusion 2022",
    licence="MIT",
    url="https://github.com/Linfeng-Tang/SeAFusion",
    weights_file="SeAFusion.pth",
    description="dense + Sobel-gradient residual blocks, light decoder; trained with a segmentation loss",
    official_image=official_image,
    verified=VERIFIED_OFFICIAL_WEIGHTS,
)
def seafusion() -> nn.Module:
    return SeAFusion()
