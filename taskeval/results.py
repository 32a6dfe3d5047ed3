"""Result rows: one row per (method, task, dataset, protocol, seed, metric, class) -> value.

Every number taskeval reports is a row of this shape, so tables, figures, statistics and the report
read one format whatever produced it (a ``detect`` run, a ``segment`` run or a benchmark cell).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from taskeval.rundir import atomic_write_text

OVERALL = ""  # the ``cls`` of a row that is not per class


@dataclass(frozen=True)
class Row:
    method: str
    task: str          # "detection" | "segmentation" | "quality"
    dataset: str
    protocol: str      # protocol name + hash, e.g. "quick-3f2a1b" (or "fixed:<ref>" for fixed-network screening)
    seed: int | None
    metric: str        # e.g. "mAP50", "AP50", "mIoU", "IoU", "EN"
    cls: str           # class name, or "" for an overall value
    value: float
    note: str = ""     # e.g. "weights trained by taskeval (fusion loss)"


FIELDS = [f.name for f in fields(Row)]


def rows_to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**asdict(r), "seed": "" if r.seed is None else r.seed, "value": repr(float(r.value))})
    return buf.getvalue()


def write_rows(rows: list[Row], path: str | Path) -> None:
    """Write rows atomically as CSV (``.csv``) or JSON (``.json``)."""
    path = Path(path)
    if path.suffix == ".json":
        atomic_write_text(path, json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    else:
        atomic_write_text(path, rows_to_csv(rows))


def read_rows(path: str | Path) -> list[Row]:
    path = Path(path)
    if path.suffix == ".json":
        return [Row(**d) for d in json.loads(path.read_text())]
    out = []
    with open(path, newline="") as fh:
        for d in csv.DictReader(fh):
            d["seed"] = int(d["seed"]) if d["seed"] not in ("", None) else None
            d["value"] = float(d["value"])
            out.append(Row(**d))
    return out
