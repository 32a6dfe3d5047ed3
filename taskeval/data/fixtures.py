"""Tiny fake datasets in the real on-disk layout of each built-in dataset (msrs, mfnet, m3fd, llvip, fmb).

A fixture has the folder names, file types, channel counts, label encodings and split files of the real
dataset, with a few small images per split, so that the dataset's built-in card, its reader,
``taskeval data check`` and ``taskeval benchmark CONFIG --plan --root FIXTURE`` work on it without the
real data. Every label image holds every class of the card and every detection image one box of each
class; pixels follow the labels (each class has its own IR intensity and visible colour), so a task
network can learn something from them. Same arguments, same bytes.

M3FD has no published split: the card ships a scene split of frame numbers 00000-04199, and a split
file that names missing frames is an error (a silently smaller test set would change the metric).
The M3FD fixture therefore has all 4200 frames, as hard links to a few distinct frames (a few hundred
KB on disk; plain copies where the file system has no hard links). Replace, do not edit in place, a
file of it when planting a problem: writing into a hard link changes every frame that shares it.

Example::

    from taskeval.data.fixtures import write_fixture
    root = write_fixture("fmb", tmp_path / "fmb")      # then: load_card("fmb", root=root)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from taskeval.data.card import DatasetCard, load_card
from taskeval.data.labels import yolo_label_text
from taskeval.errors import ConfigError
from taskeval.imageio import write_png

FIXTURE_FORMATS = ("msrs", "mfnet", "m3fd", "llvip", "fmb")
SIZE = (48, 64)            # (H, W): the 3:4 aspect of MSRS, MFNet, M3FD and FMB
M3FD_TEMPLATES = 6         # distinct M3FD frames behind the 4200 hard links
_VERSION = 1               # bump when the bytes a fixture writes change


def write_fixture(fmt: str, out: str | Path, seed: int = 0) -> Path:
    """Write the fixture of dataset ``fmt`` into ``out`` (created) and return ``out``.

    The fixture is written into a temporary sibling folder and renamed into place when complete. An
    existing ``out`` holding the same fixture (same format, seed and version) is reused; any other
    non-empty ``out`` is an error.

    Raises:
        ConfigError: unknown format, or ``out`` holds something else.
    """
    if fmt not in FIXTURE_FORMATS:
        raise ConfigError(f"no fixture for format {fmt!r}; fixtures exist for {', '.join(FIXTURE_FORMATS)}")
    out = Path(out)
    stamp = {"format": fmt, "seed": int(seed), "version": _VERSION}
    if out.is_dir() and any(out.iterdir()):
        try:
            found = json.loads((out / "fixture.json").read_text())
        except (OSError, ValueError):
            found = None
        if found == stamp:
            return out
        raise ConfigError(f"{out} exists and is not the {fmt} fixture with seed {seed}; choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _WRITERS[fmt](tmp, load_card(fmt), seed)
        (tmp / "fixture.json").write_text(json.dumps(stamp))
        tmp.chmod(0o755)
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------ content
def _class_look(k: int, n: int) -> tuple[float, np.ndarray]:
    """IR intensity in [0.15, 0.9] and an RGB colour in [0,1] for class ``k`` of ``n``: all distinct."""
    hue = int(180 * k / max(n, 1))
    rgb = cv2.cvtColor(np.uint8([[[hue, 200, 90 + 140 * (k % 2)]]]), cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return 0.15 + 0.75 * k / max(n - 1, 1), rgb.astype(np.float32)


def _scene_mask(rng: np.random.Generator, n_classes: int, h: int, w: int) -> np.ndarray:
    """(H,W) uint8 class ids: a grid of blocks holding every class at least once, in a random order."""
    rows = 3 if n_classes > 4 else 2
    cols = -(-n_classes // rows)
    cells = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, rows * cols - n_classes)])
    grid = rng.permutation(cells).reshape(rows, cols).astype(np.uint8)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)


def _render(rng: np.random.Generator, mask: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 IR (H,W) and visible RGB (H,W,3) whose pixels follow ``mask`` (plus a little noise)."""
    looks = [_class_look(k, n_classes) for k in range(n_classes)]
    ir = np.array([g for g, _ in looks], np.float32)[mask]
    vis = np.stack([c for _, c in looks])[mask]
    ir = ir + rng.normal(0, 0.02, ir.shape).astype(np.float32)
    vis = vis + rng.normal(0, 0.02, vis.shape).astype(np.float32)
    return _u8(ir), _u8(vis)


