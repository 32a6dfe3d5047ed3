"""Running a fusion model under its spec: input preparation, normalisation and recolouring.

This is the single place that turns ``(ir, visible RGB)`` into the image a task network sees, so
every method is treated identically. Two ways (``io``), chosen per run:

* ``"official"`` (the default): a port with an official test script (``spec.official_image``) writes
  exactly what that script writes, 8-bit, with its truncation, clamping, min-max and colour round
  trips (:func:`written_images`). Where the official image is grey, the task networks get it
  recoloured with the visible image's chroma (:func:`task_image`, :func:`recolor_keep_luminance`), a
  separate harness step that keeps the official grey value as the luminance: the official image
  itself stays what ``taskeval fuse`` writes.
* ``"float"``: :func:`apply_fusion`, the harness's own float pipeline (luminance in float, one
  rounding at the end, float recolouring); what ``--io float`` gives, and what every method without
  an official script (classic fusions, plug-ins) uses whatever ``io`` says.

:func:`apply_fusion` is differentiable end to end: joint training and ``taskeval fuse train`` use it
under either ``io``; only the images written and cached change.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusion_models.official_io import as_8bit
from taskeval.color import luminance, recolor
from taskeval.errors import ConfigError, DataError
from taskeval.imageio import tensor_to_uint8

IO_MODES = ("official", "float")


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
                 spec=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fuse a batch the way the method's spec says and return what the task network sees.

    Args:
        model: a fusion model (``model.spec`` used unless ``spec`` is given).
        ir: (N,1,H,W) float in [0,1].
        vis: (N,3,H,W) RGB float in [0,1].
        text: (N,L,D) text embeddings for models with ``needs_text``.
        out: the model's raw output on this batch when the caller has it already (joint training computes
            its fusion loss on it: one forward and backward pass instead of two); None runs the model.

    Returns:
        (N,3,H,W) RGB in [0,1], or (N,1,H,W) for one-channel output that is not recoloured.
    """
    spec = spec if spec is not None else model.spec
    check_pair(ir, vis)
    vis_in = luminance(vis) if spec.vis_input == "y" else vis
    if out is None:
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


def image_io(spec, io: str) -> str:
    """The way ``spec``'s images are made under the run's ``io``: ``"official"`` where asked for and the
    method has an official script (``spec.official_image``), else ``"float"``.

    Raises:
        ConfigError: ``io`` is not one of :data:`IO_MODES`.
    """
    if io not in IO_MODES:
        raise ConfigError(f"io must be one of {IO_MODES}, got {io!r}")
    return "official" if io == "official" and spec.official_image is not None else "float"


def io_note(spec, io: str, grey: bool) -> str:
    """What tables and reports say about where a method's task images came from ("" for methods that
    have no official script, where ``io`` changes nothing)."""
    if spec.official_image is None:
        return ""
    if image_io(spec, io) == "float":
        return "harness float pipeline (io: float)"
    if grey and spec.recolor:
        return "official 8-bit grey output, recoloured with the visible chroma (luminance kept)"
    return "official 8-bit output"


