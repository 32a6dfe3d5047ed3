"""MSRS as distributed: ``<root>/{train,test}/{ir,vi,Segmentation_labels}`` (+ YOLO-txt detection labels).

Detection labels are not part of MSRS; third-party YOLO labels (e.g. Lele-3/MSRS-detection-label) are
expected in ``<root>/<split>/<det_labels>`` (option ``det_labels``, default ``labels``) when present.
"""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, pair_folders


def splits(card) -> tuple[str, ...]:
    return ("train", "test")


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    root = card.require_root()
    base = root / split
    if not base.is_dir():
        problems.error("missing-folder", base, f"MSRS split folder {split!r} not found (expected train/ and test/)")
        return []
    pairs, seen = pair_folders(base / "ir", base / "vi", problems)
    ids = sorted(pairs)
    seg_dir = base / card.options.get("seg_labels", "Segmentation_labels")
    det_dir = base / card.options.get("det_labels", "labels")
    seg = attach_labels(ids, seg_dir, (".png",), problems, "segmentation label", seen) if seg_dir.is_dir() else {}
    det = attach_labels(ids, det_dir, (".txt",), problems, "detection label", seen) if det_dir.is_dir() else {}
    return [PairRecord(i, *pairs[i], det=det.get(i), seg=seg.get(i)) for i in ids]
