"""``taskeval report RUN_DIR``: render a benchmark run directory as one self-contained HTML file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from taskeval.errors import ConfigError, DataError


def parse_inset(text: str) -> tuple[str, tuple[float, float, float, float]]:
    """``ID:x,y,w,h`` (pixels) -> (id, region)."""
    m = re.fullmatch(r"(.+):\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*", text)
    if not m:
        raise ConfigError(f"--inset must be ID:x,y,w,h (pixels), got {text!r}")
    return m.group(1), tuple(float(v) for v in m.groups()[1:])


def figure_settings(run_dir: Path, args) -> dict:
    """Figure options: the run's ``config.yaml`` ``figures`` entry, overridden by the command line."""
    from taskeval.reporting.figures import config_figure_options

    out = config_figure_options(run_dir)
    out["insets"] = dict(out["insets"] or {})
    if args.scenes:
        out["scenes"] = tuple(args.scenes)
    for key in ("n_scenes", "score_threshold", "normalise"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if args.inset:
        out["insets"] = dict(parse_inset(t) for t in args.inset)
    if args.draw_gt:
        out["draw_gt"] = True
    return out


def run(args) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "cells").is_dir():
        raise DataError(f"{run_dir} is not a benchmark run directory (no cells/ folder)")
    from taskeval.rundir import RunDir

    # matplotlib keeps its font cache in MPLCONFIGDIR: inside the run, not the user's home
    os.environ["MPLCONFIGDIR"] = str(RunDir(run_dir).third_party_dir() / "matplotlib")
    from taskeval.reporting.report import render_report

    out = render_report(run_dir, args.out, overwrite=args.overwrite, published=not args.no_published,
                        **figure_settings(run_dir, args))
    print(f"report: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="render a benchmark run directory as a self-contained HTML report",
                       description="Draw the figures of a benchmark run (PNG and PDF in RUN/figures) and "
                                   "write one self-contained HTML file with tables, figures, notes, protocol "
                                   "and metric definitions and provenance. It loads nothing from the "
                                   "network. An existing report is only replaced with --overwrite. Figure "
                                   "options default to the run's config.yaml 'figures' entry.")
    p.add_argument("run_dir", help="benchmark run directory")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--scenes", nargs="+", metavar="ID",
                   help="test ids of the image grids (default: where the methods disagree most)")
    p.add_argument("--n-scenes", type=int, help="number of automatically chosen scenes (default 3)")
    p.add_argument("--score-threshold", type=float, help="lowest score of a drawn box (default 0.25)")
    p.add_argument("--inset", action="append", metavar="ID:x,y,w,h",
                   help="magnify this pixel region of scene ID in a corner of its panels (repeatable)")
    p.add_argument("--draw-gt", action="store_true", help="draw ground-truth boxes on the visible column")
    p.add_argument("--normalise", choices=("minmax", "rank"),
                   help="radar axis normalisation (default minmax)")
    p.add_argument("--no-published", action="store_true",
                   help="leave out the published results of the dataset (data/published/results.yaml; "
                        "another protocol, shown below the measured rows by default) and the Measured vs "
                        "published section")
    p.set_defaults(func=run)
