"""One confusion-matrix scorer (:func:`taskeval.metrics.segmentation.scores_from_confmat`) behind the
metric, the result rows, the bootstrap and the figures, checked against a plain loop over classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskeval.metrics.segmentation import SegScores, scores_from_confmat, seg_scores_from_confmat

EDGE_CASES = {
    "empty": np.zeros((3, 3), np.int64),
    "one class, right": np.array([[5, 0, 0], [0, 0, 0], [0, 0, 0]]),
    "class 2 absent from both": np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]]),
    "class 2 only predicted": np.array([[5, 1, 2], [2, 3, 0], [0, 0, 0]]),
    "only class 1": np.array([[0, 0], [0, 7]]),
    "1x1": np.array([[4]]),
    "1x1 empty": np.array([[0]]),
    "all wrong": np.array([[0, 3], [4, 0]]),
}


def loop_scores(cm: np.ndarray) -> dict:
    """The definitions of the module docstring, one class at a time, in plain Python."""
    k = cm.shape[0]
    iou, acc = [], []
    for c in range(k):
        tp = cm[c, c]
        gt, pred = cm[c, :].sum(), cm[:, c].sum()
        union = gt + pred - tp
        iou.append(tp / union if union else math.nan)
        acc.append(tp / gt if gt else math.nan)

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    total = cm.sum()
    return {"IoU": iou, "Acc": acc, "mIoU": mean(iou), "mIoU_nobg": mean(iou[1:]), "mAcc": mean(acc),
            "pixel_acc": np.trace(cm) / total if total else math.nan}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_match_the_loop(name):
    cm = EDGE_CASES[name]
    got, ref = scores_from_confmat(cm), loop_scores(cm)
    assert set(got) == set(ref)
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-15, equal_nan=True, err_msg=f"{name}: {key}")


def test_vectorised_over_leading_axes_equals_one_by_one():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, size=(3, 4, 5, 5))
    cms[0, 1, 2, :] = cms[0, 1, :, 2] = 0     # a class absent from one matrix
    cms[2, 3] = 0                               # an empty matrix
    got = scores_from_confmat(cms)
    assert got["IoU"].shape == (3, 4, 5) and got["mIoU"].shape == (3, 4)
    for i in range(3):
        for j in range(4):
            ref = loop_scores(cms[i, j])
            for key, value in ref.items():
                np.testing.assert_allclose(got[key][i, j], value, rtol=1e-14, equal_nan=True)


def test_every_user_gets_the_same_numbers():
    from taskeval.reporting.grids import per_image_miou
    from taskeval.stats import seg_metrics

    rng = np.random.default_rng(1)
    cms = rng.integers(0, 30, size=(6, 4, 4))
    cms[1, 3, :] = cms[1, :, 3] = 0
    ref = scores_from_confmat(cms)
    for key, value in seg_metrics(cms).items():
        np.testing.assert_array_equal(value, ref[key])
    ids = [f"i{k}" for k in range(6)]
    assert per_image_miou(ids, cms) == {i: float(v) for i, v in zip(ids, ref["mIoU"])}
    t = seg_scores_from_confmat(torch.from_numpy(cms[1]))
    assert all(v.dtype == torch.float64 for v in t.values())
    for key, value in t.items():
        np.testing.assert_array_equal(value.numpy(), ref[key][1])
    s = SegScores.from_confmat(torch.from_numpy(cms[1]), ("bg", "a", "b", "c"))
    assert s.miou == float(ref["mIoU"][1]) and s.pixel_acc == float(ref["pixel_acc"][1])
    assert math.isnan(s.iou[3])


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(\.\.\., C, C\), got shape \(2, 3\)"):
        scores_from_confmat(np.zeros((2, 3)))
