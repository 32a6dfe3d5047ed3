"""After the cells of a benchmark: merged results, tables (terminal, Markdown, LaTeX, CSV), paired
comparisons against the best single-modality row, figures and the HTML report."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from taskeval.console import print_table
from taskeval.errors import DataError
from taskeval.rundir import RunDir, atomic_write_json, atomic_write_text, latest_config
from taskeval.store import ResultsStore

log = logging.getLogger(__name__)
HEADLINE = {"detection": "mAP50", "segmentation": "mIoU"}


def comparison_lines(run_dir: str | Path, task: str) -> list[str]:
    """The saved paired-comparison footnotes of ``task`` (empty when none were computed)."""
    path = Path(run_dir) / "stats" / f"{task}_vs_reference.txt"
    return path.read_text().splitlines() if path.is_file() else []


def write_comparisons(run_dir: Path, rows) -> None:
    from taskeval.stats import compare_to_reference, comparison_notes

    for task, metric in HEADLINE.items():
        if not any(r.task == task for r in rows):
            continue
        try:
            comps = compare_to_reference(run_dir, task, metric)
        except DataError as exc:
            log.warning("no paired comparison for %s: %s", task, exc)
            continue
        atomic_write_json(run_dir / "stats" / f"{task}_vs_reference.json", [asdict(c) for c in comps])
        atomic_write_text(run_dir / "stats" / f"{task}_vs_reference.txt", "\n".join(comparison_notes(comps)) + "\n")


def build_tables(run_dir: Path, rows, method_order: list[str]):
    from taskeval import tables as T
    from taskeval.figures import higher_is_better

    quality = [r for r in rows if r.task == "quality"]
    higher = {r.metric: higher_is_better("quality", r.metric) for r in quality}
    out = []
    for name, make in (("summary", lambda: [T.summary_table(rows, higher_is_better=higher, methods=method_order)]),
                       ("class", lambda: T.class_tables(rows, methods=method_order)),
                       ("quality", lambda: [T.quality_table(rows, higher_is_better=higher, methods=method_order)])):
        try:
            tables = make()
        except DataError:
            continue
        for k, t in enumerate(tables):
            stem = name
            if name == "class":
                t.add_notes(comparison_lines(run_dir, t.columns[0].task))
                col = t.columns[0]
                stem = f"{col.task}_per_class" + (f"_{k + 1}" if len(tables) > 1 and sum(
                    x.columns[0].task == col.task for x in tables) > 1 else "")
            out.append((stem, t))
    return out


def finalize(run_dir: str | Path, progress: bool = True, figure_options: dict | None = None,
             console: Console | None = None) -> Path:
    """Tables, comparisons, figures and ``report.html`` of a run directory; returns the report path."""
    from taskeval import tables as T

    run_dir = Path(run_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(RunDir(run_dir).third_party_dir() / "matplotlib"))
    store = ResultsStore(run_dir)
    store.merge()
    rows = store.rows()
    if not rows:
        raise DataError(f"{run_dir}: no finished cells to report")
    write_comparisons(run_dir, rows)
    order = list(dict.fromkeys(m["method"] for m in store.done_cells()))
    method_order = [m for m in ("ir", "vis") if m in order] + [m for m in order if m not in ("ir", "vis")]
    console = console or Console()
    for name, table in build_tables(run_dir, rows, method_order):
        print_table(T.to_rich(table), console)
        for ext, render in (("md", T.to_markdown), ("tex", T.to_latex), ("csv", T.to_csv)):
            atomic_write_text(run_dir / "tables" / f"{name}.{ext}", render(table))
    from taskeval.figures import render_all
    from taskeval.report import render_report

    figs = render_all(run_dir, **(figure_options or config_figure_options(run_dir)))
    report = render_report(run_dir, overwrite=True, figures=figs)
    console.print(f"report: {report}")
    return report


def config_figure_options(run_dir: str | Path) -> dict:
    """The ``figures`` section of the run's ``config.yaml`` as keyword arguments of ``render_all``."""
    from taskeval.benchmark import FiguresEntry
    from taskeval.config import build

    f = build(FiguresEntry, latest_config(run_dir).get("figures") or {})
    return {"scenes": f.scenes, "n_scenes": f.n_scenes, "score_threshold": f.score_threshold,
            "insets": {str(k): [float(v) for v in region] for k, region in f.insets.items()} or None,
            "draw_gt": f.draw_gt, "normalise": f.radar}

