"""EMMA (Zhao et al., CVPR 2024): equivariant multi-modality image fusion; this is its fusion network U-Fuser.

Port of Zhaozixiang1228/MMIF-EMMA @ 9983ca2 (``nets/Ufuser.py``, ``test.py``, ``utils.py``). EMMA's
equivariant training (pseudo-sensing modules ``Ai``/``Av``) only shapes the weights; inference is the
U-Fuser alone, checkpointed as a plain state dict (``model/EMMA.pth``, shipped in that repository),
whose keys are this module's, so it loads strictly as it is.

Architecture (channels 8, 16, 32, 32 on four scales), every block a :class:`RestormerCNNBlock`:

* two encoders of separate weights, IR (``I_en_k``) and visible (``V_en_k``), with 3x3 stride-2
  convolutions between the scales (``I_down_k``, ``V_down_k``);
* fusion blocks ``f_k`` on ``cat(ir_k, vis_k)`` (IR first) on every scale;
* a decoder ``de_4`` -> ``up4`` (transposed convolution 4/2/1 + ReLU) -> ``de_3(cat(up, f_3))`` ->
  ``up3`` -> ``de_2(cat(up, f_2))`` -> ``up2`` -> ``de_1(cat(up, f_1))`` -> 3x3 conv 8 -> 1 -> sigmoid.

Every convolution pads by reflection except the dense q/k/v convolution of the attention (zeros),
as in the official code. In the 8-channel blocks (``*_1``) the 8 attention heads have one channel
each: the attention is the identity on v and their ``attn.scale`` gets no gradient (kept so the
official file loads). The blocks are built from the layers EMMA shares with CDDFuse
(:func:`fusion_models.layers.base_feature_block`), computed as there: attention sums over the pixels in
blocks and the dense q/k/v convolutions composed (the deliberate numerical differences, float rounding).

Sizes: the official ``test.py`` runs a side that is not a multiple of 32 as four overlapping corner
crops of size (H - H % 32, W - W % 32) and pastes them (upper left whole, then the right strip from
the upper-right crop, the bottom strip from the lower-left crop, the corner from the lower-right
crop). ``forward`` does the same, so both sides must be at least 32.

Two ways to run it: :func:`official_image` (``spec.official_image``) is ``test.py`` end to end
(rounded 8-bit grey inputs, batch size 1, ONE min-max over the pasted image, the authors' rounding
PNG conversion); ``forward(ir, vis_y)`` is the harness's differentiable float path (unrounded BT.601
luma, sigmoid output pasted from the same crops, min-max left to the harness, ``normalize="minmax_y"``,
no 8-bit rounding). On the random reference checkpoint and dev pair 00016N the float path's 8-bit
result (not recoloured) differs from the official PNG by at most 9 grey levels, mean 0.48, more than
1 level on 4.3% of the pixels; what exceeds 1 level comes from the unrounded luma (with a grey visible
image both agree within 1 level).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusion_models.cddfuse import legacy_png_uint8, model_device, official_grey_inputs, official_png
from fusion_models.layers import base_feature_block
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model

CHANNELS = (8, 16, 32, 32)
TILE_MULTIPLE = 32
"""test.py runs one forward pass when both sides are multiples of 32, four corner crops otherwise."""
WEIGHTS_URL = "https://github.com/Zhaozixiang1228/MMIF-EMMA/tree/main/model"


def _conv3x3(cin: int, cout: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias, padding_mode="reflect")


class ResBlock(nn.Module):
    """3x3 conv, ReLU, 3x3 conv (biased, reflection padding), plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(_conv3x3(channels, channels, bias=True), nn.ReLU(),
                                  _conv3x3(channels, channels, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class LocalFeatureExtraction(nn.Module):
    """Two :class:`ResBlock` (official ``LocalFeatureExtraction``)."""

    def __init__(self, channels: int, num_blocks: int = 2):
        super().__init__()
        self.Extraction = nn.Sequential(*(ResBlock(channels) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Extraction(x)


class RestormerCNNBlock(nn.Module):
    """Official ``Restormer_CNN_block``: 3x3 embedding, then a global (attention) and a local (ResBlock)
    branch side by side, concatenated and merged by a 3x3 convolution. (N,Cin,H,W) -> (N,Cout,H,W)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.embed = _conv3x3(in_dim, out_dim)
        self.GlobalFeature = base_feature_block(out_dim, num_heads=8, padding_mode="reflect")
        self.LocalFeature = LocalFeatureExtraction(out_dim)
        self.FFN = _conv3x3(2 * out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), dim=1))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.ReLU())


class EMMA(nn.Module):
    """EMMA's U-Fuser (official ``Ufuser``), forward on any size with both sides >= 32."""

    def __init__(self):
        super().__init__()
        c = CHANNELS
        for side in "VI":
            for k in range(4):
                setattr(self, f"{side}_en_{k + 1}", RestormerCNNBlock(1 if k == 0 else c[k - 1], c[k]))
        for k in range(4):
            setattr(self, f"f_{k + 1}", RestormerCNNBlock(2 * c[k], c[k]))
        for side in "VI":
            for k in range(3):
                setattr(self, f"{side}_down{k + 1}", _conv3x3(c[k], c[k], stride=2))
        self.up4 = _up(c[3], c[2])
        self.up3 = _up(c[2], c[1])
        self.up2 = _up(c[1], c[0])
        self.de_1 = RestormerCNNBlock(2 * c[0], c[0])
        self.de_2 = RestormerCNNBlock(2 * c[1], c[1])
        self.de_3 = RestormerCNNBlock(2 * c[2], c[2])
        self.de_4 = RestormerCNNBlock(c[3], c[3])
        self.last = nn.Sequential(_conv3x3(c[0], 1, bias=True), nn.Sigmoid())

    def _encode(self, x: torch.Tensor, side: str) -> list[torch.Tensor]:
        feats = [getattr(self, f"{side}_en_1")(x)]
        for k in range(1, 4):
            feats.append(getattr(self, f"{side}_en_{k + 1}")(getattr(self, f"{side}_down{k}")(feats[-1])))
        return feats

    def network(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """One official ``Ufuser`` forward pass (sides multiples of 8, at least 16): (N,1,H,W) x 2 -> sigmoid."""
        fused = [getattr(self, f"f_{k + 1}")(torch.cat((i, v), dim=1))
                 for k, (i, v) in enumerate(zip(self._encode(ir, "I"), self._encode(vis_y, "V")))]
        out = self.up4(self.de_4(fused[3]))
        out = self.up3(self.de_3(torch.cat((out, fused[2]), dim=1)))
        out = self.up2(self.de_2(torch.cat((out, fused[1]), dim=1)))
        return self.last(self.de_1(torch.cat((out, fused[0]), dim=1)))

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fuse a batch as ``test.py`` does: whole when both sides are multiples of 32, else four corner crops.

        Args:
            ir: (N,1,H,W) infrared in [0,1] (the official first argument).
            vis_y: (N,1,H,W) visible luminance in [0,1] (the official reader gives the rounded 8-bit
                grey value; see :func:`official_image`). H, W >= 32.

        Returns:
            (N,1,H,W) sigmoid output in (0,1), pasted from the crops; the official script min-max
            normalises it per image (after pasting).

        Raises:
            ValueError: shapes differ, are not one-channel, or a side is below 32.
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(f"EMMA expects IR and visible luminance of one shape (N,1,H,W), got IR "
                             f"{tuple(ir.shape)} and visible {tuple(vis_y.shape)}")
        h, w = ir.shape[-2:]
        if min(h, w) < TILE_MULTIPLE:
            raise ValueError(f"EMMA needs H, W >= {TILE_MULTIPLE} (the official test.py runs crops of "
                             f"multiples of {TILE_MULTIPLE}), got {tuple(ir.shape)}")
        h1, w1 = h - h % TILE_MULTIPLE, w - w % TILE_MULTIPLE
        if (h1, w1) == (h, w):
            return self.network(ir, vis_y)

        def crop(rows: slice, cols: slice) -> torch.Tensor:
            return self.network(ir[..., rows, cols], vis_y[..., rows, cols])

        top, bottom = slice(0, h1), slice(h - h1, h)
        left, right = slice(0, w1), slice(w - w1, w)
        # Each crop contributes only what the crops pasted before it do not cover.
        rows = [crop(top, left)]
        if w1 != w:
            rows[0] = torch.cat((rows[0], crop(top, right)[..., w1 - w:]), dim=-1)
        if h1 != h:
            strip = crop(bottom, left)[..., h1 - h:, :]
            if w1 != w:
                strip = torch.cat((strip, crop(bottom, right)[..., h1 - h:, w1 - w:]), dim=-1)
            rows.append(strip)
        return torch.cat(rows, dim=-2)


def official_image(model: nn.Module, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test.py`` end to end for a batch of 8-bit pairs.

    Official reader (rounded 8-bit grey / 255, as CDDFuse's), one image at a time. Sides multiples of
    32: one forward pass, min-max in torch, x255, the authors' PNG conversion (see
    :func:`fusion_models.cddfuse.legacy_png_uint8`). Otherwise: the four corner crops, each crop's
    sigmoid x255 pasted into a float32 array, ONE min-max over it (numpy float32), x255, same writer.

    Args:
        model: an :class:`EMMA`.
        ir: (N,1,H,W) float IR, 8-bit / 255. vis: (N,3,H,W) RGB float, 8-bit / 255.
        text: unused (EMMA has no text input).

    Returns:
        (N,H,W) uint8: the grey images the official script writes.
    """
    ir_in, vis_in = official_grey_inputs(ir, vis)
    device = model_device(model)
    h, w = ir_in.shape[-2:]
    images = []
    with torch.no_grad():
        for i in range(ir_in.shape[0]):
            out = model(ir_in[i:i + 1].to(device), vis_in[i:i + 1].to(device))
            if h % TILE_MULTIPLE == 0 and w % TILE_MULTIPLE == 0:
                images.append(official_png(out))
                continue
            pasted = (out * 255).cpu().numpy()[0, 0]
            pasted = (pasted - np.min(pasted)) / (np.max(pasted) - np.min(pasted))
            images.append(legacy_png_uint8(pasted * 255))
    return np.stack(images)


@register_fusion_model(
    "emma",
    vis_input="y",
    output="y",
    normalize="minmax_y",
    trainable=True,
    paper="Zhao, Bai, Zhang, Zhang, Zhang, Xu, Chen, Timofte, Van Gool: Equivariant Multi-Modality Image "
          "Fusion, CVPR 2024",
    licence="none stated (the repository has no LICENSE file)",
    url="https://github.com/Zhaozixiang1228/MMIF-EMMA",
    weights_file="EMMA.pth",
    description="U-Fuser (Restormer-CNN blocks, two encoders, fusion per scale) trained with equivariant "
                f"pseudo-sensing; sides not multiples of 32 run as four corner crops; official weights: "
                f"{WEIGHTS_URL}",
    official_image=official_image,
    verified=VERIFIED_RANDOM_WEIGHTS,
)
def emma() -> nn.Module:
    return EMMA()
