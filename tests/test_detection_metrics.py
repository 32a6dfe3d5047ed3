"""COCO scoring of the detection track against independent references: plain pycocotools run here on the
written JSON files (every AP number, and precision / recall by brute force from its own matches), hand-
computed APs, and the two backends against each other."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
from collections import Counter

import numpy as np
import pytest

from taskeval.errors import DataError
from taskeval.metrics.detection import (
    available_backends,
    coco_detections,
    coco_ground_truth,
    dataset_ground_truth,
    load_ground_truth,
    load_predictions,
    match_detections,
    score_detections,
    score_predictions,
)

NAMES = ("person", "car", "cone")


def _random_case(seed: int, n_images: int = 40, empty_every: int = 7, dets_per_image: int = 25):
    """Ground truth with some empty images and a class without boxes; noisy predictions near it."""
    rng = np.random.default_rng(seed)
    sizes, boxes, preds = {}, {}, {}
    for k in range(n_images):
        sid = f"img{k:03d}"
        h, w = (int(rng.integers(60, 130)), int(rng.integers(80, 170)))
        sizes[sid] = (h, w)
        n = 0 if k % empty_every == 0 else int(rng.integers(1, 6))
        xy = rng.uniform(0, [w - 10, h - 10], (n, 2))
        wh = rng.uniform(4, 40, (n, 2))
        b = np.c_[rng.integers(0, 2, n), xy, np.minimum(xy + wh, [w, h])]  # never class 2: no ground truth
        boxes[sid] = b.astype(np.float32)
        m = dets_per_image
        x1 = rng.uniform(0, w - 5, m)
        y1 = rng.uniform(0, h - 5, m)
        d = np.c_[x1, y1, x1 + rng.uniform(2, 40, m), y1 + rng.uniform(2, 40, m), rng.random(m),
                  rng.integers(0, 3, m)]
        if n:
            pick = b[rng.integers(0, n, 2 * n)]
            near = np.c_[pick[:, 1:5] + rng.normal(0, 2.5, (2 * n, 4)), rng.random(2 * n), pick[:, 0]]
            d = np.r_[d, near]
        d[:, 4] = np.round(d[:, 4], 2)  # ties in score, as real detectors produce
        preds[sid] = d
    return coco_ground_truth(boxes, sizes, NAMES), preds


def _pycocotools_reference(gt_path, dt_path):
    """Plain pycocotools on the two JSON files: (stats, evaluator). An empty result file (which loadRes
    rejects) is an empty result set, as COCO defines it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        if json.loads(dt_path.read_text()):
            coco_dt = coco_gt.loadRes(str(dt_path))
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": [],
                               "categories": coco_gt.dataset["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, ev


def _reference_pr(ev):
    """Precision / recall at the best mean F1 by brute force from pycocotools' own matches (``evalImgs`` at
    IoU 0.5, area "all"): every distinct score of a detection COCO counts is tried in ascending order and the
    first with the highest mean F1 over classes with ground truth wins. Returns (P, R, conf, {cat: (P, R)})."""
    det = {c: [] for c in ev.params.catIds}  # (score, is true positive) of the counted detections
    n_gt = {c: 0 for c in ev.params.catIds}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10]:
            continue
        n_gt[e["category_id"]] += int((np.asarray(e["gtIgnore"]) == 0).sum())
        for s, m, ig in zip(e["dtScores"], e["dtMatches"][0], e["dtIgnore"][0]):
            if not ig:
                det[e["category_id"]].append((s, m > 0))
    cats = [c for c in sorted(n_gt) if n_gt[c] > 0]
    if not cats:
        return math.nan, math.nan, math.nan, {}
    best, out = -1.0, None
    for thr in sorted({s for c in det for s, _ in det[c]}):
        pr = {}
        for c in cats:
            n = sum(1 for s, _ in det[c] if s >= thr)
            tp = sum(1 for s, t in det[c] if s >= thr and t)
            pr[c] = (tp / n if n else 0.0, tp / n_gt[c])
        f1 = np.mean([2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in pr.values()])
        if f1 > best:
            best = f1
            out = (float(np.mean([p for p, _ in pr.values()])), float(np.mean([r for _, r in pr.values()])),
                   thr, pr)
    return out if out is not None else (0.0, 0.0, math.nan, {c: (0.0, 0.0) for c in cats})


