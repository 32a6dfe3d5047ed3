"""Every figure of a run directory, written as PNG (200 dpi) and PDF (TrueType fonts, no timestamp) into
``RUN/figures``, and the figure options of the run's ``config.yaml``.

Which figures (:func:`render_all`), each only where the run has data for it:

* an example grid per task whose spec has a label kind with a grid (``"boxes"``: detection grid,
  ``"masks"``: segmentation grid; :mod:`taskeval.reporting.grids`);
* per-class bars per task with a per-class breakdown (:func:`taskeval.reporting.charts.per_class_bars`);
* the radar chart of every task's radar metrics (:func:`taskeval.reporting.charts.radar_chart`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure

from taskeval.errors import DataError
from taskeval.reporting import charts, grids
from taskeval.reporting.options import FigureOptions
from taskeval.reporting.run import RunData
from taskeval.reporting.style import STYLE
from taskeval.rundir import atomic_write_bytes, latest_config

log = logging.getLogger(__name__)


def config_figure_options(run_dir: str | Path) -> dict:
    """The ``figures`` section of the run's latest configuration as keyword arguments of
    :func:`render_all`."""
    from taskeval.config import build

    f = build(FigureOptions, latest_config(run_dir).get("figures") or {}, prefix="figures.")
    return {"scenes": f.scenes, "n_scenes": f.n_scenes, "score_threshold": f.score_threshold,
            "insets": {str(k): [float(v) for v in region] for k, region in f.insets.items()} or None,
            "draw_gt": f.draw_gt, "normalise": f.radar}


# ------------------------------------------------------------------------------------------- saving
def save_figure(fig: Figure, base: str | Path) -> tuple[Path, Path]:
    """Write ``base.png`` (200 dpi) and ``base.pdf`` (TrueType fonts, no timestamp), atomically."""
    base = Path(base)
    out = []
    with rc_context(STYLE):
        for ext, kw in (("png", {"dpi": STYLE["savefig.dpi"]}),
                        ("pdf", {"metadata": {"CreationDate": None}})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, facecolor="white", **kw)
            path = base.with_name(f"{base.name}.{ext}")
            atomic_write_bytes(path, buf.getvalue())
            out.append(path)
    return out[0], out[1]


@dataclass(frozen=True)
class FigureFile:
    """A figure written by :func:`render_all`."""

    name: str
    title: str
    caption: str
    png: Path
    pdf: Path


def render_all(run_dir: str | Path, out_dir: str | Path | None = None, scenes: Sequence[str] = (),
               n_scenes: int = 3, score_threshold: float = 0.25,
               insets: Mapping[str, Sequence[float]] | None = None, draw_gt: bool = False,
               normalise: str = "minmax") -> list[FigureFile]:
    """Draw every figure the run has data for into ``out_dir`` (default ``RUN/figures``), PNG and PDF.

    Figures without data (no dataset for the grids, fewer than 3 radar axes, ...) are skipped with a log
    line. Existing figure files are replaced: they are derived from the results store, never results
    themselves.

    Args:
        scenes: test ids for the image grids; empty: chosen where the methods disagree most.
        n_scenes, score_threshold, insets, draw_gt: see :func:`taskeval.reporting.grids.detection_grid`.
        normalise: radar normalisation, "minmax" or "rank".
    """
    run = RunData.open(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run.path / "figures"
    chosen = list(scenes) or None
    with_cells = {c["task"] for c in run.cells}
    with_rows = {r.task for r in run.rows}

    def rows_text(why: str) -> str:
        return "Rows: the given test scenes. " if chosen else f"Rows: scenes where {why} disagrees most. "

    plans = []
    for task in run.tasks:
        grid = run.spec(task).grid
        if task not in with_cells:
            continue
        if grid == "boxes":
            caption = (rows_text("the methods' recall at IoU 0.5") +
                       "Columns: IR and visible images with the boxes of the networks trained on IR-only and "
                       "visible-only images, then each method's fused image with the boxes of the network "
                       f"retrained on it (score >= {score_threshold:g}; one colour per class"
                       + ("; dashed white: ground truth" if draw_gt else "") + ").")
            plans.append((f"{task}_grid", f"{task.capitalize()} examples", caption,
                          lambda task=task: grids.detection_grid(run, chosen, n_scenes, score_threshold,
                                                                 insets, draw_gt=draw_gt, task=task)))
        elif grid == "masks":
            caption = (rows_text("the methods' per-image mIoU") + "Columns: IR, visible, ground truth, then "
                       "each method's prediction in the dataset palette.")
            plans.append((f"{task}_grid", f"{task.capitalize()} examples", caption,
                          lambda task=task: grids.segmentation_grid(run, chosen, n_scenes, task=task)))
    for task in run.tasks:
        spec = run.spec(task)
        if spec.per_class is not None and task in with_rows:
            unit = " in %" if spec.metric(spec.per_class).percent else ""
            caption = (f"Per-class {spec.per_class}{unit}, mean over seeds; error bars: sample standard "
                       "deviation over seeds where a method has several.")
            plans.append((f"{task}_per_class", f"Per-class {spec.per_class} ({task})", caption,
                          lambda task=task: charts.per_class_bars(run, task)))
    if with_rows:
        how = "by min-max (worst 0.2, best 1.0)" if normalise == "minmax" else "by rank (best 1.0)"
        caption = (f"The radar metrics of every task (means over seeds), each axis normalised across methods "
                   f"{how}; outward is better (lower-is-better metrics flipped); the labels give the raw "
                   "worst–best range.")
        plans.append(("radar", "Ranking (radar chart)", caption,
                      lambda: charts.radar_chart(run, normalise=normalise)))
    written = []
    for name, title, caption, make in plans:
        try:
            fig = make()
        except DataError as exc:
            log.warning("figure %s skipped: %s", name, exc)
            continue
        png, pdf = save_figure(fig, out_dir / name)
        written.append(FigureFile(name, title, caption, png, pdf))
    return written
