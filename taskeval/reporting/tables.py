"""Paper-style tables from result rows and task specs: per-class tables per (task, dataset, protocol), a
metrics table per task without a per-class breakdown and a summary across tasks, rendered for the terminal
(rich), Markdown, LaTeX (booktabs) and CSV.

A :class:`Table` holds what every renderer needs: methods (rows; the ``ir`` / ``vis`` references first),
:class:`Column` s, one :class:`~taskeval.stats.SeedStat` per cell (mean and sample std over seeds), a
caption stating the protocol and the metric definitions, and footnotes (a method's ``Row.note`` such as
"weights trained by taskeval" becomes a marker beside its name).

Everything task-specific comes from the task's :class:`~taskeval.tasks.TaskSpec`:

* which tables: a per-class table (``per_class`` per class, then ``class_columns``) for a task with a
  per-class breakdown, a metrics table (every metric) for one without; summary columns are the
  ``headline`` metrics of every task; captions are the spec's ``caption`` and ``summary``.
* units: a :attr:`Metric.percent` metric is stored as a fraction in [0, 1] and printed x100 with one
  decimal, as the papers do; any other is printed as it is with ``Metric.decimals``.
* With several seeds a cell reads ``mean ± std`` (sample std, ``ddof=1``); seeds whose value is NaN are
  left out of the mean (a class absent from ground truth and prediction has NaN IoU).
* The best value of each column is bold and the second best underlined, in the direction of
  :attr:`Metric.higher_is_better`, compared on the printed values: printed ties share the mark, and the
  second best is the next distinct printed value. NaN and missing cells are never marked. Headers carry
  ↑ / ↓ except for higher-is-better percentages (AP, IoU: the papers' convention).
* Learned nothing (:mod:`taskeval.reporting.guard`): the columns of a (task, dataset, protocol) whose
  networks learned nothing get no mark, and the table carries the guard's warning on top.
* Published results (:mod:`taskeval.reporting.published`) of the dataset and class list: a separate row
  group below the measured rows of a per-class table, labelled with their source, never marked and never
  part of the cells, seeds, ranks or comparisons (:attr:`Table.published`).
* Captions name the test split, its split file where the card has one, and a short digest of its files
  (``files:<8 hex>``, the first hex digits of the manifest ``RUN/inputs/<hex>.json`` the cells recorded)
  when the run records them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from taskeval.errors import ConfigError, DataError
from taskeval.published import PublishedRow
from taskeval.reporting import guard
from taskeval.reporting import published as P
from taskeval.reporting.comparisons import comparison_lines
from taskeval.reporting.run import RunData
from taskeval.results import OVERALL, Row
from taskeval.stats import REFERENCE_METHODS, SeedStat, seed_summary
from taskeval.tasks.base import Metric, TaskSpec

MARKERS = ("†", "‡", "§", "¶", "‖", "#")
DEFAULT_LABELS = {"ir": "IR", "vis": "VI"}
MISSING = "–"
NOT_A_NUMBER = "n/a"
MARKS = "Best in bold, second underlined."
Group = tuple[str, str, str]  # (task, dataset, protocol)


@dataclass(frozen=True)
class Column:
    """One table column: a metric (and class) of one task, dataset and protocol (:func:`column`)."""

    header: str
    task: str
    dataset: str
    protocol: str
    metric: str
    cls: str = OVERALL
    percent: bool = True          # stored as a fraction, printed x100
    higher_is_better: bool = True
    decimals: int = 1


@dataclass(frozen=True)
class PublishedLine:
    """One published row under a table (:mod:`taskeval.reporting.published`): another protocol, shown only.

    Attributes:
        method: taskeval's name of the published method.
        label: what the table prints (``"CDDFuse (CDDFuse paper, CVPR 2023)"``).
        values: column index -> value in the rows' units (a fraction for a percent column).
    """

    method: str
    label: str
    values: dict[int, float]


@dataclass
class Table:
    """A rendered-format-independent table.

    Attributes:
        title: short title (e.g. ``"MSRS segmentation"``).
        caption: protocol and metric definitions.
        methods: row order (method names as in the rows).
        labels: method -> display name.
        columns: the columns.
        cells: (method, column index) -> statistics over seeds; absent = no row.
        notes: method -> its footnote texts (``Row.note``, fewer seeds than the others), shown as markers.
        footnotes: (marker, text) in marker order; marker "" for a plain note (e.g. paired comparisons).
        n_reference: the first ``n_reference`` methods are the single-modality references.
        show_std: print ``± std`` where a cell has more than one seed.
        published: published rows (another protocol) shown below the measured ones; in no rank or statistic.
        warning: shown on top of the table ("" for none): the learned-nothing guard fired.
        unmarked: indices of the columns that get no best / second-best mark (the guard's).
        split: the test split and its file digest, as the caption names them ("" when not recorded).
    """

    title: str
    caption: str
    methods: list[str]
    labels: dict[str, str]
    columns: list[Column]
    cells: dict[tuple[str, int], SeedStat]
    notes: dict[str, list[str]] = field(default_factory=dict)
    footnotes: list[tuple[str, str]] = field(default_factory=list)
    n_reference: int = 0
    show_std: bool = True
    published: list[PublishedLine] = field(default_factory=list)
    warning: str = ""
    unmarked: frozenset[int] = frozenset()
    split: str = ""

    def value_text(self, method: str, j: int) -> str:
        """The printed cell: ``"81.1"``, ``"81.1 ± 0.4"``, :data:`MISSING` or :data:`NOT_A_NUMBER`."""
        s = self.cells.get((method, j))
        if s is None:
            return MISSING
        if not math.isfinite(s.mean):
            return NOT_A_NUMBER
        col = self.columns[j]
        text = _fmt(s.mean, col)
        if self.show_std and s.n > 1:
            text += f" ± {_fmt(s.std, col)}"
        return text

    def printed_mean(self, method: str, j: int) -> float:
        """The mean as printed (rounded, in the column's units); NaN when missing or not finite."""
        s = self.cells.get((method, j))
        return float(_fmt(s.mean, self.columns[j])) if s is not None and math.isfinite(s.mean) else math.nan

    def ranks(self, j: int) -> dict[str, int]:
        """method -> 1 (best), 2 (second best) or 0 in column ``j`` (0 everywhere in an unmarked column)."""
        if j in self.unmarked:
            return dict.fromkeys(self.methods, 0)
        col = self.columns[j]
        return dict(zip(self.methods, rank_values([self.printed_mean(m, j) for m in self.methods],
                                                  col.higher_is_better)))

    def published_text(self, line: PublishedLine, j: int) -> str:
        """The printed value of a published row in column ``j`` (:data:`MISSING` where it has none)."""
        v = line.values.get(j)
        return MISSING if v is None else _fmt(v, self.columns[j])

    def label(self, method: str) -> str:
        return self.labels.get(method, method)

    def markers(self, method: str) -> str:
        """The footnote markers of ``method`` (e.g. ``"†"``), "" when it has no note."""
        marker_of = {text: mk for mk, text in self.footnotes if mk}
        return "".join(marker_of[t] for t in self.notes.get(method, []))

    def is_last_reference(self, i: int) -> bool:
        """Whether a rule belongs under row ``i``: the last reference row, with methods below it."""
        return i == self.n_reference - 1 and i < len(self.methods) - 1

    def add_notes(self, lines: Iterable[str]) -> None:
        """Append plain footnotes (e.g. :func:`taskeval.stats.comparison_notes`)."""
        self.footnotes.extend(("", line) for line in lines)


def rank_values(values: Sequence[float], higher_is_better: bool = True) -> list[int]:
    """1 for the best value, 2 for the second-best distinct value, 0 otherwise; NaN gets 0.

    Ties share the rank: ``[3, 3, 2, 1]`` -> ``[1, 1, 2, 0]``.
    """
    finite = sorted({v for v in values if math.isfinite(v)}, reverse=higher_is_better)
    best = finite[0] if finite else None
    second = finite[1] if len(finite) > 1 else None
    return [1 if v == best else 2 if v == second else 0 for v in values]


def _fmt(v: float, col: Column) -> str:
    return f"{100 * v if col.percent else v:.{col.decimals}f}"


# ----------------------------------------------------------------------------------------------- builders
def metric_header(m: Metric) -> str:
    """The header of an overall column: the metric's label, with ↑ / ↓ unless it is a higher-is-better
    percentage (AP, IoU), which the papers print without an arrow."""
    return m.label if m.percent and m.higher_is_better else f"{m.label}{'↑' if m.higher_is_better else '↓'}"


def column(spec: TaskSpec, metric: str, dataset: str, protocol: str, cls: str = OVERALL,
           header: str | None = None) -> Column:
    """The column of ``metric`` (of class ``cls``) with the spec's units and direction."""
    m = spec.metric(metric)
    return Column(header or metric_header(m), spec.name, dataset, protocol, metric, cls, m.percent,
                  m.higher_is_better, 1 if m.percent else m.decimals)


def order_methods(found: Iterable[str], methods: Sequence[str] | None = None,
                  references: Sequence[str] = REFERENCE_METHODS,
                  known: Iterable[str] | None = None) -> list[str]:
    """Row order: the references that have rows first (in ``references`` order, always shown), then
    ``methods`` (a selection and its order; those without rows in this table are skipped) or every other
    method in order of first appearance.

    Args:
        found: the methods with rows in this table.
        known: every method of the input rows (default ``found``); a name outside it is an error.

    Raises:
        ConfigError: a method in ``methods`` that is not in ``known`` (a typo).
    """
    found = list(dict.fromkeys(found))
    if methods is None:
        chosen = found
    else:
        known = set(found if known is None else known)
        missing = [m for m in methods if m not in known]
        if missing:
            raise ConfigError(f"no rows for method(s) {missing}; methods with rows: "
                              f"{', '.join(sorted(known))}")
        chosen = [m for m in dict.fromkeys(methods) if m in found]
    refs = [r for r in references if r in found]
    return refs + [m for m in chosen if m not in refs]


def _check_fractions(rows: Iterable[Row], columns: Sequence[Column], keys: Mapping[tuple, int]) -> None:
    for r in rows:
        col = columns[keys[(r.task, r.dataset, r.protocol, r.metric, r.cls)]]
        if col.percent and math.isfinite(r.value) and not -1e-9 <= r.value <= 1 + 1e-9:
            raise DataError(f"{r.task} {r.metric} {r.cls or ''} of {r.method} is {r.value}: rows store "
                            "fractions in [0, 1] (a percentage imported by mistake?)")


def marks_sentence(n_columns: int, unmarked: Iterable[int]) -> str:
    """What the marks of a table mean, given its columns without marks."""
    n = len(set(unmarked))
    if n == 0:
        return MARKS
    if n >= n_columns:
        return "No best or second best marked: the task networks learned nothing (see the warning)."
    return (MARKS[:-1] + ", except in the columns whose task networks learned nothing (see the warning; "
            "those are not marked).")


def _build(rows: Sequence[Row], columns: list[Column], methods: Sequence[str] | None,
           labels: Mapping[str, str] | None, title: str, caption: str, show_std: bool,
           learned_nothing: Mapping[Group, str] | None = None, split: str = "") -> Table:
    """The table; ``caption`` is completed with the split and the marks sentence; the columns of the groups
    in ``learned_nothing`` (group -> warning) are unmarked and their warnings go on top."""
    learned_nothing = learned_nothing or {}
    groups = [(c.task, c.dataset, c.protocol) for c in columns]
    unmarked = frozenset(j for j, g in enumerate(groups) if g in learned_nothing)
    warning = " ".join(dict.fromkeys(w for g, w in learned_nothing.items() if g in groups))
    split_text = f"Test split: {split}." if split else ""
    caption = " ".join(p for p in (caption, split_text, marks_sentence(len(columns), unmarked)) if p)
    keys = {(c.task, c.dataset, c.protocol, c.metric, c.cls): j for j, c in enumerate(columns)}
    selected = [r for r in rows if (r.task, r.dataset, r.protocol, r.metric, r.cls) in keys]
    _check_fractions(selected, columns, keys)
    order = order_methods((r.method for r in selected), methods, known=(r.method for r in rows))
    stats = seed_summary(r for r in selected if r.method in order)
    cells = {(key[0], keys[key[1:]]): s for key, s in stats.items()}
    n_max = max((s.n for s in stats.values()), default=0)
    table = Table(title, caption, order, {**DEFAULT_LABELS, **(labels or {})}, columns, cells,
                  n_reference=sum(m in REFERENCE_METHODS for m in order), show_std=show_std,
                  warning=warning, unmarked=unmarked, split=split)
    texts: dict[str, list[str]] = {}
    for m in order:
        notes = list(dict.fromkeys(r.note for r in selected if r.method == m and r.note))
        n = max((s.n for (mm, _), s in cells.items() if mm == m), default=0)
        if n_max > 1 and 0 < n < n_max:
            notes.append(f"{n} of {n_max} seeds")
        texts[m] = notes
    for k, text in enumerate(dict.fromkeys(t for m in order for t in texts[m])):
        table.footnotes.append((MARKERS[k % len(MARKERS)] * (1 + k // len(MARKERS)), text))
    table.notes = {m: texts[m] for m in order if texts[m]}
    return table


def _n_seeds(rows: Iterable[Row]) -> int:
    per_cell: dict[tuple, set] = {}
    for r in rows:
        per_cell.setdefault((r.method, r.metric, r.cls), set()).add(r.seed)
    return max((len(s) for s in per_cell.values()), default=1)


def _seed_sentence(rows: list[Row], show_std: bool) -> str:
    n = _n_seeds(rows)
    if n <= 1:
        return "One training seed."
    return f"Mean{' ± sample standard deviation' if show_std else ''} over {n} training seeds."


def _protocol_sentence(task: str, protocol: str) -> str:
    if protocol.startswith("fixed:"):
        return (f"Protocol {protocol}: one fixed task network for every method (screening; not retrained per "
                "method as in the papers).")
    return (f"Protocol {protocol}: the {task} network is retrained from the same initialisation on each "
            "method's images.")


def _groups(rows: Sequence[Row], specs: Mapping[str, TaskSpec], keep=lambda spec: True) -> list[tuple]:
    """(task, dataset, protocol) of the rows whose task is in ``specs`` (and ``keep(spec)``), in the order of
    ``specs``, then of first appearance."""
    order = {t: k for k, t in enumerate(specs)}
    found = dict.fromkeys((r.task, r.dataset, r.protocol) for r in rows
                          if r.task in specs and keep(specs[r.task]))
    return sorted(found, key=lambda g: order[g[0]])  # stable: first appearance within a task


def class_table(rows: Sequence[Row], spec: TaskSpec, dataset: str, protocol: str,
                methods: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                show_std: bool = True, published: Sequence[PublishedRow] = (), warning: str = "",
                split: str = "") -> Table:
    """Per-class table of one (task, dataset, protocol): the spec's ``per_class`` metric per class, then its
    ``class_columns`` (e.g. AP50 per class + mAP50, mAP50_95 for detection).

    Args:
        rows: result rows (any mix; the table's own are selected).
        spec: the task's spec; it needs a ``per_class`` metric.
        methods: selection and order of the rows (default: all, in order of first appearance); ``ir`` and
            ``vis`` are always shown, first.
        labels: display names (default ``ir`` -> IR, ``vis`` -> VI).
        show_std: print ``± std`` for cells with several seeds.
        published: published rows of this dataset, task and class list (:func:`published_line`), shown
            below the measured rows with their sources as footnotes.
        warning: the learned-nothing warning of this group ("" when its networks learned something): shown
            on top, and no column is marked.
        split: the test split and its file digest, named in the caption.

    Raises:
        ConfigError: a task without a per-class breakdown, or a method without rows.
        DataError: no rows for this (task, dataset, protocol), or a percent value outside [0, 1].
    """
    task = spec.name
    if spec.per_class is None:
        raise ConfigError(f"task {task!r} has no per-class breakdown (its spec's per_class is None)")
    mine = [r for r in rows if r.task == task and r.dataset == dataset and r.protocol == protocol]
    if not mine:
        raise DataError(f"no {task} rows for dataset {dataset!r} and protocol {protocol!r}")
    classes = list(dict.fromkeys(r.cls for r in mine if r.metric == spec.per_class and r.cls != OVERALL))
    overall = [m for m in spec.class_columns if any(r.metric == m and r.cls == OVERALL for r in mine)]
    columns = [column(spec, spec.per_class, dataset, protocol, c, header=c) for c in classes]
    columns += [column(spec, m, dataset, protocol) for m in overall]
    parts = [spec.caption, f"{len(classes)} classes: {', '.join(classes)}." if classes else ""]
    if spec.trains:
        parts += [_protocol_sentence(task, protocol), _seed_sentence(mine, show_std)]
    table = _build(rows, columns, methods, labels, f"{dataset} {task}", " ".join(p for p in parts if p),
                   show_std, {(task, dataset, protocol): warning} if warning else None, split)
    if published:
        averaged = _averaged_per_class(mine, spec.per_class)
        table.published = [published_line(r, columns, averaged) for r in published]
        table.add_notes(P.source_notes(published))
    return table


def _averaged_per_class(rows: Sequence[Row], per_class: str) -> set[str]:
    """The overall metrics that are, in every measured cell, the mean of its finite ``per_class`` values
    (mAP50 of AP50, mIoU of IoU): published per-class values go under the per-class columns only beside such
    a headline, since the published file checks that its headline is their mean."""
    per_cell: dict[tuple, list[float]] = {}
    for r in rows:
        if r.cls != OVERALL and r.metric == per_class and math.isfinite(r.value):
            per_cell.setdefault((r.method, r.seed), []).append(r.value)
    out: set[str] | None = None
    for cell, values in per_cell.items():
        mean = sum(values) / len(values)
        found = {r.metric for r in rows if (r.method, r.seed) == cell and r.cls == OVERALL
                 and math.isfinite(r.value) and abs(r.value - mean) <= 1e-6}
        out = found if out is None else out & found
    return out or set()


def published_line(row: PublishedRow, columns: Sequence[Column],
                   averaged: Iterable[str] = ()) -> PublishedLine:
    """A published row placed under the columns of a table: its headline under the overall column of its
    metric, its per-class values under the per-class columns of their class when its metric is one of
    ``averaged`` (the mean of those columns' metric); percentages as fractions, like the rows. A column of
    a metric that is not a percentage gets nothing (the file holds percentages)."""
    values = {}
    for j, c in enumerate(columns):
        if not c.percent:
            continue
        if c.cls == OVERALL and c.metric == row.metric:
            values[j] = row.headline / 100
        elif c.cls != OVERALL and row.metric in averaged and c.cls in row.per_class:
            values[j] = row.per_class[c.cls] / 100
    return PublishedLine(row.method, P.row_label(row), values)


def class_tables(rows: Sequence[Row], specs: Mapping[str, TaskSpec], methods: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None, show_std: bool = True) -> list[Table]:
    """One :func:`class_table` per (task, dataset, protocol) of the tasks in ``specs`` that have a per-class
    breakdown, in the order of ``specs``, then of first appearance."""
    return [class_table(rows, specs[t], d, p, methods, labels, show_std)
            for t, d, p in _groups(rows, specs, lambda s: s.per_class is not None)]


def metrics_table(rows: Sequence[Row], spec: TaskSpec, metrics: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                  show_std: bool = True, learned_nothing: Mapping[Group, str] | None = None,
                  split: str = "") -> Table:
    """Methods x every overall metric of one task (e.g. the fusion-quality metrics), one column per
    (dataset, protocol, metric) with rows.

    Args:
        metrics: columns and their order (default: the spec's metrics, in its order).
        learned_nothing: (task, dataset, protocol) -> warning of the groups whose networks learned nothing.
        split: the test split and its file digest, named in the caption.

    Raises:
        DataError: no rows of these metrics.
    """
    names = list(metrics) if metrics is not None else [m.name for m in spec.metrics]
    found = list(dict.fromkeys((r.dataset, r.protocol, r.metric) for r in rows
                               if r.task == spec.name and r.cls == OVERALL))
    columns = _unique_headers([column(spec, m, d, p) for m in names for d, p, mm in found if mm == m])
    if not columns:
        raise DataError(f"no {spec.name} rows" + (f" for metrics {list(metrics)}" if metrics else ""))
    mine = [r for r in rows if r.task == spec.name]
    datasets = ", ".join(dict.fromkeys(c.dataset for c in columns))
    parts = [spec.caption]
    if spec.trains:
        parts += [_protocol_sentence(spec.name, p) for p in dict.fromkeys(c.protocol for c in columns)]
        parts.append(_seed_sentence(mine, show_std))
    return _build(rows, columns, methods, labels, f"{datasets} {spec.name}", " ".join(p for p in parts if p),
                  show_std, learned_nothing, split)


def summary_table(rows: Sequence[Row], specs: Mapping[str, TaskSpec], methods: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None, show_std: bool = True,
                  learned_nothing: Mapping[Group, str] | None = None, split: str = "") -> Table:
    """Methods x the ``headline`` metrics of every task in ``specs`` (per dataset and protocol), in the
    order of ``specs``. The columns of the groups in ``learned_nothing`` are not marked; ``split`` is
    named in the caption.

    Raises:
        DataError: none of these metrics has rows.
    """
    columns = []
    for task, dataset, protocol in _groups(rows, specs):
        for m in specs[task].headline:
            if any(r.task == task and r.dataset == dataset and r.protocol == protocol and r.metric == m
                   and r.cls == OVERALL for r in rows):
                columns.append(column(specs[task], m, dataset, protocol))
    if not columns:
        raise DataError("no headline metrics in the rows")
    columns = _unique_headers(columns)
    parts = []
    for task, dataset, protocol in dict.fromkeys((c.task, c.dataset, c.protocol) for c in columns):
        spec = specs[task]
        mine = [c for c in columns if (c.task, c.dataset, c.protocol) == (task, dataset, protocol)]
        what = spec.summary or ", ".join(spec.metric(c.metric).label for c in mine)
        unit = " in %" if all(c.percent for c in mine) else ""
        how = ""
        if spec.trains:
            n = _n_seeds(r for r in rows if (r.task, r.dataset, r.protocol) == (task, dataset, protocol))
            seeds = f", mean{' ± sd' if show_std else ''} over {n} seeds" if n > 1 else ", one seed"
            how = f" (protocol {protocol}{seeds})"
        parts.append(f"{dataset} {task}{how}: {what}{unit}.")
    return _build(rows, columns, methods, labels, "Summary", " ".join(parts), show_std, learned_nothing,
                  split)


def _unique_headers(columns: list[Column]) -> list[Column]:
    """Append the dataset, then the protocol, to headers that would otherwise repeat."""
    for part in ("dataset", "protocol"):
        groups: dict[str, list[Column]] = {}
        for c in columns:
            groups.setdefault(c.header, []).append(c)
        differ = {h for h, cs in groups.items() if len({getattr(c, part) for c in cs}) > 1}
        columns = [replace(c, header=f"{c.header} ({getattr(c, part)})") if c.header in differ else c
                   for c in columns]
    return columns


def split_label(run: RunData, groups: Iterable[Group]) -> str:
    """``"'test' (split file splits/m3fd_scene_test.txt, files:469a5bfa)"``: the run's test split
    (``dataset.json``), its split file where the card has one, and the first 8 hex digits of the digest of its
    files that the groups' cells recorded (``RUN/inputs/<hex>.json``); "" when the run records no split."""
    split = run.dataset_record.get("test_split")
    if not split:
        return ""
    groups = list(groups)
    card = run.card()
    split_file = card.split_files.get(split) if card is not None and any(g[1] == card.name for g in groups) \
        else None
    digests = list(dict.fromkeys(f for g in groups for f in run.test_fingerprints(*g)))
    parts = ([f"split file {split_file}"] if split_file else []) + \
        [d[: d.index(":") + 9] if ":" in d else d for d in digests]
    differ = ": its cells were scored on different files" if len(digests) > 1 else ""
    return f"{split!r}" + (f" ({', '.join(parts)}{differ})" if parts else "")


def run_tables(run: RunData, labels: Mapping[str, str] | None = None, show_std: bool = True,
               published: bool = True) -> list[tuple[str, Table]]:
    """Every table of a run as (file stem, table): the summary, a per-class table per (task, dataset,
    protocol) of a task with a per-class breakdown (``<task>_per_class[_k]``), a metrics table per task
    without one (``<task>``); the saved paired comparisons (:mod:`taskeval.reporting.comparisons`) are the
    footnotes of their task's tables. Tables without rows are left out.

    The learned-nothing guard (:mod:`taskeval.reporting.guard`) decides the warnings and unmarked columns;
    with ``published`` the per-class tables show the published rows of their dataset and class list
    (:mod:`taskeval.reporting.published`), and the summary says where (it shows none itself: its columns
    mix tasks and protocols, and a published row there would read as one more ranked method)."""
    specs = {t: run.spec(t) for t in run.tasks}
    have = {r.method for r in run.rows}
    methods = [m for m in run.method_order if m in have]
    warnings = guard.warnings(run)
    groups = _groups(run.rows, specs)
    shown = {g: P.published_for(run, specs[g[0]], g[1], g[2]).rows if published else ()
             for g in groups if specs[g[0]].per_class is not None}
    out: list[tuple[str, Table]] = []
    try:
        t = summary_table(run.rows, specs, methods, labels, show_std, warnings, split_label(run, groups))
        t.add_notes(f"Published results of {g[1]} {g[0]} (another protocol): below its per-class table, "
                    "never in this summary." for g, rows in shown.items() if rows)
        out.append(("summary", t))
    except DataError:
        pass
    for task, spec in specs.items():
        if spec.per_class is not None:
            mine = [g for g in groups if g[0] == task]
            for k, g in enumerate(mine):
                t = class_table(run.rows, spec, g[1], g[2], methods, labels, show_std, shown[g],
                                warnings.get(g, ""), split_label(run, [g]))
                t.add_notes(comparison_lines(run.path, task, g[1], g[2]))
                out.append((f"{task}_per_class" + (f"_{k + 1}" if len(mine) > 1 else ""), t))
            continue
        try:
            split = split_label(run, [g for g in groups if g[0] == task])
            t = metrics_table(run.rows, spec, methods=methods, labels=labels, show_std=show_std,
                              learned_nothing=warnings, split=split)
        except DataError:
            continue
        t.add_notes(comparison_lines(run.path, task))
        out.append((task, t))
    return out


# ---------------------------------------------------------------------------------------------- renderers
def to_rich(table: Table):
    """A ``rich.table.Table``: the warning under the title, best values bold, second underlined, a rule
    under the reference rows, the published rows (italic, never marked) in their own section below."""
    from rich.table import Table as RichTable
    from rich.text import Text

    caption = "\n".join([table.caption] + [f"{mk} {text}" if mk else text for mk, text in table.footnotes])
    title = Text(table.title)
    if table.warning:
        title.append(f"\nWarning: {table.warning}", style="bold red")
    out = RichTable(title=title, caption=caption, caption_justify="left")
    out.add_column("Method", justify="left", no_wrap=True)
    for c in table.columns:
        out.add_column(c.header, justify="right", no_wrap=True)
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    for i, m in enumerate(table.methods):
        cells = [Text(table.label(m) + table.markers(m))]
        for j in range(len(table.columns)):
            style = {1: "bold", 2: "underline"}.get(ranks[j][m], "")
            cells.append(Text(table.value_text(m, j), style=style))
        last = i == len(table.methods) - 1
        out.add_row(*cells, end_section=table.is_last_reference(i) or (last and bool(table.published)))
    if table.published:
        out.add_row(Text(P.GROUP, style="italic"), *[""] * len(table.columns))
        for line in table.published:
            values = [Text(table.published_text(line, j), style="italic") for j in range(len(table.columns))]
            out.add_row(Text(line.label, style="italic"), *values)
    return out


def _md_escape(text: str) -> str:
    for ch in "\\`*_<>|":
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(table: Table) -> str:
    """GitHub Markdown: the warning as a quote on top, ``**best**``, ``<u>second</u>``, the published rows
    below a ``*published (other protocol)*`` row (never marked), caption and footnotes below the table."""
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    lines = [f"**{_md_escape(table.title)}**", ""]
    if table.warning:
        lines += [f"> **Warning:** {_md_escape(table.warning)}", ""]
    lines += ["| Method | " + " | ".join(_md_escape(c.header) for c in table.columns) + " |",
              "|:--|" + "--:|" * len(table.columns)]
    for m in table.methods:
        cells = [_md_escape(table.label(m)) + table.markers(m)]
        for j in range(len(table.columns)):
            text = table.value_text(m, j)
            cells.append({1: f"**{text}**", 2: f"<u>{text}</u>"}.get(ranks[j][m], text))
        lines.append("| " + " | ".join(cells) + " |")
    if table.published:
        lines.append(f"| *{_md_escape(P.GROUP)}* |" + " |" * len(table.columns))
        for line in table.published:
            cells = [_md_escape(line.label)] + [table.published_text(line, j)
                                                for j in range(len(table.columns))]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _md_escape(table.caption)]
    lines += [f"- {mk + ' ' if mk else ''}{_md_escape(text)}" for mk, text in table.footnotes]
    return "\n".join(lines) + "\n"


_TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
              "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "†": r"\dag{}", "‡": r"\ddag{}",
              "§": r"\S{}", "¶": r"\P{}", "‖": r"$\Vert$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
              "Δ": r"$\Delta$", "−": r"$-$", "–": "--", "≤": r"$\leq$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (``& % $ # _ { } ~ ^ \\``) and map the symbols tables use (± † ↑ Δ ...)."""
    return "".join(_TEX_CHARS.get(ch, ch) for ch in text)


def to_latex(table: Table, label: str | None = None) -> str:
    """A booktabs ``table`` environment: the warning first in the caption, ``\\textbf{}`` best,
    ``\\underline{}`` second, the published rows under a ``\\midrule`` and an italic group line (never
    marked), the notes as superscript markers with their text under the tabular (needs
    ``\\usepackage{booktabs}``)."""
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    warning = rf"\textit{{Warning: {latex_escape(table.warning)}}} " if table.warning else ""
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(table.title)}. {warning}{latex_escape(table.caption)}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{l{'r' * len(table.columns)}}}", r"\toprule",
              "Method & " + " & ".join(latex_escape(c.header) for c in table.columns) + r" \\", r"\midrule"]
    for i, m in enumerate(table.methods):
        name = latex_escape(table.label(m))
        if table.markers(m):
            name += rf"\textsuperscript{{{latex_escape(table.markers(m))}}}"
        cells = [name]
        for j in range(len(table.columns)):
            text = latex_escape(table.value_text(m, j))
            cells.append({1: rf"\textbf{{{text}}}", 2: rf"\underline{{{text}}}"}.get(ranks[j][m], text))
        lines.append(" & ".join(cells) + r" \\")
        if table.is_last_reference(i):
            lines.append(r"\midrule")
    if table.published:
        group = rf"\multicolumn{{{len(table.columns) + 1}}}{{l}}{{\textit{{{latex_escape(P.GROUP)}}}}} \\"
        lines += [r"\midrule", group]
        for line in table.published:
            cells = [latex_escape(line.label)] + [latex_escape(table.published_text(line, j))
                                                  for j in range(len(table.columns))]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.footnotes:
        notes = [(rf"\textsuperscript{{{latex_escape(mk)}}}~" if mk else "") + latex_escape(t)
                 for mk, t in table.footnotes]
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Plain numbers in the table's units (percent for AP/IoU columns), 12 significant digits (not rounded to
    the printed decimals): ``method, label, note, seeds``, then per column its mean and ``<header> std``
    (empty when missing, NaN or a single seed), then ``group`` (``measured``, or :data:`P.GROUP` for a
    published row: no seeds, no std) and ``warning`` (the learned-nothing warning on the measured rows)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "label", "note", "seeds"]
               + [h for c in table.columns for h in (c.header, f"{c.header} std")] + ["group", "warning"])
    for m in table.methods:
        stats = [table.cells.get((m, j)) for j in range(len(table.columns))]
        seeds = max((s.n for s in stats if s is not None), default=0)
        row = [m, table.label(m), "; ".join(table.notes.get(m, [])), seeds]
        for c, s in zip(table.columns, stats):
            scale = 100.0 if c.percent else 1.0
            row += ["" if s is None or not math.isfinite(s.mean) else f"{scale * s.mean:.12g}",
                    "" if s is None or not math.isfinite(s.std) else f"{scale * s.std:.12g}"]
        w.writerow(row + ["measured", table.warning])
    for line in table.published:
        row = [line.method, line.label, "another protocol", ""]
        for j, c in enumerate(table.columns):
            v = line.values.get(j)
            row += ["" if v is None else f"{(100.0 if c.percent else 1.0) * v:.12g}", ""]
        w.writerow(row + [P.GROUP, ""])
    return buf.getvalue()


RENDERERS = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv}
