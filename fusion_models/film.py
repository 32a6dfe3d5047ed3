"""FILM (Zhao et al., ICML 2024): infrared-visible fusion guided by text features through cross-attention.

Our re-implementation of ``Net(hidden_dim=256, image2text_dim=32)`` from Zhaozixiang1228/IF-FILM
(``net/Film.py``, ``net/restormer.py`` @ 26a2f01). Module and parameter names follow the official
checkpoint (``{'model': DataParallel state dict}``), so official weights load with
``load_weights(model, "IVF.pth", strict=True)``.

Data flow for IR ``a`` and visible luminance ``b`` (both ``(N,1,H,W)``) and text ``t`` ``(N,L,768)``:

* ``t`` -> 1x1 Conv1d to 256 dims per token.
* Three text-guided blocks, each for both modalities: 3x3 conv + PReLU -> Restormer block (channel
  attention "MDTA" + gated depth-wise FFN) = feature ``f`` (32 ch). ``f`` -> 1x1 conv -> nearest resize
  to a FIXED 288x384 grid -> the raw memory (C,H,W) cut into 13824 tokens of 256 values (a token is not
  a pixel: it is 256 consecutive values of one channel row-major) -> ``nn.MultiheadAttention(256, 8)``
  with the text as query and the image tokens as key/value -> mean over the text tokens -> L1-normalised
  256-vector that scales every image token -> back to (32,288,384) -> nearest resize to (H,W) -> 1x1 conv
  + PReLU, added to ``f`` -> ``cat(f, .)`` -> 1x1 conv + PReLU.
* Decoder: ``cat(a, b)`` -> Restormer(64) -> 1x1 conv -> Restormer(32) x2 -> 1x1 conv -> sigmoid.

"nearest" is PyTorch's legacy nearest (source index ``floor(dst * in / out)``), as in the official code.

The Restormer blocks are the layers FILM shares with CDDFuse, EMMA and SMFNet
(:func:`fusion_models.layers.restormer_block`, feed-forward expansion 4). Deliberate numerical
difference: inside the channel attention the two sums over all H*W pixels (the L2 norms of q, k and
their Gram matrix) are done in blocks instead of by ``F.normalize`` and one matmul. Same arithmetic; on
a 640x480 pair the official float32 output drifts up to 4e-3 from exact (float64) evaluation depending
on the BLAS kernel, the port stays within 5e-5 of it.

Without text (``text=None``) the official code fails; here the text is one all-zero 768-d token (see
:meth:`FILM.forward` for why).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.layers import large_tensors_on_heap, overwrite_ok, pointwise_conv, restormer_block
from fusion_models.official_io import as_8bit, check_official_pair, official_inference
from fusion_models.official_io import opencv_rounded_grey as official_grey
from fusion_models.registry import VERIFIED_RANDOM_WEIGHTS, register_fusion_model
from taskeval.errors import DataError

TEXT_DIM = 768
"""Width of the text features the VLF dataset ships (BLIP-2 based, 149 tokens per image)."""

TOKEN_GRID = (288, 384)
"""Fixed (H, W) every image feature is resampled to before it is cut into attention tokens."""


def _prelu(x: torch.Tensor, prelu: nn.PReLU) -> torch.Tensor:
    """One-parameter PReLU of a fresh temporary: ``x`` if ``x > 0`` else ``a x`` (in place without autograd)."""
    if overwrite_ok() and prelu.weight.numel() == 1:
        return F.leaky_relu(x, prelu.weight.item(), inplace=True)
    return prelu(x)


class _ImageTokens(nn.Module):
    """``(N,C,H,W)`` feature -> 1x1 conv -> nearest resize to :data:`TOKEN_GRID` -> ``(N, C*288*384/D, D)``."""

    def __init__(self, channels: int, token_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.token_dim = token_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 convolution commutes with nearest resampling (both act pixel by pixel), so it runs on
        # whichever grid is smaller: same values.
        if x.shape[-2] * x.shape[-1] > TOKEN_GRID[0] * TOKEN_GRID[1]:
            x = pointwise_conv(F.interpolate(x, size=TOKEN_GRID, mode="nearest"), self.conv.weight, self.conv.bias)
        else:
            x = F.interpolate(pointwise_conv(x, self.conv.weight, self.conv.bias), size=TOKEN_GRID, mode="nearest")
        # Raw-memory chop of the (C, H, W) order, as the official code does: tokens straddle rows
        # (384 = 1.5 * 256). A copy for channels-last maps.
        return x.reshape(x.shape[0], -1, self.token_dim)


class _TextToImageAttention(nn.Module):
    """Text tokens ``(N,L,D)`` attend to image tokens ``(N,T,D)``; returns ``(N,L,D)``."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, text: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.multihead_attn(text, tokens, tokens, need_weights=False)[0]


