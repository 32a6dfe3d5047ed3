"""TarDAL generator: target-aware dual adversarial fusion (Liu et al., CVPR 2022), 2022 release.

Re-implemented from the paper and the layout of the official checkpoints (JinyuanLiu-CV/TarDAL
@ 8ef276f, ``Generator(dim=32, depth=3)``); module names follow the official state dict so
``tardal.pt``, ``tardal+.pt`` and ``tardal++.pt`` load with ``strict=True``.

Data flow (any ``H, W``; stride 1 everywhere, output the input size)::

    cat[IR, Y] (N,2,H,W) -> encoder conv-BN-ReLU (32) -> dense: 3 x conv-BN-ReLU, each fed the
    concatenation of all previous maps (-> 128) -> fuse: conv-ReLU (128) -> conv-BN-ReLU (64)
    -> conv-BN-ReLU (32) -> conv-tanh (1)

Three official checkpoints, registered as three methods (the README's table):

* ``tardal`` (``tardal.pt``, "optimised for human vision", the default): the authors run it without
  ``--eval``, so BatchNorm stays in training mode and normalises each image with its own statistics
  (batch size 1). Its stored running statistics do not suit it (``num_batches_tracked`` is 0): with
  them the output differs by 42 grey levels on average and night images come out far darker.
  Default ``bn_mode="instance"``.
* ``tardal+`` (``tardal+.pt``, optimised for detection) and ``tardal++`` (``tardal++.pt``, joint
  optimum): the authors run them with ``--eval`` (stored running statistics). Default
  ``bn_mode="running"``.

``bn_mode="instance"`` reproduces the official training-mode inference independently of the batch:
in eval mode each sample is normalised with its own per-channel mean and biased variance over H, W,
which equals training-mode BatchNorm on a batch of one, so batched inference gives the official
per-image output. ``bn_mode="running"`` is ordinary eval-mode BatchNorm. In training mode both are
ordinary BatchNorm (batch statistics, running statistics updated).

Official inference (``fuse.py --color``) = :func:`official_image` (what ``taskeval fuse`` writes by default):

* Input order: the official ``forward(ir, vi)`` concatenates ``[ir, vi]`` (IR is channel 0), the same
  order as our ``forward(ir, vis_y)``.
* Read: IR with OpenCV as grey, the visible image in colour and converted with ``BGR2GRAY``, i.e. BT.601
  luma **rounded to an integer** grey level; both ``/255.`` in float64, then float32.
* Output (:func:`official_postprocess`): the tanh output clipped to [0,1], ``x255`` and **truncated** to
  uint8 (= fused Y), merged with the 8-bit Cr/Cb of OpenCV's ``BGR2YCrCb`` of the visible file and
  converted back with ``YCrCb2BGR`` (rounding, saturation;
  :func:`fusion_models.official_io.recolor_8bit`). Output: an RGB PNG.

The float path (``apply_fusion``, joint training, ``--io float``) passes the float BT.601 luma
(:func:`taskeval.color.luminance`, up to half a grey level from the rounded one), recolours the float Y
with the float BT.601 chroma of :func:`taskeval.color.recolor` (the same coefficients as OpenCV) and
rounds once at the end. On the 13 reference pairs it is up to 9 grey levels from the official PNG, 0.5-0.66
on average, with 8-11% of the M3FD pixels off by 2 or more.

Fidelity with ``tardal.pt`` (``shared/reference/TarDAL``, 13 pairs, ``tests/test_port_official_weights.py``):
raw output with the official inputs within ~4e-6; :func:`official_image` within 1 grey level of the
official PNG on every pixel, equal on all but 0-57 pixels per image. There are no reference outputs of
``tardal+.pt`` / ``tardal++.pt``: their :func:`official_image` is the same script run with ``--eval``
(the spec's ``bn_mode="running"``), checked only for self-consistency.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from fusion_models.layers import BN_MODES, SampleNorm2d
from fusion_models.official_io import as_8bit, check_official_pair, official_inference, recolor_8bit
from fusion_models.registry import VERIFIED_OFFICIAL_WEIGHTS, register_fusion_model
from taskeval.errors import ConfigError

DIM = 32
DEPTH = 3


def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR (N,1,H,W) and visible luminance (N,1,H,W) of the same batch and size, else ValueError."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"TarDAL: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 1:
        raise ValueError(f"TarDAL: visible must be (N,1,H,W) luminance, got shape {tuple(vis.shape)}")
    if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"TarDAL: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch "
                         "or size")


def conv_block(c_in: int, c_out: int, per_sample: bool | None) -> nn.Sequential:
    """3x3 'same' conv -> [BatchNorm] -> ReLU; ``per_sample=None`` leaves out the BatchNorm.

    Indices 0 (conv) and 1 (BatchNorm) are those of the official checkpoint.
    """
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    if per_sample is not None:
        layers.append(SampleNorm2d(c_out, per_sample))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TarDAL(nn.Module):
    """The TarDAL generator (296,577 parameters).

    Args:
        bn_mode: BatchNorm behaviour in eval mode: ``"instance"`` (per-sample statistics; what the
            official run of ``tardal.pt`` does) or ``"running"`` (stored running statistics; the
            official ``--eval`` runs of ``tardal+.pt`` / ``tardal++.pt``).

    Example::

        model = TarDAL().eval()
        fused_y = model(ir, vis_y)  # (N,1,H,W), (N,1,H,W) -> (N,1,H,W) in (-1,1); clip to [0,1]
    """

    def __init__(self, bn_mode: str = "instance") -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ConfigError(f"TarDAL: bn_mode={bn_mode!r} must be one of {BN_MODES}")
        self.bn_mode = bn_mode
        per_sample = bn_mode == "instance"
        self.encoder = conv_block(2, DIM, per_sample)
        self.dense = nn.ModuleList(conv_block(DIM * (k + 1), DIM, per_sample) for k in range(DEPTH))
        width = DIM * (DEPTH + 1)
        self.fuse = nn.Sequential(
            conv_block(width, 4 * DIM, None),
            conv_block(4 * DIM, 2 * DIM, per_sample),
            conv_block(2 * DIM, DIM, per_sample),
            nn.Sequential(nn.Conv2d(DIM, 1, 3, padding=1), nn.Tanh()),
        )

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,1,H,W) visible luminance in [0,1].

        Returns:
            (N,1,H,W) raw tanh output in (-1,1) (the official script clips it to [0,1]).
        """
        _check_inputs(ir, vis)
        x = self.encoder(torch.cat([ir, vis], dim=1))
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return self.fuse(x)


