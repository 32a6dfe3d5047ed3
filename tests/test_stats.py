"""Statistics: seeds, bootstrap intervals (segmentation, detection) and paired comparisons, checked against
loop implementations, torch segmentation scores and pycocotools run directly."""

import contextlib
import io
import json
import statistics

import numpy as np
import pytest
import torch

from taskeval import stats
from taskeval.errors import DataError
from taskeval.metrics.segmentation import seg_scores_from_confmat
from taskeval.results import Row
from taskeval.store import Cell, ResultsStore

SEG_OVERALL = ("mIoU", "mIoU_nobg", "mAcc", "pixel_acc")  # the overall scores of a confusion matrix


# ------------------------------------------------------------------------------------------------- seeds
def test_seed_summary_mean_sample_std_nan_and_duplicates():
    rows = [Row("a", "segmentation", "d", "p", s, "mIoU", "", v) for s, v in ((0, 0.5), (1, 0.6), (2, 0.7))]
    rows += [Row("a", "segmentation", "d", "p", s, "IoU", "car", v) for s, v in ((0, float("nan")), (1, 0.2), (2, 0.4))]
    rows += [Row("a", "quality", "d", "-", None, "EN", "", 7.0)]
    out = stats.seed_summary(rows)
    m = out[("a", "segmentation", "d", "p", "mIoU", "")]
    assert m.mean == pytest.approx(statistics.mean([0.5, 0.6, 0.7]))
    assert m.std == pytest.approx(statistics.stdev([0.5, 0.6, 0.7])) and m.n == 3 and m.seeds == (0, 1, 2)
    car = out[("a", "segmentation", "d", "p", "IoU", "car")]
    assert car.n == 2 and car.mean == pytest.approx(0.3) and car.std == pytest.approx(statistics.stdev([0.2, 0.4]))
    en = out[("a", "quality", "d", "-", "EN", "")]
    assert en.mean == 7.0 and np.isnan(en.std) and en.seeds == (None,)
    with pytest.raises(DataError, match="seed 0"):
        stats.seed_summary(rows[:1] * 2)


# ------------------------------------------------------------------------------------------ segmentation
def synthetic_confmats(n, classes=5, quality=0.8, seed=0):
    """(n, C, C) per-image counts: each image holds a few classes; a fraction ``quality`` of pixels is right."""
    rng = np.random.default_rng(seed)
    cm = np.zeros((n, classes, classes), np.int64)
    for i in range(n):
        present = rng.choice(classes, size=rng.integers(2, classes + 1), replace=False)
        for c in present:
            pix = int(rng.integers(50, 2000))
            right = int(rng.binomial(pix, quality))
            cm[i, c, c] += right
            cm[i, c] += np.bincount(rng.integers(0, classes, pix - right), minlength=classes)
    return cm


def test_seg_metrics_match_torch_definitions():
    cm = synthetic_confmats(30)
    cm[:, 3, :] = 0
    cm[:, :, 3] = 0  # a class absent from ground truth and prediction: NaN IoU, left out of the means
    ours = stats.seg_metrics(cm.sum(0))
    ref = seg_scores_from_confmat(torch.from_numpy(cm.sum(0)))
    np.testing.assert_allclose(ours["IoU"], ref["IoU"].numpy(), rtol=1e-13, equal_nan=True)
    for a, b in (("mIoU", "mIoU"), ("mIoU_nobg", "mIoU_nobg"), ("mAcc", "mAcc"), ("pixel_acc", "pixel_acc")):
        assert float(ours[a]) == pytest.approx(float(ref[b]), rel=1e-13)


def test_seg_bootstrap_equals_loop_with_same_draws():
    cm = synthetic_confmats(40, seed=1)
    n_boot, seed = 300, 7
    idx = np.random.default_rng(seed).integers(0, 40, size=(n_boot, 40))
    assert np.array_equal(stats.bootstrap_indices(40, n_boot, seed), idx)
    loop = {m: np.array([stats.seg_metrics(cm[row].sum(0))[m] for row in idx]) for m in SEG_OVERALL}
    summed = np.stack([cm[row].sum(0) for row in idx])
    assert np.array_equal(stats.seg_replicate_confmats(cm, idx), summed)
    got = stats.bootstrap_segmentation(cm, n_boot, seed)
    for m in SEG_OVERALL:
        # Exact on purpose: integer-valued sums, then the same elementwise numpy operations row by row.
        assert np.array_equal(got[m].replicates, loop[m])
        lo, hi = np.percentile(loop[m], [2.5, 97.5])
        assert (got[m].low, got[m].high) == (lo, hi)


