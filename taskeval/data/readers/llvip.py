"""LLVIP (Jia et al. 2021): ``<root>/{infrared,visible}/{train,test}/<id>.jpg``, VOC XML in ``<root>/Annotations``."""

from __future__ import annotations

from taskeval.data.problems import Problems
from taskeval.data.records import PairRecord, attach_labels, list_stems, pair_folders


def splits(card) -> tuple[str, ...]:
    return ("train", "test")


def discover(card, split: str, problems: Problems) -> list[PairRecord]:
    root = card.require_root()
    pairs, seen = pair_folders(root / "infrared" / split, root / "visible" / split, problems)
    ids = sorted(pairs)
    every = set(seen)
    for other in splits(card):
        if other != split and (root / "infrared" / other).is_dir():
            every |= set(list_stems(root / "infrared" / other, Problems(collect=True)))
    det = attach_labels(ids, root / "Annotations", (".xml",), problems, "annotation", every)
    return [PairRecord(i, *pairs[i], det=det.get(i)) for i in ids]
