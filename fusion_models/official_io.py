"""Shared pieces of the ports' ``official_image`` functions (see :class:`fusion_models.FusionSpec`).

``official_image`` replays an official test script from the harness's float inputs; these helpers
recover the 8-bit files those inputs came from and run a model the way official scripts do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
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
