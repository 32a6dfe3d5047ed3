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


def _nanmean_last(x: np.ndarray) -> np.ndarray:
    keep = ~np.isnan(x)
    n = keep.sum(axis=-1)
    total = np.where(keep, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def scores_from_confmat(confmat) -> dict[str, np.ndarray]:
    """Scores of one or many confusion matrices, vectorised over leading axes (definitions: module docstring).

    The one implementation behind :func:`seg_scores_from_confmat`, :class:`SegScores`, the bootstrap
    (:func:`taskeval.stats.seg_metrics`) and the figures' per-image mIoU.

    Args:
        confmat: (..., C, C) pixel counts (any numeric array), rows = ground truth, columns = prediction.

    Returns:
        ``{"IoU": (..., C), "Acc": (..., C), "mIoU", "mIoU_nobg", "mAcc", "pixel_acc": (...)}`` float64 in
        [0, 1]; NaN where undefined (a class absent from ground truth and prediction, an empty matrix).

    Raises:
        ValueError: ``confmat`` is not (..., C, C).
    """
    cm = np.asarray(confmat, np.float64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion matrices must be (..., C, C), got shape {cm.shape}")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    gt = cm.sum(axis=-1)
    pred = cm.sum(axis=-2)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
        total = gt.sum(axis=-1)
        pixel = np.where(total > 0, tp.sum(axis=-1) / np.maximum(total, 1), np.nan)
    return {"IoU": iou, "Acc": acc, "mIoU": _nanmean_last(iou), "mIoU_nobg": _nanmean_last(iou[..., 1:]),
            "mAcc": _nanmean_last(acc), "pixel_acc": pixel}


def seg_scores_from_confmat(confmat: Tensor) -> dict[str, Tensor]:
    """Scores of a (K,K) confusion matrix as float64 tensors on its device (:func:`scores_from_confmat`).

    Returns:
        ``{"IoU": (K,), "Acc": (K,), "mIoU", "mIoU_nobg", "mAcc", "pixel_acc": scalars}``, float64, in [0,1].
    """
    scores = scores_from_confmat(confmat.detach().cpu().numpy())
    return {k: torch.as_tensor(v, dtype=torch.float64, device=confmat.device) for k, v in scores.items()}


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
        if isinstance(confmat, Tensor):
            confmat = confmat.detach().cpu().numpy()
        confmat = np.asarray(confmat).astype(np.int64)
        if confmat.shape != (len(class_names), len(class_names)):
            raise ValueError(f"confusion matrix {tuple(confmat.shape)} does not fit {len(class_names)} class names")
        s = scores_from_confmat(confmat)
        return cls(tuple(class_names), tuple(s["IoU"].tolist()), tuple(s["Acc"].tolist()), float(s["mIoU"]),
                   float(s["mIoU_nobg"]), float(s["mAcc"]), float(s["pixel_acc"]), confmat)

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