def _boxes_scene(rng: np.random.Generator, n_classes: int, h: int, w: int):
    """One box per class on a grid of cells: images (IR, RGB) and boxes ``[(cls, x1, y1, x2, y2)]`` in pixels.

    The background is class-free (mask value ``n_classes``, dark); box ``k`` is drawn with class ``k``'s look.
    """
    cols = -(-n_classes // 2)
    cw, ch = w // cols, h // 2
    mask = np.full((h, w), n_classes, np.uint8)
    boxes = []
    for k, cell in enumerate(rng.permutation(2 * cols)[:n_classes]):
        r, c = divmod(int(cell), cols)
        bw, bh = int(rng.integers(cw // 2, cw - 1)), int(rng.integers(ch // 2, ch - 1))
        x1, y1 = c * cw + int(rng.integers(0, cw - bw)), r * ch + int(rng.integers(0, ch - bh))
        mask[y1:y1 + bh, x1:x1 + bw] = k
        boxes.append((k, x1, y1, x1 + bw, y1 + bh))
    ir, vis = _render(rng, mask, n_classes + 1)
    return ir, vis, boxes


def _u8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _voc(boxes, names, h: int, w: int, filename: str) -> str:
    objs = "".join(f"<object><name>{names[k]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                   f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for k, x1, y1, x2, y2 in boxes)
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>\n")


_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "all": 3}


def _rng(seed: int, fmt: str, split: str, i: int) -> np.random.Generator:
    # fixed integers per (format, split), not hash(): the same bytes in every process
    return np.random.default_rng([seed, FIXTURE_FORMATS.index(fmt), _SPLIT_CODE[split], i])


def _write_jpg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = img[..., ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(out), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------------------------ layouts
MSRS_IDS = {"train": ["00001D", "00002N", "00003D", "00004N"], "test": ["00005D", "00006N"]}


def _msrs(root: Path, card: DatasetCard, seed: int) -> None:
    """``{train,test}/{ir,vi,Segmentation_labels,labels}``: grey IR, RGB visible, class-id masks, YOLO txt."""
    h, w = SIZE
    for split, ids in MSRS_IDS.items():
        for i, sid in enumerate(ids):
            rng = _rng(seed, "msrs", split, i)
            mask = _scene_mask(rng, len(card.seg_classes), h, w)
            ir, vis = _render(rng, mask, len(card.seg_classes))
            write_png(root / split / "ir" / f"{sid}.png", ir)
            write_png(root / split / "vi" / f"{sid}.png", vis)
            write_png(root / split / "Segmentation_labels" / f"{sid}.png", mask)
            _, _, boxes = _boxes_scene(rng, len(card.det_classes), h, w)
            _write_text(root / split / "labels" / f"{sid}.txt", yolo_label_text(boxes, (h, w)))


MFNET_IDS = {"train": ["00001D", "00002N", "00003D", "00004N"], "val": ["00005D", "00006N"],
             "test": ["00007D", "00008N", "00009D"]}


def _mfnet(root: Path, card: DatasetCard, seed: int) -> None:
    """``images/`` 4-channel PNG (R, G, B, thermal), ``labels/`` class ids, ``{train,val,test,test_day,
    test_night}.txt`` in the root (day/night from the id's D/N suffix, as MFNet names them)."""
    h, w = SIZE
    for split, ids in MFNET_IDS.items():
        for i, sid in enumerate(ids):
            rng = _rng(seed, "mfnet", split, i)
            mask = _scene_mask(rng, len(card.seg_classes), h, w)
            ir, vis = _render(rng, mask, len(card.seg_classes))
            bgra = np.dstack([vis[..., ::-1], ir])  # OpenCV writes BGRA; on disk the channels are R, G, B, T
            (root / "images").mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(root / "images" / f"{sid}.png"), bgra):
                raise OSError(f"{root / 'images' / sid}.png: PNG encoding failed")
            write_png(root / "labels" / f"{sid}.png", mask)
        _write_text(root / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    for part, tag in (("test_day", "D"), ("test_night", "N")):
        _write_text(root / f"{part}.txt", "".join(f"{i}\n" for i in MFNET_IDS["test"] if i.endswith(tag)))


def _m3fd(root: Path, card: DatasetCard, seed: int) -> None:
    """Raw layout ``Ir/``, ``Vis/`` (PNG, IR as 3 equal channels), ``Annotation/`` VOC XML with the card's
    class names; every frame number of the shipped split files, hard-linked to a few distinct frames."""
    h, w = SIZE
    frames = sorted({f for s in card.split_files for f in card.split_file(s).read_text().split()})
    tmpl = root / ".templates"
    for t in range(M3FD_TEMPLATES):
        ir, vis, boxes = _boxes_scene(_rng(seed, "m3fd", "all", t), len(card.det_classes), h, w)
        write_png(tmpl / f"{t}_ir.png", np.dstack([ir] * 3))
        write_png(tmpl / f"{t}_vis.png", vis)
        _write_text(tmpl / f"{t}.xml", _voc(boxes, card.det_classes, h, w, f"{t}.png"))
    for sub in ("Ir", "Vis", "Annotation"):
        (root / sub).mkdir()
    for k, frame in enumerate(frames):
        t = k % M3FD_TEMPLATES
        _link(tmpl / f"{t}_ir.png", root / "Ir" / f"{frame}.png")
        _link(tmpl / f"{t}_vis.png", root / "Vis" / f"{frame}.png")
        _link(tmpl / f"{t}.xml", root / "Annotation" / f"{frame}.xml")
    shutil.rmtree(tmpl)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this file system
        shutil.copyfile(src, dst)


LLVIP_IDS = {"train": ["010001", "010002", "010003", "010004"], "test": ["190001", "190002"]}


def _llvip(root: Path, card: DatasetCard, seed: int) -> None:
    """``{infrared,visible}/{train,test}/<id>.jpg`` (IR as 3 equal channels) and ``Annotations/<id>.xml``."""
    h, w = 48, 60  # LLVIP's 1280x1024 aspect
    for split, ids in LLVIP_IDS.items():
        for i, sid in enumerate(ids):
            ir, vis, boxes = _boxes_scene(_rng(seed, "llvip", split, i), len(card.det_classes), h, w)
            _write_jpg(root / "infrared" / split / f"{sid}.jpg", np.dstack([ir] * 3))
            _write_jpg(root / "visible" / split / f"{sid}.jpg", vis)
            _write_text(root / "Annotations" / f"{sid}.xml", _voc(boxes, card.det_classes, h, w, f"{sid}.jpg"))


FMB_IDS = {"train": ["00001", "00002", "00003", "00004"], "test": ["00005", "00006"]}


def _fmb(root: Path, card: DatasetCard, seed: int) -> None:
    """``{train,test}/{Visible,Infrared,Label,color}``: RGB, grey, class ids 0..14, labels in the palette."""
    h, w = SIZE
    palette = np.array(card.palette, np.uint8)
    for split, ids in FMB_IDS.items():
        for i, sid in enumerate(ids):
            rng = _rng(seed, "fmb", split, i)
            mask = _scene_mask(rng, len(card.seg_classes), h, w)
            ir, vis = _render(rng, mask, len(card.seg_classes))
            write_png(root / split / "Visible" / f"{sid}.png", vis)
            write_png(root / split / "Infrared" / f"{sid}.png", ir)
            write_png(root / split / "Label" / f"{sid}.png", mask)
            write_png(root / split / "color" / f"{sid}.png", palette[mask])


_WRITERS = {"msrs": _msrs, "mfnet": _mfnet, "m3fd": _m3fd, "llvip": _llvip, "fmb": _fmb}
