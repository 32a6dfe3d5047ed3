"""M3FD (Liu et al., TarDAL, CVPR 2022), in either layout (detected from the folder names):

* as distributed: ``<root>/{Ir,Vis}/<id>.png`` with VOC-XML boxes in ``<root>/Annotation/<id>.xml``
  (class names matched case-insensitively to the card's classes);
* TarDAL's YOLO copy: ``<root>/{ir,vi}/<id>.png`` with ``<root>/labels/<id>.txt`` (``cls cx cy w h``).

Splits come from the card's split files (ids, one per line): the scene-disjoint split shipped in
``data/splits/`` by default.
"""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, pair_folders, read_id_file, select_ids

LAYOUTS = {
    "raw": ("Ir", "Vis", "Annotation", ".xml"),
    "yolo": ("ir", "vi", "labels", ".txt"),
}


def layout(root) -> str:
    for name, (ir, vis, _, _) in LAYOUTS.items():
        if (root / ir).is_dir() and (root / vis).is_dir():
            return name
    raise_dirs = ", ".join(f"{a}/+{b}/" for a, b, _, _ in LAYOUTS.values())
    from taskeval.errors import DataError

    raise DataError(f"{root}: not an M3FD folder (expected {raise_dirs})")


def splits(card) -> tuple[str, ...]:
    return tuple(card.split_files) or ("all",)


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    root = card.require_root()
    ir_dir, vis_dir, label_dir, suffix = LAYOUTS[layout(root)]
    pairs, seen = pair_folders(root / ir_dir, root / vis_dir, problems)
    ids = sorted(pairs)
    if split != "all":
        split_file = card.split_file(split)
        if split_file is None:
            problems.error("unknown-split", root, f"split {split!r} not in the card ({', '.join(card.split_files)})")
            return []
        # split files list frame numbers; on disk a frame is "00042" or "M3FD_00042"
        by_frame = {stem.removeprefix("M3FD_"): stem for stem in pairs}
        frames = select_ids(by_frame, read_id_file(split_file, problems), split_file, problems)
        ids = [by_frame[f] for f in frames]
    det = attach_labels(ids, root / label_dir, (suffix,), problems, "detection label", seen) \
        if (root / label_dir).is_dir() else {}
    return [PairRecord(i, *pairs[i], det=det.get(i)) for i in ids]
