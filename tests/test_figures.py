"""Figures of a benchmark run directory, on a tiny hand-made run that follows the run-directory contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.container import BarContainer

from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.imageio import read_rgb, write_png
from taskeval.results import OVERALL, Row
from taskeval.rundir import atomic_write_json, provenance
from taskeval.store import Cell, ResultsStore
from taskeval.tasks import get_task

METHODS = ("ir", "vis", "avg", "best")
TASKS = ("detection", "segmentation", "quality")
DET_SEEDS = (0, 1)
NOTE = "weights trained by taskeval (fusion loss)"
PROTOCOL = {"detection": "quick-aaaaaa", "segmentation": "quick-bbbbbb"}
# per-class AP50 of seed 0 (seed s adds 0.1 * s); chosen by hand
AP50 = {"ir": (0.8, 0.6, 0.1, 0.2), "vis": (0.2, 0.5, 0.7, 0.6), "avg": (0.7, 0.7, 0.6, 0.5),
        "best": (0.9, 0.8, 0.8, 0.7)}
QUALITY = {"ir": {"EN": 6.0, "VIF": 0.5, "AG": 2.0}, "vis": {"EN": 7.0, "VIF": 0.7, "AG": 4.0},
           "avg": {"EN": 6.5, "VIF": 0.9, "AG": 3.0}, "best": {"EN": 7.5, "VIF": 0.8, "AG": 5.0}}


def hits(ids: list[str]) -> dict[str, set[str]]:
    """Which test images each method gets right: all agree on ids[0]; ids[2] splits them 2:2; ids[1] 1:3."""
    return {"ir": {ids[0]}, "vis": {ids[0], ids[1]}, "avg": set(ids), "best": set(ids)}


def confmat(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(gt.ravel() * n + pred.ravel(), minlength=n * n).reshape(n, n).astype(np.int64)


def make_fake_run(root: Path, tasks: tuple[str, ...] = TASKS, names: dict | None = None,
                  data: Path | None = None) -> Path:
    """A finished run in the results store: 3 synthetic test pairs, methods ir/vis/avg/best, the given tasks.

    Args:
        names: the name each of ir/vis/avg/best is written under (None: left out; default: itself).
        data: a synthetic dataset folder to reuse (default: generated in ``root / "data"``).
    """
    run = root / "run"
    if data is None:
        data = root / "data"
        generate(data, SynthConfig(n_train=4, n_test=3, height=64, width=80), progress=False)
    card_path = data / "card.yaml"
    run.mkdir()
    card = load_card(card_path)
    ds = PairedDataset(card, "test")
    ids = ds.ids
    name = {m: m for m in METHODS} | (names or {})
    listed = [{"name": name[m], "weights": "train"} if m == "avg" else name[m] for m in METHODS if name[m]]
    config = {"name": "fake", "methods": listed, "seeds": list(DET_SEEDS)}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    atomic_write_json(run / "provenance.json", provenance(config, DET_SEEDS))
    atomic_write_json(run / "dataset.json", {"card": str(card_path), "root": str(data), "test_split": "test"})
    fused = {"ir": data / "test" / "ir", "vis": data / "test" / "vi", "avg": run / "fused" / "avg" / "test",
             "best": run / "fused" / "best" / "test"}
    for i, sid in enumerate(ids):
        ir, vis = ds.read_pair(i)
        write_png(fused["avg"] / f"{sid}.png", np.rint((vis + ir[..., None]) / 2 * 255).astype(np.uint8))
        write_png(fused["best"] / f"{sid}.png", np.rint(vis[..., ::-1] * 255).astype(np.uint8))
    from taskeval.metrics.detection import dataset_ground_truth

    gt = dataset_ground_truth(ds)
    right = hits(ids)
    store = ResultsStore(run)
    classes = list(card.det_classes)
    for m in METHODS:
        if name[m] is None:
            continue
        note = NOTE if m == "avg" else ""
        meta = {"seconds": 1.0, "fused_test_dir": str(fused[m]), "note": note}
        for seed in DET_SEEDS if "detection" in tasks else ():
            cell = Cell(name[m], "detection", "synth", PROTOCOL["detection"], seed)
            d = store.cell_dir(cell)
            dets = []
            for a in gt["annotations"]:
                sid = next(s for s, k in gt["taskeval"]["ids"].items() if k == a["image_id"])
                if sid in right[m]:
                    dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                                 "bbox": a["bbox"], "score": 0.9})
            for k in gt["taskeval"]["ids"].values():  # a low-score false positive on every image
                dets.append({"image_id": k, "category_id": 1, "bbox": [1.0, 1.0, 10.0, 10.0], "score": 0.1})
            (d / "gt.json").write_text(json.dumps(gt))
            (d / "predictions.json").write_text(json.dumps(dets))
            ap = [v + 0.1 * seed for v in AP50[m]]
            rows = [Row(name[m], "detection", "synth", cell.protocol, seed, "AP50", c, v, note)
                    for c, v in zip(classes, ap)]
            rows.append(Row(name[m], "detection", "synth", cell.protocol, seed, "mAP50", OVERALL,
                            float(np.mean(ap)), note))
            store.finish(cell, rows, meta)
        if "segmentation" in tasks:
            segmentation_cell(store, name[m], right[m], ds, note, meta)
        if "quality" in tasks:
            cell = Cell(name[m], "quality", "synth", "-", None)
            store.finish(cell, [Row(name[m], "quality", "synth", "-", None, k, OVERALL, v, note)
                                for k, v in QUALITY[m].items()], meta)
    store.merge()
    return run


def segmentation_cell(store: ResultsStore, method: str, right: set[str], ds: PairedDataset, note: str,
                      meta: dict) -> None:
    """A segmentation cell predicting the ground truth on the ``right`` images, background elsewhere."""
    card, ids = ds.card, ds.ids
    cell = Cell(method, "segmentation", "synth", PROTOCOL["segmentation"], 0)
    d = store.cell_dir(cell)
    n = len(card.seg_classes)
    cms = []
    for i, sid in enumerate(ids):
        mask = ds.mask(i)
        pred = mask if sid in right else np.zeros_like(mask)
        write_png(d / "pred" / f"{sid}.png", pred.astype(np.uint8))
        cms.append(confmat(mask, pred, n))
    np.savez_compressed(d / "per_image_confmat.npz", ids=np.array(ids), confmat=np.stack(cms))
    tot = np.sum(cms, axis=0).astype(np.float64)
    tp = np.diag(tot)
    iou = tp / (tot.sum(0) + tot.sum(1) - tp)
    rows = [Row(method, "segmentation", "synth", cell.protocol, 0, "IoU", c, v, note)
            for c, v in zip(card.seg_classes, iou)]
    rows += [Row(method, "segmentation", "synth", cell.protocol, 0, "mIoU", OVERALL, float(np.mean(iou)),
                 note),
             Row(method, "segmentation", "synth", cell.protocol, 0, "mAcc", OVERALL,
                 float(np.mean(tp / tot.sum(1))), note)]
    store.finish(cell, rows, meta)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("figures"))


@pytest.fixture(scope="module")
def run_data(fake_run):
    from taskeval.reporting.run import RunData

    return RunData.open(fake_run)


def panel_titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def boxes_in(ax, gid: str = "pred") -> list:
    return [p for p in ax.patches if p.get_gid() == gid]


# ------------------------------------------------------------------------------------------ tests
def test_run_data_orders_methods_as_configured(run_data):
    assert run_data.method_order == ["ir", "vis", "avg", "best"]
    cells = run_data.task_cells("detection")
    assert list(cells) == ["ir", "vis", "avg", "best"]
    assert {c["seed"] for c in cells.values()} == {0}  # lowest seed by default
    assert {c["seed"] for c in run_data.task_cells("detection", seed=1).values()} == {1}


def test_default_protocol_prefers_retrained_over_fixed_screening():
    from taskeval.reporting.run import default_protocol

    assert default_protocol(["fixed:ref"] * 5 + ["quick-1"] * 2 + ["paper-2"] * 3) == "paper-2"
    assert default_protocol(["b", "a"]) == "a"


def test_detection_scenes_where_recall_disagrees_most(run_data):
    from taskeval.reporting.grids import load_detections, pick_detection_scenes

    ids = run_data.dataset().ids
    dets = {m: load_detections(c["dir"]) for m, c in run_data.task_cells("detection").items()}
    # recall per method: ids[0] (1,1,1,1) std 0; ids[1] (0,1,1,1) std 0.43; ids[2] (0,0,1,1) std 0.5
    assert pick_detection_scenes(dets, ids, 3, score_threshold=0.25) == [ids[2], ids[1], ids[0]]
    assert pick_detection_scenes(dets, ids, 2) == [ids[2], ids[1]]


def test_segmentation_scenes_where_miou_disagrees_most(run_data):
    from taskeval.reporting.grids import per_image_miou, pick_segmentation_scenes
    from taskeval.stats import load_confmats

    ds = run_data.dataset()
    right = hits(ds.ids)
    n = len(ds.card.seg_classes)
    expected_spread = {}
    for i, sid in enumerate(ds.ids):  # independent reference: IoU straight from the masks
        mask = ds.mask(i)
        mious = []
        for m in METHODS:
            pred = mask if sid in right[m] else np.zeros_like(mask)
            ious = [((mask == c) & (pred == c)).sum() / ((mask == c) | (pred == c)).sum()
                    for c in range(n) if ((mask == c) | (pred == c)).any()]
            mious.append(np.mean(ious))
        expected_spread[sid] = np.std(mious)
    expected = sorted(ds.ids, key=lambda s: -expected_spread[s])
    cells = run_data.task_cells("segmentation")
    got = pick_segmentation_scenes({m: per_image_miou(*load_confmats(c["dir"])) for m, c in cells.items()},
                                   ds.ids, 3)
    assert got == expected
    assert expected_spread[got[-1]] == 0.0


def test_detection_grid_layout_boxes_threshold_and_inset(run_data):
    from taskeval.reporting.grids import detection_grid

    ds = run_data.dataset()
    sid = ds.ids[1]
    region = (10, 5, 30, 20)
    fig = detection_grid(run_data, scenes=[sid, ds.ids[0]], score_threshold=0.25, insets={sid: region},
                         draw_gt=True)
    # IR and visible, then the fusion methods (ir / vis boxes go on the IR / visible columns)
    assert panel_titles(fig)[:4] == ["IR", "Visible", "avg", "best"]
    grid = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    assert len(grid) == 2 * 4
    n_gt = len(ds.boxes(1))
    ir_ax, vis_ax, avg_ax, best_ax = grid[:4]
    # on ids[1] the ir detector found nothing, vis/avg/best found every object; the 0.1 boxes are not drawn
    assert len(boxes_in(ir_ax)) == 0
    assert len(boxes_in(vis_ax)) == n_gt and len(boxes_in(avg_ax)) == n_gt
    assert len(boxes_in(vis_ax, "gt")) == n_gt and len(boxes_in(avg_ax, "gt")) == 0
    tags = [t.get_text() for t in avg_ax.texts]
    names = ds.card.det_classes
    assert sorted(tags) == sorted(f"{names[int(b[0])]} 0.90" for b in ds.boxes(1))
    # method panels show the method's fused image
    fused = read_rgb(Path(run_data.task_cells("detection")["best"]["fused_test_dir"]) / f"{sid}.png")
    np.testing.assert_allclose(best_ax.images[0].get_array(), fused)
    # the inset magnifies the region, in every panel of its row only
    insets = [c for c in avg_ax.child_axes]
    assert len(insets) == 1
    assert insets[0].get_xlim() == (10, 40) and insets[0].get_ylim() == (25, 5)
    assert all(len(ax.child_axes) == 1 for ax in grid[:4]) and all(not ax.child_axes for ax in grid[4:])
    assert grid[0].get_ylabel() == sid and grid[4].get_ylabel() == ds.ids[0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [*names, "ground truth"]


def test_detection_grid_threshold_keeps_low_score_boxes_when_asked(run_data):
    from taskeval.reporting.grids import detection_grid

    ds = run_data.dataset()
    fig = detection_grid(run_data, scenes=[ds.ids[1]], score_threshold=0.05)
    grid = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    assert len(boxes_in(grid[0])) == 1  # the ir detector's 0.1 false positive
    assert len(boxes_in(grid[2])) == len(ds.boxes(1)) + 1


def test_segmentation_grid_palette_and_legend(run_data):
    from taskeval.reporting.grids import segmentation_grid

    ds = run_data.dataset()
    card = ds.card
    sid = ds.ids[1]
    fig = segmentation_grid(run_data, scenes=[sid])
    assert panel_titles(fig) == ["IR", "Visible", "Ground truth", "ir", "vis", "avg", "best"]
    grid = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    mask = ds.mask(1)
    palette = np.asarray(card.palette, np.uint8)
    np.testing.assert_array_equal(grid[2].images[0].get_array(), palette[mask])
    background = palette[np.zeros_like(mask)]
    np.testing.assert_array_equal(grid[3].images[0].get_array(), background)  # the ir model missed everything
    np.testing.assert_array_equal(grid[4].images[0].get_array(), palette[mask])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(card.seg_classes)


def test_colourise_marks_ignored_pixels_white():
    from taskeval.reporting.grids import colourise

    out = colourise(np.array([[0, 1, 255, 7]]), [(1, 2, 3), (4, 5, 6)], 255)
    np.testing.assert_array_equal(out[0], [[1, 2, 3], [4, 5, 6], [255, 255, 255], [255, 255, 255]])


def test_per_class_bars_mean_and_std_over_seeds(run_data):
    from taskeval.reporting.charts import per_class_bars

    fig = per_class_bars(run_data, "detection")
    ax = fig.axes[0]
    classes = list(run_data.dataset().card.det_classes)
    assert [t.get_text() for t in ax.get_xticklabels()] == [*classes, "mean (mAP50)"]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    for m in METHODS:
        # seeds 0 and 1 give v and v + 0.1: mean v + 0.05, sample std 0.1 / sqrt(2)
        heights = [p.get_height() for p in bars[m].patches]
        expected = [100 * (v + 0.05) for v in AP50[m]] + [100 * (np.mean(AP50[m]) + 0.05)]
        np.testing.assert_allclose(heights, expected, rtol=1e-9)
        err = bars[m].errorbar.lines[2][0].get_segments()
        np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in err], 2 * 100 * 0.1 / np.sqrt(2), rtol=1e-9)


def test_per_class_bars_segmentation_single_seed_has_no_error_bars(run_data):
    from taskeval.reporting.charts import per_class_bars

    ax = per_class_bars(run_data, "segmentation").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == len(METHODS) and all(c.errorbar is None for c in bars)


def test_radar_minmax_and_rank_normalisation(run_data):
    from taskeval.reporting.charts import radar_chart, radar_data

    data = radar_data(run_data)
    assert [m for _, m in data.axes] == ["mAP50", "mIoU", "mAcc", "EN", "AG", "VIF"]
    assert data.methods == list(METHODS)
    j = data.axes.index(("quality", "EN"))
    en = np.array([QUALITY[m]["EN"] for m in METHODS])  # 6, 7, 6.5, 7.5
    np.testing.assert_allclose(data.raw[:, j], en)
    np.testing.assert_allclose(data.radius[:, j], [0.2, 0.2 + 0.8 * 2 / 3, 0.2 + 0.8 / 3, 1.0])
    j = data.axes.index(("detection", "mAP50"))
    np.testing.assert_allclose(data.raw[:, j], [np.mean(AP50[m]) + 0.05 for m in METHODS])
    ranked = radar_data(run_data, normalise="rank")
    j = ranked.axes.index(("quality", "VIF"))  # VIF 0.5, 0.7, 0.9, 0.8 -> ranks 4, 3, 1, 2
    np.testing.assert_allclose(ranked.radius[:, j], [0.25, 0.5, 1.0, 0.75])
    fig = radar_chart(run_data)
    lines = [ln for ln in fig.axes[0].get_lines() if (ln.get_gid() or "").startswith("radar:")]
    assert [ln.get_label() for ln in lines] == list(METHODS)
    assert fig.axes[0].get_xticklabels()[0].get_text().startswith("mAP50\n")


def test_radar_flips_lower_is_better_and_leaves_gaps(run_data):
    from taskeval.reporting.charts import radar_data
    from taskeval.reporting.run import RunData

    extra = [Row(m, "quality", "synth", "-", None, "Nabf", OVERALL, v)
             for m, v in (("avg", 0.1), ("best", 0.3))]
    quality = get_task("quality").run_spec({"metrics": [*QUALITY["ir"], "Nabf"]})
    run = RunData(run_data.path, run_data.cells, run_data.rows + extra, run_data.method_order,
                  {**run_data.specs, "quality": quality})
    data = radar_data(run, normalise="minmax")
    j = data.axes.index(("quality", "Nabf"))
    assert np.isnan(data.radius[0, j]) and np.isnan(data.radius[1, j])  # ir and vis have no Nabf
    np.testing.assert_allclose(data.radius[2:, j], [1.0, 0.2])  # lower Nabf is better


def test_save_and_render_all(fake_run, tmp_path):
    from PIL import Image

    from taskeval.reporting.figures import render_all

    figs = render_all(fake_run, tmp_path / "figs", n_scenes=2, insets=None)
    assert [f.name for f in figs] == ["detection_grid", "segmentation_grid", "detection_per_class",
                                      "segmentation_per_class", "radar"]
    for f in figs:
        assert f.pdf.read_bytes()[:5] == b"%PDF-"
        with Image.open(f.png) as im:
            arr = np.asarray(im.convert("L"), np.float64)
        assert arr.shape[0] > 200 and arr.shape[1] > 400 and arr.std() > 10  # drawn, not blank
    assert not [p for p in (tmp_path / "figs").iterdir() if p.name.startswith(".")]  # no temporary files