class _TextGuidedBlock(nn.Module):
    """One official ``restormer_cablock``: two modality branches (A = IR, B = visible) sharing the text.

    Parameter names are the checkpoint's; note the visible branch uses ``cross_attentionA2``.
    """

    def __init__(self, in_channels: int, dim: int = 32, token_channels: int = 32, token_dim: int = 256):
        super().__init__()
        self.token_channels = token_channels
        for side in "AB":
            setattr(self, f"conv{side}1", nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=False))
            setattr(self, f"prelu{side}1", nn.PReLU())
            setattr(self, f"conv{side}2", nn.Conv2d(token_channels, dim, kernel_size=1))
            setattr(self, f"prelu{side}2", nn.PReLU())
            setattr(self, f"conv{side}3", nn.Conv2d(2 * dim, dim, kernel_size=1))
            setattr(self, f"prelu{side}3", nn.PReLU())
        self.restormerA1 = restormer_block(dim, 8, expansion=4)
        self.restormerB1 = restormer_block(dim, 8, expansion=4)
        self.cross_attentionA1 = _TextToImageAttention(token_dim)
        self.cross_attentionA2 = _TextToImageAttention(token_dim)
        self.imagef2textfA1 = _ImageTokens(dim, token_dim)
        self.imagef2textfB1 = _ImageTokens(dim, token_dim)

    def _part(self, name: str, side: str) -> nn.Module:
        """The layer ``name`` (``"conv{}1"`` ...) of branch ``side``: checkpoint names differ only by A/B."""
        return getattr(self, name.format(side))

    def _branch(self, x: torch.Tensor, text: torch.Tensor, side: str) -> torch.Tensor:
        """One modality: ``x`` ``(N,Cin,H,W)``, ``text`` ``(N,L,256)`` -> ``(N,32,H,W)``."""
        conv1, prelu1, conv2, prelu2, conv3, prelu3, restormer, to_tokens = (
            self._part(name, side)
            for name in ("conv{}1", "prelu{}1", "conv{}2", "prelu{}2", "conv{}3", "prelu{}3",
                         "restormer{}1", "imagef2textf{}1")
        )
        cross = self.cross_attentionA1 if side == "A" else self.cross_attentionA2
        n, _, h, w = x.shape
        feat = restormer(_prelu(conv1(x), prelu1))
        tokens = to_tokens(feat)
        # One 256-vector per image (mean over the text tokens), L1-normalised: it re-weights the
        # 256 positions inside every image token.
        scale = F.normalize(cross(text, tokens).mean(dim=1, keepdim=True), p=1, dim=2)
        guided = (tokens * scale).reshape(n, self.token_channels, *TOKEN_GRID)
        guided = guided.contiguous(memory_format=torch.channels_last)
        # 1x1 conv and PReLU act pixel by pixel, so they commute with the nearest resize: run them on
        # the smaller grid (same values).
        if h * w > TOKEN_GRID[0] * TOKEN_GRID[1]:
            guided = _prelu(pointwise_conv(guided, conv2.weight, conv2.bias), prelu2)
            guided = F.interpolate(guided, size=(h, w), mode="nearest")
        else:
            guided = F.interpolate(guided, size=(h, w), mode="nearest")
            guided = _prelu(pointwise_conv(guided, conv2.weight, conv2.bias), prelu2)
        guided = guided.add_(feat) if overwrite_ok() else guided + feat
        return _prelu(pointwise_conv(torch.cat((feat, guided), dim=1), conv3.weight, conv3.bias), prelu3)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._branch(ir, text, "A"), self._branch(vis, text, "B")


