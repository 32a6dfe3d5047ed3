"""A task defined only here, with a lower-is-better metric: per-image object counting, scored by the mean
absolute count error (MAE, raw units) and the share of images counted exactly (%). Reporting must rank,
draw, summarise and compare it from its spec alone: once with the spec written into the run
(``RUN/tasks.json``, the task not importable), once with the task registered in this process."""

from __future__ import annotations

import csv
import html
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from taskeval.results import OVERALL, Row
from taskeval.store import Cell, ResultsStore
from taskeval.tasks import TASKS as TASK_REGISTRY
from taskeval.tasks import Metric, Task, TaskSpec, get_task, register_task

SPEC = TaskSpec(
    name="counting", short="cnt", labels=None,
    metrics=(Metric("mae", higher_is_better=False, percent=False, header="MAE", decimals=2,
                    definition="mean absolute error of the per-image object count"),
             Metric("exact", header="exact", definition="share of images counted exactly")),
    headline=("mae", "exact"), radar=("mae",), paired=("mae", "exact"), n_boot=400,
    caption="Object counting per test image: MAE of the count (lower is better), share counted exactly.",
    summary="count MAE and exact share")
METHODS = ("ir", "vis", "avg", "best")
SEEDS = (0, 1)
N_IMAGES = 40


def count_errors(method: str, seed: int) -> np.ndarray:
    """(N_IMAGES,) absolute count errors: best < vis < avg < ir on average, best clearly better than vis."""
    rng = np.random.default_rng([METHODS.index(method), seed])
    rate = {"ir": 2.0, "vis": 1.0, "avg": 1.5, "best": 0.3}[method]
    return rng.poisson(rate, N_IMAGES).astype(np.float64)


