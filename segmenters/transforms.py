"""Training augmentation and input normalisation of the segmentation network (NumPy/OpenCV, per sample).

Every random choice comes from the ``numpy.random.Generator`` the caller passes in, seeded from
(seed, epoch, sample index), so a resumed or multi-process run sees exactly the same crops and flips.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics: what smp's encoders were pretrained with; kept for randomly initialised
# encoders too so that a pretrained and a scratch run differ only in the weights.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(img: np.ndarray) -> np.ndarray:
    """(H,W,3) float32 RGB in [0,1] -> (3,H,W) float32 standardised with ImageNet mean/std."""
    return np.ascontiguousarray(((img - MEAN) / STD).transpose(2, 0, 1), dtype=np.float32)


def random_scale_crop_flip(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                           crop_hw: tuple[int, int], scale_range: tuple[float, float], hflip: bool,
                           vflip: bool, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, pad-if-needed, random crop and flips of one sample.

    Args:
        img: (H,W,3) float32 in [0,1].
        mask: (H,W) integer class ids.
        rng: source of every random choice.
        crop_hw: output (H, W).
        scale_range: rescale factor drawn uniformly from this range (bilinear image, pixel-centre-aligned nearest mask).
        hflip, vflip: flip with probability 0.5 each.
        ignore_index: mask value of padded pixels.

    Returns:
        (3,H,W) normalised float32 image and (H,W) int64 mask of size ``crop_hw``. Padded image
        pixels are 0 after normalisation (the mean colour) and padded mask pixels ``ignore_index``.
    """
    h, w = mask.shape
    s = float(rng.uniform(*scale_range))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8 if mask.max() < 256 else np.uint16), (nw, nh),
                          interpolation=cv2.INTER_NEAREST_EXACT)
    x = normalize(img)
    mask = mask.astype(np.int64)
    ch, cw = crop_hw
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_index)
    y0 = int(rng.integers(0, x.shape[1] - ch + 1))
    x0 = int(rng.integers(0, x.shape[2] - cw + 1))
    x = x[:, y0:y0 + ch, x0:x0 + cw]
    mask = mask[y0:y0 + ch, x0:x0 + cw]
    if hflip and rng.random() < 0.5:
        x, mask = x[:, :, ::-1], mask[:, ::-1]
    if vflip and rng.random() < 0.5:
        x, mask = x[:, ::-1], mask[::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(mask)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (N,C,H,W) at the bottom/right to sizes divisible by ``multiple``; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)
