"""Generic paired folders: ``<root>[/<split>]/{ir,vi}`` with YOLO-txt or VOC-XML boxes and/or label PNGs.

Options (card ``options``):
    ir, vis: folder names (default ``ir``, ``vi``).
    det_labels: folder of detection labels (optional); det_format: ``yolo`` (default) or ``voc``.
    seg_labels: folder of label PNGs (optional).
    split_dirs: true when each split has its own sub-folder ``<root>/<split>/``; otherwise the folders
        are directly under the root and splits come from the card's ``split_files`` (or the single split
        ``all``).
"""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, pair_folders, read_id_file, select_ids

DEFAULTS = {"ir": "ir", "vis": "vi", "det_labels": None, "det_format": "yolo", "seg_labels": None,
            "split_dirs": False}


def splits(card) -> tuple[str, ...]:
    opts = {**DEFAULTS, **card.options}
    if opts["split_dirs"]:
        root = card.require_root()
        return tuple(sorted(p.name for p in root.iterdir() if (p / opts["ir"]).is_dir()))
    return tuple(card.split_files) or ("all",)


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    opts = {**DEFAULTS, **card.options}
    root = card.require_root()
    base = root / split if opts["split_dirs"] else root
    pairs, seen = pair_folders(base / opts["ir"], base / opts["vis"], problems)
    ids = sorted(pairs)
    if not opts["split_dirs"] and split != "all":
        if split not in card.split_files:
            problems.error("unknown-split", root, f"split {split!r} not defined; card splits: "
                           f"{', '.join(card.split_files) or 'all'}")
            return []
        split_file = card.split_file(split)
        ids = select_ids(pairs, read_id_file(split_file, problems), split_file, problems)
    det = seg = {}
    if opts["det_labels"]:
        suffix = (".txt",) if opts["det_format"] == "yolo" else (".xml",)
        det = attach_labels(ids, base / opts["det_labels"], suffix, problems, "detection label", seen)
    if opts["seg_labels"]:
        seg = attach_labels(ids, base / opts["seg_labels"], (".png", ".bmp", ".tif"), problems,
                            "segmentation label", seen)
    return [PairRecord(i, *pairs[i], det=det.get(i), seg=seg.get(i)) for i in ids]
