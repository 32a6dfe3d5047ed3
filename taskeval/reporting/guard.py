"""The learned-nothing guard: did the task networks of a table learn anything?

When every finished cell of a (task, dataset, protocol) group scores no better on its headline metric than
a network that learned nothing (the task's :meth:`~taskeval.tasks.base.Task.chance_level`: mAP@.5 below a
5-point floor for detection, mIoU within 5 points of the constant majority-class predictor for
segmentation), the group's rows do not rank the methods: their table carries a warning on top and no best
or second-best mark, and the report says so in its summary and above its results. Nothing else changes: the
numbers, comparisons and figures stay as computed.

The guard is spec- and hook-driven: a task whose adapter is not registered in this process, whose
``chance_level`` is None, or whose cells' artefacts cannot be read, is never flagged (the reason is logged).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from taskeval.errors import RegistryError, TaskevalError
from taskeval.reporting.run import RunData
from taskeval.results import OVERALL
from taskeval.tasks.base import ChanceLevel, TaskSpec

log = logging.getLogger(__name__)
HEADLINE = "The protocol did not train the task network on this data: these rows do not rank the methods."


@dataclass(frozen=True)
class Verdict:
    """The guard's finding on one table group.

    Attributes:
        task, dataset, protocol: the group.
        fired: every cell scored at most its chance threshold.
        metric: the metric compared (the chance levels').
        low, high: the lowest and highest cell value of ``metric`` (rows' units).
        chance: the chance level of the group's cells (the highest threshold when they differ).
        n_cells: cells compared.
    """

    task: str
    dataset: str
    protocol: str
    fired: bool
    metric: str
    low: float
    high: float
    chance: ChanceLevel
    n_cells: int

    def message(self, spec: TaskSpec) -> str:
        """The warning: :data:`HEADLINE` and the numbers behind it (percent metrics in %)."""
        m = spec.metric(self.metric)

        def fmt(v: float) -> str:
            return f"{100 * v:.1f}%" if m.percent else f"{v:.{m.decimals}f}"

        margin = f"{100 * self.chance.margin:.1f} points" if m.percent else fmt(self.chance.margin)
        span = fmt(self.low) if self.low == self.high else f"{fmt(self.low)} to {fmt(self.high)}"
        cells = f"{self.n_cells} cell{'s' if self.n_cells != 1 else ''}"
        return (f"{HEADLINE} Every {m.label} of {self.dataset} {self.task} (protocol {self.protocol}, "
                f"{cells}: {span}) is at most {margin} above what a network that learned nothing scores: "
                f"{fmt(self.chance.value)} for {self.chance.what}.")


def verdict(run: RunData, task: str, dataset: str, protocol: str) -> Verdict | None:
    """The guard's finding on one group; None when it cannot decide (no hook, unreadable artefacts, a cell
    without its headline row)."""
    key = ("guard", task, dataset, protocol)
    if key not in run.cache:
        run.cache[key] = _decide(run, task, dataset, protocol)
    return run.cache[key]


def warnings(run: RunData) -> dict[tuple[str, str, str], str]:
    """(task, dataset, protocol) -> the warning text, for every group of the run whose guard fired."""
    groups = dict.fromkeys((r.task, r.dataset, r.protocol) for r in run.rows if r.task in run.specs)
    out = {}
    for g in groups:
        v = verdict(run, *g)
        if v is not None and v.fired:
            out[g] = v.message(run.spec(g[0]))
    return out


def _decide(run: RunData, task: str, dataset: str, protocol: str) -> Verdict | None:
    from taskeval.tasks import get_task

    cells = run.group_cells(task, dataset, protocol)
    if not cells:
        return None
    try:
        adapter = get_task(task)
    except RegistryError:
        log.info("no learned-nothing guard for %s: the task is not registered in this process", task)
        return None
    levels = []
    try:
        for c in cells:
            levels.append(adapter.chance_level(c["dir"]))
    except (TaskevalError, OSError, ValueError) as exc:
        log.warning("no learned-nothing guard for %s (%s, protocol %s): %s", task, dataset, protocol, exc)
        return None
    if any(lv is None for lv in levels) or len({lv.metric for lv in levels}) != 1:
        return None
    metric = levels[0].metric
    group = (task, dataset, protocol, metric, OVERALL)
    value = {(r.method, r.seed): r.value for r in run.rows
             if (r.task, r.dataset, r.protocol, r.metric, r.cls) == group}
    scores = [value.get((c["method"], c.get("seed"))) for c in cells]
    if any(v is None or not math.isfinite(v) for v in scores):
        log.info("no learned-nothing guard for %s (%s, protocol %s): a cell has no finite %s", task, dataset,
                 protocol, metric)
        return None
    fired = all(v <= lv.threshold + 1e-12 for v, lv in zip(scores, levels))
    chance = max(levels, key=lambda lv: lv.threshold)
    return Verdict(task, dataset, protocol, fired, metric, min(scores), max(scores), chance, len(cells))
