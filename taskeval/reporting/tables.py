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
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from taskeval.errors import ConfigError, DataError
from taskeval.reporting.comparisons import comparison_lines
from taskeval.reporting.run import RunData
from taskeval.results import OVERALL, Row
from taskeval.stats import REFERENCE_METHODS, SeedStat, seed_summary
from taskeval.tasks.base import Metric, TaskSpec

MARKERS = ("†", "‡", "§", "¶", "‖", "#")
DEFAULT_LABELS = {"ir": "IR", "vis": "VI"}
MISSING = "–"
NOT_A_NUMBER = "n/a"


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
        """method -> 1 (best), 2 (second best) or 0 in column ``j``."""
        col = self.columns[j]
        return dict(zip(self.methods, rank_values([self.printed_mean(m, j) for m in self.methods],
                                                  col.higher_is_better)))

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


def _build(rows: Sequence[Row], columns: list[Column], methods: Sequence[str] | None,
           labels: Mapping[str, str] | None, title: str, caption: str, show_std: bool) -> Table:
    keys = {(c.task, c.dataset, c.protocol, c.metric, c.cls): j for j, c in enumerate(columns)}
    selected = [r for r in rows if (r.task, r.dataset, r.protocol, r.metric, r.cls) in keys]
    _check_fractions(selected, columns, keys)
    order = order_methods((r.method for r in selected), methods, known=(r.method for r in rows))
    stats = seed_summary(r for r in selected if r.method in order)
    cells = {(key[0], keys[key[1:]]): s for key, s in stats.items()}
    n_max = max((s.n for s in stats.values()), default=0)
    table = Table(title, caption, order, {**DEFAULT_LABELS, **(labels or {})}, columns, cells,
                  n_reference=sum(m in REFERENCE_METHODS for m in order), show_std=show_std)
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
                show_std: bool = True) -> Table:
    """Per-class table of one (task, dataset, protocol): the spec's ``per_class`` metric per class, then its
    ``class_columns`` (e.g. AP50 per class + mAP50, mAP50_95 for detection).

    Args:
        rows: result rows (any mix; the table's own are selected).
        spec: the task's spec; it needs a ``per_class`` metric.
        methods: selection and order of the rows (default: all, in order of first appearance); ``ir`` and
            ``vis`` are always shown, first.
        labels: display names (default ``ir`` -> IR, ``vis`` -> VI).
        show_std: print ``± std`` for cells with several seeds.

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
    caption = " ".join(p for p in [*parts, "Best in bold, second underlined."] if p)
    return _build(rows, columns, methods, labels, f"{dataset} {task}", caption, show_std)


def class_tables(rows: Sequence[Row], specs: Mapping[str, TaskSpec], methods: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None, show_std: bool = True) -> list[Table]:
    """One :func:`class_table` per (task, dataset, protocol) of the tasks in ``specs`` that have a per-class
    breakdown, in the order of ``specs``, then of first appearance."""
    return [class_table(rows, specs[t], d, p, methods, labels, show_std)
            for t, d, p in _groups(rows, specs, lambda s: s.per_class is not None)]


def metrics_table(rows: Sequence[Row], spec: TaskSpec, metrics: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                  show_std: bool = True) -> Table:
    """Methods x every overall metric of one task (e.g. the fusion-quality metrics), one column per
    (dataset, protocol, metric) with rows.

    Args:
        metrics: columns and their order (default: the spec's metrics, in its order).

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
    caption = " ".join(p for p in [*parts, "Best in bold, second underlined."] if p)
    return _build(rows, columns, methods, labels, f"{datasets} {spec.name}", caption, show_std)


def summary_table(rows: Sequence[Row], specs: Mapping[str, TaskSpec], methods: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None, show_std: bool = True) -> Table:
    """Methods x the ``headline`` metrics of every task in ``specs`` (per dataset and protocol), in the
    order of ``specs``.

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
    parts.append("Best in bold, second underlined.")
    return _build(rows, columns, methods, labels, "Summary", " ".join(parts), show_std)


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


def run_tables(run: RunData, labels: Mapping[str, str] | None = None,
               show_std: bool = True) -> list[tuple[str, Table]]:
    """Every table of a run as (file stem, table): the summary, a per-class table per (task, dataset,
    protocol) of a task with a per-class breakdown (``<task>_per_class[_k]``), a metrics table per task
    without one (``<task>``); the saved paired comparisons (:mod:`taskeval.reporting.comparisons`) are the
    footnotes of their task's tables. Tables without rows are left out."""
    specs = {t: run.spec(t) for t in run.tasks}
    have = {r.method for r in run.rows}
    methods = [m for m in run.method_order if m in have]
    out: list[tuple[str, Table]] = []
    try:
        out.append(("summary", summary_table(run.rows, specs, methods, labels, show_std)))
    except DataError:
        pass
    for task, spec in specs.items():
        if spec.per_class is not None:
            groups = [g for g in _groups(run.rows, {task: spec})]
            for k, (_, dataset, protocol) in enumerate(groups):
                t = class_table(run.rows, spec, dataset, protocol, methods, labels, show_std)
                t.add_notes(comparison_lines(run.path, task, dataset, protocol))
                out.append((f"{task}_per_class" + (f"_{k + 1}" if len(groups) > 1 else ""), t))
            continue
        try:
            t = metrics_table(run.rows, spec, methods=methods, labels=labels, show_std=show_std)
        except DataError:
            continue
        t.add_notes(comparison_lines(run.path, task))
        out.append((task, t))
    return out


# ---------------------------------------------------------------------------------------------- renderers
def to_rich(table: Table):
    """A ``rich.table.Table``: best values bold, second underlined, a rule under the reference rows."""
    from rich.table import Table as RichTable
    from rich.text import Text

    caption = "\n".join([table.caption] + [f"{mk} {text}" if mk else text for mk, text in table.footnotes])
    out = RichTable(title=table.title, caption=caption, caption_justify="left")
    out.add_column("Method", justify="left", no_wrap=True)
    for c in table.columns:
        out.add_column(c.header, justify="right", no_wrap=True)
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    for i, m in enumerate(table.methods):
        cells = [Text(table.label(m) + table.markers(m))]
        for j in range(len(table.columns)):
            style = {1: "bold", 2: "underline"}.get(ranks[j][m], "")
            cells.append(Text(table.value_text(m, j), style=style))
        out.add_row(*cells, end_section=table.is_last_reference(i))
    return out


def _md_escape(text: str) -> str:
    for ch in "\\`*_<>|":
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(table: Table) -> str:
    """GitHub Markdown: ``**best**``, ``<u>second</u>``, caption and footnotes below the table."""
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    lines = [f"**{_md_escape(table.title)}**", "",
             "| Method | " + " | ".join(_md_escape(c.header) for c in table.columns) + " |",
             "|:--|" + "--:|" * len(table.columns)]
    for m in table.methods:
        cells = [_md_escape(table.label(m)) + table.markers(m)]
        for j in range(len(table.columns)):
            text = table.value_text(m, j)
            cells.append({1: f"**{text}**", 2: f"<u>{text}</u>"}.get(ranks[j][m], text))
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
    """A booktabs ``table`` environment: ``\\textbf{}`` best, ``\\underline{}`` second, the notes as
    superscript markers with their text under the tabular (needs ``\\usepackage{booktabs}``)."""
    ranks = [table.ranks(j) for j in range(len(table.columns))]
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}"]
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
    (empty when missing, NaN or a single seed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "label", "note", "seeds"]
               + [h for c in table.columns for h in (c.header, f"{c.header} std")])
    for m in table.methods:
        stats = [table.cells.get((m, j)) for j in range(len(table.columns))]
        seeds = max((s.n for s in stats if s is not None), default=0)
        row = [m, table.label(m), "; ".join(table.notes.get(m, [])), seeds]
        for c, s in zip(table.columns, stats):
            scale = 100.0 if c.percent else 1.0
            row += ["" if s is None or not math.isfinite(s.mean) else f"{scale * s.mean:.12g}",
                    "" if s is None or not math.isfinite(s.std) else f"{scale * s.std:.12g}"]
        w.writerow(row)
    return buf.getvalue()


RENDERERS = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv}