def official_inputs(ir8: np.ndarray, vis8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``fuse.py``'s reading of one pair: grey IR, OpenCV ``BGR2GRAY`` visible, ``/255.`` in float64.

    Args:
        ir8: (H,W) uint8 IR file; vis8: (H,W,3) uint8 RGB visible file.

    Returns:
        ``(ir, vis_y)``, each (1,1,H,W) float32.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(vis8), cv2.COLOR_RGB2GRAY)  # = BGR2GRAY of the BGR array
    return (torch.from_numpy(ir8 / 255.0).float()[None, None],
            torch.from_numpy(grey / 255.0).float()[None, None])


def official_postprocess(net: torch.Tensor, vis8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fuse.py --color``'s output step: clip, x255, truncate = Y; OpenCV colour round trip.

    Args:
        net: (1,1,H,W) or (H,W) raw tanh output.
        vis8: (H,W,3) uint8 RGB visible file.

    Returns:
        ``(scaled, png)``: (H,W) float32 Y in 0..255 before the cast, and the (H,W,3) uint8 RGB written.
    """
    h, w = net.shape[-2:]
    scaled = net.detach().cpu().reshape(h, w).clip(0.0, 1.0).numpy() * 255.0
    return scaled, recolor_8bit(scaled.astype(np.uint8), vis8)


def official_image(model: TarDAL, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``fuse.py --color`` end to end (with ``--eval`` where the model's ``bn_mode`` is ``"running"``).

    Args:
        model: a :class:`TarDAL` (run in eval mode, i.e. its ``bn_mode``; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused.

    Returns:
        (N,H,W,3) uint8 RGB images, each fused on its own (batch 1) as the official loop does.
    """
    check_official_pair(ir, vis, "TarDAL")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:], 3), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            rgb8 = np.ascontiguousarray(vis8[k].transpose(1, 2, 0))
            img_ir, img_vi = official_inputs(ir8[k, 0], rgb8)
            out[k] = official_postprocess(model(img_ir.to(device), img_vi.to(device)), rgb8)[1]
    return out


_PAPER = ("Liu, Fan, Huang, Wu, Liu, Zhong, Luo: Target-aware Dual Adversarial Learning and a Multi-scenario "
          "Multi-Modality Benchmark to Fuse Infrared and Visible for Object Detection, CVPR 2022")
_URL = "https://github.com/JinyuanLiu-CV/TarDAL"


_SAME_CODE = "official weights of tardal.pt (same code); none of these"
# One generator, three official weight sets: (name, weights file, BatchNorm mode, description, verified).
# Only tardal.pt has reference outputs; tardal+/++ run the same verified code with their own weights and the
# stored BatchNorm statistics, which no reference output checks.
_VARIANTS = (
    ("tardal", "tardal.pt", "instance",
     "dense CNN generator (2022 release), optimised for human vision; BatchNorm per sample",
     VERIFIED_OFFICIAL_WEIGHTS),
    ("tardal+", "tardal+.pt", "running",
     "TarDAL generator with the detection-optimised weights; running BatchNorm statistics", _SAME_CODE),
    ("tardal++", "tardal++.pt", "running",
     "TarDAL generator with the joint vision/detection weights; running BatchNorm statistics", _SAME_CODE),
)


def _register(name: str, weights_file: str, default_bn: str, description: str, verified: str) -> None:
    def build(bn_mode: str = default_bn) -> nn.Module:
        return TarDAL(bn_mode=bn_mode)

    build.__name__ = build.__qualname__ = name.replace("+", "_plus")
    register_fusion_model(name, vis_input="y", output="y", normalize="clip", trainable=True, paper=_PAPER,
                          licence="GPL-3.0", url=_URL, weights_file=weights_file, description=description,
                          official_image=official_image, verified=verified)(build)


for _variant in _VARIANTS:
    _register(*_variant)
