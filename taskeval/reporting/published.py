"""Published results beside the measured ones: which rows of ``data/published/results.yaml``
(:mod:`taskeval.published`) a table of a run shows, and how far each measured method is from them.

A (task, dataset, protocol) table gets the published rows of its dataset and task when the run's class list
for the task's label kind (``spec.labels``: boxes -> ``det_classes``, masks -> ``seg_classes``) is the
published table's: the class list the run used is read from the test split's file manifest
(``RUN/inputs/<hex>.json``), else from the card ``RUN/dataset.json`` names, and :func:`published_rows`
refuses a table whose classes differ. Published rows are another protocol (their split, network settings
and seeds): tables show them below the measured rows as a separate group, never marked, ranked, counted in
seeds or compared statistically; the report lists measured minus published for the methods in both.

A measured method matches a published row when its name, case-folded and mapped through :data:`ALIASES`,
equals the row's method name or its label as printed in the paper (``cddfuse`` ~ ``CDDFuse``, ``ir`` ~
``IR``, ``vis`` ~ ``VI``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskeval.errors import TaskevalError
from taskeval.published import TASKS, PublishedRow, load_published, published_rows
from taskeval.reporting.run import RunData
from taskeval.results import OVERALL, Row
from taskeval.stats import SeedStat, seed_summary
from taskeval.tasks.base import TaskSpec

log = logging.getLogger(__name__)
GROUP = "published (other protocol)"
LABEL_CLASSES = {"boxes": "det_classes", "masks": "seg_classes"}
# spellings of the single-modality rows in papers and configs (every other name matches case-insensitively)
ALIASES = {"vi": "vis", "visible": "vis", "rgb": "vis", "infrared": "ir", "tir": "ir", "thermal": "ir"}


@dataclass(frozen=True)
class Published:
    """The published rows of one table group.

    Attributes:
        rows: the rows to show (file order); empty when none apply.
        reason: why none are shown although the file has results for this dataset and task ("" otherwise).
    """

    rows: tuple[PublishedRow, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Gap:
    """A measured method against one published row of the same method, on the published headline metric.

    Attributes:
        method: the measured method.
        row: the published row.
        measured: mean and sd over seeds of the measured value (rows' units); None when not measured.
        delta: measured mean minus published value, in points of % (NaN when not comparable).
    """

    method: str
    row: PublishedRow
    measured: SeedStat | None
    delta: float


def canonical(name: str) -> str:
    """A method name for matching: case-folded, single-modality spellings mapped by :data:`ALIASES`."""
    key = name.strip().casefold()
    return ALIASES.get(key, key)


def same_method(measured: str, row: PublishedRow) -> bool:
    """Whether the measured method ``measured`` is the method of the published ``row``."""
    return canonical(measured) in {canonical(row.method), canonical(row.label)}


def row_label(row: PublishedRow) -> str:
    """The label of a published row in a table: ``"CDDFuse (CDDFuse paper, CVPR 2023)"``."""
    return f"{row.label} ({row.cite or row.source})"


def source_notes(rows: Iterable[PublishedRow]) -> list[str]:
    """One footnote per published table behind ``rows``: citation, table, network, protocol."""
    out = {}
    for r in rows:
        if r.table_id not in out:
            checked = "" if r.verified else " Not re-read from the paper."
            out[r.table_id] = (f"{GROUP[0].upper()}{GROUP[1:]}: {r.cite or r.source}: {r.source}; "
                               f"{' '.join(r.table.split())}. Network: {r.network}. Protocol: "
                               f"{' '.join(r.protocol.split())} Never marked, ranked or in any statistic."
                               f"{checked}")
    return list(out.values())


def run_classes(run: RunData, spec: TaskSpec, dataset: str, protocol: str) -> tuple[str, ...] | None:
    """The class list the group's cells were computed with, for the task's label kind; None when unknown."""
    attr = LABEL_CLASSES.get(spec.labels or "")
    if attr is None:
        return None
    for fp in run.test_fingerprints(spec.name, dataset, protocol):
        manifest = run.manifest(fp)
        settings = (manifest or {}).get("settings") or {}
        if manifest and manifest.get("dataset") == dataset and isinstance(settings.get(attr), list):
            return tuple(str(c) for c in settings[attr])
    card = run.card()
    if card is not None and card.name == dataset:
        return tuple(getattr(card, attr))
    return None


def published_for(run: RunData, spec: TaskSpec, dataset: str, protocol: str,
                  path: str | Path | None = None) -> Published:
    """The published rows a (task, dataset, protocol) table of ``run`` shows (see the module docstring)."""
    key = ("published", spec.name, dataset, protocol, str(path))
    if key in run.cache:
        return run.cache[key]
    out = Published()
    if spec.name in TASKS:
        classes = run_classes(run, spec, dataset, protocol)
        try:
            if classes is not None:
                out = Published(tuple(published_rows(dataset, spec.name, classes, path)))
            elif _has_tables(dataset, spec.name, path):
                out = Published((), f"published {dataset} {spec.name} results not shown: the run records no "
                                    "class list (no dataset.json or input manifest) to check them against")
        except TaskevalError as exc:  # a table whose classes differ from the run's, or an invalid file
            out = Published((), f"published {dataset} {spec.name} results not shown: {exc}")
    if out.reason:
        log.warning("%s", out.reason)
    run.cache[key] = out
    return out


def _has_tables(dataset: str, task: str, path) -> bool:
    _, tables = load_published(path)
    return any(t["dataset"] == dataset and t["task"] == task for t in tables)


def gaps(rows: Sequence[Row], spec: TaskSpec, dataset: str, protocol: str, methods: Sequence[str],
         published: Sequence[PublishedRow]) -> list[Gap]:
    """Measured minus published headline, for every (measured method, published row of it) pair, in the
    order of ``methods`` then of the published rows. A published metric that is not a percent metric of the
    spec gives NaN (no unit to compare in)."""
    group = (spec.name, dataset, protocol, OVERALL)
    stats = seed_summary(r for r in rows if (r.task, r.dataset, r.protocol, r.cls) == group
                         and r.method in set(methods))
    out = []
    for m in methods:
        for p in published:
            if not same_method(m, p):
                continue
            s = stats.get((m, spec.name, dataset, protocol, p.metric, OVERALL))
            percent = any(x.name == p.metric and x.percent for x in spec.metrics)
            comparable = s is not None and percent and math.isfinite(s.mean)
            delta = 100 * s.mean - p.headline if comparable else math.nan
            out.append(Gap(m, p, s, delta))
    return out
