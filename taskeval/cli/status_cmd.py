"""``taskeval status RUN``: where every cell of a run stands (done, queued, running, failed, cancelled...)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from taskeval.errors import DataError

ORDER = ("done", "running", "queued", "failed", "cancelled", "timeout", "not submitted", "unknown")


def planned_cells(run: Path, plugins) -> list:
    """The cells of the run's latest configuration (empty when it cannot be planned here, e.g. without the data)."""
    import logging

    from taskeval.benchmark import config_from_mapping
    from taskeval.registry import load_plugin_file
    from taskeval.rundir import latest_config
    from taskeval.runner import Plan

    for p in plugins:
        load_plugin_file(p)
    try:
        cfg = config_from_mapping(latest_config(run), str(run / "config.yaml"))
        return Plan(cfg, run, progress=False, check_data=False).cells()
    except Exception as exc:  # noqa: BLE001 - status must work without the dataset: cells from the store alone
        logging.getLogger(__name__).info("cells not planned (%s): showing the store and the scheduler only", exc)
        return []


def _table(statuses):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="cells")
    for col in ("cell", "state", "job", "error / log"):
        t.add_column(col)
    for s in sorted(statuses, key=lambda s: (ORDER.index(s.state) if s.state in ORDER else 99, s.cell)):
        detail = s.error + (f"  [{s.log}]" if s.log and s.state not in ("done",) else "")
        t.add_row(escape(s.cell), s.state, s.job, escape(detail))
    return t


def run(args) -> int:
    from taskeval.console import print_table
    from taskeval.launchers.cluster import cell_status

    run_dir = Path(args.run_dir)
    if not (run_dir / "cells").is_dir() and not (run_dir / "slurm").is_dir():
        raise DataError(f"{run_dir} is not a run directory (no cells/ or slurm/ folder)")
    cells = planned_cells(run_dir, getattr(args, "plugin", []))
    statuses = cell_status(run_dir, cells)
    if args.watch:
        from tqdm import tqdm

        bar = tqdm(total=len(statuses), desc="cells done", unit="cell")
        while True:
            counts = Counter(s.state for s in statuses)
            bar.n = counts["done"]
            bar.set_postfix_str(", ".join(f"{counts[k]} {k}" for k in ORDER[1:] if counts[k]))
            bar.refresh()
            if not counts["queued"] and not counts["running"]:
                break
            time.sleep(args.interval)
            statuses = cell_status(run_dir, cells)
        bar.close()
    if not args.quiet:
        print_table(_table(statuses))
    counts = Counter(s.state for s in statuses)
    print(", ".join(f"{counts[k]} {k}" for k in ORDER if counts[k]) or "no cells")
    if any(s.state in ("failed", "cancelled", "timeout", "not submitted") for s in statuses):
        print("run the same `taskeval benchmark ... --launcher slurm` command again to submit what is missing")
    return 0


def register(sub) -> None:
    p = sub.add_parser("status", help="where every cell of a run stands (done, queued, running, failed ...)",
                       description="Per cell: done (in the store), queued / running (the scheduler), failed "
                                   "(with the last line of its error and its log), cancelled, timeout, or not "
                                   "submitted. Works without SLURM accounting (sacct).")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--watch", action="store_true", help="follow the run until nothing is queued or running")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between checks with --watch")
    p.add_argument("--quiet", action="store_true", help="only the counts")
    p.set_defaults(func=run)
