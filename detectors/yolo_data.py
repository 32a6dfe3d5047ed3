"""The folder ultralytics trains from, built without copying images.

Layout (inside the run directory)::

    <folder>/data.yaml
    <folder>/images/train/<id>.png -> symlink to the fused image
    <folder>/labels/train/<id>.txt    YOLO labels written from taskeval's dataset layer
    <folder>/images/val/, labels/val/ a few training images, for ultralytics' own logs only

Labels come from :meth:`PairedDataset.boxes`, so they are the validated boxes (class ids checked against
the card, boxes past the border clipped or rejected and logged, empty files for images without objects).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from taskeval.data.labels import yolo_label_text
from taskeval.errors import DataError

log = logging.getLogger(__name__)


def _link(src: Path, dst: Path) -> None:
    """Symlink ``dst`` -> ``src``; a hard link, then a copy, where symlinks are not allowed (Windows)."""
    try:
        os.symlink(src, dst)
    except OSError:
        try:
            os.link(src, dst)
        except OSError:
            log.warning("cannot link %s; copying it", src)
            shutil.copyfile(src, dst)


def _write_split(folder: Path, split: str, ids: list[str], images: Mapping[str, Path], ds) -> None:
    img_dir, lab_dir = folder / "images" / split, folder / "labels" / split
    for d in (img_dir, lab_dir):
        if d.exists():  # ours: rebuilt every time so a changed input set leaves nothing stale behind
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for sid in ids:
        src = Path(images[sid]).resolve()
        _link(src, img_dir / f"{sid}{src.suffix.lower()}")
        i = ds.index(sid)
        (lab_dir / f"{sid}.txt").write_text(yolo_label_text(ds.boxes(i), ds.size(i), decimals=8))


def write_yolo_dataset(folder: str | Path, images: Mapping[str, Path], ds, val_images: int = 8) -> Path:
    """Build the training folder for ``ds`` (a :class:`~taskeval.data.PairedDataset` split) from ``images``.

    Args:
        folder: where to build it (created; its ``images/`` and ``labels/`` are replaced).
        images: id -> image file (fused PNG) for every id of ``ds``.
        ds: the split whose ids, sizes and boxes are used.
        val_images: how many training images (evenly spaced) ultralytics validates on for its logs.

    Returns:
        The path of ``data.yaml``.

    Raises:
        DataError: ``images`` lacks ids of ``ds`` (listed), a file is missing, or ``ds`` has no boxes.
    """
    if not ds.has_boxes:
        raise DataError(f"{ds.card.name}/{ds.split} has no detection labels; cannot train a detector on it")
    missing = [sid for sid in ds.ids if sid not in images]
    if missing:
        raise DataError(f"the images for {ds.card.name}/{ds.split} lack {len(missing)} of {len(ds)} ids: "
                        f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
    absent = [str(images[sid]) for sid in ds.ids if not Path(images[sid]).is_file()]
    if absent:
        raise DataError(f"{len(absent)} image file(s) not found: {', '.join(absent[:10])}")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _write_split(folder, "train", list(ds.ids), images, ds)
    n_val = max(1, min(val_images, len(ds)))
    val_ids = [ds.ids[k] for k in np.linspace(0, len(ds) - 1, n_val).round().astype(int)]
    _write_split(folder, "val", list(dict.fromkeys(val_ids)), images, ds)
    for cache in (folder / "labels").glob("*.cache"):
        cache.unlink()
    data = {"path": str(folder), "train": "images/train", "val": "images/val",
            "names": {k: n for k, n in enumerate(ds.card.det_classes)}}
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
