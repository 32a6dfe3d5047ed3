"""DIDFuse: deep image decomposition for infrared and visible image fusion (Zhao et al., IJCAI 2020).

Re-implemented from the paper and the layout of the official checkpoints (Zhaozixiang1228/IVIF-DIDFuse
@ 5f28730, ``AE_Encoder`` / ``AE_Decoder``). The official weights are two files, ``Encoder.pkl`` and
``Decoder.pkl`` (the repository's ``Models/{Encoder,Decoder}_weight_IJCAI.pkl``, each a dict
``{'weight': state_dict, 'epoch'}``); this module holds them as ``encoder.*`` and ``decoder.*`` with the
official key names below those prefixes, so both load with ``strict=True`` (see
:meth:`DIDFuse.read_checkpoint_files`). Weights saved by taskeval are one ordinary state dict.

Data flow (any ``H, W >= 2``; stride 1 everywhere, output the input size). One encoder, shared by both
images (eval mode)::

    x (N,1,H,W) -> cov1: reflect-pad 1, 3x3 conv, BN, PReLU            = F_1 (64)
                -> cov2: 3x3 conv (zero pad 1), BN, PReLU               = F_2 (64)
                -> cov3: 3x3 conv (zero pad 1), BN, tanh  (on F_2)      = base B (64)
                -> cov4: 3x3 conv (zero pad 1), BN, tanh  (on F_2)      = detail D (64)

    fusion ('Sum', the official default): F_1 = i1 + v1, F_2 = i2 + v2, B = iB + vB, D = iD + vD (summed,
    not averaged)

    decoder: cov5(cat[B, D]) -> cov6(cat[., F_2]) -> cov7(cat[., F_1]) = fused (N,1,H,W) in (0,1)
             cov5/cov6: 3x3 conv (zero pad 1), BN, PReLU; cov7: reflect-pad 1, 3x3 conv 128->1, BN, sigmoid

Official inference (``test.py`` + ``utils_didfuse.Test_fusion``) = :func:`official_image`:

* The official reader, ``np.array(Image.open(p), float32) / 255``, only handles single-channel files
  (TNO); RGB visible images (MSRS) and 3-channel IR files (M3FD) are converted with Pillow
  ``convert('L')`` (integer BT.601 luma), the conversion DIDFuse's own training uses
  (``transforms.Grayscale(1)``); the references were produced that way (``RECIPE.md``).
* ``Test_fusion(IR, visible)``, encoder and decoder in ``eval()`` mode (BatchNorm running statistics).
* The float32 output is written by ``skimage.io.imsave`` -> imageio's legacy PNG writer, whose
  ``image_as_uint`` maps values in [0,1] to ``uint8(floor(float64(x) * 255 + 0.499999999))``: **rounding**,
  no min-max (a sigmoid output is always in [0,1]). 8-bit **grey** PNG.

The float path (:meth:`DIDFuse.forward`, what ``apply_fusion`` and joint training use) takes the float
BT.601 luminance of the visible image (:func:`taskeval.color.luminance`) where the official code takes
Pillow's integer-rounded luma (up to half a grey level apart), and the harness recolours the output with
the visible chroma (the official PNG is grey) and rounds it like the official writer. Without gradients the
four feature sums are done in place (same values, four fewer 64-channel maps in memory). Training here
(``fuse train``, joint training) optimises encoder and decoder through the 'Sum' rule with taskeval's
losses; the authors trained the auto-encoder on single images with their decomposition loss.

Fidelity with the official weights (``shared/reference/DIDFuse``, pairs 00016N, 00091D, M3FD_00000;
``tests/test_port_didfuse.py``): network inputs identical to the official tensors; raw output max abs diff
1.2e-7 / 1.8e-7 / 1.2e-7 (the official code against itself: 2.6e-7); :func:`official_image` equal to the
official PNG on every pixel. The float path against the official PNG (recolouring off): max 2 grey levels,
mean 0.02 / 0.09 / 0.17.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fusion_models.official_io import as_8bit, official_inference
from fusion_models.registry import VERIFIED_OFFICIAL_WEIGHTS, register_fusion_model
from fusion_models.weights import read_checkpoint
from taskeval.errors import WeightsError

FEATURES = 64
# Part names in the official weight file names: Encoder.pkl / Decoder.pkl here,
# Encoder_weight_IJCAI.pkl / Decoder_weight_IJCAI.pkl in the official repository.
PARTS = ("Encoder", "Decoder")
# How an official part file is recognised: the prefix of its first stage's keys.
OFFICIAL_FIRST_KEY = {"Encoder": "cov1.", "Decoder": "cov5."}


def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR (N,1,H,W) and visible luminance (N,1,H,W), same batch and size (H, W >= 2), else ValueError."""
    if ir.ndim != 4 or ir.shape[1] != 1:
        raise ValueError(f"DIDFuse: IR must be (N,1,H,W), got shape {tuple(ir.shape)}")
    if vis.ndim != 4 or vis.shape[1] != 1:
        raise ValueError(f"DIDFuse: visible must be (N,1,H,W) luminance, got shape {tuple(vis.shape)}")
    if vis.shape[0] != ir.shape[0] or vis.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"DIDFuse: IR {tuple(ir.shape)} and visible {tuple(vis.shape)} differ in batch "
                         "or size")
    if min(ir.shape[-2:]) < 2:
        raise ValueError(f"DIDFuse: reflection padding needs images of at least 2x2, "
                         f"got {tuple(ir.shape[-2:])}")