def test_seg_bootstrap_contains_estimate_and_narrows():
    small = stats.bootstrap_segmentation(synthetic_confmats(30, seed=2), 1000, 0)["mIoU"]
    large = stats.bootstrap_segmentation(synthetic_confmats(480, seed=2), 1000, 0)["mIoU"]
    for ci in (small, large):
        assert ci.low < ci.estimate < ci.high
    assert (large.high - large.low) < 0.5 * (small.high - small.low)  # ~1/4 expected for 16x the images
    again = stats.bootstrap_segmentation(synthetic_confmats(30, seed=2), 1000, 0)["mIoU"]
    assert np.array_equal(again.replicates, small.replicates)
    other = stats.bootstrap_segmentation(synthetic_confmats(30, seed=2), 1000, 1)["mIoU"]
    assert not np.array_equal(other.replicates, small.replicates)


# --------------------------------------------------------------------------------------------- detection
def tiny_coco(seed=0, n_img=6, noise=6.0, crowd=True):
    """A few images, two classes, a crowd box, detections with scores rounded to 1 decimal (many ties, also
    within an image) and one image without anything."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_img + 1):
        images.append({"id": 10 * i, "file_name": f"{i}.png", "height": 200, "width": 300})
        if i == n_img:
            continue
        for _ in range(int(rng.integers(1, 5))):
            x, y, w, h = *rng.uniform(0, 200, 2), *rng.uniform(10, 60, 2)
            c = int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": 10 * i, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, noise, 4)
                dets.append({"image_id": 10 * i, "category_id": c, "score": round(float(rng.uniform(0.3, 1)), 1),
                             "bbox": [x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])]})
        for _ in range(3):
            dets.append({"image_id": 10 * i, "category_id": int(rng.integers(1, 3)),
                         "score": round(float(rng.uniform(0, 0.6)), 1),
                         "bbox": [*rng.uniform(0, 250, 2).tolist(), 20.0, 20.0]})
    if crowd:
        anns.append({"id": len(anns) + 1, "image_id": 10, "category_id": 1, "bbox": [200, 150, 80, 40],
                     "area": 3200.0, "iscrowd": 1})
        dets.append({"image_id": 10, "category_id": 1, "score": 0.5, "bbox": [205, 152, 30, 30]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]}
    return gt, dets


def pycocotools_map(gt, dets):
    """(mAP50, mAP50_95) of pycocotools with its default parameters."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[1], ev.stats[0]


def test_detection_full_replicate_equals_pycocotools():
    """Exact on purpose, here and below: detection_replicates repeats COCO's accumulation (the same numpy
    operations on the same values, in the same process), and promises pycocotools' numbers to the last bit."""
    gt, dets = tiny_coco()
    ev = stats.evaluate_images(gt, dets)
    full = stats.detection_replicates(ev, np.arange(ev.n_images)[None])
    assert (full["mAP50"][0], full["mAP50_95"][0]) == pycocotools_map(gt, dets)


def test_detection_replicates_with_duplicates_equal_renumbered_pycocotools():
    gt, dets = tiny_coco(seed=3)
    ev = stats.evaluate_images(gt, dets)
    idx = np.array([[0, 0, 0, 2, 2, 5], [1, 1, 1, 1, 1, 1], [4, 3, 0, 0, 3, 1]])
    got = stats.detection_replicates(ev, idx)
    for b, row in enumerate(idx):
        rgt, rdets = stats.resample_coco(gt, dets, row)
        assert [im["id"] for im in rgt["images"]] == list(range(1, 7))
        src = sorted(gt["images"], key=lambda im: im["id"])
        n_anns = sum(sum(a["image_id"] == src[p]["id"] for a in gt["annotations"]) for p in row)
        assert len(rgt["annotations"]) == n_anns
        assert len({a["id"] for a in rgt["annotations"]}) == n_anns
        assert (got["mAP50"][b], got["mAP50_95"][b]) == pycocotools_map(rgt, rdets)


def test_detection_bootstrap_engines_agree_and_ci():
    gt, dets = tiny_coco(seed=5)
    fast = stats.bootstrap_detection(gt, dets, n_boot=12, seed=3)
    slow = stats.bootstrap_detection(gt, dets, n_boot=12, seed=3, engine="rescore", backend="pycocotools")
    assert list(fast) == list(slow) == ["mAP50", "mAP50_95"]
    for m in fast:
        np.testing.assert_array_equal(fast[m].replicates, slow[m].replicates)
        assert fast[m].estimate == slow[m].estimate
        assert fast[m].low <= fast[m].estimate <= fast[m].high


def test_detection_without_detections_scores_zero():
    gt, _ = tiny_coco(crowd=False)
    ev = stats.evaluate_images(gt, [])
    full = stats.detection_replicates(ev, np.arange(ev.n_images)[None])
    assert full["mAP50"][0] == 0.0 and full["mAP50_95"][0] == 0.0
    only_empty = stats.detection_replicates(ev, np.full((1, ev.n_images), ev.n_images - 1))
    assert np.isnan(only_empty["mAP50"][0])  # no ground truth drawn: COCO prints -1


