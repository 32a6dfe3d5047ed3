"""IFCNN (MAX rule): a general image fusion framework based on a CNN (Zhang et al., Inf. Fusion 2020).

Re-implemented from the paper and the layout of the official checkpoint (uzeful/IFCNN @ 8fe59c2,
``myIFCNN(fuse_scheme=0)``); module names follow the official state dict so ``IFCNN-MAX.pth`` loads with
``strict=True``.

Data flow (any ``H, W >= 1``; stride 1 everywhere, output the input size)::

    visible RGB (N,3,H,W)        --> replicate-pad 3 -> conv1 7x7 (64) -> conv2 (64) --\\
    IR (N,1,H,W) as 3 equal chans --> replicate-pad 3 -> conv1 7x7 (64) -> conv2 (64) --/ elementwise max
        -> conv3 (64) -> conv4 1x1 (3): raw RGB, no activation (about -0.12..1.2 on real pairs)

``conv1`` is ResNet-101's first convolution (ImageNet weights, stride forced to 1, no padding); as in the
official training it stays frozen (``requires_grad=False``). ``conv2``/``conv3`` are replicate-pad 1 +
3x3 conv (no bias) + BatchNorm + ReLU; ``conv4`` is a 1x1 conv with bias. The MAX rule is symmetric, so
the input order does not matter (the official ``model(vis, ir)`` and ours give identical output).

Official inference (``IFCNN_Main.py``, infrared-visual branch) = :func:`official_image`:

* Both files are read with Pillow ``convert('RGB')``: the visible stays RGB, the grey IR becomes three
  equal channels; ``ToTensor`` (/255, float32); ``Normalize`` with mean 0 and std 1 (identity: the
  ImageNet statistics are only used for the colour multi-focus set).
* ``model.eval()`` (BatchNorm with the stored running statistics), one pair at a time.
* The raw output is clamped to [0,1], multiplied by 255 and **truncated** to uint8 per channel, then
  converted with OpenCV ``RGB2GRAY`` (fixed point, rounded ``.299 R + .587 G + .114 B``) and saved as
  an 8-bit **grey** PNG. The three output channels differ, so the grey conversion matters.
* The checkpoint predates PyTorch 0.4.1 and has no ``num_batches_tracked``; the loader fills it with 0,
  as ``torch``'s own BatchNorm loader does for such files (no other key is ever added).

The float path (:meth:`IFCNN.forward`, what ``apply_fusion`` and joint training use) returns the
BT.601 luminance of the raw output clamped per channel to [0,1], i.e. the official grey image without
its two quantisations (truncation per channel, then OpenCV's rounding); the harness recolours it with
the visible chroma like every one-channel method and rounds once. Against the official PNG (recolouring
off) it is 0 or +1 grey level, never below (mean 0.49-0.51 on the three reference pairs). Training here
(``fuse train``, joint training) uses taskeval's losses; the authors trained on multi-focus images.

Fidelity with ``IFCNN-MAX.pth`` (``shared/reference/IFCNN``, pairs 00016N, 00091D, M3FD_00000;
``tests/test_port_ifcnn.py``): network inputs identical to the official tensors; raw output bit-identical
(max abs diff 0) on the two pairs with a stored ``_out.npy`` (the official code against itself: 7.2e-7);
:func:`official_image` equal to the official PNG on every pixel of all three pairs.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.official_io import as_8bit, official_inference
from fusion_models.registry import VERIFIED_OFFICIAL_WEIGHTS, register_fusion_model
from taskeval.color import luminance

FEATURES = 64


def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR (N,1,H,W) and visible RGB (N,3,H,W) of the same batch and size, else ValueError."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"IFCNN: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 3:
        raise ValueError(f"IFCNN: visible must be (N,3,H,W) RGB, got shape {tuple(vis.shape)}")
    if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"IFCNN: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch "
                         "or size")


class ConvBlock(nn.Module):
    """Replicate-pad 1, 3x3 conv (no bias), BatchNorm, ReLU. (N,C_in,H,W) -> (N,C_out,H,W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))))


