"""``PairedDataset``: one model of every paired IR/visible dataset, whatever its layout on disk.

Samples are ``Sample(id, ir, vis, boxes, mask)`` with ``ir`` (1,H,W) and ``vis`` (3,H,W) float32 tensors
in [0,1], ``boxes`` (K,5) float32 ``[cls, x1, y1, x2, y2]`` pixels (None when the dataset has no
detection labels) and ``mask`` (H,W) int64 (None without segmentation labels). Ids are file stems and
are the join key everywhere (fused files, caches, predictions, results).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from taskeval.data.card import SIZE_POLICIES, DatasetCard, load_card
from taskeval.data.labels import read_mask, read_voc_xml, read_yolo_txt
from taskeval.data.problems import Problems
from taskeval.data.readers import get_reader
from taskeval.data.records import PairRecord
from taskeval.errors import DataError
from taskeval.imageio import image_size, read_gray, read_raw, read_rgb, to_float

log = logging.getLogger(__name__)


@dataclass
class Sample:
    id: str
    ir: torch.Tensor
    vis: torch.Tensor
    boxes: np.ndarray | None
    mask: torch.Tensor | None


class PairedDataset(torch.utils.data.Dataset):
    """The pairs of one split of a dataset.

    Args:
        card: the dataset card (with ``root`` set).
        split: split name ("train", "test", ...).
        size_policy: "error" (IR and visible must have the same size) or "resize-ir" (the IR image is
            resized to the visible size with bilinear interpolation; logged once per dataset). Default: the
            card's ``size_policy`` ("error").
        box_policy: "clip" (boxes past the image border are clipped, with a logged warning) or "error".
            Default: the card's ``box_policy`` ("clip").

    Raises:
        DataError: on the first problem found while listing the split (missing partner, label
            without image, ...). ``taskeval data check`` lists all problems instead.
    """

    def __init__(self, card: DatasetCard, split: str, size_policy: str | None = None, box_policy: str | None = None,
                 records: list[PairRecord] | None = None):
        size_policy = size_policy or card.size_policy
        box_policy = box_policy or card.box_policy
        if size_policy not in SIZE_POLICIES:
            raise ValueError(f"size_policy must be one of {SIZE_POLICIES}, got {size_policy!r}")
        self.card = card
        self.split = split
        self.size_policy = size_policy
        self.box_policy = box_policy
        self.records = records if records is not None else get_reader(card.format).discover(card, split, Problems())
        if not self.records:
            raise DataError(f"{card.root}: split {split!r} of {card.name!r} has no pairs")
        self.ids = [r.id for r in self.records]
        self._index = {r.id: i for i, r in enumerate(self.records)}
        self._resize_logged = False

    @classmethod
    def open(cls, card: str | Path | DatasetCard, split: str, root: str | Path | None = None, **kwargs):
        """Open a split from a card name/path/object; ``root`` overrides the card's root."""
        card = card.with_root(root) if isinstance(card, DatasetCard) else load_card(card, root)
        return cls(card, split, **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def index(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise DataError(f"id {sample_id!r} is not in split {self.split!r} of {self.card.name!r}") from None

    @property
    def has_boxes(self) -> bool:
        return all(r.det is not None for r in self.records) and bool(self.card.det_classes)

    @property
    def has_masks(self) -> bool:
        return all(r.seg is not None for r in self.records) and bool(self.card.seg_classes)

    def read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(IR (H,W), visible (H,W,3)) float32 in [0,1] of pair ``i``."""
        rec = self.records[i]
        if rec.packed:
            raw = read_raw(rec.ir)
            if raw.ndim != 3 or raw.shape[2] != 4:
                raise DataError(f"{rec.ir}: expected a 4-channel image (RGB + thermal), got shape {raw.shape}")
            arr = to_float(raw)
            return np.ascontiguousarray(arr[..., 3]), np.ascontiguousarray(arr[..., :3])
        ir, vis = read_gray(rec.ir), read_rgb(rec.vis)
        if ir.shape != vis.shape[:2]:
            if self.size_policy == "error":
                raise DataError(f"{rec.ir}: IR is {ir.shape[1]}x{ir.shape[0]} but visible {rec.vis.name} is "
                                f"{vis.shape[1]}x{vis.shape[0]} (set size_policy: resize-ir in the dataset card to resize IR)")
            if not self._resize_logged:
                log.warning("%s: resizing IR images to the visible size (size_policy=resize-ir), first: %s",
                            self.card.name, rec.id)
                self._resize_logged = True
            ir = cv2.resize(ir, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_LINEAR)
        return ir, vis

    def size(self, i: int) -> tuple[int, int]:
        """(H, W) of pair ``i`` (the visible image's size), read from the file header."""
        rec = self.records[i]
        return image_size(rec.vis)

    def boxes(self, i: int, problems: Problems | None = None) -> np.ndarray | None:
        """(K,5) float32 ``[cls, x1, y1, x2, y2]`` in pixels, or None without detection labels."""
        rec = self.records[i]
        if rec.det is None:
            return None
        problems = problems if problems is not None else Problems(collect=False)
        kw = dict(problems=problems, box_policy=self.box_policy)
        if rec.det.suffix == ".xml":
            boxes = read_voc_xml(rec.det, self.card.det_classes, self.size(i),
                                 aliases=self.card.options.get("class_aliases"), **kw)
        else:
            boxes = read_yolo_txt(rec.det, len(self.card.det_classes), self.size(i), **kw)
        for w in problems.warnings:
            log.warning("%s", w)
        problems.items.clear()
        return boxes

    def mask(self, i: int) -> np.ndarray | None:
        """(H,W) int64 class ids, or None without segmentation labels."""
        rec = self.records[i]
        if rec.seg is None:
            return None
        return read_mask(rec.seg, len(self.card.seg_classes), self.card.ignore_index, self.size(i),
                         self.card.palette)

    def __getitem__(self, i: int) -> Sample:
        ir, vis = self.read_pair(i)
        mask = self.mask(i)
        return Sample(
            id=self.records[i].id,
            ir=torch.from_numpy(ir)[None],
            vis=torch.from_numpy(vis).permute(2, 0, 1).contiguous(),
            boxes=self.boxes(i),
            mask=None if mask is None else torch.from_numpy(mask),
        )


def collate_samples(batch: list[Sample]) -> dict:
    """Stack a list of samples of equal size into a batch dict (boxes stay a list)."""
    sizes = {tuple(s.ir.shape[-2:]) for s in batch}
    if len(sizes) > 1:
        raise DataError(f"cannot batch images of different sizes {sorted(sizes)} (ids "
                        f"{[s.id for s in batch][:5]}); use batch size 1 or resize")
    return {
        "id": [s.id for s in batch],
        "ir": torch.stack([s.ir for s in batch]),
        "vis": torch.stack([s.vis for s in batch]),
        "boxes": [s.boxes for s in batch],
        "mask": torch.stack([s.mask for s in batch]) if all(s.mask is not None for s in batch) else None,
    }
