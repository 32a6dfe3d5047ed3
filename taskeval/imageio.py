"""Reading and writing images under the one tensor contract of taskeval.

Conventions (everything else in the project relies on these):

* IR is single-channel, visible is RGB (never BGR past this module).
* Arrays handed on are ``float32`` in ``[0, 1]``: 8-bit files are divided by 255, 16-bit files by
  65535. Tensors are ``(N,1,H,W)`` for IR and ``(N,3,H,W)`` for visible.
* A 3-channel IR file with equal channels (M3FD ships IR like that) is reduced to one channel; a
  colour IR file (unequal channels) is reduced with BT.601 luma and the conversion is reported by
  :func:`read_gray` through ``was_color``.
* A grey visible image is expanded to three equal channels.

Corrupt, truncated or unreadable files raise :class:`~taskeval.errors.DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from taskeval.errors import DataError
from taskeval.rundir import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# BT.601 luma weights, the ones fusion papers use.
LUMA = (0.299, 0.587, 0.114)


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file as stored: uint8 or uint16, HxW or HxWxC with channels in RGB(A) order.

    Raises:
        DataError: missing, empty, truncated or undecodable file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not data:
        raise DataError(f"{path}: empty file")
    if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{path}: corrupt or truncated image (cannot be decoded)")
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: unsupported pixel type {arr.dtype} (expected 8- or 16-bit)")
    if arr.ndim == 3:
        if arr.shape[2] == 3:
            arr = arr[..., ::-1]
        elif arr.shape[2] == 4:
            arr = arr[..., [2, 1, 0, 3]]
        elif arr.shape[2] == 1:
            arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 / uint16 -> float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.float32:
        return arr
    raise TypeError(f"expected uint8, uint16 or float32 array, got {arr.dtype}")


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an HxWx3 float array."""
    return rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2]


def read_gray(path: str | Path) -> np.ndarray:
    """Read an IR image as float32 ``(H, W)`` in [0, 1] (8- or 16-bit; 3 equal channels accepted)."""
    raw = read_raw(path)
    if raw.ndim == 2:
        return to_float(raw)
    rgb = raw[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return to_float(np.ascontiguousarray(rgb[..., 0]))
    return rgb_to_gray(to_float(np.ascontiguousarray(rgb))).astype(np.float32)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a visible image as float32 ``(H, W, 3)`` RGB in [0, 1]; grey files get 3 equal channels."""
    raw = read_raw(path)
    if raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, axis=2)
    return to_float(np.ascontiguousarray(raw[..., :3]))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header where possible."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable image header ({exc})") from None


def gray_to_tensor(gray: np.ndarray) -> torch.Tensor:
    """(H,W) float32 -> (1,1,H,W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None]


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H,W,3) float32 -> (1,3,H,W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()


def tensor_to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1|3,H,W) or (H,W) tensor in [0,1] -> uint8 HxW or HxWx3 (rounded, clipped)."""
    arr = img.detach().float().cpu().clamp(0, 1).numpy()
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    return np.rint(arr * 255.0).astype(np.uint8)


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write a uint8 grey (HxW) or RGB (HxWx3) array as PNG, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {img.dtype}")
    out = img[..., ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(out))
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def list_images(folder: str | Path) -> dict[str, Path]:
    """Map file stem -> path for every image in a folder (non-recursive).

    Raises:
        DataError: the folder is missing, or two files share a stem (``a.png`` and ``a.jpg``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"{folder}: duplicate id {p.stem!r} ({out[p.stem].name} and {p.name})")
            out[p.stem] = p
    return out
