"""CDDFuse (Zhao et al., CVPR 2023): correlation-driven dual-branch feature decomposition.

Port of Zhaozixiang1228/MMIF-CDDFuse @ fd8da1f (``net.py``, ``test_IVF.py``,
``utils/img_read_save.py``). Four sub-networks, checkpointed side by side in one file
(``models/CDDFuse_IVF.pth``, shipped in that repository):

* ``DIDF_Encoder``, shared by both modalities: 3x3 patch embedding 1 -> 64, four Restormer blocks
  (channel attention "MDTA" + gated depth-wise feed-forward), then a base branch (one
  ``BaseFeatureExtraction``: channel attention whose q/k/v come from a FULL 3x3 convolution
  192 -> 192, and a feed-forward whose 3x3 convolution has groups = hidden, i.e. 2 channels per
  group) and a detail branch (three invertible :class:`DetailNode` couplings).
* ``BaseFuseLayer`` (one ``BaseFeatureExtraction``) on the summed base features and
  ``DetailFuseLayer`` (one :class:`DetailNode`) on the summed detail features.
* ``DIDF_Decoder``: 1x1 128 -> 64 on ``cat(base, detail)``, four Restormer blocks, 3x3 64 -> 32,
  LeakyReLU(0.01), 3x3 32 -> 1, plus the VISIBLE INPUT, then a sigmoid.

Parameter names are ``<checkpoint key>.<official key without "module.">``; the official file loads
strictly through :meth:`CDDFuse.convert_official_checkpoint`. Every parameter takes part in the
forward pass. The layers are those CDDFuse shares with EMMA, SMFNet and FILM
(:mod:`fusion_models.layers`: :func:`~fusion_models.layers.restormer_block`,
:func:`~fusion_models.layers.base_feature_block`, :class:`~fusion_models.layers.DetailNode`): the
official operations up to float rounding (layer norm with the biased variance over the channels of
each pixel, exact GELU), with two deliberate differences in how they are computed:

* the sums over all pixels inside the channel attention are taken in blocks
  (:func:`fusion_models.layers.pixel_gram`): the official float32 output lands 2.3e-6 / 1.7e-4 from
  exact (float64) evaluation on dev pairs 00016N / 00091D (6.9e-6 / 2.9e-4 on an AMD EPYC: it depends
  on the CPU's kernels), the port with blocked sums 8.4e-7 / 5.7e-6 (measured with this module's own
  attention layers, before they were shared);
* the dense q/k/v convolutions (1x1, then a full 3x3 192 -> 192) run as one composed 3x3 convolution
  64 -> 128 for q and k and one per-image 3x3 convolution 64 -> 64 for v, attention and projection
  (:class:`fusion_models.layers.DenseQKVAttention`: a third of the multiply-adds; the whole forward
  pass about 2x faster than with the official convolutions, measured in one process).

Measured with the shared layers (2 threads, AVX-512): raw output 2.5e-6 / 1.7e-4 from the official
one on 00016N / 00091D, official image within 1 grey level everywhere, 39 / 2780 pixels 1 level off.

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

import numpy as np
import torch
from torch import nn

from fusion_models.layers import DetailNode, base_feature_block, restormer_block
from fusion_models.official_io import check_official_pair, opencv_rounded_grey
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model
from fusion_models.weights import flatten_parallel_checkpoint

# Top-level keys of the official checkpoint, in the order test_IVF.py loads them.
CHECKPOINT_KEYS = ("DIDF_Encoder", "DIDF_Decoder", "BaseFuseLayer", "DetailFuseLayer")
WEIGHTS_URL = "https://github.com/Zhaozixiang1228/MMIF-CDDFuse/tree/main/models"


# --- CDDFuse ---------------------------------------------------------------------------------------


class DetailFeatureExtraction(nn.Module):
    """``num_layers`` :class:`~fusion_models.layers.DetailNode` couplings on the channel halves of a
    (N,64,H,W) feature."""

    def __init__(self, num_layers: int = 3):
        super().__init__()
        self.net = nn.Sequential(*(DetailNode() for _ in range(num_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """Official ``Restormer_Encoder``: (N,1,H,W) -> base and detail features, each (N,64,H,W)."""

    def __init__(self, dim: int = 64, num_heads: int = 8, num_blocks: int = 4):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, 3, padding=1, bias=False)
        self.encoder_level1 = nn.Sequential(*(restormer_block(dim, num_heads, expansion=2) for _ in range(num_blocks)))
        self.baseFeature = base_feature_block(dim, num_heads)
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
        self.encoder_level2 = nn.Sequential(*(restormer_block(dim, num_heads, expansion=2) for _ in range(num_blocks)))
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
        self.BaseFuseLayer = base_feature_block(64, 8)
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
        return flatten_parallel_checkpoint(obj, CHECKPOINT_KEYS)


# --- the official test script around the network (shared with EMMA: same reader and writer) ---------

def _as_uint8(x: torch.Tensor) -> np.ndarray:
    """Float image(s) in [0,1] that are 8-bit files / 255 -> the uint8 values (nearest level)."""
    return np.rint(x.detach().float().cpu().clamp(0, 1).numpy() * 255.0).astype(np.uint8)


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
    check_official_pair(ir, vis, "CDDFuse/EMMA")
    ir8, vis8 = _as_uint8(ir[:, 0]), _as_uint8(vis)
    ir_in = np.stack([opencv_rounded_grey(img) for img in ir8])
    vis_in = np.stack([opencv_rounded_grey(img.transpose(1, 2, 0)) for img in vis8])
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