def _official_part(obj) -> str | None:
    """``"Encoder"`` / ``"Decoder"`` for an official part file (``{'weight': state_dict}``), else None."""
    state = obj.get("weight") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        return None
    parts = [p for p, prefix in OFFICIAL_FIRST_KEY.items() if any(k.startswith(prefix) for k in state)]
    return parts[0] if parts else None


class Stage(nn.Module):
    """One official stage ``covK``: its layers sit in a Sequential of the same name (keys ``covK.covK.i``)."""

    def __init__(self, key: str, *layers: nn.Module) -> None:
        super().__init__()
        self.key = key
        self.add_module(key, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.key)(x)


def _conv(c_in: int, c_out: int, activation: nn.Module) -> list[nn.Module]:
    """3x3 conv with zero padding 1, BatchNorm, activation (indices 0, 1, 2 of the official stages)."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), activation]


def _reflect_conv(c_in: int, c_out: int, activation: nn.Module) -> list[nn.Module]:
    """Reflection pad 1, 3x3 conv, BatchNorm, activation (indices 0..3; the pad has no parameters)."""
    return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), activation]


class Encoder(nn.Module):
    """The official ``AE_Encoder``: (N,1,H,W) -> (F_1, F_2, base, detail), each (N,64,H,W)."""

    def __init__(self) -> None:
        super().__init__()
        self.cov1 = Stage("cov1", *_reflect_conv(1, FEATURES, nn.PReLU()))
        self.cov2 = Stage("cov2", *_conv(FEATURES, FEATURES, nn.PReLU()))
        self.cov3 = Stage("cov3", *_conv(FEATURES, FEATURES, nn.Tanh()))
        self.cov4 = Stage("cov4", *_conv(FEATURES, FEATURES, nn.Tanh()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f1 = self.cov1(x)
        f2 = self.cov2(f1)
        return f1, f2, self.cov3(f2), self.cov4(f2)


class Decoder(nn.Module):
    """The official ``AE_Decoder``: (F_1, F_2, base, detail), each (N,64,H,W) -> (N,1,H,W) in (0,1)."""

    def __init__(self) -> None:
        super().__init__()
        self.cov5 = Stage("cov5", *_conv(2 * FEATURES, FEATURES, nn.PReLU()))
        self.cov6 = Stage("cov6", *_conv(2 * FEATURES, FEATURES, nn.PReLU()))
        self.cov7 = Stage("cov7", *_reflect_conv(2 * FEATURES, 1, nn.Sigmoid()))

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, base: torch.Tensor,
                detail: torch.Tensor) -> torch.Tensor:
        x = self.cov5(torch.cat([base, detail], dim=1))
        x = self.cov6(torch.cat([x, f2], dim=1))
        return self.cov7(torch.cat([x, f1], dim=1))


class DIDFuse(nn.Module):
    """DIDFuse auto-encoder with the 'Sum' fusion rule (260,935 parameters).

    Example::

        model = DIDFuse().eval()
        fused_y = model(ir, vis_y)  # (N,1,H,W), (N,1,H,W) -> (N,1,H,W) in (0,1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    @staticmethod
    def weight_files(path: str | Path) -> list[Path]:
        """The files a weights path reads: an official part (``Encoder*`` / ``Decoder*`` in its name) and
        its partner beside it, else the path alone (by name: the partner's bytes enter every cache key)."""
        path = Path(path)
        for part in PARTS:
            if part in path.name:
                partner = path.with_name(path.name.replace(part, PARTS[1 - PARTS.index(part)]))
                if partner.is_file():
                    return sorted([path, partner])
        return [path]

    @staticmethod
    def read_checkpoint_files(path: str | Path):
        """Read weights for this model: one taskeval checkpoint, or the two official files.

        An official file (a dict ``{'weight': state_dict, 'epoch'}`` whose keys start with ``cov1.``, the
        encoder, or ``cov5.``, the decoder) brings its partner from the same folder, named with
        ``Encoder`` and ``Decoder`` swapped (``Encoder.pkl`` / ``Decoder.pkl``, or the repository's
        ``*_weight_IJCAI.pkl``); both state dicts are returned under ``encoder.`` / ``decoder.``. Anything
        else is returned as stored. Every file is read with ``weights_only=True``.

        Raises:
            WeightsError: the partner file is missing or is not the other official part (naming it).
        """
        path = Path(path)
        obj = read_checkpoint(path)
        part = _official_part(obj)
        if part is None:
            return obj
        other = PARTS[1 - PARTS.index(part)]
        partner = path.with_name(path.name.replace(part, other))
        if partner == path or not partner.is_file():
            expected = partner if partner != path else path.with_name(other + ".pkl")
            raise WeightsError(f"{path}: an official DIDFuse {part.lower()}; its {other.lower()} is a second "
                               f"file, expected at {expected}")
        partner_obj = read_checkpoint(partner)
        if _official_part(partner_obj) != other:
            raise WeightsError(f"{partner}: expected the official DIDFuse {other.lower()} "
                               f"({{'weight': state_dict}} with keys {OFFICIAL_FIRST_KEY[other]}...)")
        parts = {part: obj["weight"], other: partner_obj["weight"]}
        return {f"{p.lower()}.{k}": v for p in PARTS for k, v in parts[p].items()}

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse a batch.

        Args:
            ir: (N,1,H,W) infrared in [0,1].
            vis: (N,1,H,W) visible luminance in [0,1].

        Returns:
            (N,1,H,W) fused image in (0,1) (sigmoid; the official writer rounds it to 8 bits).
        """
        _check_inputs(ir, vis)
        fused = list(self.encoder(ir))
        features_vis = self.encoder(vis)
        if torch.is_grad_enabled():
            fused = [i + v for i, v in zip(fused, features_vis, strict=True)]
        else:
            # Inference: sum in place (same values), so four fewer 64-channel maps live at once.
            for i, v in zip(fused, features_vis, strict=True):
                i.add_(v)
        del features_vis
        return self.decoder(*fused)


def official_png_values(fused: np.ndarray) -> np.ndarray:
    """imageio's legacy ``image_as_uint`` for a float image in [0,1]: ``floor(x * 255 + 0.499999999)``.

    Args:
        fused: (H,W) float32 in [0,1] (a sigmoid output).

    Returns:
        (H,W) uint8.
    """
    if fused.size and (np.nanmin(fused) < 0 or np.nanmax(fused) > 1):
        raise ValueError("DIDFuse: the official writer's rounding applies to values in [0,1] only "
                         f"(got {np.nanmin(fused):.3g}..{np.nanmax(fused):.3g})")
    return (fused.astype(np.float64) * 255.0 + 0.499999999).astype(np.uint8)


def official_image(model: DIDFuse, ir: torch.Tensor, vis: torch.Tensor, text=None) -> np.ndarray:
    """``test.py`` end to end: what the official code writes.

    Args:
        model: a :class:`DIDFuse` (run in eval mode; its mode is restored afterwards).
        ir: (N,1,H,W) float32, exactly the 8-bit IR files / 255.
        vis: (N,3,H,W) RGB float32, exactly the 8-bit visible files / 255.
        text: unused (DIDFuse takes no text).

    Returns:
        (N,H,W) uint8 grey images, each fused on its own (batch 1) as the official loop does.
    """
    if vis.ndim != 4 or vis.shape[1] != 3:
        raise ValueError(f"DIDFuse official_image: visible must be (N,3,H,W) RGB, "
                         f"got shape {tuple(vis.shape)}")
    ir8, vis8 = as_8bit(ir, "IR"), as_8bit(vis, "visible")
    _check_inputs(torch.from_numpy(ir8), torch.from_numpy(vis8[:, :1]))
    device = next(model.parameters()).device
    out = np.empty((ir8.shape[0], *ir8.shape[-2:]), np.uint8)
    with official_inference(model):
        for k in range(ir8.shape[0]):
            # Pillow convert('L'): integer luma of the visible RGB (a grey IR file is unchanged by it).
            vis_l = np.asarray(Image.fromarray(np.ascontiguousarray(vis8[k].transpose(1, 2, 0))).convert("L"))
            img_ir = torch.from_numpy(ir8[k, 0].astype(np.float32) / 255)[None, None].to(device)
            img_vis = torch.from_numpy(vis_l.astype(np.float32) / 255)[None, None].to(device)
            out[k] = official_png_values(model(img_ir, img_vis)[0, 0].cpu().numpy())
    return out


@register_fusion_model(
    "didfuse",
    vis_input="y",
    output="y",
    normalize="clip",
    trainable=True,
    paper="Zhao, Xu, Zhang, Liu, Zhang, Li: DIDFuse: Deep Image Decomposition for Infrared and Visible Image "
          "Fusion, IJCAI 2020",
    licence="MIT",
    url="https://github.com/Zhaozixiang1228/IVIF-DIDFuse",
    weights_file="Encoder.pkl",
    description="auto-encoder splitting base and detail features; the four feature pairs summed; output grey",
    official_image=official_image,
    verified=VERIFIED_OFFICIAL_WEIGHTS,
    weight_files=lambda path: DIDFuse.weight_files(path),
)
def didfuse() -> nn.Module:
    return DIDFuse()