def written_images(model: nn.Module, ir: torch.Tensor, vis: torch.Tensor, text: torch.Tensor | None = None,
                   spec=None, io: str = "official") -> np.ndarray:
    """The 8-bit images a method writes for a batch: its official script's under ``io="official"`` (where
    it has one), else :func:`apply_fusion` rounded to 8 bits.

    Args:
        model: a fusion model (``model.spec`` used unless ``spec`` is given).
        ir: (N,1,H,W) float in [0,1]; for the official path exactly 8-bit files / 255.
        vis: (N,3,H,W) RGB float in [0,1], likewise.
        text: (N,L,D) text embeddings for models with ``needs_text``.
        io: ``"official"`` or ``"float"``.

    Returns:
        (N,H,W) grey or (N,H,W,3) RGB uint8.

    Raises:
        DataError: the official path on inputs that are not 8-bit images (e.g. 16-bit files, resized IR).
    """
    spec = spec if spec is not None else model.spec
    check_pair(ir, vis)
    if image_io(spec, io) == "official":
        try:  # the official scripts read 8-bit files: say so before running them on anything else
            as_8bit(ir, "IR"), as_8bit(vis, "visible")
        except ValueError as exc:
            raise DataError(f"{spec.name}: {exc}; fuse such images with io: float (--io float)") from None
        out = np.asarray(spec.official_image(model, ir, vis, text=text))
        expected = (ir.shape[0], *ir.shape[-2:])
        if out.dtype != np.uint8 or out.shape[:3] != expected or out.ndim not in (3, 4) or \
                (out.ndim == 4 and out.shape[3] != 3):
            raise ValueError(f"{spec.name}: official_image returned {out.dtype} {out.shape}, expected uint8 "
                             f"{expected} or {(*expected, 3)}")
        return out
    fused = apply_fusion(model, ir, vis, text=text, spec=spec)
    if not torch.isfinite(fused).all():
        raise DataError(f"{spec.name}: non-finite fused output")
    return np.stack([tensor_to_uint8(img) for img in fused])


def recolor_keep_luminance(y8: np.ndarray, rgb8: np.ndarray) -> np.ndarray:
    """An 8-bit luminance with the chroma of an 8-bit RGB image, the luminance kept.

    Each visible pixel's colour offsets from its own BT.601 luma, ``RGB - Y`` (zero luma, since the
    weights sum to 1; the colour differences that YCbCr's Cb and Cr scale), are added to ``y8``; where
    that would leave the RGB cube (saturated colours on very dark or bright pixels) the offsets are
    scaled down for that pixel just enough to stay inside, instead of clipping channels, which would move
    the luminance (by up to 14 grey levels on MLFuse's M3FD_00000, by 2 or more on up to 2% of the pixels
    of a night image). Then rounded: the BT.601 luma of the result is ``y8`` within half a level (OpenCV's
    integer ``RGB2GRAY`` of it: within 1). Elementwise float64, the same on every CPU.

    Args:
        y8: (H,W) uint8 luminance (a grey official image).
        rgb8: (H,W,3) uint8 RGB visible image of the same size.

    Returns:
        (H,W,3) uint8 RGB.
    """
    if y8.ndim != 2 or rgb8.shape != (*y8.shape, 3) or y8.dtype != np.uint8 or rgb8.dtype != np.uint8:
        raise ValueError(f"recolor_keep_luminance: expected (H,W) and (H,W,3) uint8, got {y8.shape} {y8.dtype} "
                         f"and {rgb8.shape} {rgb8.dtype}")
    y = y8.astype(np.float64)[..., None]
    rgb = rgb8.astype(np.float64)
    offsets = rgb - (0.299 * rgb[..., :1] + 0.587 * rgb[..., 1:2] + 0.114 * rgb[..., 2:])
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offsets > 0, (255.0 - y) / offsets, np.where(offsets < 0, -y / offsets, np.inf))
    scale = np.minimum(1.0, room.min(axis=-1, keepdims=True))
    return np.clip(np.rint(y + scale * offsets), 0, 255).astype(np.uint8)


def task_image(written: np.ndarray, vis8: np.ndarray, spec, io: str) -> np.ndarray:
    """What the task networks see of a written image: a grey official image recoloured with the visible
    chroma, its luminance kept (:func:`recolor_keep_luminance`); anything else unchanged.

    Only the official path needs it: the float path recolours before it rounds.

    Args:
        written: (H,W) or (H,W,3) uint8, from :func:`written_images`.
        vis8: (H,W,3) uint8 RGB visible image of the same pair.
        spec: the method's spec (``recolor=False`` keeps the grey image).
        io: the run's ``io``.
    """
    if written.ndim == 2 and spec.recolor and image_io(spec, io) == "official":
        return recolor_keep_luminance(written, vis8)
    return written
