"""Charts of a run's rows: per-class bars of a task and the radar chart across tasks.

Bars and the radar chart average over seeds (:func:`taskeval.stats.summarize_values`: NaN values left
out) and show one protocol per task (:func:`taskeval.reporting.run.default_protocol`). The metrics, their
units and their directions come from each task's spec: bars draw its ``per_class`` metric per class and
its first ``class_columns`` metric as their mean; the radar chart's axes are the ``radar`` metrics of
every task of the run.

Radar normalisation (per axis, across the methods drawn): ``"minmax"`` maps the worst value to radius
0.2 and the best to 1.0 linearly (all equal: 1.0); ``"rank"`` gives the best method radius 1 and the
k-th best (k - 1 better) radius ``1 - (k - 1) / n`` (ties share their mean rank). Metrics where lower is
better (:attr:`taskeval.tasks.Metric.higher_is_better` False, e.g. MSE and Nabf) are flipped, so
outward is always better. A method without a value on an axis leaves a gap in its polygon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from taskeval.errors import ConfigError, DataError
from taskeval.reporting.run import RunData, default_protocol
from taskeval.reporting.style import STYLE, method_colours
from taskeval.results import OVERALL, Row
from taskeval.stats import SeedStat, summarize_values


# ---------------------------------------------------------------------------------- rows -> numbers
def select_rows(rows: Sequence[Row], task: str, dataset: str | None = None,
                protocol: str | None = None) -> list[Row]:
    """The rows of one task, dataset and protocol (defaults: the only dataset, :func:`default_protocol`)."""
    rows = [r for r in rows if r.task == task]
    if not rows:
        return []
    datasets = sorted({r.dataset for r in rows})
    if dataset is None:
        if len(datasets) > 1:
            raise ConfigError(f"the run has {task} rows of several datasets {datasets}: choose one")
        dataset = datasets[0]
    rows = [r for r in rows if r.dataset == dataset]
    protocol = protocol if protocol is not None else default_protocol(r.protocol for r in rows)
    return [r for r in rows if r.protocol == protocol]


def aggregate(rows: Sequence[Row], metric: str) -> dict[tuple[str, str], SeedStat]:
    """(method, cls) -> mean and sample standard deviation over seeds of one metric
    (:func:`taskeval.stats.summarize_values`: NaN values are left out)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.metric == metric:
            groups.setdefault((r.method, r.cls), []).append(r.value)
    return {k: summarize_values(v) for k, v in groups.items()}


