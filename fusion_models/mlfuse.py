"""MLFuse: multi-scenario feature joint learning for multi-modality image fusion.

Re-implemented from the paper's description and the layout of the official checkpoint
(jialei-sc/MLFuse @ f40dccb, ``MLFNet``); module names follow the official state dict so
``model_fuse.pth`` (state dict nested under ``"model"``) loads with ``strict=True``.

Data flow (``H, W >= 15``; output the input size)::

    Y  (N,1,H,W) -> inc_edg   (32) -> edg_net: edge-guided learning network   (32) --\\
    Y            -> inc_cmk_1 (32) --\\                                                 cat (96) -> layer
                                       cmk_net: cross-modal knowledge network (32) ---|   (48, 16) -> outc:
    IR (N,1,H,W) -> inc_cmk_2 (32) --/                                                 |   1x1 conv, tanh
    IR           -> inc_ssd   (32) -> ssd_net: spatial-spectral network       (32) --/

Each branch also has a 1x1 auxiliary head (``ouc_edge`` / ``ouc_cda``) whose tanh output the official
training losses use; :meth:`MLFuse.forward_with_aux` returns them, the fused image does not depend
on them.

Official inference (``test_gray.py``) = :func:`official_image` (what ``taskeval fuse`` writes by default):

* Input order: the official ``model(img1, img2)`` takes the **visible** image as ``img1`` (edge
  branch) and the **IR** image as ``img2`` (saliency branch), as in training; ours is
  ``forward(ir, vis_y)`` and maps the order inside. (The official batch script derives the order
  from a Python ``set``, so it may flip between runs; swapping changes the output by up to 87 grey
  levels.)
* Read: both images with Pillow ``convert('L')`` (integer BT.601 luma ``(19595 R + 38470 G + 7471 B +
  2^15) >> 16`` for the visible image, :func:`fusion_models.official_io.pillow_luma`), ``ToTensor``
  (/255 in float32).
* BatchNorm: the official script calls ``model.eval()`` (stored running statistics); this port uses
  ordinary BatchNorm, so its eval mode (what ``create_fusion_model`` returns) is the official behaviour.
* Output (:func:`official_postprocess`): the tanh output min-max normalised per image, ``x255``,
  **truncated** to uint8 (``ToPILImage``) and saved as a **grey** PNG (the authors recolour in MATLAB).
  ``taskeval fuse`` writes that grey image; the task networks get it recoloured with the visible chroma
  by the harness, its luminance kept (:func:`taskeval.fusing.recolor_keep_luminance`, see
  :mod:`taskeval.fusedset`).

The float path (``apply_fusion``, joint training, ``--io float``) passes the float BT.601 luma
(:func:`taskeval.color.luminance`, up to half a grey level from Pillow's), min-max normalises the same
way, recolours with the visible chroma in float (the spec's default ``recolor=True``) and **rounds** to
uint8. Its luminance (recolouring off) is at most 2 grey levels from the official PNG on the 13
reference pairs, 0.31-0.67 on average, with up to 0.7% of the pixels off by 2.

Fidelity with ``model_fuse.pth`` (``shared/reference/MLFuse``, 13 pairs, ``tests/test_port_official_weights.py``):
raw output with the official inputs within ~2e-6; :func:`official_image` within 1 grey level of the
official PNG on every pixel, equal on all but 4-380 pixels per image (at most 0.12%).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.official_io import as_8bit, check_official_pair, official_inference, pillow_luma
from fusion_models.registry import VERIFIED_OFFICIAL_WEIGHTS, register_fusion_model

FEATURES = 32
# EdgNet shrinks its input with a stride-2 3x3 conv then a 7x7/3 max-pool: 15 is the smallest side
# that leaves one pixel.
MIN_SIZE = 15


def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR (N,1,H,W) and visible luminance (N,1,H,W) of the same batch and size, else ValueError."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"MLFuse: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 1:
        raise ValueError(f"MLFuse: visible must be (N,1,H,W) luminance, got shape {tuple(vis.shape)}")
    if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"MLFuse: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch "
                         "or size")


class StemConv(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU, one per branch input. (N,1,H,W) -> (N,32,H,W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class AggregationConv(nn.Module):
    """Two 3x3 conv -> BatchNorm -> ReLU layers merging the three branches. (N,96,H,W) -> (N,16,H,W)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, padding=1), nn.BatchNorm2d(c_mid), nn.ReLU(),
            nn.Conv2d(c_mid, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class TanhHead(nn.Module):
    """1x1 conv then tanh: features -> one-channel image in (-1,1)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def _conv_bn_prelu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.PReLU())


class CrossModalKnowledgeNet(nn.Module):
    """Cross-modal knowledge reinforcing network (CMKNet): shared ("certain") and differing parts.

    ``certain = conv3(conv1(a + a*b) + conv2(b + a*b))``, ``out = conv5(certain + conv4(|a - b|))``.
    (N,32,H,W) x 2 -> (N,32,H,W).
    """

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        self.fuse5_conv1 = _conv_bn_prelu(channels)
        self.fuse5_conv2 = _conv_bn_prelu(channels)
        self.fuse5_conv3 = _conv_bn_prelu(channels)
        self.fuse5_conv4 = _conv_bn_prelu(channels)
        self.fuse5_conv5 = _conv_bn_prelu(channels)
        self.ouc_cda = nn.Conv2d(channels, 1, 1)  # auxiliary head (training losses only)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        common = a * b
        certain = self.fuse5_conv3(self.fuse5_conv1(a + common) + self.fuse5_conv2(b + common))
        return self.fuse5_conv5(certain + self.fuse5_conv4((a - b).abs()))


class EdgeGuidedNet(nn.Module):
    """Edge-guided learning network (EdgNet): a large-receptive-field attention map over the features.

    The features are reduced to 16 channels, shrunk (stride-2 conv, 7x7/3 max-pool), passed through
    three 3x3 convs, resized back bilinearly, added to a 1x1 shortcut and turned into a sigmoid map
    of 32 channels. (N,32,H,W) -> (N,32,H,W) in (0,1).
    """

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.conv_f = nn.Conv2d(mid, mid, 1)
        self.conv_max = nn.Conv2d(mid, mid, 3, padding=1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=2)
        self.conv3 = nn.Conv2d(mid, mid, 3, padding=1)
        self.conv3_ = nn.Conv2d(mid, mid, 3, padding=1)
        self.conv4 = nn.Conv2d(mid, channels, 1)
        # Never called by the official forward; kept only so that the official checkpoint loads strictly.
        self.conv_dilation = nn.Conv2d(mid, mid, 3, padding=1, stride=3, dilation=2)
        self.ouc_edge = nn.Conv2d(channels, 1, 1)  # auxiliary head (training losses only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv1(x)
        y = F.max_pool2d(self.conv2(shortcut), kernel_size=7, stride=3)
        y = F.relu(self.conv_max(y))
        y = F.relu(self.conv3(y))
        y = F.interpolate(self.conv3_(y), size=shortcut.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.conv4(y + self.conv_f(shortcut)))


class SpatialSpectralNet(nn.Module):
    """Spatial-spectral domain optimising network (SSDNet): two global-context attentions, summed.

    * channel gate (the official code's "spatial attention"): a softmax over all pixels pools a
      16-channel projection into one context vector; ``sigmoid(conv_up(context))`` scales each channel;
    * pixel gate (its "spectral attention"): the average-pooled 16-channel query is matched with every
      pixel's 16-channel key; ``sigmoid(softmax over pixels)`` scales each pixel.

    (N,32,H,W) -> (N,32,H,W). The 1x1 projections have no bias, as in the official layout.
    """

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        inter = channels // 2
        self.conv_q_right = nn.Conv2d(channels, 1, 1, bias=False)
        self.conv_v_right = nn.Conv2d(channels, inter, 1, bias=False)
        self.conv_up = nn.Conv2d(inter, channels, 1, bias=False)
        self.conv_q_left = nn.Conv2d(channels, inter, 1, bias=False)
        self.conv_v_left = nn.Conv2d(channels, inter, 1, bias=False)
        for conv in (self.conv_q_right, self.conv_v_right, self.conv_q_left, self.conv_v_left):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        self.ouc_cda = nn.Conv2d(channels, 1, 1)  # auxiliary head (training losses only)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        values = self.conv_v_right(x).view(n, -1, h * w)
        weights = torch.softmax(self.conv_q_right(x).view(n, 1, h * w), dim=2)
        context = torch.matmul(values, weights.transpose(1, 2)).unsqueeze(-1)
        return x * torch.sigmoid(self.conv_up(context))

    def pixel_gate(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        query = F.adaptive_avg_pool2d(self.conv_q_left(x), 1).view(n, 1, -1)
        keys = self.conv_v_left(x).view(n, -1, h * w)
        scores = torch.softmax(torch.matmul(query, keys), dim=2).view(n, 1, h, w)
        return x * torch.sigmoid(scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_gate(x) + self.pixel_gate(x)


class MLFuse(nn.Module):
    """MLFuse fusion network (111,817 parameters).

    Example::

        model = MLFuse().eval()
        fused_y = model(ir, vis_y)  # (N,1,H,W), (N,1,H,W) -> (N,1,H,W) in (-1,1); min-max normalise
    """

    def __init__(self) -> None:
        super().__init__()
        self.inc_edg = StemConv(1, FEATURES)
        self.inc_ssd = StemConv(1, FEATURES)
        self.inc_cmk_1 = StemConv(1, FEATURES)
        self.inc_cmk_2 = StemConv(1, FEATURES)
        self.layer = AggregationConv(3 * FEATURES, 48, 16)
        self.outc = TanhHead(16)
        self.cmk_net = CrossModalKnowledgeNet(FEATURES)
        self.edg_net = EdgeGuidedNet(FEATURES)
        self.ssd_net = SpatialSpectralNet(FEATURES)

    def _branches(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(edge, knowledge, saliency) features, each (N,32,H,W)."""
        _check_inputs(ir, vis)
        if min(ir.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"MLFuse: images must be at least {MIN_SIZE}x{MIN_SIZE}, "
                             f"got {tuple(ir.shape[-2:])}")
        edge = self.edg_net(self.inc_edg(vis))
        knowledge = self.cmk_net(self.inc_cmk_1(vis), self.inc_cmk_2(ir))
        saliency = self.ssd_net(self.inc_ssd(ir))
        return edge, knowledge, saliency

    def _aggregate(self, edge: torch.Tensor, knowledge: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        """Concatenated branch features (N,96,H,W) -> fused output (N,1,H,W) in (-1,1)."""
        return self.outc(self.layer(torch.cat([edge, knowledge, saliency], dim=1)))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,1,H,W) visible luminance in [0,1].

        Returns:
            (N,1,H,W) raw tanh output in (-1,1) (the official script min-max normalises it per image).
        """
        return self._aggregate(*self._branches(ir, vis))

    def forward_with_aux(
        self, ir: torch.Tensor, vis: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused output plus the three auxiliary branch outputs used by the official training losses.

        Returns:
            ``(fused, {"edge": ..., "knowledge": ..., "saliency": ...})``, each (N,1,H,W) in (-1,1).
        """
        edge, knowledge, saliency = self._branches(ir, vis)
        fused = self._aggregate(edge, knowledge, saliency)
        aux = {
            "edge": torch.tanh(self.edg_net.ouc_edge(edge)),
            "knowledge": torch.tanh(self.cmk_net.ouc_cda(knowledge)),
            "saliency": torch.tanh(self.ssd_net.ouc_cda(saliency)),
        }
        return fused, aux


def official_inputs(ir8: np.ndarray, vis8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``utils.load_img`` of one pair: Pillow ``convert('L')`` and ``ToTensor`` (/255 in float32).

    Args:
        ir8: (H,W) uint8 IR file (``convert('L')`` leaves a grey file unchanged); vis8: (H,W,3) uint8 RGB.

    Returns:
        ``(ir, vis_y)``, each (1,1,H,W) float32.
    """
    def to_tensor(grey: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(grey)).float().div(255)[None, None]

    return to_tensor(ir8), to_tensor(pillow_luma(vis8))


def official_postprocess(net: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``utils.test_gray``'s output step: per-image min-max, ``ToPILImage`` (x255, truncate).

    Args:
        net: (1,1,H,W) or (H,W) raw tanh output.

    Returns:
        ``(scaled, png)``: (H,W) float32 in 0..255 before the cast, and the (H,W) uint8 grey image written.
    """
    h, w = net.shape[-2:]
    net = net.detach().cpu().reshape(h, w)
    normalised = (net - net.min()) / (net.max() - net.min())
    return normalised.mul(255).numpy(), normalised.mul(255).byte().numpy()


def official_image(model: MLFuse, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test_gray.py`` end to end: what the official code writes.

    Args:
        model: an :class:`MLFuse` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused.

    Returns:
        (N,H,W) uint8 grey images, each fused on its own (batch 1) as the official loop does.
    """
    check_official_pair(ir, vis, "MLFuse")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:]), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            img_ir, img_vis = official_inputs(ir8[k, 0], vis8[k].transpose(1, 2, 0))
            out[k] = official_postprocess(model(img_ir.to(device), img_vis.to(device)))[1]
    return out


@register_fusion_model(
    "mlfuse",
    vis_input="y",
    output="y",
    normalize="minmax_y",
    trainable=True,
    paper="MLFuse: Multi-scenario Feature Joint Learning for Multi-Modality Image Fusion "
          "(the repository gives no citation yet)",
    licence="none stated",
    url="https://github.com/jialei-sc/MLFuse",
    weights_file="model_fuse.pth",
    description="edge-guided, cross-modal knowledge and spatial-spectral branches, aggregated; official output grey",
    official_image=official_image,
    verified=VERIFIED_OFFICIAL_WEIGHTS,
)
def mlfuse() -> nn.Module:
    return MLFuse()