def _check_against_pycocotools(scores, gt, dets, tmp_path, exact: bool):
    """Every number of ``scores`` against plain pycocotools on the written files: equal (``exact``), or to
    1e-15 for faster-coco-eval, whose precision is ``tp / (tp + fp)`` where pycocotools adds
    ``np.spacing(1)`` to the denominator. P, R and the confidence come from the matches, which no
    division touches: equal for both backends."""
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    stats, ev = _pycocotools_reference(tmp_path / "gt.json", tmp_path / "dt.json")
    tol = 0.0 if exact else 1e-15
    np.testing.assert_allclose(scores.stats, stats, rtol=0, atol=tol)
    ref_map = [v if v > -1 else math.nan for v in (stats[1], stats[0])]
    np.testing.assert_allclose([scores.map50, scores.map50_95], ref_map, rtol=0, atol=tol)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    p_ref, r_ref, conf_ref, per_ref = _reference_pr(ev)
    assert sorted(scores.per_class) == sorted(names[c] for c in per_ref)
    for k, cat in enumerate(ev.params.catIds):
        if cat not in per_ref:
            continue
        c = scores.per_class[names[cat]]
        pk = ev.eval["precision"][:, :, k, 0, -1]
        assert abs(c.ap50 - pk[0][pk[0] > -1].mean()) <= tol
        assert abs(c.ap50_95 - pk[pk > -1].mean()) <= tol
        assert (c.precision, c.recall) == per_ref[cat]
    np.testing.assert_array_equal([scores.precision, scores.recall, scores.conf_threshold],
                                  [p_ref, r_ref, conf_ref])  # NaN == NaN here
    return stats


def test_coco_conversion_by_hand():
    boxes = {"a": np.array([[1, 10, 20, 30, 60]], np.float32), "b": np.zeros((0, 5), np.float32)}
    gt = coco_ground_truth(boxes, {"a": (100, 200), "b": (50, 60)}, NAMES)
    assert gt["images"] == [{"id": 1, "file_name": "a.png", "height": 100, "width": 200},
                            {"id": 2, "file_name": "b.png", "height": 50, "width": 60}]
    assert gt["annotations"] == [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10.0, 20.0, 20.0, 40.0],
                                  "area": 800.0, "iscrowd": 0}]
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
    assert gt["taskeval"]["ids"] == {"a": 1, "b": 2}
    dets = coco_detections({"b": np.array([[1, 2, 11, 22, 0.5, 2]])}, gt)
    assert dets == [{"image_id": 2, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_hand_computed_ap():
    # two people, one found exactly (recall 0.5 at precision 1): 101-point AP = 51/101
    boxes = {"a": np.array([[0, 0, 0, 10, 10], [0, 50, 50, 70, 70]], np.float32)}
    gt = coco_ground_truth(boxes, {"a": (100, 100)}, NAMES)
    s, _ = score_predictions({"a": np.array([[0, 0, 10, 10, 0.9, 0]])}, gt, "pycocotools")
    assert s.map50 == pytest.approx(51 / 101, abs=1e-12)
    assert s.per_class["person"].ap50 == pytest.approx(51 / 101, abs=1e-12)
    assert list(s.per_class) == ["person"]  # car and cone have no ground truth: no AP, no rows
    # shifted by 6 px: IoU 40 / 160 = 0.25 -> no match
    s, _ = score_predictions({"a": np.array([[6, 0, 16, 10, 0.9, 0]])}, gt, "pycocotools")
    assert s.map50 == 0.0
    # no predictions at all: AP 0 (pycocotools cannot load an empty list; COCO's answer is 0)
    s, _ = score_predictions({}, gt)
    assert s.map50 == 0.0 and s.recall == 0.0


def test_hand_computed_precision_recall():
    # 3 ground-truth boxes; detections by score: TP, FP, TP, FP. Mean F1 (one class) is highest at
    # the third detection: P = R = 2/3 at confidence 0.7.
    boxes = {"a": np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [0, 40, 0, 50, 10]], np.float32)}
    gt = coco_ground_truth(boxes, {"a": (50, 60)}, NAMES)
    d = np.array([[0, 0, 10, 10, 0.9, 0], [0, 30, 10, 40, 0.8, 0], [20, 0, 30, 10, 0.7, 0],
                  [0, 30, 10, 40, 0.6, 0]])
    s, _ = score_predictions({"a": d}, gt, "pycocotools")
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.conf_threshold == pytest.approx(0.7)
    # COCO: precision 1 up to recall 1/3, then 2/3 up to recall 2/3 -> (34 * 1 + 33 * 2/3) / 101
    assert s.map50 == pytest.approx((34 + 33 * 2 / 3) / 101, abs=1e-12)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("seed", [0, 5])
