"""After the cells of a run: merged results, paired comparisons against the best single-modality row,
tables (terminal, Markdown, LaTeX, CSV), figures and the HTML report, all from the results store."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from taskeval.console import print_table
from taskeval.errors import DataError
from taskeval.reporting import tables as T
from taskeval.reporting.comparisons import update_comparisons
from taskeval.reporting.figures import config_figure_options, render_all
from taskeval.reporting.report import render_report
from taskeval.reporting.run import RunData
from taskeval.results import rows_to_csv
from taskeval.rundir import RunDir, atomic_write_text


def finalize(run_dir: str | Path, progress: bool = True, figure_options: dict | None = None,
             console: Console | None = None) -> Path:
    """``RUN/results.csv`` (every row of the finished cells), ``RUN/stats`` (paired comparisons),
    ``RUN/tables`` (one file per table and format, also printed), ``RUN/figures`` and ``report.html``;
    returns the report path.

    Args:
        progress: unused; kept for the commands that pass it.
        figure_options: keyword arguments of :func:`render_all` (default: the run's ``figures`` config).

    Raises:
        DataError: the run has no finished cell, or what :meth:`RunData.open` raises.
    """
    run_dir = Path(run_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(RunDir(run_dir).third_party_dir() / "matplotlib"))
    run = RunData.open(run_dir)
    if not run.rows:
        raise DataError(f"{run_dir}: no finished cells to report")
    atomic_write_text(run_dir / "results.csv", rows_to_csv(run.rows))
    update_comparisons(run)
    console = console or Console()
    for name, table in T.run_tables(run):
        print_table(T.to_rich(table), console)
        for ext, render in (("md", T.to_markdown), ("tex", T.to_latex), ("csv", T.to_csv)):
            atomic_write_text(run_dir / "tables" / f"{name}.{ext}", render(table))
    figs = render_all(run_dir, **(figure_options or config_figure_options(run_dir)))
    report = render_report(run_dir, overwrite=True, figures=figs, compare=False)
    console.print(f"report: {report}")
    return report