class IFCNN(nn.Module):
    """IFCNN with the elementwise-maximum rule (83,587 parameters, 9,408 of them in the frozen ``conv1``).

    Example::

        model = IFCNN().eval()
        fused_y = model(ir, vis_rgb)   # (N,1,H,W), (N,3,H,W) -> (N,1,H,W) in [0,1]
        raw = model.forward_raw(ir, vis_rgb)   # (N,3,H,W), the official network output
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, FEATURES, 7, stride=1, padding=0, bias=False)
        self.conv2 = ConvBlock(FEATURES, FEATURES)
        self.conv3 = ConvBlock(FEATURES, FEATURES)
        self.conv4 = nn.Conv2d(FEATURES, 3, 1)
        # The official initialisation of the trained layers: normal(0, sqrt(2 / (k * k * C_out))), BN 1/0.
        for m in (self.conv2.conv, self.conv3.conv, self.conv4):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # conv1 holds ImageNet ResNet-101 weights in the official model and is never trained.
        self.conv1.weight.requires_grad_(False)

    @staticmethod
    def convert_official_checkpoint(obj):
        """Add ``num_batches_tracked`` (0) where a BatchNorm of a pre-0.4.1 checkpoint lacks it."""
        if not isinstance(obj, dict):
            return obj
        added = {k[: -len("running_mean")] + "num_batches_tracked": torch.tensor(0, dtype=torch.long)
                 for k in obj if k.endswith(".bn.running_mean")}
        return {**obj, **{k: v for k, v in added.items() if k not in obj}}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(F.pad(x, (3, 3, 3, 3), mode="replicate")))

    def forward_raw(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The official network output.

        Args:
            ir: (N,1,H,W) infrared in [0,1] (fed as three equal channels, as the official reader does).
            vis: (N,3,H,W) visible RGB in [0,1].

        Returns:
            (N,3,H,W) raw output, no activation (slightly outside [0,1]).
        """
        _check_inputs(ir, vis)
        fused = torch.max(self._features(vis), self._features(ir.expand(-1, 3, -1, -1)))
        return self.conv4(self.conv3(fused))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch: the official grey image in float.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,3,H,W) visible RGB in [0,1].

        Returns:
            (N,1,H,W) BT.601 luminance of the raw output clamped per channel to [0,1].
        """
        return luminance(self.forward_raw(ir, vis).clamp(0.0, 1.0))


def official_image(model: IFCNN, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``IFCNN_Main.py`` (infrared-visual branch) end to end: what the official code writes.

    Args:
        model: an :class:`IFCNN` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused (IFCNN takes no text).

    Returns:
        (N,H,W) uint8 grey images, each fused on its own (batch 1) as the official loop does.

    The official reader would keep the three channels of a colour IR file; the harness hands over its
    luma (:func:`taskeval.imageio.read_gray`), so for such files this is the official result of that luma.
    Grey IR files and 3-channel IR files with equal channels (M3FD) are exact.
    """
    _check_inputs(ir, vis)
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:]), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            # Pillow convert('RGB') + ToTensor: 8-bit values / 255 in float32 (a grey IR as 3 equal channels).
            img_ir = torch.from_numpy(ir8[k : k + 1]).to(device).float().div(255)
            img_vis = torch.from_numpy(vis8[k : k + 1]).to(device).float().div(255)
            out[k] = official_grey(model.forward_raw(img_ir, img_vis)[0])
    return out


def official_grey(raw: torch.Tensor) -> np.ndarray:
    """The official post-processing of one raw output: clamp, x255, truncate, OpenCV ``RGB2GRAY``.

    Args:
        raw: (3,H,W) float32 network output.

    Returns:
        (H,W) uint8, the grey PNG's pixels.
    """
    res = raw.clamp(0, 1) * 255
    rgb = res.cpu().numpy().astype(np.uint8).transpose(1, 2, 0)  # truncation, as the official astype
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


@register_fusion_model(
    "ifcnn",
    vis_input="rgb",
    output="y",
    normalize="clip",
    trainable=True,
    paper="Zhang, Liu, Sun, Yan, Zhao, Zhang: IFCNN: A general image fusion framework based on convolutional "
          "neural network, Information Fusion 54 (2020) 99-118",
    licence="MIT",
    url="https://github.com/uzeful/IFCNN",
    weights_file="IFCNN-MAX.pth",
    description="ResNet-101 conv1 features, elementwise-max fusion, two conv blocks; official output grey",
    official_image=official_image,
    verified=VERIFIED_OFFICIAL_WEIGHTS,
)
def ifcnn() -> nn.Module:
    return IFCNN()
