"""Segmentation metrics against independent references: a hand-worked example, a NumPy confusion matrix
with the definitions written out per class, and torchmetrics' own Jaccard index."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from taskeval.metrics.segmentation import (
    SegmentationMetrics,
    SegScores,
    confmat_to_csv,
    seg_confusion_matrix,
    segmentation_scores,
)

IGNORE = 255


def numpy_reference(preds: list[np.ndarray], gts: list[np.ndarray], k: int, ignore: int = IGNORE) -> dict:
    """Straightforward NumPy: one bincount per mask, then IoU/Acc per class with explicit loops."""
    cm = np.zeros((k, k), np.int64)
    for p, g in zip(preds, gts):
        keep = g != ignore
        cm += np.bincount(g[keep].astype(np.int64) * k + p[keep], minlength=k * k).reshape(k, k)
    iou, acc = [], []
    for c in range(k):
        tp = cm[c, c]
        fn = cm[c, :].sum() - tp
        fp = cm[:, c].sum() - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        acc.append(tp / (tp + fn) if tp + fn else math.nan)

    def mean(vals):
        vals = [v for v in vals if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    return {"cm": cm, "IoU": iou, "Acc": acc, "mIoU": mean(iou), "mIoU_nobg": mean(iou[1:]), "mAcc": mean(acc),
            "pixel_acc": np.trace(cm) / cm.sum()}


def test_hand_worked_example():
    # (gt, pred) pixels: (0,0) (0,1) (1,1) / (1,1) (2,0) (ignored, 2); class 3 appears nowhere.
    gt = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    s = segmentation_scores(pred, gt, num_classes=4)
    iou = s["IoU"].tolist()
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    assert float(s["mIoU"]) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)  # class 3 left out, not counted as 0
    assert float(s["mIoU_nobg"]) == pytest.approx((2 / 3 + 0) / 2)
    assert float(s["mAcc"]) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert float(s["pixel_acc"]) == pytest.approx(3 / 5)


def _random_batch(rng, n, h, w, k, absent=()):
    gts, preds = [], []
    for _ in range(n):
        g = rng.integers(0, k, (h, w))
        p = np.where(rng.random((h, w)) < 0.6, g, rng.integers(0, k, (h, w)))
        for c in absent:  # a class missing from both ground truth and prediction
            g[g == c] = 0
            p[p == c] = 1
        g[rng.random((h, w)) < 0.05] = IGNORE
        gts.append(g)
        preds.append(p)
    return preds, gts


@pytest.mark.parametrize("absent", [(), (4,), (0, 5)])
def test_matches_numpy_reference_accumulated_over_batches(absent):
    rng = np.random.default_rng(3)
    k = 6
    preds, gts = _random_batch(rng, 12, 24, 32, k, absent)
    metric = SegmentationMetrics(k, IGNORE)
    for i in range(0, 12, 5):  # uneven batches
        metric.update(torch.from_numpy(np.stack(preds[i:i + 5])), torch.from_numpy(np.stack(gts[i:i + 5])))
    ref = numpy_reference(preds, gts, k)
    np.testing.assert_array_equal(metric.confmat.numpy(), ref["cm"])
    got = metric.compute()
    np.testing.assert_allclose(got["IoU"].numpy(), ref["IoU"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["Acc"].numpy(), ref["Acc"], rtol=1e-12, equal_nan=True)
    for m in ("mIoU", "mIoU_nobg", "mAcc", "pixel_acc"):
        assert float(got[m]) == pytest.approx(ref[m], rel=1e-12), m


def test_miou_equals_torchmetrics_macro_jaccard():
    """torchmetrics' macro Jaccard also leaves out classes absent from both (its weight 0)."""
    rng = np.random.default_rng(5)
    preds, gts = _random_batch(rng, 4, 20, 20, 5, absent=(3,))
    p, g = torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))
    tm = MulticlassJaccardIndex(5, average="macro", ignore_index=IGNORE)
    ours = segmentation_scores(p, g, 5)
    assert float(ours["mIoU"]) == pytest.approx(float(tm(p, g)), rel=1e-6)
    per_class = MulticlassJaccardIndex(5, average="none", ignore_index=IGNORE)(p, g)
    present = ~torch.isnan(ours["IoU"])
    np.testing.assert_allclose(ours["IoU"][present].numpy(), per_class[present].double().numpy(), rtol=1e-6)


def test_confusion_matrix_equals_torchmetrics():
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    rng = np.random.default_rng(11)
    preds, gts = _random_batch(rng, 3, 30, 40, 7)
    p, g = torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts)).to(torch.uint8)
    np.testing.assert_array_equal(seg_confusion_matrix(p, g, 7).numpy(),
                                  multiclass_confusion_matrix(p, g.long(), 7, ignore_index=IGNORE).numpy())
    np.testing.assert_array_equal(seg_confusion_matrix(p, g.long() % 7, 7, ignore_index=None).numpy(),
                                  multiclass_confusion_matrix(p, g.long() % 7, 7).numpy())


def test_logits_are_argmaxed():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(2, 4, 8, 8)))
    gt = torch.from_numpy(rng.integers(0, 4, (2, 8, 8)))
    np.testing.assert_array_equal(seg_confusion_matrix(logits, gt, 4).numpy(),
                                  seg_confusion_matrix(logits.argmax(1), gt, 4).numpy())


def test_out_of_range_ids_and_shapes_are_errors():
    gt = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"prediction ids must lie in 0\.\.2, found 3\.\.3"):
        seg_confusion_matrix(torch.full((4, 4), 3), gt, 3)
    bad_gt = gt.clone()
    bad_gt[0, 0] = 7
    with pytest.raises(ValueError, match="target ids"):
        seg_confusion_matrix(gt, bad_gt, 3)
    with pytest.raises(ValueError, match="shape"):
        seg_confusion_matrix(torch.zeros(4, 5, dtype=torch.int64), gt, 3)
    ignored = gt.clone()
    ignored[1, 1] = IGNORE  # the ignore index itself is fine
    assert int(seg_confusion_matrix(gt, ignored, 3).sum()) == 15


def test_segscores_json_and_csv():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    s = SegScores.from_confmat(cm, ("bg", "a", "b"))
    d = s.as_dict()
    assert d["IoU"]["b"] is None and d["Acc"]["b"] is None
    assert d["IoU"]["bg"] == pytest.approx(5 / 8)
    assert d["mIoU"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    lines = confmat_to_csv(cm, ("bg", "a", "b")).splitlines()
    assert lines[0] == "gt\\pred,bg,a,b"
    assert lines[2] == "a,2,3,0"
    with pytest.raises(ValueError, match="does not fit"):
        SegScores.from_confmat(cm, ("bg", "a"))
