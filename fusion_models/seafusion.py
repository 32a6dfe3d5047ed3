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

Official inference (``test.py``), and how the harness path differs from it:

* Input order: the official ``forward(image_vis, image_ir)`` takes the visible image first; ours is
  ``forward(ir, vis_y)`` (IR first, like every taskeval model) and maps the order inside.
* Visible luminance: float BT.601 ``Y = .299 R + .587 G + .114 B`` on [0,1] RGB, clamped to [0,1] in
  the official code. :func:`taskeval.color.luminance` computes the same expression; the clamp never
  acts on [0,1] input, so this path is identical.
* Post-processing: the official script recolours with the visible Cr/Cb (clamped to [0,1], which also
  never acts: ``|Cr - .5|, |Cb - .5| < .5`` for RGB in [0,1]), clamps RGB to [0,1], min-max normalises
  over all three channels of the image, multiplies by 255 and **truncates** to uint8. The harness
  (``normalize="minmax_rgb"``) does the same in float but ``tensor_to_uint8`` **rounds**, so harness
  PNGs are 0 or 1 grey level above the official ones (measured on 13 reference pairs: never below,
  never more than 1; the raw network output matches to ~1e-6).
* The official recolouring is a 3x3 matrix product; the harness evaluates the same formulas
  channel by channel (differences of float rounding only).

BatchNorm: ``decode1..4`` each own a BatchNorm2d that is in the official state dict but never applied
in the forward pass; they are kept (unused) only so that official checkpoints load strictly, and
train/eval mode does not change the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.registry import register_fusion_model

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
)
def seafusion() -> nn.Module:
    return SeAFusion()
