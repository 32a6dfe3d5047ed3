"""Annotation readers: YOLO txt, VOC XML boxes and label-PNG masks.

Boxes everywhere in taskeval are ``float32`` arrays ``(K, 5)``: ``[class_id, x1, y1, x2, y2]`` in
pixels of the image they belong to. Masks are ``int64`` ``(H, W)`` of class ids (``ignore_index``
for unscored pixels).

Defined behaviour for every odd case (documented in the README's "Bad input" section):
* empty label file: valid, no objects;
* class id out of range / unknown class name: error naming the file, line and id;
* box extending past the image by more than half a pixel: error in ``data check``; at load time it
  is clipped and a warning is recorded (``box_policy="clip"``) or it is an error (``"error"``);
* degenerate box (zero or negative area after clipping): error;
* malformed line (not 5 numbers, NaN): error naming the line.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from taskeval.data.problems import Problems
from taskeval.imageio import read_raw

EMPTY_BOXES = np.zeros((0, 5), dtype=np.float32)
TOLERANCE_PX = 0.5


def _finish_boxes(rows: list[list[float]], path: Path, h: int, w: int, problems: Problems,
                  box_policy: str) -> np.ndarray:
    out = []
    for line_no, (cls, x1, y1, x2, y2) in rows:
        outside = x1 < -TOLERANCE_PX or y1 < -TOLERANCE_PX or x2 > w + TOLERANCE_PX or y2 > h + TOLERANCE_PX
        if outside:
            msg = (f"line {line_no}: box ({x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}) extends outside the "
                   f"{w}x{h} image")
            if box_policy == "error":
                problems.error("box-outside-image", path, msg)
                continue
            problems.warning("box-clipped", path, msg + "; clipped")
        x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
        y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            problems.error("degenerate-box", path, f"line {line_no}: box has no area inside the image")
            continue
        out.append([cls, x1, y1, x2, y2])
    return np.asarray(out, dtype=np.float32).reshape(-1, 5)


def yolo_label_text(boxes: np.ndarray, size_hw: tuple[int, int], decimals: int = 6) -> str:
    """``cls cx cy w h`` lines (normalised to [0, 1], ``decimals`` digits) of (K, 5) ``[cls, x1, y1, x2, y2]``
    pixel boxes; "" for none (an image without objects has an empty label file)."""
    h, w = size_hw
    return "".join(f"{int(c)} {(x1 + x2) / 2 / w:.{decimals}f} {(y1 + y2) / 2 / h:.{decimals}f} "
                   f"{(x2 - x1) / w:.{decimals}f} {(y2 - y1) / h:.{decimals}f}\n"
                   for c, x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 5))


def read_yolo_txt(path: str | Path, num_classes: int, size_hw: tuple[int, int], problems: Problems | None = None,
                  box_policy: str = "clip") -> np.ndarray:
    """Read a YOLO label file (``cls cx cy w h`` normalised; fields split on any whitespace).

    Args:
        path: label file.
        num_classes: valid ids are ``0..num_classes-1``.
        size_hw: (height, width) of the image the labels belong to.
        problems: collector (None: raise on the first error).
        box_policy: "clip" (warn and clip) or "error" for boxes outside the image.

    Returns:
        (K,5) float32 ``[cls, x1, y1, x2, y2]`` in pixels.
    """
    problems = problems if problems is not None else Problems()
    path = Path(path)
    h, w = size_hw
    try:
        text = path.read_text()
    except FileNotFoundError:
        problems.error("missing-label", path, "label file not found")
        return EMPTY_BOXES
    except (OSError, UnicodeDecodeError) as exc:
        problems.error("unreadable-label", path, f"cannot read label file ({exc})")
        return EMPTY_BOXES
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            problems.error("malformed-label", path, f"line {line_no}: not numbers: {line.strip()!r}")
            continue
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            problems.error("malformed-label", path,
                           f"line {line_no}: expected 5 finite numbers 'cls cx cy w h', got {line.strip()!r}")
            continue
        cls, cx, cy, bw, bh = values
        if cls != int(cls) or not 0 <= cls < num_classes:
            problems.error("class-id-out-of-range", path,
                           f"line {line_no}: class id {fields[0]} not in 0..{num_classes - 1}")
            continue
        rows.append((line_no, (int(cls), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)))
    return _finish_boxes(rows, path, h, w, problems, box_policy)


def read_voc_xml(path: str | Path, class_names: tuple[str, ...], size_hw: tuple[int, int],
                 problems: Problems | None = None, box_policy: str = "clip",
                 aliases: dict[str, str] | None = None) -> np.ndarray:
    """Read a Pascal-VOC XML file (LLVIP, M3FD as distributed). Class names are matched case-insensitively.

    ``aliases`` maps other spellings to card class names (e.g. ``{"motorcycle": "Motorcycle"}``).
    """
    problems = problems if problems is not None else Problems()
    path = Path(path)
    h, w = size_hw
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    for alias, target in (aliases or {}).items():
        lookup[alias.lower()] = lookup[target.lower()]
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        problems.error("missing-label", path, "annotation file not found")
        return EMPTY_BOXES
    except ET.ParseError as exc:
        problems.error("malformed-label", path, f"invalid XML ({exc})")
        return EMPTY_BOXES
    rows = []
    for k, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name.lower() not in lookup:
            problems.error("class-id-out-of-range", path, f"object {k}: unknown class {name!r} "
                           f"(card classes: {', '.join(class_names)})")
            continue
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            problems.error("malformed-label", path, f"object {k}: missing or non-numeric bndbox")
            continue
        rows.append((k, (lookup[name.lower()], x1, y1, x2, y2)))
    return _finish_boxes(rows, path, h, w, problems, box_policy)


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a ``classes.txt`` (one name per line, optionally ``"<id> <name>"`` in id order)."""
    names = []
    for k, line in enumerate(Path(path).read_text().splitlines()):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) == 2 and parts[0].isdigit():
            if int(parts[0]) != len(names):
                raise ValueError(f"{path}: line {k + 1}: ids must run 0, 1, 2... in order, got {parts[0]}")
            names.append(parts[1].strip())
        else:
            names.append(line.strip())
    return tuple(names)