class _TextProjection(nn.Module):
    """Per-token linear map of the text features, stored as the official ``Conv1d(768, D, 1)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=1)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.conv(text.transpose(1, 2)).transpose(1, 2)


class FILM(nn.Module):
    """FILM fusion network (official ``Net(hidden_dim=256, image2text_dim=32)``).

    Args:
        mid_channels: feature width of the image branches (official 32).
        token_dim: width of the text/image attention tokens (official ``hidden_dim`` 256).
        token_channels: channels of the image feature cut into tokens (official ``image2text_dim`` 32);
            ``token_channels * 288 * 384`` must be a multiple of ``token_dim``.
    """

    def __init__(self, mid_channels: int = 32, token_dim: int = 256, token_channels: int = 32):
        super().__init__()
        if (token_channels * TOKEN_GRID[0] * TOKEN_GRID[1]) % token_dim:
            raise ValueError(f"token_channels*288*384 = {token_channels * TOKEN_GRID[0] * TOKEN_GRID[1]} "
                             f"is not a multiple of token_dim={token_dim}")
        self.text_process = _TextProjection(TEXT_DIM, token_dim)
        self.restormerca1 = _TextGuidedBlock(1, mid_channels, token_channels, token_dim)
        self.restormerca2 = _TextGuidedBlock(mid_channels, mid_channels, token_channels, token_dim)
        self.restormerca3 = _TextGuidedBlock(mid_channels, mid_channels, token_channels, token_dim)
        self.restormer1 = restormer_block(2 * mid_channels, 8, expansion=4)
        self.restormer2 = restormer_block(mid_channels, 8, expansion=4)
        self.restormer3 = restormer_block(mid_channels, 8, expansion=4)
        self.conv1 = nn.Conv2d(2 * mid_channels, mid_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(mid_channels, 1, kernel_size=1)
        # Channels-last weights make every convolution output channels-last: depth-wise convolutions
        # and the per-pixel layer norms are several times faster on the CPU (same values).
        self.to(memory_format=torch.channels_last)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse IR and visible luminance under text guidance.

        Args:
            ir: (N,1,H,W) IR in [0,1] (the official ``imageA``).
            vis_y: (N,1,H,W) visible luminance in [0,1] (the official ``imageB``; the official reader
                uses the rounded 8-bit grey value, the harness the unrounded BT.601 luma).
            text: (N,L,768) float text features of each pair (VLF dataset: L = 149), any L >= 1; moved
                to the device and dtype of ``ir``. ``None``: a single all-zero token for every image.
                Why zeros rather than skipping the modulation: the zero token runs the trained graph
                unchanged, the query is then the learned bias of ``text_process`` alone, the scaling
                vector stays L1-normalised (the scale the later layers were trained on) and still
                depends on the image through the keys/values. Identity scaling would feed the token
                features ~256x larger than any trained input (an L1-normalised 256-vector averages
                1/256). With identical query tokens the result does not depend on L.

        Returns:
            (N,1,H,W) fused image after a sigmoid, in (0,1). The official test script then min-max
            normalises it per image (``normalize="minmax_y"``).

        Raises:
            ValueError: on shapes that break this contract (the message gives them).
        """
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(f"FILM expects IR and visible luminance of equal shape (N,1,H,W), got "
                             f"{tuple(ir.shape)} and {tuple(vis_y.shape)}")
        if text is None:
            text = ir.new_zeros(ir.shape[0], 1, TEXT_DIM)
        elif text.ndim != 3 or text.shape[0] != ir.shape[0] or text.shape[1] < 1 or text.shape[2] != TEXT_DIM:
            raise ValueError(f"FILM text must be (N={ir.shape[0]}, L>=1, {TEXT_DIM}), got {tuple(text.shape)}")
        if ir.shape[0] > 1 and ir.device.type == "cpu" and overwrite_ok():
            # One image at a time on the CPU: same result (no layer mixes images), a batch's speed, and
            # the memory of one image.
            return torch.cat([self(ir[i:i + 1], vis_y[i:i + 1], text[i:i + 1]) for i in range(ir.shape[0])])
        text = self.text_process(text.to(device=ir.device, dtype=ir.dtype))
        with large_tensors_on_heap() if overwrite_ok() else contextlib.nullcontext():
            a, b = self.restormerca1(ir, vis_y, text)
            a, b = self.restormerca2(a, b, text)
            a, b = self.restormerca3(a, b, text)
            x = self.restormer1(torch.cat((a, b), dim=1))
            del a, b
            x = pointwise_conv(x, self.conv1.weight, self.conv1.bias)
            x = self.restormer3(self.restormer2(x))
            return torch.sigmoid(pointwise_conv(x, self.conv2.weight, self.conv2.bias))


