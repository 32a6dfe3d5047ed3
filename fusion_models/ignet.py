"""IGNet: graph neural network with cross-modality interaction (Li et al., ACM MM 2023).

Re-implemented from the paper and the layout of the official checkpoint (lok-18/IGNet @ 1757e6b);
module names follow the official state dict so official weights load unchanged (``strict=True``).

Data flow (``H, W`` multiples of 8; other sizes are padded, see :class:`IGNet`)::

    IR  (N,1,H,W) -> inf_conv -> (512 @ H/8, 256 @ H/4, 128 @ H/2) --\\
                                                                       graph (3 graph stages +
    Y   (N,1,H,W) -> vis_conv -> (512 @ H/8, 256 @ H/4, 128 @ H/2) --/  cascaded upsampling) -> (N,1,H,W)

Inside ``graph`` the IR features take the branch the official code calls ``rgb`` and the visible
ones the branch it calls ``dep`` (the head was borrowed from an RGB-D network); the names are kept
for checkpoint compatibility.

BatchNorm at inference: the official ``test.py`` never calls ``eval()``, so its 36 BatchNorm layers
normalise with the statistics of the current batch, at batch size 1. ``bn_mode="instance"`` (default)
reproduces that independently of the batch: in eval mode each sample is normalised with its own
per-channel mean and biased variance over H, W (identical to train-mode BatchNorm on a batch of one),
so batched inference equals the official per-image output. ``bn_mode="running"`` uses the stored
running statistics instead (ordinary ``eval()`` BatchNorm). In training mode both are ordinary
BatchNorm (batch statistics, running statistics updated).

Official inference (``test.py``) = :func:`official_image` (what ``taskeval fuse`` writes by default):
the visible RGB and the IR (OpenCV grey) ``/255`` in float32; ``RGB2YCrCb`` (float BT.601, no clamp,
channels last in memory: :func:`fusion_models.official_io.ycrcb_of_rgb`); the network gets the
YCrCb tensor (channel 0 used) and the IR; the raw fused Y is recoloured with the visible Cr/Cb as one
3x3 matrix product, clamped to [0,1], min-max normalised over the whole RGB image, ``x255`` and
**truncated** to uint8 (:func:`official_postprocess`). Output: an RGB PNG. The float path
(``apply_fusion``, ``normalize="minmax_rgb"``, ``--io float``) does the same in float but **rounds**:
0 or +1 grey level from the official PNG.

Fidelity (``shared/reference/fidelity/IGNet``, the official code on a random checkpoint in the official
layout, ``tests/test_port_ignet.py``): raw output within 1e-4 (the official code against itself: 3e-5);
:func:`official_image` within 1 grey level of the official PNG, equal on all but ~0.1% of the pixels.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.layers import BN_MODES, SampleNorm2d, large_tensors_on_heap
from fusion_models.official_io import (
    as_8bit,
    check_official_pair,
    minmax_truncate,
    official_inference,
    rgb_of_ycrcb,
    ycrcb_of_rgb,
)
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model
from taskeval.errors import ConfigError

# Geometry of the official network (CGR defaults): channels of the three encoder scales, channel
# reduction of the graph nodes, dilations of the three nodes, graph iterations, decoder widths.
SIDE_CHANNELS = (512, 256, 128)
DECODER_CHANNELS = (512, 128, 32, 4)
NODE_REDUCTION = 32
DILATIONS = (4, 8, 16)
GRAPH_ITERATIONS = 2
# Three 2x poolings in the encoders and three 2x upsamplings in the head.
SIZE_MULTIPLE = 8


def conv_bn_relu(c_in: int, c_out: int, per_sample: bool, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias, 'same' padding) -> BatchNorm -> ReLU; indices 0/1 as in the checkpoint."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        SampleNorm2d(c_out, per_sample),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Four 3x3 convs with LeakyReLU(0.2), three 2x poolings and squeeze-excitation on the deepest scale.

    The deepest map is the max-pooled and the average-pooled conv4 output combined by ``merge``:
    a product in the IR encoder and a sum in the visible one (as in the official code).

    Args:
        merge: ``"mul"`` (IR) or ``"add"`` (visible).

    Shapes: (N,1,H,W) -> [(N,512,H/8,W/8), (N,256,H/4,W/4), (N,128,H/2,W/2)].
    """

    def __init__(self, merge: str) -> None:
        super().__init__()
        self.merge = merge
        self.conv1 = nn.Conv2d(1, 128, 3, padding=1)
        self.conv2 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 512, 3, padding=1)
        self.fc1 = nn.Linear(512, 32, bias=False)
        self.fc2 = nn.Linear(32, 512, bias=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        half = F.max_pool2d(F.leaky_relu(self.conv1(x), 0.2), 2, ceil_mode=True)
        quarter = F.max_pool2d(F.leaky_relu(self.conv2(half), 0.2), 2, ceil_mode=True)
        top = F.leaky_relu(self.conv4(F.leaky_relu(self.conv3(quarter), 0.2)), 0.2)
        top_max = F.max_pool2d(top, 2, ceil_mode=True)
        top_avg = F.avg_pool2d(top, 2, ceil_mode=True)
        deep = top_max * top_avg if self.merge == "mul" else top_max + top_avg
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(deep.mean(dim=(2, 3))))))
        return [deep * weights[:, :, None, None], quarter, half]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell with 1x1 gates (hidden state has the input's width).

    Shapes: message (N,C,H,W), hidden (N,C,H,W) -> new hidden (N,C,H,W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ConvGates = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.Conv_ct = nn.Conv2d(2 * channels, channels, 1)
        for conv in (self.ConvGates, self.Conv_ct):
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, message: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        reset, update = torch.sigmoid(self.ConvGates(torch.cat([message, hidden], 1))).chunk(2, 1)
        candidate = torch.tanh(self.Conv_ct(torch.cat([message, reset * hidden], 1)))
        return (1 - update) * hidden + update * candidate


class NodeGraph(nn.Module):
    """One message-passing step on a fully connected graph of same-shaped feature nodes.

    Every node gathers its neighbours gated by a learned function of the difference, updates itself
    with a ConvGRU and keeps a residual: ``node + gamma * GRU(message, node)``. All nodes are updated
    from the same previous state.

    Shapes: list of ``n_node`` tensors (N,C,H,W) -> list of the same shapes.
    """

    def __init__(self, n_node: int, channels: int) -> None:
        super().__init__()
        self.n_node = n_node
        self.C_wgt = nn.Conv2d(channels * (n_node - 1), n_node - 1, 1, groups=n_node - 1, bias=False)
        self.ConvGRU = ConvGRUCell(channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, nodes: list[torch.Tensor]) -> list[torch.Tensor]:
        n, c, h, w = nodes[0].shape
        k = self.n_node - 1
        out = []
        for i, node in enumerate(nodes):
            others = torch.cat([m for j, m in enumerate(nodes) if j != i], 1)
            gate = self.C_wgt(node.repeat(1, k, 1, 1) - others)
            # The official code expands the k gates by tiling (channel q gets gate q mod k), not by
            # giving each neighbour its own gate; trained weights depend on that order.
            message = (others * torch.sigmoid(gate.repeat(1, c, 1, 1))).view(n, k, c, h, w).sum(1)
            out.append(self.ConvGRU(message, node) * self.gamma + node)
        return out


class Pyramid(nn.Module):
    """Three dilated 3x3 conv-BN-ReLU branches (dilations 4, 8, 16): the graph nodes of one modality.

    Shapes: (N,C,H,W) -> 3 x (N,C/32,H,W).
    """

    def __init__(self, c_in: int, per_sample: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv_bn_relu(c_in, c_in // NODE_REDUCTION, per_sample, dilation=d) for d in DILATIONS
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [conv(x) for conv in self.convs]


class GraphStage(nn.Module):
    """Cross-modality graph reasoning at one encoder scale.

    Builds three nodes per modality, optionally re-weights them by channel attention from the
    previous (coarser) stage's fused nodes, lets each IR node and the matching visible node exchange
    information twice through pixel attention, then runs two steps of intra-modality graph message
    passing.

    Shapes: IR and visible (N,C,H,W), leaders (N,2C/32,h,w) or None -> two lists of 3 x (N,C/32,H,W).
    """

    def __init__(self, c_in: int, per_sample: bool) -> None:
        super().__init__()
        c_node = c_in // NODE_REDUCTION
        self.ppm_rgb = Pyramid(c_in, per_sample)
        self.ppm_dep = Pyramid(c_in, per_sample)
        self.graph_rgb = NodeGraph(len(DILATIONS), c_node)
        self.graph_dep = NodeGraph(len(DILATIONS), c_node)
        # The leader comes from the previous stage, twice as wide. The first stage has no leader,
        # so its C_ca stays unused (it exists in the official checkpoint).
        self.C_ca = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(2 * c_node, 2 * c_node // 4, 1, bias=False),
                nn.ReLU(inplace=True),
                nn.Conv2d(2 * c_node // 4, c_node, 1, bias=False),
            )
            for _ in range(2)
        )
        self.C_pa = nn.ModuleList(nn.Conv2d(c_node, 1, 1, bias=False) for _ in range(2))

    def _exchange(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality adds the other, gated by a pixel attention of their difference."""
        ir_new = vis * torch.sigmoid(self.C_pa[1](vis - ir)) + ir
        vis_new = ir * torch.sigmoid(self.C_pa[0](ir - vis)) + vis
        return ir_new, vis_new

    def forward(
        self,
        ir: torch.Tensor,
        vis: torch.Tensor,
        leader_ir: torch.Tensor | None,
        leader_vis: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        nodes_ir = self.ppm_rgb(ir)
        nodes_vis = self.ppm_dep(vis)
        if leader_ir is not None:
            att_ir = torch.sigmoid(self.C_ca[0](leader_ir))
            att_vis = torch.sigmoid(self.C_ca[1](leader_vis))
            nodes_ir = [att_ir * f + f for f in nodes_ir]
            nodes_vis = [att_vis * f + f for f in nodes_vis]
        for i in range(len(nodes_ir)):
            a, b = self._exchange(nodes_ir[i], nodes_vis[i])
            nodes_ir[i], nodes_vis[i] = self._exchange(a, b)
        for _ in range(GRAPH_ITERATIONS):
            nodes_ir = self.graph_rgb(nodes_ir)
            nodes_vis = self.graph_dep(nodes_vis)
        return nodes_ir, nodes_vis


class GraphHead(nn.Module):
    """Coarse-to-fine decoder: a graph stage per scale feeds a cascaded 2x upsampling path per modality.

    Shapes: IR and visible feature lists [(N,512,H/8), (N,256,H/4), (N,128,H/2)] -> (N,1,H,W).
    """

    def __init__(self, per_sample: bool) -> None:
        super().__init__()
        n = len(SIDE_CHANNELS)
        n_node = len(DILATIONS)
        self.graph = nn.ModuleList(GraphStage(c, per_sample) for c in SIDE_CHANNELS)
        # Index i: IR branch of stage i; index n + i: visible branch of stage i.
        self.C_cat = nn.ModuleList(
            conv_bn_relu(c // NODE_REDUCTION * n_node, c // NODE_REDUCTION, per_sample)
            for c in SIDE_CHANNELS + SIDE_CHANNELS
        )
        self.C_up = nn.ModuleList(
            conv_bn_relu(DECODER_CHANNELS[i] + SIDE_CHANNELS[i] // NODE_REDUCTION, DECODER_CHANNELS[i + 1],
                         per_sample)
            for i in list(range(n)) * 2
        )
        self.C_cls = nn.Conv2d(2 * DECODER_CHANNELS[-1], 1, 1)

    def forward(self, ir: list[torch.Tensor], vis: list[torch.Tensor]) -> torch.Tensor:
        n = len(self.graph)
        path_ir, path_vis = ir[0], vis[0]
        lead_ir = lead_vis = None
        for i, stage in enumerate(self.graph):
            nodes_ir, nodes_vis = stage(ir[i], vis[i], lead_ir, lead_vis)
            lead_ir = self.C_cat[i](torch.cat(nodes_ir, 1))
            lead_vis = self.C_cat[n + i](torch.cat(nodes_vis, 1))
            path_ir = self.C_up[i](_up2(torch.cat([lead_ir, path_ir], 1)))
            path_vis = self.C_up[n + i](_up2(torch.cat([lead_vis, path_vis], 1)))
        return self.C_cls(torch.cat([path_ir, path_vis], 1))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class IGNet(nn.Module):
    """IGNet fusion network: IR and visible luminance -> fused luminance (raw, no activation).

    Args:
        bn_mode: BatchNorm behaviour in eval mode: ``"instance"`` (per-sample statistics, what the
            official test script effectively does at batch size 1; batch-independent) or
            ``"running"`` (stored running statistics).

    Inputs whose height or width is not a multiple of 8 are replicate-padded at the bottom/right
    and the output is cropped back; the official code cannot produce a same-size output for them.

    Example::

        model = IGNet().eval()
        fused_y = model(ir, vis_y)  # (N,1,H,W), (N,1,H,W) -> (N,1,H,W), roughly in [0,1] when trained
    """

    def __init__(self, bn_mode: str = "instance") -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ConfigError(f"IGNet: bn_mode={bn_mode!r} must be one of {BN_MODES}")
        self.bn_mode = bn_mode
        per_sample = bn_mode == "instance"
        self.vis_conv = Encoder(merge="add")
        self.inf_conv = Encoder(merge="mul")
        self.graph = GraphHead(per_sample)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,1,H,W) visible luminance (BT.601 Y) in [0,1]; a (N,3,H,W) YCrCb tensor as the
                official code takes is accepted too (only channel 0 is used).

        Returns:
            (N,1,H,W) fused luminance, unnormalised (the official script min-max normalises after
            recolouring).
        """
        if ir.ndim != 4 or ir.shape[1] != 1:
            raise ValueError(f"IGNet: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
        if vis.ndim != 4 or vis.shape[1] not in (1, 3):
            raise ValueError(f"IGNet: visible must be (N,1,H,W) luminance or (N,3,H,W) YCrCb, "
                             f"got shape {tuple(vis.shape)}")
        if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
            raise ValueError(f"IGNet: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} "
                             "differ in batch or size")
        h, w = ir.shape[-2:]
        pad = (0, -w % SIZE_MULTIPLE, 0, -h % SIZE_MULTIPLE)
        x_ir, x_vis = ir, vis[:, :1]
        if any(pad):
            x_ir, x_vis = F.pad(x_ir, pad, mode="replicate"), F.pad(x_vis, pad, mode="replicate")
        # Inference serves the large maps from the heap (fresh pages for each cost as much as the
        # arithmetic on our machines; see fusion_models.layers.large_tensors_on_heap).
        with large_tensors_on_heap() if not torch.is_grad_enabled() else contextlib.nullcontext():
            fused = self.graph(self.inf_conv(x_ir), self.vis_conv(x_vis))
        return fused[..., :h, :w]


def official_inputs(ir8: np.ndarray, vis8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset.py`` + ``RGB2YCrCb`` of ``test.py`` for one pair.

    Args:
        ir8: (H,W) uint8 IR file (``cv2.imread(path, 0)``); vis8: (H,W,3) uint8 RGB visible file.

    Returns:
        ``(image_ir, image_vis)``: (1,1,H,W) float32 and the (1,3,H,W) (Y, Cr, Cb) tensor the official
        network receives (channels last in memory; only channel 0 is used).
    """
    image_ir = torch.from_numpy(ir8.astype(np.float32) / 255.0)[None, None]
    image_vis = torch.from_numpy(np.ascontiguousarray(vis8.transpose(2, 0, 1)).astype(np.float32) / 255.0)[None]
    return image_ir, ycrcb_of_rgb(image_vis, clamp=False)


def official_postprocess(net: torch.Tensor, image_vis: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``test.py``'s output step: fused Y + visible Cr/Cb -> RGB, clamp, global min-max, x255, truncate.

    Args:
        net: (1,1,H,W) raw fused Y.
        image_vis: (1,3,H,W) (Y, Cr, Cb) of :func:`official_inputs`.

    Returns:
        ``(scaled, png)``: (H,W,3) float32 in 0..255 before the cast, and the (H,W,3) uint8 RGB written.
    """
    fused = torch.cat([net.detach().cpu().reshape(image_vis[:, :1].shape), image_vis[:, 1:]], dim=1)
    rgb = rgb_of_ycrcb(fused).clamp(0.0, 1.0)[0].permute(1, 2, 0).numpy()
    return minmax_truncate(rgb)


def official_image(model: IGNet, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test.py`` end to end (batch size 1, its default): what the official code writes.

    Args:
        model: an :class:`IGNet` (run in eval mode, i.e. its ``bn_mode``: ``"instance"`` is the official
            train-mode BatchNorm at batch 1; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused.

    Returns:
        (N,H,W,3) uint8 RGB images, each fused on its own.
    """
    check_official_pair(ir, vis, "IGNet")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:], 3), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            image_ir, image_vis = official_inputs(ir8[k, 0], vis8[k].transpose(1, 2, 0))
            out[k] = official_postprocess(model(image_ir.to(device), image_vis.to(device)), image_vis)[1]
    return out


@register_fusion_model(
    "ignet",
    vis_input="y",
    output="y",
    normalize="minmax_rgb",
    trainable=True,
    paper="Li, Chen, Liu, Ma: Learning a Graph Neural Network with Cross Modality Interaction for "
          "Image Fusion, ACM MM 2023",
    licence="MIT",
    url="https://github.com/lok-18/IGNet",
    weights_file="IGNet.pth",
    description="CNN encoders + cross-modality graph reasoning (ConvGRU); BatchNorm per sample at inference",
    official_image=official_image,
    verified=VERIFIED_RANDOM_WEIGHTS,
)
def ignet(bn_mode: str = "instance") -> nn.Module:
    return IGNet(bn_mode=bn_mode)