def read_mask(path: str | Path, num_classes: int, ignore_index: int, size_hw: tuple[int, int] | None = None,
              palette: tuple[tuple[int, int, int], ...] = (), problems: Problems | None = None) -> np.ndarray:
    """Read a label PNG as int64 class ids ``(H, W)``.

    Single-channel files hold class ids; RGB files are mapped through ``palette`` (unknown colours are
    an error). Ids outside ``0..num_classes-1`` other than ``ignore_index`` are an error naming the ids.
    """
    problems = problems if problems is not None else Problems()
    path = Path(path)
    raw = read_raw(path)
    if raw.ndim == 3:
        if not palette:
            problems.error("mask-format", path, f"{raw.shape[2]}-channel mask but the card has no palette")
            return np.zeros(raw.shape[:2], np.int64)
        rgb = raw[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        mask = np.full(code.shape, -1, np.int64)
        for i, (r, g, b) in enumerate(palette):
            mask[code == ((r << 16) | (g << 8) | b)] = i
        if (mask < 0).any():
            bad = np.unique(rgb[mask < 0].reshape(-1, 3), axis=0)[:5].tolist()
            problems.error("mask-unknown-colour", path, f"{int((mask < 0).sum())} pixels have colours not in "
                           f"the palette, e.g. {bad}")
            mask[mask < 0] = ignore_index
    else:
        mask = raw.astype(np.int64)
    if size_hw is not None and mask.shape != tuple(size_hw):
        problems.error("mask-size-mismatch", path, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is "
                       f"{size_hw[1]}x{size_hw[0]}")
    bad = np.unique(mask[(mask >= num_classes) & (mask != ignore_index)])
    if bad.size:
        problems.error("mask-id-out-of-range", path, f"label ids {bad.tolist()[:10]} not in 0..{num_classes - 1}"
                       f" (ignore index {ignore_index})")
    return mask