class CountingEvaluation:
    """Per-image absolute count errors of one cell (``per_image.csv``: id, error)."""

    def __init__(self, cell_dir):
        with open(Path(cell_dir) / "per_image.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.ids = [r["id"] for r in rows]
        self._err = np.array([float(r["error"]) for r in rows])

    def scores(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        e = self._err[idx]
        return {"mae": e.mean(axis=-1), "exact": (e == 0).mean(axis=-1)}

    def same_images(self, other: CountingEvaluation) -> None:
        assert sorted(self.ids) == sorted(other.ids)
        pos = {s: k for k, s in enumerate(other.ids)}
        other._err = other._err[[pos[s] for s in self.ids]]
        other.ids = list(self.ids)


class CountingTask(Task):
    spec = SPEC

    def evaluation(self, cell_dir) -> CountingEvaluation:
        return CountingEvaluation(cell_dir)


def make_counting_run(root: Path, with_tasks_json: bool) -> Path:
    """Counting cells (4 methods x 2 seeds) and quality cells (3 metrics), by hand, in the results store."""
    run = root / "run"
    store = ResultsStore(run)
    ids = [f"img{k:03d}" for k in range(N_IMAGES)]
    for m in METHODS:
        for seed in SEEDS:
            cell = Cell(m, "counting", "synth", "count-1", seed)
            err = count_errors(m, seed)
            order = listing_order(m, seed)
            lines = ["id,error"] + [f"{ids[k]},{err[k]}" for k in order]
            (store.cell_dir(cell) / "per_image.csv").write_text("\n".join(lines) + "\n")
            store.finish(cell, [Row(m, "counting", "synth", "count-1", seed, "mae", OVERALL,
                                    float(err.mean())),
                                Row(m, "counting", "synth", "count-1", seed, "exact", OVERALL,
                                    float((err == 0).mean()))])
        k = METHODS.index(m)
        quality = {"EN": 6 + k / 4, "AG": 3 - k / 4, "VIF": 0.5 + k / 8}
        store.finish(Cell(m, "quality", "synth", "-", None),
                     [Row(m, "quality", "synth", "-", None, k, OVERALL, v) for k, v in quality.items()])
    (run / "config.yaml").write_text("name: toy\nmethods: [ir, vis, avg, best]\n")
    if with_tasks_json:
        quality_spec = get_task("quality").run_spec({"metrics": ["EN", "AG", "VIF"]})
        specs = {"counting": SPEC.to_dict(), "quality": quality_spec.to_dict()}
        (run / "tasks.json").write_text(json.dumps(specs))
    return run


def listing_order(method: str, seed: int) -> np.ndarray:
    """The order a cell lists its images in (each cell its own: comparisons must align them by id)."""
    return np.random.default_rng([seed, METHODS.index(method), 7]).permutation(N_IMAGES)


def mean_mae(method: str) -> float:
    return float(np.mean([count_errors(method, s).mean() for s in SEEDS]))


@pytest.fixture
def registered():
    register_task(CountingTask)
    yield get_task("counting")
    TASK_REGISTRY.unregister("counting")


def check_reporting(run: Path, order: list[str]) -> str:
    """Tables, radar chart and report of a counting run whose tasks come in ``order``; returns the page."""
    from taskeval.reporting.charts import radar_data
    from taskeval.reporting.report import render_report
    from taskeval.reporting.run import RunData
    from taskeval.reporting.tables import run_tables

    data = RunData.open(run)
    assert data.tasks == order and data.spec("counting") == SPEC
    maes = {m: mean_mae(m) for m in METHODS}
    best, second = sorted(maes, key=maes.get)[:2]
    assert best == "best"
    tables = dict(run_tables(data))
    assert list(tables) == ["summary", *order]
    t = tables["counting"]
    assert [c.header for c in t.columns] == ["MAE↓", "exact"]
    assert t.ranks(0)[best] == 1 and t.ranks(0)[second] == 2  # the LOWEST error is bold
    sd = np.std([count_errors("ir", s).mean() for s in SEEDS], ddof=1)
    assert t.value_text("ir", 0) == f"{maes['ir']:.2f} ± {sd:.2f}"
    assert SPEC.caption in t.caption and "over 2 training seeds" in t.caption
    s = tables["summary"]
    headers = {"counting": ["MAE↓", "exact"], "quality": ["EN↑", "VIF↑", "AG↑"]}  # the specs' headlines
    assert [c.header for c in s.columns] == [h for task in order for h in headers[task]]
    assert s.ranks(0)[best] == 1
    assert "synth counting (protocol count-1, mean ± sd over 2 seeds): count MAE" in s.caption
    radar = radar_data(data)
    axes = {"counting": [("counting", "mae")], "quality": [("quality", m) for m in ("EN", "AG", "VIF")]}
    assert radar.axes == [a for task in order for a in axes[task]]
    j = radar.axes.index(("counting", "mae"))
    assert radar.higher_is_better[j] is False
    worst = max(maes, key=maes.get)
    assert radar.radius[radar.methods.index(best), j] == 1.0
    assert radar.radius[radar.methods.index(worst), j] == 0.2
    ranked = radar_data(data, normalise="rank")
    better = [sorted(maes.values()).index(maes[m]) for m in radar.methods]  # methods with a lower MAE
    np.testing.assert_allclose(ranked.radius[:, j], [1 - b / 4 for b in better])
    page = html.unescape(render_report(run).read_text())
    assert re.search(rf'<td>best</td><td class="best">{maes["best"]:.2f} ± [\d.]+</td>', page)
    assert re.findall(r'<figure id="fig-(\w+)">', page) == ["radar"]
    assert "<h3>Task counting</h3>" in page and "mean absolute error of the per-image object count" in page
    return page


def test_toy_task_from_tasks_json_without_the_task_in_this_process(tmp_path, caplog):
    with pytest.raises(Exception, match="unknown task 'counting'"):
        get_task("counting")
    run = make_counting_run(tmp_path, with_tasks_json=True)
    with caplog.at_level(logging.WARNING):
        page = check_reporting(run, ["counting", "quality"])  # the order of tasks.json
    # no per-image scores without the task's code: no comparison, and the log says why
    assert "no paired comparison for counting" in caplog.text and "not registered" in caplog.text
    assert "vs vis: Δmae" not in page


def test_toy_task_registered_here_compares_in_its_direction(tmp_path, registered):
    from taskeval.stats import compare_to_reference

    run = make_counting_run(tmp_path, with_tasks_json=False)
    page = check_reporting(run, ["quality", "counting"])  # the registry's: built-ins first
    # the best single-modality row is the one with the LOWER error, and p counts replicates where A >= B
    comps = {c.method_a: c for c in compare_to_reference(run, "counting", n_boot=400, seed=3)}
    assert set(comps) == {"ir", "avg", "best"} and comps["best"].method_b == "vis"
    best = comps["best"]
    expected = np.mean([count_errors("best", s).mean() - count_errors("vis", s).mean() for s in SEEDS])
    assert best.mean_estimate == pytest.approx(expected) and best.high < 0 and best.p_value == 0.0
    assert comps["ir"].low > 0 and comps["ir"].p_value == 1.0
    # paired for real: each seed's replicates equal a direct computation on the same draws
    from taskeval.stats import bootstrap_indices

    idx = listing_order("vis", 0)[bootstrap_indices(N_IMAGES, 400, 3)]  # draws index the first cell scored
    direct = count_errors("best", 0)[idx].mean(1) - count_errors("vis", 0)[idx].mean(1)
    np.testing.assert_allclose(best.per_seed[0].replicates, direct, atol=1e-12)
    # the report shows it in metric units with the metric's decimals, and the saved record keeps it
    assert re.search(rf"<li>best vs vis: Δmae {expected:+.2f} \[-[\d.]+, -[\d.]+\], p = 0\.000 \(2 seeds",
                     page)
    saved = json.loads((run / "stats" / "counting_vs_reference.json").read_text())
    assert saved[0]["metric"] == "mae" and saved[0]["comparisons"][-1]["higher_is_better"] is False