def test_matches_plain_pycocotools_on_written_json(tmp_path, backend, seed):
    gt, preds = _random_case(seed)
    scores, dets = score_predictions(preds, gt, backend)
    stats = _check_against_pycocotools(scores, gt, dets, tmp_path, exact=backend == "pycocotools")
    assert 0.05 < stats[1] < 0.95 and list(scores.per_class) == ["person", "car"]  # cone: no ground truth


def _edge_cases():
    """(name, ground truth, detections) for the cases COCO treats specially."""
    gt, preds = _random_case(3, n_images=20, empty_every=3)
    dets = coco_detections(preds, gt)
    crowd = copy.deepcopy(gt)
    for a in crowd["annotations"][::4]:  # every fourth box a crowd region: matches to it are ignored
        a["iscrowd"] = 1
    on_crowd = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
                 "score": 0.55} for a in crowd["annotations"] if a["iscrowd"]]
    many = [dict(d, score=(k % 40) / 40) for k, d in enumerate(dets * 15)]  # > 100 per image and class, ties
    return [
        ("no detections of class car", gt, [d for d in dets if d["category_id"] != 2]),
        ("images without ground truth", gt, [d for d in dets if d["image_id"] % 3 == 1]),
        ("crowd boxes", crowd, dets + on_crowd),
        ("no detections at all", gt, []),
        ("no ground truth at all", {**gt, "annotations": []}, dets),
        ("more than 100 detections per image", gt, many),
    ]


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("case", range(6))
def test_edge_cases_match_plain_pycocotools(tmp_path, backend, case):
    name, gt, dets = _edge_cases()[case]
    before = copy.deepcopy((gt, dets))
    scores = score_detections(gt, dets, backend)
    assert (gt, dets) == before, f"{name}: scoring changed its inputs"
    _check_against_pycocotools(scores, gt, dets, tmp_path, exact=backend == "pycocotools")
    if name == "no detections of class car":
        assert scores.per_class["car"].ap50 == 0.0 and scores.per_class["car"].recall == 0.0
    if name == "no detections at all":
        assert scores.map50 == 0.0 and (scores.precision, scores.recall) == (0.0, 0.0)
    if name == "no ground truth at all":
        assert math.isnan(scores.map50) and scores.per_class == {} and scores.n_gt == 0
    if name == "crowd boxes":
        assert scores.n_gt == sum(1 for a in gt["annotations"] if not a["iscrowd"])
    if name == "more than 100 detections per image":
        per_group = Counter((d["image_id"], d["category_id"]) for d in dets)
        assert max(per_group.values()) > 100 and scores.n_det == len(dets)


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collector_state_is_restored(enabled):
    """Scoring pauses Python's cyclic garbage collector and leaves it as it found it, errors included."""
    gt, preds = _random_case(0, n_images=5)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        score_predictions(preds, gt)
        assert gc.isenabled() == enabled
        with pytest.raises(DataError):
            score_detections(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
        with pytest.raises(KeyError):  # a malformed detection fails inside the paused block
            score_detections(gt, [{"image_id": 1, "category_id": 1, "score": 1.0}])
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()


@pytest.mark.parametrize("backend", available_backends())
def test_match_detections_are_pycocotools_matches(backend):
    """True positives and counted detections at IoU 0.5 and 0.75 equal pycocotools' own matches
    (``evalImgs``), crowd regions included; a ground truth cut to one image without ``images`` (as figures
    pass it) works too."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, preds = _random_case(1, n_images=25)
    for a in gt["annotations"][::5]:
        a["iscrowd"] = 1
    dets = coco_detections(preds, gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy({k: gt[k] for k in ("images", "annotations", "categories")})
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
    for t, iou in ((0, 0.5), (5, 0.75)):
        ref_tp, ref_n, ref_gt = ({c: 0 for c in (1, 2, 3)} for _ in range(3))
        for e in ev.evalImgs:
            if e is None or e["aRng"] != [0, 1e10]:
                continue
            counted = ~np.asarray(e["dtIgnore"][t], bool)
            ref_tp[e["category_id"]] += int(((e["dtMatches"][t] > 0) & counted).sum())
            ref_n[e["category_id"]] += int(counted.sum())
            ref_gt[e["category_id"]] += int((np.asarray(e["gtIgnore"]) == 0).sum())
        _, cat, tp, n_gt = match_detections(gt, dets, iou=iou, backend=backend)
        assert n_gt == ref_gt
        for c in (1, 2, 3):
            assert int(tp[cat == c].sum()) == ref_tp[c]
            assert int((cat == c).sum()) == ref_n[c]
    img = gt["annotations"][1]["image_id"]
    sub = {"categories": gt["categories"], "annotations": [a for a in gt["annotations"] if a["image_id"] == img]}
    mine = [d for d in dets if d["image_id"] == img]
    _, cat, tp, _ = match_detections(sub, mine, backend=backend)
    ref = [e for e in ev.evalImgs if e is not None and e["aRng"] == [0, 1e10] and e["image_id"] == img]
    assert int(tp.sum()) == sum(int(((e["dtMatches"][0] > 0) & ~np.asarray(e["dtIgnore"][0], bool)).sum())
                                for e in ref)
    assert cat.size == sum(int((~np.asarray(e["dtIgnore"][0], bool)).sum()) for e in ref)
    assert match_detections({"categories": gt["categories"], "annotations": []}, [], backend=backend)[0].size == 0


@pytest.mark.skipif(len(available_backends()) < 2, reason="needs pycocotools and faster-coco-eval")
@pytest.mark.parametrize("seed", [0, 2, 3, 4])
def test_backends_agree(seed):
    """Identical up to the last bit of a double: pycocotools divides by ``tp + fp + np.spacing(1)`` where
    faster-coco-eval divides by ``tp + fp``, so a precision of 1 is 0.9999999999999998 in one of them."""
    gt, preds = _random_case(seed)
    a, _ = score_predictions(preds, gt, "pycocotools")
    b, _ = score_predictions(preds, gt, "faster-coco-eval")
    np.testing.assert_allclose(a.stats, b.stats, rtol=0, atol=1e-15)  # all 12 COCO numbers
    assert list(a.per_class) == list(b.per_class)
    for name in a.per_class:
        assert abs(a.per_class[name].ap50 - b.per_class[name].ap50) <= 1e-15
        assert abs(a.per_class[name].ap50_95 - b.per_class[name].ap50_95) <= 1e-15
    assert (a.precision, a.recall, a.conf_threshold) == (b.precision, b.recall, b.conf_threshold)


def test_msrs_sample_ground_truth_matches_independent_pycocotools(shared, tmp_path):
    """Real MSRS boxes: our COCO files scored by plain pycocotools give our mAP (to 1e-9)."""
    from taskeval.data import PairedDataset

    ds = PairedDataset.open("msrs_sample", "test", root=shared / "data" / "msrs_det")
    gt = dataset_ground_truth(ds)
    assert len(gt["images"]) == 30 and gt["taskeval"]["classes"] == ["person", "bicycle", "car"]
    rng = np.random.default_rng(0)
    preds = {}
    for i, sid in enumerate(ds.ids):
        b = ds.boxes(i)
        keep = b[rng.random(len(b)) < 0.7]
        near = np.c_[keep[:, 1:5] + rng.normal(0, 4, (len(keep), 4)), rng.random(len(keep)), keep[:, 0]]
        noise = np.c_[rng.uniform(0, 600, (5, 2)), rng.uniform(0, 600, (5, 2)) + 10, rng.random(5) * 0.5,
                      rng.integers(0, 3, 5)]
        noise[:, 2:4] = np.maximum(noise[:, 2:4], noise[:, :2] + 5)
        preds[sid] = np.r_[near, noise]
    scores, dets = score_predictions(preds, gt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    stats, _ = _pycocotools_reference(tmp_path / "gt.json", tmp_path / "dt.json")
    assert 0.2 < scores.map50 < 0.95
    assert abs(scores.map50 - stats[1]) < 1e-9 and abs(scores.map50_95 - stats[0]) < 1e-9


def test_bad_predictions():
    gt = coco_ground_truth({"a": np.array([[0, 0, 0, 5, 5]], np.float32)}, {"a": (10, 10)}, NAMES)
    with pytest.raises(DataError, match="not in the ground truth: ghost1, ghost2"):
        coco_detections({"a": np.zeros((0, 6)), "ghost1": np.zeros((1, 6)), "ghost2": np.zeros((1, 6))}, gt)
    with pytest.raises(DataError, match=r"class index\(es\) \[3\]"):
        coco_detections({"a": np.array([[0, 0, 5, 5, 0.5, 3]])}, gt)
    with pytest.raises(DataError, match="non-finite"):
        coco_detections({"a": np.array([[0, 0, np.nan, 5, 0.5, 0]])}, gt)
    with pytest.raises(DataError, match=r"\(N, 6\)"):
        coco_detections({"a": np.zeros((2, 5))}, gt)
    with pytest.raises(DataError, match="image id"):
        score_detections(gt, [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(DataError, match=r"class id\(s\) \[4\]"):
        coco_ground_truth({"a": np.array([[4, 0, 0, 5, 5]], np.float32)}, {"a": (10, 10)}, NAMES)


def _write_yolo_case(tmp_path):
    from taskeval.imageio import write_png

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "pred").mkdir()
    for sid in ("x", "y", "z"):
        write_png(tmp_path / "images" / f"{sid}.png", np.zeros((40, 80, 3), np.uint8))
    (tmp_path / "labels" / "classes.txt").write_text("person\ncar\ncone\n")
    (tmp_path / "labels" / "x.txt").write_text("0 0.25 0.5 0.25 0.5\n1  0.75 0.5 0.25 0.5\n")
    (tmp_path / "labels" / "y.txt").write_text("")  # empty: valid, no objects
    (tmp_path / "labels" / "z.txt").write_text("")  # no objects; z's prediction is a false positive
    (tmp_path / "pred" / "x.txt").write_text("0 0.25 0.5 0.25 0.5 0.9\n1 0.7 0.5 0.25 0.5 0.8\n")
    (tmp_path / "pred" / "z.txt").write_text("2 0.5 0.5 0.1 0.1 0.3\n")


def test_yolo_folders_equal_coco_json(tmp_path):
    _write_yolo_case(tmp_path)
    gt = load_ground_truth(tmp_path / "labels", tmp_path / "images")
    assert [img["file_name"] for img in gt["images"]] == ["x.png", "y.png", "z.png"]
    assert gt["annotations"][0]["bbox"] == pytest.approx([10.0, 10.0, 20.0, 20.0])
    dets = load_predictions(tmp_path / "pred", gt)
    assert len(dets) == 3
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # a COCO results file with string ids (file stems) reads to the same detections
    (tmp_path / "dt.json").write_text(json.dumps([{**d, "image_id": {1: "x", 2: "y", 3: "z"}[d["image_id"]]}
                                                  for d in dets]))
    dets_json = load_predictions(tmp_path / "dt.json", load_ground_truth(tmp_path / "gt.json"))
    assert dets_json == dets
    a = score_detections(gt, dets)
    assert a.n_gt == 2 and a.n_images == 3
    # person found exactly; the car box is shifted by 4 px of 20: IoU 320 / 480 = 0.67
    assert a.per_class["person"].ap50 == 1.0 and a.per_class["car"].ap50 == 1.0


def test_bad_foreign_files(tmp_path):
    _write_yolo_case(tmp_path)
    gt = load_ground_truth(tmp_path / "labels", tmp_path / "images")
    (tmp_path / "pred" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1 0.3\n")
    with pytest.raises(DataError, match="not in the ground truth: ghost"):
        load_predictions(tmp_path / "pred", gt)
    (tmp_path / "pred" / "ghost.txt").unlink()
    (tmp_path / "pred" / "x.txt").write_text("0 0.25 0.5 0.25 0.5\n")
    with pytest.raises(DataError, match="no confidence"):
        load_predictions(tmp_path / "pred", gt)
    (tmp_path / "dt.json").write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1],
                                                   "score": 0.1}]))
    with pytest.raises(DataError, match="not in the ground truth: 99"):
        load_predictions(tmp_path / "dt.json", gt)
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="without an image"):
        load_ground_truth(tmp_path / "labels", tmp_path / "images")
    (tmp_path / "labels" / "orphan.txt").unlink()
    (tmp_path / "labels" / "z.txt").unlink()  # a lost label file is not "no objects"
    with pytest.raises(DataError, match=r"have no label file.*: z"):
        load_ground_truth(tmp_path / "labels", tmp_path / "images")
    (tmp_path / "labels" / "z.txt").write_text("")
    (tmp_path / "labels" / "x.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="class id 5"):
        load_ground_truth(tmp_path / "labels", tmp_path / "images")