# ------------------------------------------------------------------------------------ per-class bars
def per_class_bars(run: RunData, task: str, dataset: str | None = None, protocol: str | None = None,
                   methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars (classes x methods) of the task's per-class metric (e.g. AP50, IoU), plus its mean
    (the spec's first ``class_columns`` metric), in % for a percent metric.

    Bars are the mean over seeds; error bars the sample standard deviation when a method has several
    seeds. NaN values (a class absent from ground truth and prediction) are left out.

    Raises:
        DataError: the task has no per-class breakdown or no per-class rows.
    """
    spec = run.spec(task)
    metric = spec.per_class
    if metric is None:
        raise DataError(f"task {task!r} has no per-class breakdown (its spec's per_class is None)")
    overall = spec.class_columns[0] if spec.class_columns else None
    scale = 100.0 if spec.metric(metric).percent else 1.0
    rows = select_rows(run.rows, task, dataset, protocol)
    per_class = aggregate([r for r in rows if r.cls != OVERALL], metric)
    means = aggregate([r for r in rows if r.cls == OVERALL], overall) if overall else {}
    if not per_class:
        raise DataError(f"{run.path}: no per-class {metric} rows for {task}")
    classes = list(dict.fromkeys(r.cls for r in rows if r.metric == metric and r.cls != OVERALL))
    present = {m for m, _ in per_class}
    methods = [m for m in (methods or run.ordered(present)) if m in present]
    groups = classes + ([overall] if overall else [])
    colours = method_colours(run.method_order)
    n = len(methods)
    width = 0.8 / max(n, 1)
    with rc_context(STYLE):
        fig = Figure(figsize=(min(14.0, max(6.0, 1.0 + len(groups) * (0.13 * n + 0.25))), 2.8),
                     layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(groups))
        top = 100.0 if scale == 100.0 else 0.0
        for k, m in enumerate(methods):
            stats = [per_class.get((m, c)) if k_ < len(classes) else means.get((m, OVERALL))
                     for k_, c in enumerate(groups)]
            mean = np.array([s.mean if s else np.nan for s in stats]) * scale
            std = np.array([s.std if s else np.nan for s in stats]) * scale
            top = max(top, float(np.nanmax(np.where(np.isfinite(std), mean + std, mean), initial=0.0)))
            ax.bar(x + (k - (n - 1) / 2) * width, mean, width, yerr=std if np.isfinite(std).any() else None,
                   color=colours[m], label=m, error_kw={"elinewidth": 0.6, "capsize": 1.2})
        ax.set_xticks(x, [g if k < len(classes) else f"mean ({g})" for k, g in enumerate(groups)],
                      rotation=30 if len(groups) > 10 else 0, ha="right" if len(groups) > 10 else "center")
        if overall:
            ax.axvline(len(classes) - 0.5, color="0.6", linewidth=0.6, linestyle=":")
        ax.set_ylabel(f"{metric} (%)" if scale == 100.0 else metric)
        ax.set_ylim(0, top * 1.02 if top > 0 else 1.0)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        seeds = max((s.n for s in per_class.values()), default=1)
        spread = f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""
        ax.set_title(f"{task}: per-class {metric}{spread}")
        fig.legend(loc="outside upper center", ncol=min(n, 8), frameon=False)
    return fig


# -------------------------------------------------------------------------------------------- radar
@dataclass
class RadarData:
    """Values of the radar chart: ``raw`` and ``radius`` are (methods, axes), NaN where a method has none."""

    methods: list[str]
    axes: list[tuple[str, str]]  # (task, metric)
    raw: np.ndarray
    radius: np.ndarray
    normalise: str
    higher_is_better: list[bool]


def radar_data(run: RunData, methods: Sequence[str] | None = None,
               metrics: Sequence[tuple[str, str]] | None = None, normalise: str = "minmax",
               dataset: str | None = None) -> RadarData:
    """Mean-over-seeds values of the tasks' radar metrics, normalised per axis.

    Axes are ``metrics`` ((task, metric) pairs) or the ``radar`` metrics of every task of the run (in
    task order) that at least two methods have. See the module docstring for the normalisations.
    """
    if normalise not in ("minmax", "rank"):
        raise ConfigError(f"normalise must be 'minmax' or 'rank', got {normalise!r}")
    values: dict[tuple[str, str], dict[str, float]] = {}
    for task in run.tasks:
        rows = [r for r in select_rows(run.rows, task, dataset) if r.cls == OVERALL]
        for metric in dict.fromkeys(r.metric for r in rows):
            values[(task, metric)] = {m: s.mean for (m, _), s in aggregate(rows, metric).items()}
    if metrics is None:
        metrics = [(t, m) for t in run.tasks for m in run.spec(t).radar if (t, m) in values]
        metrics = [k for k in metrics if sum(math.isfinite(v) for v in values[k].values()) >= 2]
    else:
        missing = [k for k in metrics if k not in values]
        if missing:
            raise ConfigError(f"no rows for radar axes {missing}; have {sorted(values)}")
    metrics = list(metrics)
    have = {m for k in metrics for m, v in values[k].items() if math.isfinite(v)}
    methods = [m for m in (methods or run.ordered(have)) if m in have]
    raw = np.array([[values[k].get(m, np.nan) for k in metrics] for m in methods], np.float64).reshape(
        len(methods), len(metrics))
    higher = [run.spec(task).metric(metric).higher_is_better for task, metric in metrics]
    radius = np.full_like(raw, np.nan)
    for j in range(len(metrics)):
        col = raw[:, j] if higher[j] else -raw[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        if normalise == "minmax":
            lo, hi = col[ok].min(), col[ok].max()
            radius[ok, j] = 1.0 if hi == lo else 0.2 + 0.8 * (col[ok] - lo) / (hi - lo)
        else:
            v = col[ok]
            # methods better than each one, a tie counting half: the mean of the tied ranks, 0-based
            better = (v[None, :] > v[:, None]).sum(1) + ((v[None, :] == v[:, None]).sum(1) - 1) / 2
            radius[ok, j] = 1.0 - better / ok.sum()
    return RadarData(methods, metrics, raw, radius, normalise, higher)


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.3g}"


def radar_chart(run: RunData, methods: Sequence[str] | None = None,
                metrics: Sequence[tuple[str, str]] | None = None, normalise: str = "minmax",
                dataset: str | None = None) -> Figure:
    """One polygon per method over the tasks' radar metrics, each axis normalised across methods.

    Axis labels give the metric and the raw range over methods (worst - best).
    """
    data = radar_data(run, methods, metrics, normalise, dataset)
    if len(data.axes) < 3 or not data.methods:
        raise DataError(f"{run.path}: a radar chart needs at least 3 metrics with values for 2 methods "
                        f"(have {[m for _, m in data.axes]})")
    colours = method_colours(run.method_order)
    angles = np.linspace(0, 2 * np.pi, len(data.axes), endpoint=False)
    with rc_context(STYLE):
        # fixed margins leave room for the axis labels around the circle (constrained layout ignores them)
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_axes((0.16, 0.11, 0.52, 0.52 * 6.4 / 4.4 * 0.98), projection="polar")
        ax.set_theta_offset(np.pi / 2)
        ax.set_theta_direction(-1)
        for k, m in enumerate(data.methods):
            r = np.r_[data.radius[k], data.radius[k, :1]]
            a = np.r_[angles, angles[:1]]
            ax.plot(a, r, color=colours[m], linewidth=1.2, marker="o", markersize=2.5, label=m,
                    gid=f"radar:{m}")
            if np.isfinite(r).all():
                ax.fill(a, r, color=colours[m], alpha=0.07)
        labels = []
        for j, (_, metric) in enumerate(data.axes):
            col = data.raw[:, j][np.isfinite(data.raw[:, j])]
            lo, hi = (col.min(), col.max()) if col.size else (np.nan, np.nan)
            worst, best = (lo, hi) if data.higher_is_better[j] else (hi, lo)
            labels.append(f"{metric}\n{_fmt(worst)}–{_fmt(best)}")
        ax.set_xticks(angles, labels)
        ax.tick_params(axis="x", pad=4)
        for label, angle in zip(ax.get_xticklabels(), angles):
            side = np.sin(angle)  # clockwise from the top: > 0 on the right half
            label.set_horizontalalignment("left" if side > 0.1 else "right" if side < -0.1 else "center")
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0], [])
        ax.grid(linewidth=0.4, alpha=0.6)
        how = "min-max over methods (worst 0.2, best 1)" if normalise == "minmax" else "rank over methods"
        fig.suptitle(f"Ranking, each axis normalised: {how}", y=0.985)
        fig.legend(loc="center left", bbox_to_anchor=(0.8, 0.5), frameon=False)
    return fig