# ---------------------------------------------------------------------------------------------- paired
def test_paired_identical_and_clearly_better_segmentation():
    cm = synthetic_confmats(60, quality=0.6, seed=4)
    same = stats.paired_segmentation(cm, cm.copy(), n_boot=500, seed=0)
    assert same.estimate == 0 and same.mean_diff == 0 and (same.low, same.high) == (0, 0)
    assert same.p_value == 1.0  # p = share of replicates with A <= B
    better = synthetic_confmats(60, quality=0.8, seed=4)  # same images and classes, more pixels right
    c = stats.paired_segmentation(better, cm, n_boot=500, seed=0, names=("good", "base"))
    assert c.low > 0 and c.p_value == 0.0 and c.method_a == "good"
    rev = stats.paired_segmentation(cm, better, n_boot=500, seed=0)
    np.testing.assert_array_equal(rev.replicates, -c.replicates)  # a - b == -(b - a) in IEEE arithmetic
    assert rev.p_value == 1.0


def test_paired_detection_better_method():
    gt, noisy = tiny_coco(seed=6, n_img=12, noise=12.0, crowd=False)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    c = stats.paired_detection(gt, perfect, noisy, "mAP50_95", n_boot=100, seed=0)
    assert c.estimate == pytest.approx(1.0 - pycocotools_map(gt, noisy)[1])
    assert c.low > 0 and c.p_value == 0.0
    same = stats.paired_detection(gt, noisy, noisy, n_boot=50, seed=0)
    assert same.estimate == 0 and same.p_value == 1.0
    with pytest.raises(DataError, match="same ground truth"):
        stats.paired_detection_evals(stats.evaluate_images(gt, noisy),
                                     stats.evaluate_images(tiny_coco(seed=7, n_img=12)[0], []), n_boot=5)


def _seg_run(tmp_path, rng):
    """A run directory with segmentation cells: ir, vis, fuse (better), 2 seeds; fuse's ids shuffled."""
    store = ResultsStore(tmp_path)
    ids = [f"{k:03d}" for k in range(25)]
    arrays = {}
    for method, quality in (("ir", 0.5), ("vis", 0.6), ("fuse", 0.75)):
        for seed in (0, 1):
            cm = synthetic_confmats(25, quality=quality, seed=10 + seed)
            order = rng.permutation(25) if method == "fuse" else np.arange(25)
            cell = Cell(method, "segmentation", "synth", "quick-x", seed)
            np.savez_compressed(store.cell_dir(cell) / "per_image_confmat.npz", ids=np.array(ids)[order],
                                confmat=cm[order])
            miou = float(stats.seg_metrics(cm.sum(0))["mIoU"])
            store.finish(cell, [Row(method, "segmentation", "synth", "quick-x", seed, "mIoU", "", miou)])
            arrays[method, seed] = cm
    return arrays


def test_compare_to_reference_from_run_dir(tmp_path):
    arrays = _seg_run(tmp_path, np.random.default_rng(0))
    out = stats.compare_to_reference(tmp_path, "segmentation", n_boot=200, seed=1)
    assert [(c.method_a, c.method_b, c.n_seeds) for c in out] == [("ir", "vis", 2), ("fuse", "vis", 2)]
    fuse = out[1]
    for s, per in zip((0, 1), fuse.per_seed):
        direct = stats.paired_segmentation(arrays["fuse", s], arrays["vis", s], n_boot=200, seed=1)
        assert per.seed == s and per.estimate == pytest.approx(direct.estimate, abs=1e-15)
        np.testing.assert_allclose(per.replicates, direct.replicates, atol=1e-15)
    assert fuse.mean_estimate == pytest.approx(np.mean([p.estimate for p in fuse.per_seed]))
    assert fuse.low > 0 and fuse.p_value == 0.0 and out[0].high < 0
    notes = stats.comparison_notes(out)
    assert len(notes) == 3 and notes[2].startswith("fuse vs vis: ΔmIoU +") and "2 seeds" in notes[2]


def test_compare_to_reference_detection_cells(tmp_path):
    from taskeval.metrics.detection import write_json

    store = ResultsStore(tmp_path)
    gt, noisy = tiny_coco(seed=8, n_img=10, noise=10.0, crowd=False)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    for method, dets in (("ir", []), ("vis", noisy), ("fuse", perfect)):
        cell = Cell(method, "detection", "synth", "quick-d", 0)
        write_json(store.cell_dir(cell) / "gt.json", gt)
        write_json(store.cell_dir(cell) / "predictions.json", dets)
        m50 = pycocotools_map(gt, dets)[0] if dets else 0.0
        store.finish(cell, [Row(method, "detection", "synth", "quick-d", 0, "mAP50", "", m50)])
    out = stats.compare_to_reference(tmp_path, "detection", methods=["fuse"], n_boot=50)
    assert len(out) == 1 and out[0].method_b == "vis"
    assert out[0].mean_estimate == pytest.approx(1.0 - pycocotools_map(gt, noisy)[0])
    assert out[0].low > 0
