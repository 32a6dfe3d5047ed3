"""Running a fusion model under its spec: input preparation, normalisation and recolouring.

This is the single place that turns ``(ir, visible RGB)`` into the image a task network sees, so
every method is treated identically. Differentiable end to end (joint training uses it too).
"""

from __future__ import annotations

import torch
from torch import nn

from taskeval.color import luminance, recolor


def check_pair(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """Validate the tensor contract: IR (N,1,H,W), visible (N,3,H,W), same N, H, W, floating point."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 3:
        raise ValueError(f"visible must be (N,3,H,W) RGB, got shape {tuple(vis.shape)}")
    if ir.shape[0] != vis.shape[0] or ir.shape[-2:] != vis.shape[-2:]:
        raise ValueError(f"IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch or size")
    if not (ir.is_floating_point() and vis.is_floating_point()):
        raise TypeError(f"expected float tensors in [0,1], got {ir.dtype} and {vis.dtype}")


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max over all channels and pixels (what the official test scripts do)."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def apply_fusion(model: nn.Module, ir: torch.Tensor, vis: torch.Tensor, text: torch.Tensor | None = None,
                 spec=None) -> torch.Tensor:
    """Fuse a batch the way the method's spec says and return what the task network sees.

    Args:
        model: a fusion model (``model.spec`` used unless ``spec`` is given).
        ir: (N,1,H,W) float in [0,1].
        vis: (N,3,H,W) RGB float in [0,1].
        text: (N,L,D) text embeddings for models with ``needs_text``.

    Returns:
        (N,3,H,W) RGB in [0,1], or (N,1,H,W) for one-channel output that is not recoloured.
    """
    spec = spec if spec is not None else model.spec
    check_pair(ir, vis)
    vis_in = luminance(vis) if spec.vis_input == "y" else vis
    out = model(ir, vis_in, text=text) if spec.needs_text else model(ir, vis_in)
    if out.ndim != 4 or out.shape[0] != ir.shape[0] or out.shape[-2:] != ir.shape[-2:] or out.shape[1] not in (1, 3):
        raise ValueError(f"fusion model {spec.name!r} returned shape {tuple(out.shape)}, expected "
                         f"({ir.shape[0]},1|3,{ir.shape[2]},{ir.shape[3]})")
    if spec.normalize == "minmax_y":
        out = _minmax(out)
    if out.shape[1] == 1 and spec.recolor:
        out = recolor(out.clamp(0, 1) if spec.normalize == "clip" else out, vis)
    if spec.normalize == "minmax_rgb":
        out = _minmax(out)
    return out.clamp(0.0, 1.0)
