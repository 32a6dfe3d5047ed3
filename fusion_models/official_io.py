"""Shared pieces of the ports' ``official_image`` functions (see :class:`fusion_models.FusionSpec`).

``official_image`` replays an official test script from the harness's float inputs; these helpers
recover the 8-bit files those inputs came from, run a model the way official scripts do, and hold the
readers, colour conversions and writers that several official scripts share (each written once here,
used by the ports that follow it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

# Largest distance of x * 255 from an integer that still counts as "an 8-bit value / 255": float32
# division leaves at most ~3e-5 there; anything further off is not 8-bit data (e.g. a 16-bit file).
EIGHT_BIT_TOLERANCE = 1e-3


def as_8bit(x: torch.Tensor, what: str) -> np.ndarray:
    """The 8-bit image behind a float tensor that holds ``file / 255``.

    Args:
        x: (N,C,H,W) float in [0,1], exactly 8-bit values divided by 255.
        what: name used in error messages (``"IR"``, ``"visible"``).

    Returns:
        (N,C,H,W) uint8.

    Raises:
        ValueError: ``x`` is not 4-D or does not hold 8-bit values (the official scripts read 8-bit
            files; from other data their output cannot be reproduced).
    """
    if x.ndim != 4:
        raise ValueError(f"{what}: expected (N,C,H,W), got shape {tuple(x.shape)}")
    scaled = x.detach().double().cpu().numpy() * 255.0
    levels = np.rint(scaled)
    off = float(np.abs(scaled - levels).max()) if scaled.size else 0.0
    if off > EIGHT_BIT_TOLERANCE or (levels.size and (levels.min() < 0 or levels.max() > 255)):
        raise ValueError(f"{what}: official_image needs 8-bit images divided by 255 (the files the "
                         f"official code reads); values are up to {off:.2g} grey levels off the 8-bit grid "
                         "or outside [0,1]")
    # C-contiguous like a freshly read file: a channels-last layout changes the convolutions' float sums.
    return np.ascontiguousarray(levels, dtype=np.uint8)


def check_official_pair(ir: torch.Tensor, vis: torch.Tensor, who: str) -> None:
    """ValueError unless ``ir`` is (N,1,H,W) and ``vis`` (N,3,H,W) of the same N, H, W (``who``: the port)."""
    if ir.ndim != 4 or ir.shape[1] != 1 or vis.ndim != 4 or vis.shape[1] != 3 or \
            ir.shape[0] != vis.shape[0] or ir.shape[-2:] != vis.shape[-2:]:
        raise ValueError(f"{who} official_image: expected IR (N,1,H,W) and visible RGB (N,3,H,W), got "
                         f"{tuple(ir.shape)} and {tuple(vis.shape)}")


@contextmanager
def official_inference(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` under ``torch.no_grad()`` (what the official test scripts do); restores the mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def pillow_luma(rgb8: np.ndarray) -> np.ndarray:
    """Pillow ``convert('L')`` of an 8-bit RGB image: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``.

    Args:
        rgb8: (H,W,3) uint8 RGB.

    Returns:
        (H,W) uint8, the integer-rounded BT.601 luma MLFuse's and DIDFuse's readers hand the network.
    """
    return np.array(Image.fromarray(np.ascontiguousarray(rgb8)).convert("L"))


def opencv_rounded_grey(img8: np.ndarray) -> np.ndarray:
    """``image_read_cv2(path, 'GRAY') / 255`` of the CDDFuse, EMMA, FILM and SMFNet code for an 8-bit file.

    ``cv2.imread`` (BGR; a grey file as three equal channels) -> float32 -> OpenCV ``BGR2GRAY`` on the
    float image -> ``np.round`` -> / 255: the ROUNDED grey level / 255 (Pillow's integer luma,
    :func:`pillow_luma`, can differ from it by one level).

    Args:
        img8: (H,W) grey or (H,W,3) RGB uint8 file contents.

    Returns:
        (H,W) float32.
    """
    rgb = np.repeat(img8[..., None], 3, axis=2) if img8.ndim == 2 else img8
    bgr = np.ascontiguousarray(rgb[..., ::-1]).astype(np.float32)
    return np.round(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) / 255.0


def ycrcb_of_rgb(rgb: torch.Tensor, clamp: bool) -> torch.Tensor:
    """``RGB2YCrCb`` of the SeAFusion and IGNet test scripts on [0,1] floats.

    ``Y = .299 R + .587 G + .114 B``, ``Cr = (R - Y) .713 + .5``, ``Cb = (B - Y) .564 + .5``, in float32 in
    that order (SeAFusion clamps each to [0,1], IGNet does not). The result is laid out as the official
    function leaves it: a (N,3,H,W) view of an (N,H,W,3) array (channels last in memory), which is the
    memory layout the official networks received (it changes a convolution's float sums, ~1e-5).

    Args:
        rgb: (N,3,H,W) float32 RGB in [0,1].
        clamp: clamp Y, Cr and Cb to [0,1] (SeAFusion).

    Returns:
        (N,3,H,W) float32 with channels (Y, Cr, Cb).
    """
    n, _, h, w = rgb.shape
    flat = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    r, g, b = flat[:, 0], flat[:, 1], flat[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    out = torch.stack([y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5], dim=1)
    if clamp:
        out = out.clamp(0.0, 1.0)
    return out.reshape(n, h, w, 3).permute(0, 3, 1, 2)


# ``YCrCb2RGB`` of the SeAFusion and IGNet test scripts: (Y, Cr, Cb) + bias, times this matrix.
_YCRCB_TO_RGB = ((1.0, 1.0, 1.0), (1.403, -0.714, 0.0), (0.0, -0.344, 1.773))
_YCRCB_BIAS = (0.0, -0.5, -0.5)


def rgb_of_ycrcb(ycrcb: torch.Tensor, matmul: Callable = torch.mm) -> torch.Tensor:
    """``YCrCb2RGB`` of the SeAFusion and IGNet test scripts: ``(pixels + bias) @ M`` as one matrix product.

    Args:
        ycrcb: (N,3,H,W) float32 with channels (Y, Cr, Cb).
        matmul: the (P,3) x (3,3) product; the official code's is ``torch.mm`` (BLAS: its summation order
            is the CPU's, which tests vary).

    Returns:
        (N,3,H,W) float32 RGB, unclamped.
    """
    n, _, h, w = ycrcb.shape
    flat = ycrcb.permute(0, 2, 3, 1).reshape(-1, 3)
    mat = torch.tensor(_YCRCB_TO_RGB, dtype=flat.dtype, device=flat.device)
    bias = torch.tensor(_YCRCB_BIAS, dtype=flat.dtype, device=flat.device)
    return matmul(flat + bias, mat).reshape(n, h, w, 3).permute(0, 3, 1, 2)


def minmax_truncate(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SeAFusion / IGNet writer: one min-max over the whole float32 array, ``255.0 *``, ``np.uint8``.

    Args:
        rgb: (H,W,3) float32 in [0,1] (clamped RGB).

    Returns:
        ``(scaled, png)``: the float32 array in 0..255 that is cast, and the uint8 image (truncated).
    """
    scaled = 255.0 * ((rgb - rgb.min()) / (rgb.max() - rgb.min()))
    return scaled, np.uint8(scaled)


def recolor_8bit(y8: np.ndarray, rgb8: np.ndarray) -> np.ndarray:
    """An 8-bit luminance with the chroma of an 8-bit RGB image, through OpenCV's integer YCrCb.

    ``Cr``/``Cb`` of ``rgb8`` by OpenCV ``RGB2YCrCb`` (BT.601, rounded to 8 bits), merged with ``y8``, back
    with ``YCrCb2RGB`` (fixed point, rounded, saturated to 0..255): TarDAL's official colour step
    (``fuse.py --color``, which does it on BGR arrays: the same integer arithmetic). Saturation moves the
    luminance of pixels whose ``Y`` and chroma leave the RGB cube (dark or bright saturated colours); the
    harness's recolouring of grey official images avoids that
    (:func:`taskeval.fusing.recolor_keep_luminance`).

    Args:
        y8: (H,W) uint8 luminance.
        rgb8: (H,W,3) uint8 RGB of the same size.

    Returns:
        (H,W,3) uint8 RGB.
    """
    if y8.ndim != 2 or rgb8.shape != (*y8.shape, 3) or y8.dtype != np.uint8 or rgb8.dtype != np.uint8:
        raise ValueError(f"recolor_8bit: expected (H,W) and (H,W,3) uint8, got {y8.shape} {y8.dtype} and "
                         f"{rgb8.shape} {rgb8.dtype}")
    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = y8
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
