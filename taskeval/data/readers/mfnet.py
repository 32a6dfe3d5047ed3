"""MFNet (Ha et al. 2017): ``<root>/images/<id>.png`` 4-channel (R, G, B, thermal), ``<root>/labels/<id>.png``,
official split files ``<root>/{train,val,test}.txt`` (784/392/393 ids; also ``test_day.txt``, ``test_night.txt``)."""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, list_stems, read_id_file, select_ids

SUBSETS = ("test_day", "test_night")  # subsets of test shipped with MFNet


def splits(card) -> tuple[str, ...]:
    """The disjoint splits. ``test_day`` and ``test_night`` stay readable by name but are not listed: as
    subsets of ``test`` they would make ``data check`` report every test id as being in two splits."""
    return tuple(s for s in card.split_files if s not in SUBSETS) or ("train", "val", "test")


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    root = card.require_root()
    images = list_stems(root / "images", problems)
    split_file = card.split_file(split) if split in card.split_files else root / f"{split}.txt"
    ids = select_ids(images, read_id_file(split_file, problems), split_file, problems)
    seg = attach_labels(ids, root / "labels", (".png",), problems, "segmentation label", set(images))
    return [PairRecord(i, images[i], images[i], seg=seg.get(i), packed=True) for i in ids]
