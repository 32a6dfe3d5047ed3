"""Semantic-segmentation scores from one confusion matrix pooled over a whole split.

The confusion matrix is accumulated in a torchmetrics ``Metric`` (one ``bincount`` per batch; the state
is summed across processes under DDP). Rows are ground truth, columns
predictions; pixels whose ground truth is ``ignore_index`` are dropped before counting. Every score is
derived from the pooled matrix (never averaged per image):

* ``IoU[c] = TP / (TP + FP + FN)``; NaN when class ``c`` is absent from both ground truth and
  prediction (0/0).
* ``mIoU``: mean of ``IoU`` over all classes *including* class 0 ("unlabeled" on MSRS/MFNet; the
  convention of the MSRS/SeAFusion papers), NaN classes left out of the mean (as torchmetrics'
  ``MulticlassJaccardIndex(average="macro")`` and mmsegmentation do; SeAFusion's ``np.mean`` would
  return NaN instead).
* ``mIoU_nobg``: the same mean without class 0.
  Class-0 pixels still count as false negatives or false positives of the other classes (the IoU
  vector is computed first, then entry 0 dropped).
* ``Acc[c] = TP / (TP + FN)`` (recall); NaN when ``c`` is absent from the ground truth.
  ``mAcc``: mean of ``Acc`` over classes present in the ground truth (class 0 included).
* ``pixel_acc``: correctly classified labelled pixels / labelled pixels.

Example::

    metric = SegmentationMetrics(num_classes=9)
    metric.update(pred, mask)          # (N,H,W) or (H,W) integer class ids, or (N,K,H,W) logits
    scores = SegScores.from_confmat(metric.confmat, class_names)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

DEFINITIONS = {
    "IoU": "per class TP/(TP+FP+FN) from one confusion matrix pooled over all test pixels; NaN if the class "
           "is absent from both ground truth and prediction",
    "mIoU": "mean IoU over all classes including class 0 (MSRS/SeAFusion convention); classes absent from "
            "both ground truth and prediction are left out of the mean",
    "mIoU_nobg": "mean IoU over classes 1..K-1 (class 0 excluded; its pixels still count as FP/FN of the "
               "other classes); absent classes left out",
    "Acc": "per class TP/(TP+FN); NaN if the class is absent from the ground truth",
    "mAcc": "mean per-class accuracy over classes present in the ground truth (class 0 included)",
    "pixel_acc": "correct labelled pixels / labelled pixels",
}
OVERALL_METRICS = ("mIoU", "mIoU_nobg", "mAcc", "pixel_acc")  # result-row metric names


def _as_labels(preds: Tensor, target: Tensor) -> Tensor:
    if preds.ndim == target.ndim + 1:  # logits (N,K,H,W)
        preds = preds.argmax(dim=1)
    if preds.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(preds.shape)} differs from target shape {tuple(target.shape)}")
    if preds.is_floating_point() or target.is_floating_point():
        raise TypeError(f"expected integer class ids, got {preds.dtype} and {target.dtype}")
    return preds


def _ids(x: Tensor) -> Tensor:
    # int32 halves the memory traffic of the index arithmetic; class ids and K*K fit easily
    return x.reshape(-1).to(torch.int32)


def seg_confusion_matrix(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """(K,K) int64 confusion matrix, rows = ground truth, columns = prediction.

    One ``bincount`` over ``target * K + pred`` with ignored pixels sent to an extra bin (the same
    counts as torchmetrics' ``multiclass_confusion_matrix``, which boolean-indexes the ignored pixels
    away: about 10 ms per 480x640 mask on one CPU thread against 1 ms here).

    Args:
        preds: (N,H,W) or (H,W) integer class ids, or (N,K,H,W) logits/probabilities.
        target: ground truth ids of the same shape as the label form of ``preds``.
        num_classes: K.
        ignore_index: ground-truth value left out (None: every pixel counts).

    Raises:
        ValueError: shapes differ or an id lies outside ``0..K-1`` (``ignore_index`` allowed in target).
    """
    preds = _as_labels(preds, target)
    k = num_classes
    p, g = _ids(preds), _ids(target)
    if p.numel() == 0:
        return torch.zeros(k, k, dtype=torch.int64, device=preds.device)
    ignored = g == ignore_index if ignore_index is not None else None
    lo, hi = torch.aminmax(p)
    if lo < 0 or hi >= k:
        raise ValueError(f"prediction ids must lie in 0..{k - 1}, found {int(lo)}..{int(hi)}")
    lo, hi = torch.aminmax(g if ignored is None else g.masked_fill(ignored, 0))
    if lo < 0 or hi >= k:
        raise ValueError(f"target ids must lie in 0..{k - 1} (or be the ignore index {ignore_index}), "
                         f"found {int(lo)}..{int(hi)}")
    idx = g * k
    idx += p
    if ignored is not None:
        idx.masked_fill_(ignored, k * k)
    return torch.bincount(idx, minlength=k * k + 1)[: k * k].reshape(k, k).to(torch.int64)


def _nanmean(x: Tensor) -> Tensor:
    keep = ~torch.isnan(x)
    return x[keep].mean() if keep.any() else torch.tensor(float("nan"), dtype=x.dtype)


def seg_scores_from_confmat(confmat: Tensor) -> dict[str, Tensor]:
    """Scores of a (K,K) confusion matrix (see the module docstring for the definitions).

    Returns:
        ``{"IoU": (K,), "Acc": (K,), "mIoU", "mIoU_nobg", "mAcc", "pixel_acc": scalars}``, float64, in [0,1].
    """
    cm = confmat.to(torch.float64)
    tp = torch.diag(cm)
    gt = cm.sum(dim=1)
    pred = cm.sum(dim=0)
    union = gt + pred - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
    total = cm.sum()
    return {
        "IoU": iou,
        "Acc": acc,
        "mIoU": _nanmean(iou),
        "mIoU_nobg": _nanmean(iou[1:]),
        "mAcc": _nanmean(acc),
        "pixel_acc": tp.sum() / total if total > 0 else nan,
    }


def segmentation_scores(preds: Tensor, target: Tensor, num_classes: int,
                        ignore_index: int | None = 255) -> dict[str, Tensor]:
    """Functional twin of :class:`SegmentationMetrics`: scores of one batch."""
    return seg_scores_from_confmat(seg_confusion_matrix(preds, target, num_classes, ignore_index))


class SegmentationMetrics(Metric):
    """Accumulates the confusion matrix over batches; ``compute()`` returns :func:`seg_scores_from_confmat`."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.confmat += seg_confusion_matrix(preds, target, self.num_classes, self.ignore_index).to(self.confmat.device)

    def compute(self) -> dict[str, Tensor]:
        return seg_scores_from_confmat(self.confmat)


