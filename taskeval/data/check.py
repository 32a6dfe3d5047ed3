"""``taskeval data check``: validate a dataset on disk and list every problem with its file.

Checks: partner images exist; every image decodes (corrupt or truncated files); IR and visible sizes
agree; label files exist for every image and no label lacks an image; class ids are in range; boxes
lie inside the image; masks have the image's size and known ids; ids are unique and no id appears in two
splits (a leak between train and test); split sizes against the card's expected counts (warning).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from taskeval.data.card import DatasetCard
from taskeval.data.labels import read_mask, read_voc_xml, read_yolo_txt
from taskeval.data.problems import Problems
from taskeval.data.readers import get_reader
from taskeval.errors import DataError
from taskeval.imageio import read_raw


@dataclass
class CheckReport:
    card: DatasetCard
    split_sizes: dict[str, int] = field(default_factory=dict)
    box_counts: dict[str, Counter] = field(default_factory=dict)
    problems: Problems = field(default_factory=lambda: Problems(collect=True))

    @property
    def ok(self) -> bool:
        return not self.problems.errors


def _check_pair(rec, card: DatasetCard, problems: Problems, boxes: Counter) -> None:
    try:
        ir = read_raw(rec.ir)
    except DataError as exc:
        problems.error("unreadable-image", rec.ir, str(exc).split(": ", 1)[-1])
        return
    if rec.packed:
        if ir.ndim != 3 or ir.shape[2] != 4:
            problems.error("wrong-channels", rec.ir, f"expected 4 channels (RGB + thermal), got shape {ir.shape}")
        size = ir.shape[:2]
    else:
        try:
            vis = read_raw(rec.vis)
        except DataError as exc:
            problems.error("unreadable-image", rec.vis, str(exc).split(": ", 1)[-1])
            return
        size = vis.shape[:2]
        if ir.shape[:2] != size:
            problems.error("size-mismatch", rec.ir, f"IR is {ir.shape[1]}x{ir.shape[0]} but visible "
                           f"{rec.vis.name} is {size[1]}x{size[0]}")
        if ir.ndim == 3 and ir.shape[2] >= 3 and not (ir[..., 0] == ir[..., 1]).all():
            problems.warning("colour-ir", rec.ir, "IR file has unequal colour channels; BT.601 luma is used")
    if rec.det is not None:
        if rec.det.suffix == ".xml":
            b = read_voc_xml(rec.det, card.det_classes, size, problems, box_policy="error",
                             aliases=card.options.get("class_aliases"))
        else:
            b = read_yolo_txt(rec.det, len(card.det_classes), size, problems, box_policy="error")
        boxes.update(int(c) for c in b[:, 0])
    if rec.seg is not None:
        try:
            read_mask(rec.seg, len(card.seg_classes), card.ignore_index, size, card.palette, problems)
        except DataError as exc:
            problems.error("unreadable-image", rec.seg, str(exc).split(": ", 1)[-1])


def check_dataset(card: DatasetCard, splits: list[str] | None = None, progress: bool = True) -> CheckReport:
    """Validate the given splits (default: every split the layout knows) and return all problems."""
    reader = get_reader(card.format)
    report = CheckReport(card)
    problems = report.problems
    splits = splits or list(reader.splits(card))
    seen: dict[str, str] = {}
    for split in splits:
        records = reader.discover(card, split, problems)
        report.split_sizes[split] = len(records)
        counter = report.box_counts.setdefault(split, Counter())
        for rec in tqdm(records, desc=f"check {card.name}/{split}", disable=not progress, unit="pair"):
            if rec.id in seen:
                problems.error("id-in-two-splits", rec.ir, f"id {rec.id} is in split {seen[rec.id]!r} and "
                               f"{split!r} (train/test leak)")
            seen[rec.id] = split
            _check_pair(rec, card, problems, counter)
        expected = card.expected_counts.get(split)
        if expected is not None and expected != len(records):
            problems.warning("count-differs", card.root, f"split {split!r} has {len(records)} pairs; the full "
                             f"{card.name} dataset has {expected}")
    return report
