"""Paper-style tables from result rows: per-class tables per (task, dataset, protocol), a quality table and a
summary across tasks, rendered for the terminal (rich), Markdown, LaTeX (booktabs) and CSV.

A :class:`Table` holds what every renderer needs: methods (rows; the ``ir`` / ``vis`` references first),
:class:`Column` s, one :class:`~taskeval.stats.SeedStat` per cell (mean and sample std over seeds), a
caption stating the protocol and the metric definitions, and footnotes (a method's ``Row.note`` such as
"weights trained by taskeval" becomes a marker beside its name).

Conventions:

* Detection and segmentation rows store fractions in [0, 1]; their columns print percentages with one
  decimal, as the papers do. Quality metrics are printed as they are (3 decimals by default).
* With several seeds a cell reads ``mean ± std`` (sample std, ``ddof=1``); seeds whose value is NaN are
  left out of the mean (a class absent from ground truth and prediction has NaN IoU).
* The best value of each column is bold and the second best underlined, compared on the printed values:
  printed ties share the mark, and the second best is the next distinct printed value. AP and IoU are
  higher-is-better; quality metrics follow the ``higher_is_better`` map (default True). NaN and missing
  cells are never marked.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from taskeval.errors import ConfigError, DataError
from taskeval.results import OVERALL, Row
from taskeval.stats import REFERENCE_METHODS, SeedStat, seed_summary

MARKERS = ("†", "‡", "§", "¶", "‖", "#")
DEFAULT_LABELS = {"ir": "IR", "vis": "VI"}
FRACTION_TASKS = ("detection", "segmentation")
PER_CLASS = {"detection": "AP50", "segmentation": "IoU"}
OVERALL_COLUMNS = {"detection": ("mAP50", "mAP50_95"), "segmentation": ("mIoU", "mIoU_nobg", "mAcc")}
HEADLINE = {"detection": ("mAP50", "mAP50_95"), "segmentation": ("mIoU", "mAcc")}
SUMMARY_QUALITY = ("EN", "VIF", "AG", "CC", "SCD", "Qabf")  # the quality axes of IGNet's radar charts
HEADERS = {"mAP50": "mAP@.5", "mAP50_95": "mAP@.5:.95"}
MISSING = "–"
NOT_A_NUMBER = "n/a"


@dataclass(frozen=True)
class Column:
    """One table column: a metric (and class) of one task, dataset and protocol."""

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
def order_methods(found: Iterable[str], methods: Sequence[str] | None = None,
                  references: Sequence[str] = REFERENCE_METHODS, known: Iterable[str] | None = None) -> list[str]:
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
            raise ConfigError(f"no rows for method(s) {missing}; methods with rows: {', '.join(sorted(known))}")
        chosen = [m for m in dict.fromkeys(methods) if m in found]
    refs = [r for r in references if r in found]
    return refs + [m for m in chosen if m not in refs]


def _check_fractions(rows: Iterable[Row]) -> None:
    for r in rows:
        if r.task in FRACTION_TASKS and math.isfinite(r.value) and not -1e-9 <= r.value <= 1 + 1e-9:
            raise DataError(f"{r.task} {r.metric} {r.cls or ''} of {r.method} is {r.value}: rows store "
                            "fractions in [0, 1] (a percentage imported by mistake?)")


def _build(rows: Sequence[Row], columns: list[Column], methods: Sequence[str] | None,
           labels: Mapping[str, str] | None, title: str, caption: str, show_std: bool) -> Table:
    keys = {(c.task, c.dataset, c.protocol, c.metric, c.cls): j for j, c in enumerate(columns)}
    selected = [r for r in rows if (r.task, r.dataset, r.protocol, r.metric, r.cls) in keys]
    _check_fractions(selected)
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


def class_table(rows: Sequence[Row], task: str, dataset: str, protocol: str,
                methods: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                show_std: bool = True) -> Table:
    """Per-class table of one (task, dataset, protocol): AP50 per class + mAP50, mAP50_95 (detection) or
    IoU per class + mIoU, mIoU_nobg, mAcc (segmentation), in %.

    Args:
        rows: result rows (any mix; the table's own are selected).
        task: ``"detection"`` or ``"segmentation"``.
        methods: selection and order of the rows (default: all, in order of first appearance); ``ir`` and
            ``vis`` are always shown, first.
        labels: display names (default ``ir`` -> IR, ``vis`` -> VI).
        show_std: print ``± std`` for cells with several seeds.

    Raises:
        ConfigError: an unknown task or a method without rows.
        DataError: no rows for this (task, dataset, protocol), or a stored value outside [0, 1].
    """
    if task not in PER_CLASS:
        raise ConfigError(f"per-class tables exist for {', '.join(PER_CLASS)}, not {task!r}")
    mine = [r for r in rows if r.task == task and r.dataset == dataset and r.protocol == protocol]
    if not mine:
        raise DataError(f"no {task} rows for dataset {dataset!r} and protocol {protocol!r}")
    classes = list(dict.fromkeys(r.cls for r in mine if r.metric == PER_CLASS[task] and r.cls != OVERALL))
    overall = [m for m in OVERALL_COLUMNS[task] if any(r.metric == m and r.cls == OVERALL for r in mine)]
    columns = [Column(c, task, dataset, protocol, PER_CLASS[task], c) for c in classes]
    columns += [Column(HEADERS.get(m, m), task, dataset, protocol, m) for m in overall]
    if task == "detection":
        what = ("AP@0.5 per class, mAP@0.5 and mAP@0.5:0.95 in % (COCO evaluation: 101-point interpolation, "
                "all object sizes, at most 100 detections per image; classes without test objects are left "
                "out).")
    else:
        bg = f" incl. {classes[0]}" if classes else ""
        what = (f"IoU per class in %; mIoU over all {len(classes)} classes{bg}; mIoU_nobg without it (its "
                "pixels still count as errors of the other classes); mAcc: mean per-class pixel accuracy over "
                "the classes present in the ground truth. A class absent from ground truth and prediction is "
                "left out.")
    caption = " ".join([what, _protocol_sentence(task, protocol), _seed_sentence(mine, show_std),
                        "Best in bold, second underlined."])
    return _build(rows, columns, methods, labels, f"{dataset} {task}", caption, show_std)


def class_tables(rows: Sequence[Row], methods: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None, show_std: bool = True) -> list[Table]:
    """One :func:`class_table` per (task, dataset, protocol) of detection and segmentation rows, in order of
    first appearance."""
    groups = dict.fromkeys((r.task, r.dataset, r.protocol) for r in rows if r.task in PER_CLASS)
    return [class_table(rows, t, d, p, methods, labels, show_std) for t, d, p in groups]


def _quality_columns(rows: Sequence[Row], metrics: Sequence[str] | None,
                     higher_is_better: Mapping[str, bool] | None, decimals: int) -> list[Column]:
    found = list(dict.fromkeys((r.dataset, r.protocol, r.metric) for r in rows if r.task == "quality"))
    if metrics is not None:
        found = [(d, p, m) for m in metrics for d, p, mm in found if mm == m]
    hib = higher_is_better or {}
    return [Column(f"{m}{'↑' if hib.get(m, True) else '↓'}", "quality", d, p, m, OVERALL, percent=False,
                   higher_is_better=hib.get(m, True), decimals=decimals) for d, p, m in found]


def quality_table(rows: Sequence[Row], metrics: Sequence[str] | None = None,
                  higher_is_better: Mapping[str, bool] | None = None, methods: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None, decimals: int = 3, show_std: bool = True) -> Table:
    """Methods x fusion-quality metrics (mean over test images), printed as they are.

    Args:
        metrics: columns and their order (default: every quality metric in the rows).
        higher_is_better: metric -> direction for the bold/underline marks and the header arrow (default True).
        decimals: decimals printed.
    """
    columns = _quality_columns(rows, metrics, higher_is_better, decimals)
    if not columns:
        raise DataError("no quality rows" + (f" for metrics {list(metrics)}" if metrics else ""))
    datasets = ", ".join(dict.fromkeys(c.dataset for c in columns))
    caption = ("Fusion-quality metrics of the fused test images, mean over images (↑ higher is better, "
               "↓ lower). Best in bold, second underlined.")
    return _build(rows, columns, methods, labels, f"{datasets} fusion quality", caption, show_std)


def summary_table(rows: Sequence[Row], quality_metrics: Sequence[str] = SUMMARY_QUALITY,
                  higher_is_better: Mapping[str, bool] | None = None,
                  headline: Mapping[str, Sequence[str]] = HEADLINE, methods: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None, quality_decimals: int = 3,
                  show_std: bool = True) -> Table:
    """Methods x headline metrics across tasks: mAP50 / mAP50_95 per detection protocol, mIoU / mAcc per
    segmentation protocol, then the ``quality_metrics`` present in the rows.

    Raises:
        DataError: none of these metrics has rows.
    """
    columns = []
    groups = dict.fromkeys((r.task, r.dataset, r.protocol) for r in rows if r.task in headline)
    for task, dataset, protocol in groups:
        for m in headline[task]:
            if any(r.task == task and r.dataset == dataset and r.protocol == protocol and r.metric == m
                   and r.cls == OVERALL for r in rows):
                columns.append(Column(HEADERS.get(m, m), task, dataset, protocol, m))
    columns += _quality_columns(rows, quality_metrics, higher_is_better, quality_decimals)
    if not columns:
        raise DataError("no headline metrics in the rows")
    columns = _unique_headers(columns)
    parts = []
    for task, dataset, protocol in dict.fromkeys((c.task, c.dataset, c.protocol) for c in columns):
        if task == "quality":
            continue
        n = _n_seeds(r for r in rows if (r.task, r.dataset, r.protocol) == (task, dataset, protocol))
        seeds = f", mean{' ± sd' if show_std else ''} over {n} seeds" if n > 1 else ", one seed"
        what = "COCO mAP" if task == "detection" else "mIoU over all classes incl. class 0 and mAcc"
        parts.append(f"{dataset} {task} (protocol {protocol}{seeds}): {what} in %.")
    if any(c.task == "quality" for c in columns):
        parts.append("Quality metrics: mean over fused test images (↑ higher is better, ↓ lower).")
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