@dataclass
class SegScores:
    """Scores of one evaluation, as plain floats, with the class names they belong to."""

    class_names: tuple[str, ...]
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    miou: float
    miou_nobg: float
    macc: float
    pixel_acc: float
    confmat: np.ndarray

    @classmethod
    def from_confmat(cls, confmat: Tensor | np.ndarray, class_names: tuple[str, ...] | list[str]) -> SegScores:
        confmat = torch.as_tensor(np.asarray(confmat)).to(torch.int64)
        if confmat.shape != (len(class_names), len(class_names)):
            raise ValueError(f"confusion matrix {tuple(confmat.shape)} does not fit {len(class_names)} class names")
        s = seg_scores_from_confmat(confmat)
        return cls(tuple(class_names), tuple(s["IoU"].tolist()), tuple(s["Acc"].tolist()), float(s["mIoU"]),
                   float(s["mIoU_nobg"]), float(s["mAcc"]), float(s["pixel_acc"]), confmat.numpy())

    def overall(self) -> dict[str, float]:
        """Overall scores under their result-row names (:data:`OVERALL_METRICS`)."""
        return {"mIoU": self.miou, "mIoU_nobg": self.miou_nobg, "mAcc": self.macc, "pixel_acc": self.pixel_acc}

    def as_dict(self) -> dict:
        """JSON-able: overall scores, per-class IoU/Acc (None for NaN) and the confusion matrix."""
        def clean(v: float):
            return None if math.isnan(v) else v

        return {**{k: clean(v) for k, v in self.overall().items()},
                "IoU": {n: clean(v) for n, v in zip(self.class_names, self.iou)},
                "Acc": {n: clean(v) for n, v in zip(self.class_names, self.acc)},
                "confusion_matrix": self.confmat.tolist(), "classes": list(self.class_names)}


def confmat_to_csv(confmat: np.ndarray, class_names: tuple[str, ...] | list[str]) -> str:
    """CSV text: header ``gt\\pred,<names>``, one row per ground-truth class, pixel counts."""
    lines = ["gt\\pred," + ",".join(class_names)]
    for name, row in zip(class_names, np.asarray(confmat)):
        lines.append(name + "," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"