def load_text_embeddings(folder: str | os.PathLike, ids: Iterable[str]) -> torch.Tensor:
    """Stack the per-image text features ``<folder>/<id>.npy`` into one batch.

    Args:
        folder: directory of ``.npy`` files, one per image id (VLF layout: ``(1,L,768)``; ``(L,768)``
            is accepted too).
        ids: image ids (file stems, e.g. ``"00016N"``), in batch order.

    Returns:
        (N,L,768) float32 tensor, N = number of ids.

    Raises:
        DataError: missing folder or files (all missing ids are listed), unreadable files, arrays of
            another shape or non-numeric dtype, or different token counts L within the batch.
    """
    folder = Path(folder)
    ids = [str(i) for i in ids]
    if not ids:
        raise DataError(f"{folder}: no image ids given for text embeddings")
    if not folder.is_dir():
        raise DataError(f"text embedding folder not found: {folder}")
    missing = [i for i in ids if not (folder / f"{i}.npy").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{folder}: no text embedding for {len(missing)} id(s): {shown} (expected <id>.npy)")
    arrays = []
    for i in ids:
        path = folder / f"{i}.npy"
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot be read as a .npy array ({exc})") from None
        tokens = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
        if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] != TEXT_DIM:
            raise DataError(f"{path}: text embedding of shape {arr.shape}, expected (1,L,{TEXT_DIM}) or (L,{TEXT_DIM})")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{path}: text embedding of dtype {arr.dtype}, expected a float array")
        arrays.append(tokens.astype(np.float32))
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) > 1:
        per_id = ", ".join(f"{i}: {a.shape[0]}" for i, a in zip(ids, arrays))
        raise DataError(f"{folder}: text embeddings of one batch differ in token count ({per_id})")
    return torch.from_numpy(np.stack(arrays))


def official_png_values(fused: torch.Tensor) -> np.ndarray:
    """``test.py``'s writing of one raw output: min-max, x255, ``astype('uint8')`` (TRUNCATION), grey PNG.

    Args:
        fused: (H,W) float32 raw (sigmoid) output.

    Returns:
        (H,W) uint8.
    """
    x = (fused - fused.min()) / (fused.max() - fused.min())
    return (x * 255).cpu().numpy().astype("uint8")


def official_image(model: FILM, ir: torch.Tensor, vis: torch.Tensor, text: torch.Tensor | None = None) -> np.ndarray:
    """``test.py`` end to end: what the official code writes.

    Args:
        model: a :class:`FILM` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: (N,L,768) text features of each pair. The official code needs them; ``None`` runs the
            port's text-free path (one all-zero token, see :meth:`FILM.forward`), which has no official
            counterpart.

    Returns:
        (N,H,W) uint8 grey images, each fused on its own (batch 1) as the official loop does.

    Raises:
        ValueError: shapes that are not an IR/visible pair, or values that are not 8-bit / 255.
    """
    check_official_pair(ir, vis, "FILM")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:]), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            image_a = torch.from_numpy(official_grey(ir8[k, 0]))[None, None].to(device)
            image_b = torch.from_numpy(official_grey(vis8[k].transpose(1, 2, 0)))[None, None].to(device)
            fused = model(image_a, image_b, None if text is None else text[k:k + 1])
            out[k] = official_png_values(fused[0, 0])
    return out


@register_fusion_model(
    "film",
    vis_input="y",
    output="y",
    normalize="minmax_y",
    trainable=True,
    needs_text=True,
    paper="Zhao et al., Image Fusion via Vision-Language Model (FILM), ICML 2024",
    licence="none stated (the repository has no LICENSE file)",
    url="https://github.com/Zhaozixiang1228/IF-FILM",
    weights_file="IVF.pth",
    description="text-guided fusion: text features steer Restormer branches via cross-attention; "
                "text=None uses one all-zero token",
    official_image=official_image,
    verified=VERIFIED_RANDOM_WEIGHTS,
)
def film() -> nn.Module:
    return FILM()
