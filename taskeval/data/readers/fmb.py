"""FMB (Liu et al., SegMiF, ICCV 2023) as distributed: ``<root>/{train,test}/{Visible,Infrared,Label,color}/<id>.png``.

``Label/`` holds single-channel class-id PNGs (0 = background, 1..14 the card's classes); ``color/`` is the
same annotation drawn in the dataset's palette, for viewing. The labels are read from ``Label/`` (option
``seg_labels``; ``seg_labels: color`` reads the palette images instead, mapped through the card's
palette). ``color/`` is not checked unless it is the chosen label folder: nothing is computed from it.
"""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, pair_folders

DEFAULTS = {"ir": "Infrared", "vis": "Visible", "seg_labels": "Label"}


def splits(card) -> tuple[str, ...]:
    return ("train", "test")


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    opts = {**DEFAULTS, **card.options}
    root = card.require_root()
    base = root / split
    if not base.is_dir():
        problems.error("missing-folder", base, f"FMB split folder {split!r} not found (expected train/ and test/)")
        return []
    pairs, seen = pair_folders(base / opts["ir"], base / opts["vis"], problems)
    ids = sorted(pairs)
    seg_dir = base / opts["seg_labels"]
    if not seg_dir.is_dir():
        problems.error("missing-folder", seg_dir, f"FMB label folder {opts['seg_labels']}/ not found in {split}/")
        return [PairRecord(i, *pairs[i]) for i in ids]
    seg = attach_labels(ids, seg_dir, (".png",), problems, "segmentation label", seen)
    return [PairRecord(i, *pairs[i], seg=seg.get(i)) for i in ids]

