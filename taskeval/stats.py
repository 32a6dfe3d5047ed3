"""The statistics fusion papers never give: spread over seeds, bootstrap confidence intervals over test
images, and paired comparisons of two methods on the same test images.

* **Seeds**: :func:`seed_summary` gives the mean and the sample standard deviation (``ddof=1``) of each
  (method, task, dataset, protocol, metric, class) over its seeds.
* **Bootstrap over test images** (percentile intervals): resample the N test images with replacement
  (``B`` replicates of ``N`` indices drawn by :func:`bootstrap_indices`) and recompute the metric on each
  replicate.

  - Segmentation: from the per-image confusion matrices ``(N, C, C)``; a replicate's matrix is the sum of
    its images' matrices (an image drawn twice counts twice) and the scores follow the definitions of
    :mod:`taskeval.metrics.segmentation`. Vectorised: one matrix product for all replicates.
  - Detection: COCO matching is per image, so the per-image evaluation of pycocotools (``evalImgs``:
    which detection matches which box at each IoU threshold) is computed once, and each replicate runs
    COCO's accumulation on the resampled images, with an image drawn twice contributing its detections
    and boxes twice, in the order COCO would see them if the duplicated images were renumbered
    (:func:`resample_coco` builds that renumbered COCO set; re-scoring it with the backend gives the
    same numbers and is available as ``engine="rescore"``, several hundred times slower).

* **Paired comparison** of methods A and B evaluated on the same test images: both are scored on the same
  resampled image indices, so the spread of ``metric(A) - metric(B)`` reflects only how the methods
  differ image by image. The one-sided p-value is the fraction of replicates where A is not better
  (``A <= B``, or ``A >= B`` for a lower-is-better metric; two identical methods give p = 1). Any task
  whose adapter gives per-image scores (:meth:`taskeval.tasks.Task.evaluation`) can be compared
  (:func:`compare_to_reference`); its spec gives the metric, its direction and the replicates. With
  several seeds, each seed is compared separately (same seed for A and B) and the seed-averaged
  difference gets its own interval from the averaged replicates (image sampling only; the per-seed
  estimates show the training-seed spread).

Everything is deterministic given ``seed``. Metric values are fractions in [0, 1] like the result rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from taskeval.errors import ConfigError, DataError
from taskeval.results import Row

REFERENCE_METHODS = ("ir", "vis")

SeedKey = tuple[str, str, str, str, str, str]  # (method, task, dataset, protocol, metric, cls)


# --------------------------------------------------------------------------------------------------- seeds
@dataclass(frozen=True)
class SeedStat:
    """One value over seeds.

    Attributes:
        mean: mean of the finite values (NaN when there is none).
        std: sample standard deviation (``ddof=1``) of the finite values; NaN with fewer than two.
        n: number of finite values.
        values: the values by seed, in seed order (NaN included).
        seeds: the seeds (None for seedless rows such as quality metrics).
    """

    mean: float
    std: float
    n: int
    values: tuple[float, ...]
    seeds: tuple[int | None, ...]


def summarize_values(values: Sequence[float], seeds: Sequence[int | None] | None = None) -> SeedStat:
    """:class:`SeedStat` of one value per seed (NaN values are kept in ``values`` but not counted)."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return SeedStat(mean, std, int(finite.size), tuple(float(x) for x in v),
                    tuple(seeds) if seeds is not None else (None,) * len(v))


def _seed_order(seed: int | None) -> tuple[bool, int]:
    return seed is None, seed if seed is not None else 0


def seed_summary(rows: Iterable[Row]) -> dict[SeedKey, SeedStat]:
    """Mean and sample standard deviation over seeds of every (method, task, dataset, protocol, metric, cls).

    Raises:
        DataError: two rows with the same key and seed (a cell merged twice).
    """
    groups: dict[SeedKey, dict[int | None, float]] = defaultdict(dict)
    for r in rows:
        key = (r.method, r.task, r.dataset, r.protocol, r.metric, r.cls)
        if r.seed in groups[key]:
            raise DataError(f"two values for {key} with seed {r.seed}: {groups[key][r.seed]} and {r.value}")
        groups[key][r.seed] = float(r.value)
    out = {}
    for key, by_seed in groups.items():
        seeds = sorted(by_seed, key=_seed_order)
        out[key] = summarize_values([by_seed[s] for s in seeds], seeds)
    return out


# ------------------------------------------------------------------------------------------- bootstrap core
@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval of one metric.

    Attributes:
        metric: metric name.
        estimate: the metric on the full test set.
        low, high: percentile interval bounds (``confidence`` two-sided).
        replicates: (B,) the metric on each replicate (NaN where undefined, left out of the interval).
        n_images: test images resampled.
        confidence: e.g. 0.95.
        seed: seed of the resampling.
    """

    metric: str
    estimate: float
    low: float
    high: float
    replicates: np.ndarray
    n_images: int
    confidence: float
    seed: int

    @property
    def n_boot(self) -> int:
        return int(self.replicates.shape[0])


def bootstrap_indices(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) int64 image indices drawn with replacement; the same for equal arguments."""
    if n_images < 1 or n_boot < 1:
        raise ConfigError(f"bootstrap needs at least one image and one replicate, got {n_images} and {n_boot}")
    return np.random.default_rng(seed).integers(0, n_images, size=(n_boot, n_images), dtype=np.int64)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicates, e.g. (2.5 %, 97.5 %) for 0.95."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(r, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def image_counts(idx: np.ndarray, n_images: int) -> np.ndarray:
    """(B, N) how often each image is drawn in each replicate of ``idx`` (B, N)."""
    b = idx.shape[0]
    flat = (idx + n_images * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_images).reshape(b, n_images)


def _ci(metric: str, estimate: float, reps: np.ndarray, n: int, confidence: float, seed: int) -> BootstrapCI:
    lo, hi = percentile_interval(reps, confidence)
    return BootstrapCI(metric, float(estimate), lo, hi, reps, n, confidence, seed)


# ------------------------------------------------------------------------------------------- segmentation
def seg_metrics(confmat: np.ndarray) -> dict[str, np.ndarray]:
    """Segmentation scores of one or many confusion matrices, vectorised over leading axes:
    :func:`taskeval.metrics.segmentation.scores_from_confmat` (the one implementation).

    Args:
        confmat: (..., C, C) pixel counts, rows = ground truth, columns = prediction.

    Returns:
        ``{"IoU": (..., C), "Acc": (..., C), "mIoU", "mIoU_nobg", "mAcc", "pixel_acc": (...)}`` float64.
    """
    # imported here: the module imports torchmetrics (seconds), which tables and figures never need
    from taskeval.metrics.segmentation import scores_from_confmat

    return scores_from_confmat(confmat)


def _overall(scores: dict[str, np.ndarray], ndim: int) -> list[str]:
    """The keys of ``scores`` with one value per matrix (not per class), for ``ndim`` leading axes."""
    return [k for k, v in scores.items() if np.ndim(v) == ndim]


def _check_confmats(confmats: np.ndarray) -> np.ndarray:
    cm = np.asarray(confmats)
    if cm.ndim != 3 or cm.shape[1] != cm.shape[2] or cm.shape[0] < 1:
        raise DataError(f"per-image confusion matrices must be (N, C, C) with N >= 1, got shape {cm.shape}")
    if not np.issubdtype(cm.dtype, np.integer) or (cm < 0).any():
        raise DataError(f"per-image confusion matrices must hold non-negative integer counts, got {cm.dtype}")
    # the float64 matrix product below is exact while every sum stays below 2**53
    if float(cm.sum(axis=(1, 2)).max()) * cm.shape[0] >= 2 ** 53:
        raise DataError("per-image confusion matrices too large for exact float64 sums")
    return cm


def seg_replicate_confmats(confmats: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B, C, C) summed confusion matrices of the replicates ``idx`` (B, N) (exact integer counts)."""
    cm = _check_confmats(confmats)
    n, c, _ = cm.shape
    counts = image_counts(idx, n).astype(np.float64)
    return (counts @ cm.reshape(n, c * c).astype(np.float64)).reshape(-1, c, c)


def bootstrap_segmentation(confmats: np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                           metrics: Sequence[str] | None = None) -> dict[str, BootstrapCI]:
    """Percentile bootstrap intervals of segmentation scores over test images.

    Args:
        confmats: (N, C, C) per-image confusion matrices (``per_image_confmat.npz`` of a segmentation cell).
        n_boot: replicates (1000 take ~0.1 s for 361 images x 9 classes).
        seed: resampling seed.
        confidence: two-sided level of the percentile interval.
        metrics: any of ``mIoU``, ``mIoU_nobg``, ``mAcc``, ``pixel_acc`` (default: all of them).

    Returns:
        metric -> :class:`BootstrapCI` (fractions in [0, 1]).
    """
    cm = _check_confmats(confmats)
    full = seg_metrics(cm.sum(axis=0))
    metrics = _overall(full, 0) if metrics is None else list(metrics)
    _check_metrics(metrics, _overall(full, 0))
    reps = seg_metrics(seg_replicate_confmats(cm, bootstrap_indices(cm.shape[0], n_boot, seed)))
    return {m: _ci(m, full[m], reps[m], cm.shape[0], confidence, seed) for m in metrics}


def load_confmats(cell_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """(ids, (N, C, C) int64) from a segmentation cell's ``per_image_confmat.npz``."""
    path = Path(cell_dir) / "per_image_confmat.npz"
    if not path.is_file():
        raise DataError(f"no per-image confusion matrices in {cell_dir} (expected {path.name})")
    with np.load(path) as z:
        if "ids" not in z or "confmat" not in z:
            raise DataError(f"{path}: needs arrays 'ids' and 'confmat', has {sorted(z.files)}")
        ids, cm = [str(i) for i in z["ids"]], z["confmat"].astype(np.int64)
    if cm.ndim != 3 or cm.shape[0] != len(ids):
        raise DataError(f"{path}: {len(ids)} ids but confusion matrices of shape {cm.shape}")
    return ids, cm


# ---------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class _ClassEval:
    """One category's per-image COCO evaluation.

    Every detection of the test set is put in COCO's accumulation order (score descending; ties by image,
    then by the image's own order) and cut into blocks of equal score and image. A bootstrap replicate
    that draws an image ``c`` times sees each of its blocks ``c`` times in a row: the order COCO gets after
    renumbering the copies (see :func:`resample_coco`).
    """

    block_len: np.ndarray      # (K,) detections per block
    block_img: np.ndarray      # (K,) image position of each block
    block_counted: np.ndarray  # (T or 1, K) detections per block that are not ignored (1 row: same for all T)
    tp_block: tuple[np.ndarray, ...]   # per IoU threshold: the block of each true positive
    tp_counted: tuple[np.ndarray, ...]  # per IoU threshold: not-ignored detections of its block up to it
    npig: np.ndarray           # (N,) ground-truth boxes of each image that are not ignored


@dataclass(frozen=True)
class DetectionEval:
    """Per-image COCO bbox evaluation of one prediction set (area "all", 100 detections per image),
    the input of :func:`detection_replicates`. Image ``i`` is the ``i``-th smallest COCO image id."""

    image_ids: tuple[int, ...]
    cat_ids: tuple[int, ...]
    classes: tuple[_ClassEval, ...]
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


def _coco_objects(gt: dict, dets: list[dict]):
    from pycocotools.coco import COCO

    base = {k: gt[k] for k in ("images", "annotations", "categories")}
    coco_gt = COCO()
    coco_gt.dataset = json.loads(json.dumps(base))  # pycocotools writes into the dicts it indexes
    coco_gt.createIndex()
    if dets:
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])
    else:  # loadRes rejects an empty list; an empty result set is still a valid evaluation
        coco_dt = COCO()
        coco_dt.dataset = {"images": base["images"], "annotations": [], "categories": base["categories"]}
        coco_dt.createIndex()
    return coco_gt, coco_dt


def _class_eval(entries: list, n_thr: int) -> _ClassEval:
    """Flatten pycocotools' ``evalImgs`` of one category (one entry or None per image)."""
    from taskeval.metrics.detection import MAX_DETS

    scores, img, tps, counted = [], [], [], []
    npig = np.zeros(len(entries), np.int64)
    for i, e in enumerate(entries):
        if e is None:
            continue
        s = np.asarray(e["dtScores"][:MAX_DETS], np.float64)
        dtm = np.asarray(e["dtMatches"])[:, :MAX_DETS].reshape(n_thr, -1)
        keep = ~np.asarray(e["dtIgnore"])[:, :MAX_DETS].reshape(n_thr, -1).astype(bool)
        npig[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        scores.append(s)
        img.append(np.full(s.size, i, np.int64))
        tps.append((dtm != 0) & keep)
        counted.append(keep)
    if sum(x.size for x in scores) == 0:
        empty = np.zeros(0, np.int64)
        return _ClassEval(empty, empty, np.zeros((1, 0), np.int64), (empty,) * n_thr, (empty,) * n_thr, npig)
    scores, img = np.concatenate(scores), np.concatenate(img)
    order = np.argsort(-scores, kind="mergesort")  # pycocotools' sort of the image-order concatenation
    scores, img = scores[order], img[order]
    tp = np.concatenate(tps, axis=1)[:, order]
    counted = np.concatenate(counted, axis=1)[:, order].astype(np.int64)
    new_block = np.r_[True, (scores[1:] != scores[:-1]) | (img[1:] != img[:-1])]
    start = np.flatnonzero(new_block)
    block = np.cumsum(new_block) - 1
    per_block = np.add.reduceat(counted, start, axis=1)
    within = np.cumsum(counted, axis=1) - (np.cumsum(per_block, axis=1) - per_block)[:, block]
    if (counted == counted[:1]).all():
        per_block = per_block[:1]
    return _ClassEval(np.diff(np.r_[start, scores.size]), img[start], per_block,
                      tuple(block[tp[t]] for t in range(n_thr)), tuple(within[t, tp[t]] for t in range(n_thr)),
                      npig)


def evaluate_images(gt: dict, dets: list[dict]) -> DetectionEval:
    """Run pycocotools' per-image evaluation once (faster-coco-eval keeps it in C++, out of reach).

    Args:
        gt: COCO ground truth (``gt.json`` of a detection cell).
        dets: COCO results ``[{image_id, category_id, bbox, score}]``.

    Raises:
        DataError: detections for image ids that are not in the ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    from taskeval.metrics.detection import MAX_DETS

    img_ids = {int(img["id"]) for img in gt["images"]}
    stray = sorted({d["image_id"] for d in dets} - img_ids, key=str)
    if stray:
        raise DataError(f"detections for {len(stray)} image id(s) that are not in the ground truth: "
                        f"{', '.join(map(str, stray[:20]))}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = _coco_objects(gt, dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [ev.params.areaRng[0]], [ev.params.areaRngLbl[0]]  # "all"
        ev.params.maxDets = [MAX_DETS]
        ev.evaluate()
    p = ev.params
    n_img = len(p.imgIds)
    classes = tuple(_class_eval(ev.evalImgs[k * n_img:(k + 1) * n_img], len(p.iouThrs))
                    for k in range(len(p.catIds)))
    return DetectionEval(tuple(int(i) for i in p.imgIds), tuple(int(c) for c in p.catIds), classes,
                         np.asarray(p.iouThrs, np.float64), np.asarray(p.recThrs, np.float64))


def _class_precision(c: _ClassEval, counts: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray | None:
    """(T, R) interpolated precision of one class on a replicate that draws image ``i`` ``counts[i]``
    times, equal to pycocotools' ``accumulate`` on the renumbered replicate; None without ground truth.

    Recall only grows at true positives and COCO's right-to-left precision envelope only peaks there, so
    the curve is needed at the true positives alone: at the ``k``-th one, precision is ``k / (number of
    not-ignored detections up to it + eps)``, the same floating-point operation COCO does. That number is
    the not-ignored detections of all earlier block copies plus those of its own block up to it.
    """
    npig = int(counts @ c.npig)
    if npig == 0:
        return None
    n_thr = len(c.tp_block)
    q = np.zeros((n_thr, rec_thrs.size))
    reps = counts[c.block_img]
    weighted = reps * c.block_counted
    before = np.cumsum(weighted, axis=1) - weighted  # (T or 1, K) not-ignored detections of earlier blocks
    for t in range(n_thr):
        row = min(t, c.block_counted.shape[0] - 1)
        blocks = c.tp_block[t]
        r = reps[blocks]
        total = int(r.sum())
        if total == 0:
            continue
        tp = np.repeat(np.arange(blocks.size), r)
        copy = np.arange(total) - np.repeat(np.cumsum(r) - r, r)
        b = blocks[tp]
        n_counted = np.sort(before[row, b] + copy * c.block_counted[row, b] + c.tp_counted[t][tp])
        k = np.arange(1, total + 1, dtype=np.float64)
        pr = k / (n_counted.astype(np.float64) + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        inds = np.searchsorted(k / npig, rec_thrs, side="left")
        ok = inds < total
        q[t, ok] = pr[inds[ok]]
    return q


def _coco_mean(s: np.ndarray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else math.nan


def detection_replicates(ev: DetectionEval, idx: np.ndarray) -> dict[str, np.ndarray]:
    """mAP50 and mAP50_95 of each replicate (row of ``idx``, image positions in ``ev``).

    ``idx = np.arange(N)[None]`` gives the full-set scores, equal to pycocotools' (``stats[1]``,
    ``stats[0]``) to the last bit; a mean with no class present is NaN (COCO prints -1).

    Returns:
        ``{"mAP50": (B,), "mAP50_95": (B,)}`` fractions.
    """
    idx = np.atleast_2d(np.asarray(idx, np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= ev.n_images):
        raise ConfigError(f"image indices must lie in 0..{ev.n_images - 1}")
    n_thr, n_rec, n_cls = ev.iou_thrs.size, ev.rec_thrs.size, len(ev.classes)
    out = {"mAP50": np.empty(idx.shape[0]), "mAP50_95": np.empty(idx.shape[0])}
    for b, counts in enumerate(image_counts(idx, ev.n_images)):
        precision = -np.ones((n_thr, n_rec, n_cls))
        for k, c in enumerate(ev.classes):
            q = _class_precision(c, counts, ev.rec_thrs)
            if q is not None:
                precision[:, :, k] = q
        out["mAP50"][b] = _coco_mean(precision[:1])
        out["mAP50_95"][b] = _coco_mean(precision)
    return out


def resample_coco(gt: dict, dets: list[dict], idx: Sequence[int]) -> tuple[dict, list[dict]]:
    """The COCO ground truth and results of one bootstrap replicate, duplicated images renumbered.

    Image positions ``idx`` (into the images sorted by COCO id, repeats allowed) are sorted; the ``j``-th
    becomes image ``j + 1`` with copies of its boxes (new annotation ids) and of its detections, so that
    COCO sees each drawn copy as a separate image.
    """
    images = sorted(gt["images"], key=lambda im: int(im["id"]))
    anns_of: dict[int, list[dict]] = defaultdict(list)
    for a in gt["annotations"]:
        anns_of[int(a["image_id"])].append(a)
    dets_of: dict[int, list[dict]] = defaultdict(list)
    for d in dets:
        dets_of[int(d["image_id"])].append(d)
    new_images, new_anns, new_dets = [], [], []
    for j, pos in enumerate(sorted(int(i) for i in idx), 1):
        src = images[pos]
        old = int(src["id"])
        new_images.append({**src, "id": j})
        for a in anns_of[old]:
            new_anns.append({**a, "id": len(new_anns) + 1, "image_id": j})
        new_dets.extend({**d, "image_id": j} for d in dets_of[old])
    return ({"images": new_images, "annotations": new_anns, "categories": gt["categories"]}, new_dets)


def _rescore_replicates(gt: dict, dets: list[dict], idx: np.ndarray, backend: str) -> dict[str, np.ndarray]:
    from taskeval.metrics.detection import score_detections

    out = {"mAP50": np.empty(idx.shape[0]), "mAP50_95": np.empty(idx.shape[0])}
    for b, row in enumerate(idx):
        s = score_detections(*resample_coco(gt, dets, row), backend=backend)
        out["mAP50"][b], out["mAP50_95"][b] = s.map50, s.map50_95
    return out


def bootstrap_detection(gt: dict, dets: list[dict], n_boot: int = 200, seed: int = 0,
                        confidence: float = 0.95, engine: str = "accumulate",
                        backend: str = "auto") -> dict[str, BootstrapCI]:
    """Percentile bootstrap intervals of mAP50 and mAP50_95 over test images.

    Args:
        gt: COCO ground truth (``gt.json``).
        dets: COCO results (``predictions.json``).
        n_boot: replicates.
        seed: resampling seed.
        confidence: two-sided level.
        engine: ``"accumulate"`` (pycocotools' per-image evaluation once, COCO's accumulation per replicate;
            on one slow CPU core ~8 s per 840 images x 100 detections, then ~20 ms per replicate, growing
            with the true positives) or ``"rescore"`` (re-run the COCO backend on every
            renumbered replicate, :func:`resample_coco`; the same numbers, several hundred times slower).
        backend: COCO backend of ``"rescore"`` (see :func:`taskeval.metrics.detection.resolve_backend`).

    Returns:
        ``{"mAP50": BootstrapCI, "mAP50_95": BootstrapCI}`` (fractions).
    """
    if engine not in ("accumulate", "rescore"):
        raise ConfigError(f"unknown bootstrap engine {engine!r}; choose 'accumulate' or 'rescore'")
    ev = evaluate_images(gt, dets)
    idx = bootstrap_indices(ev.n_images, n_boot, seed)
    full = detection_replicates(ev, np.arange(ev.n_images)[None])
    if engine == "accumulate":
        reps = detection_replicates(ev, idx)
    else:
        reps = _rescore_replicates(gt, dets, idx, backend)
    return {m: _ci(m, full[m][0], reps[m], ev.n_images, confidence, seed) for m in full}


def load_detections(cell_dir: str | Path) -> tuple[dict, list[dict]]:
    """(COCO ground truth, COCO results) of a detection cell (``gt.json``, ``predictions.json``)."""
    from taskeval.metrics.detection import load_ground_truth, load_predictions

    cell_dir = Path(cell_dir)
    gt = load_ground_truth(cell_dir / "gt.json")
    return gt, load_predictions(cell_dir / "predictions.json", gt)


# ------------------------------------------------------------------------------------------- paired tests
@dataclass(frozen=True)
class PairedComparison:
    """Paired bootstrap of ``metric(A) - metric(B)`` over the same resampled test images.

    Attributes:
        estimate: the difference on the full test set.
        mean_diff: mean of the replicate differences.
        low, high: percentile interval of the difference.
        p_value: fraction of replicates where A is not better than B (one-sided; identical methods give
            1.0): ``A <= B`` when higher is better, ``A >= B`` when lower is better.
        replicates: (B,) replicate differences.
        seed: the cells' training seed (None when A and B are seed-averaged, see :class:`MethodComparison`).
        higher_is_better: the metric's direction.
    """

    metric: str
    method_a: str
    method_b: str
    seed: int | None
    estimate: float
    mean_diff: float
    low: float
    high: float
    p_value: float
    replicates: np.ndarray
    n_images: int
    confidence: float
    boot_seed: int
    higher_is_better: bool = True


def _paired(metric: str, a: str, b: str, seed: int | None, est: float, diff: np.ndarray, n: int,
            confidence: float, boot_seed: int, higher_is_better: bool = True) -> PairedComparison:
    lo, hi = percentile_interval(diff, confidence)
    finite = diff[np.isfinite(diff)]
    mean = float(finite.mean()) if finite.size else math.nan
    not_better = finite <= 0 if higher_is_better else finite >= 0
    p = float(np.mean(not_better)) if finite.size else math.nan
    return PairedComparison(metric, a, b, seed, float(est), mean, lo, hi, p, diff, n, confidence, boot_seed,
                            higher_is_better)


def align_ids(ref_ids: Sequence[str], ids: Sequence[str], confmats: np.ndarray) -> np.ndarray:
    """``confmats`` (N, C, C), whose rows belong to ``ids``, reordered to ``ref_ids``.

    Raises:
        DataError: the two id lists are not the same set of distinct test images.
    """
    if sorted(ref_ids) != sorted(ids) or len(set(ids)) != len(ids):
        raise DataError(f"paired comparison needs the same test images: {len(ref_ids)} vs {len(ids)} ids, "
                        f"{len(set(ref_ids) ^ set(ids))} not shared")
    pos = {sid: i for i, sid in enumerate(ids)}
    return np.asarray(confmats)[[pos[s] for s in ref_ids]]


def paired_segmentation(confmats_a: np.ndarray, confmats_b: np.ndarray, metric: str = "mIoU",
                        n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                        names: tuple[str, str] = ("A", "B"), cell_seed: int | None = None) -> PairedComparison:
    """Paired bootstrap of a segmentation score difference.

    Args:
        confmats_a, confmats_b: (N, C, C) per-image confusion matrices; row ``i`` of both belongs to the same
            test image (see :func:`align_ids`).
        metric: ``mIoU``, ``mIoU_nobg``, ``mAcc`` or ``pixel_acc``.
        names: (A, B) method names recorded in the result.
        cell_seed: the training seed of both cells, recorded in the result.
    """
    a, b = _check_confmats(confmats_a), _check_confmats(confmats_b)
    if a.shape != b.shape:
        raise DataError(f"paired comparison needs per-image matrices of one shape: {a.shape} vs {b.shape}")
    full_a = seg_metrics(a.sum(0))
    _check_metrics([metric], _overall(full_a, 0))
    idx = bootstrap_indices(a.shape[0], n_boot, seed)
    diff = (seg_metrics(seg_replicate_confmats(a, idx))[metric]
            - seg_metrics(seg_replicate_confmats(b, idx))[metric])
    est = full_a[metric] - seg_metrics(b.sum(0))[metric]
    return _paired(metric, *names, cell_seed, est, diff, a.shape[0], confidence, seed)


def _same_ground_truth(ev_a: DetectionEval, ev_b: DetectionEval) -> None:
    same = (ev_a.image_ids == ev_b.image_ids and ev_a.cat_ids == ev_b.cat_ids
            and all(np.array_equal(x.npig, y.npig) for x, y in zip(ev_a.classes, ev_b.classes)))
    if not same:
        raise DataError("paired comparison needs the same ground truth "
                        "(images, categories or box counts differ)")


def paired_detection_evals(ev_a: DetectionEval, ev_b: DetectionEval, metric: str = "mAP50",
                           n_boot: int = 200, seed: int = 0, confidence: float = 0.95,
                           names: tuple[str, str] = ("A", "B"),
                           cell_seed: int | None = None) -> PairedComparison:
    """Paired bootstrap of a detection score difference from two :func:`evaluate_images` results."""
    _same_ground_truth(ev_a, ev_b)
    full = np.arange(ev_a.n_images)[None]
    full_a = detection_replicates(ev_a, full)
    _check_metrics([metric], list(full_a))
    idx = bootstrap_indices(ev_a.n_images, n_boot, seed)
    est = full_a[metric][0] - detection_replicates(ev_b, full)[metric][0]
    diff = detection_replicates(ev_a, idx)[metric] - detection_replicates(ev_b, idx)[metric]
    return _paired(metric, *names, cell_seed, est, diff, ev_a.n_images, confidence, seed)


def paired_detection(gt: dict, dets_a: list[dict], dets_b: list[dict], metric: str = "mAP50",
                     n_boot: int = 200, seed: int = 0, confidence: float = 0.95,
                     names: tuple[str, str] = ("A", "B"), cell_seed: int | None = None) -> PairedComparison:
    """Paired bootstrap of ``metric(dets_a) - metric(dets_b)`` against one COCO ground truth."""
    return paired_detection_evals(evaluate_images(gt, dets_a), evaluate_images(gt, dets_b), metric, n_boot,
                                  seed, confidence, names, cell_seed)


@dataclass(frozen=True)
class MethodComparison:
    """Method A against B over the seeds both have.

    Attributes:
        per_seed: one paired comparison per common seed (same training seed for A and B).
        mean_estimate: mean over seeds of the full-test-set differences.
        seed_std: their sample standard deviation (NaN with one seed).
        low, high: interval of the seed-averaged difference (replicates averaged over seeds; the same
            image indices for every seed, so it reflects test-image sampling only).
        p_value: fraction of seed-averaged replicates where A is not better than B.
        higher_is_better: the metric's direction.
    """

    metric: str
    method_a: str
    method_b: str
    per_seed: tuple[PairedComparison, ...]
    mean_estimate: float
    seed_std: float
    low: float
    high: float
    p_value: float
    higher_is_better: bool = True

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def combine_seeds(per_seed: Sequence[PairedComparison]) -> MethodComparison:
    """Seed-level summary of per-seed paired comparisons made with the same bootstrap indices."""
    if not per_seed:
        raise ConfigError("no paired comparisons to combine")
    first = per_seed[0]
    setups = {(c.metric, c.method_a, c.method_b, c.n_images, c.boot_seed, c.replicates.shape,
               c.higher_is_better) for c in per_seed}
    if len(setups) != 1:
        raise ConfigError("per-seed comparisons differ in metric, direction, methods, images or bootstrap "
                          "draws")
    pooled = _paired(first.metric, first.method_a, first.method_b, None,
                     float(np.mean([c.estimate for c in per_seed])),
                     np.mean([c.replicates for c in per_seed], axis=0), first.n_images, first.confidence,
                     first.boot_seed, first.higher_is_better)
    spread = summarize_values([c.estimate for c in per_seed])
    return MethodComparison(first.metric, first.method_a, first.method_b, tuple(per_seed), pooled.estimate,
                            spread.std, pooled.low, pooled.high, pooled.p_value, first.higher_is_better)


def best_reference(rows: Iterable[Row], task: str, metric: str, candidates: Sequence[str] = REFERENCE_METHODS,
                   dataset: str | None = None, protocol: str | None = None,
                   higher_is_better: bool = True) -> str:
    """The candidate (default the single-modality rows) with the best seed-mean overall ``metric`` (the
    highest, or the lowest when not ``higher_is_better``; ties: the first candidate)."""
    sign = 1.0 if higher_is_better else -1.0
    stats = seed_summary(r for r in rows if r.task == task and r.metric == metric and r.cls == ""
                         and (dataset is None or r.dataset == dataset)
                         and (protocol is None or r.protocol == protocol))
    means = {m: max((sign * s.mean for k, s in stats.items() if k[0] == m and math.isfinite(s.mean)),
                    default=-math.inf) for m in candidates}
    best = max(candidates, key=lambda m: means[m])
    if means[best] == -math.inf:
        raise DataError(f"no {task} {metric} rows for the reference candidates {', '.join(candidates)}")
    return best


def compare_to_reference(run_dir: str | Path, task: str, metric: str | None = None,
                         reference: str | None = None, methods: Sequence[str] | None = None,
                         dataset: str | None = None, protocol: str | None = None, n_boot: int | None = None,
                         seed: int = 0, confidence: float = 0.95, spec=None) -> list[MethodComparison]:
    """Every method of a run against a reference, paired over test images and per seed, for any task whose
    adapter gives per-image scores (:meth:`taskeval.tasks.Task.evaluation`).

    Each cell is scored once on the full test set and on every replicate of one shared set of image
    indices, so all comparisons use the same draws; the first cell scored fixes the image order and every
    other cell is checked against it (``Evaluation.same_images``).

    Args:
        run_dir: run directory (finished cells of :class:`taskeval.store.ResultsStore`; failed ones skipped).
        task: a registered task name.
        metric: one of the spec's ``paired`` metrics; default its headline metric.
        reference: the method B of every comparison; default the best single-modality row
            (:func:`best_reference`, in the metric's direction).
        methods: the methods A (default: every other method with cells of this task, references first).
        dataset, protocol: select the cells when the run holds several.
        n_boot: replicates (default the spec's ``n_boot``).
        seed: resampling seed.
        confidence: two-sided level.
        spec: the task's :class:`~taskeval.tasks.TaskSpec` in this run (default the registered one).

    Returns:
        one :class:`MethodComparison` per method that shares at least one seed with the reference.

    Raises:
        DataError: the task is not registered here or has no per-image evaluation, its headline metric has
            no paired bootstrap, missing artefacts, no cells, cells of several datasets/protocols without a
            selection, or cells that were not evaluated on the same test images.
        ConfigError: ``metric`` is not a paired metric of the task.
    """
    from taskeval.errors import RegistryError
    from taskeval.results import read_rows
    from taskeval.store import ResultsStore
    from taskeval.tasks import get_task

    try:
        adapter = get_task(task)
    except RegistryError as exc:
        raise DataError(f"task {task!r} is not registered in this process: no per-image evaluation of its "
                        f"cells ({exc})") from None
    spec = spec or adapter.spec
    if metric is None:
        metric = spec.headline[0]
        if metric not in spec.paired:
            raise DataError(f"task {task!r}: its headline metric {metric!r} has no paired bootstrap "
                            f"(paired metrics: {', '.join(spec.paired) or 'none'})")
    elif metric not in spec.paired:
        raise ConfigError(f"task {task!r} has no paired bootstrap of {metric!r}; paired metrics: "
                          f"{', '.join(spec.paired) or 'none'}")
    higher = spec.metric(metric).higher_is_better
    n_boot = n_boot or spec.n_boot
    cells = [c for c in ResultsStore(run_dir).done_cells() if c.get("status", "done") == "done"
             and c["task"] == task and (dataset is None or c["dataset"] == dataset)
             and (protocol is None or c["protocol"] == protocol)]
    if not cells:
        raise DataError(f"no finished {task} cells in {run_dir}")
    groups = {(c["dataset"], c["protocol"]) for c in cells}
    if len(groups) > 1:
        raise DataError(f"{task} cells of several dataset/protocol pairs {sorted(groups)}: choose one")
    if reference is None:
        rows = [r for c in cells for r in read_rows(Path(c["dir"]) / "rows.csv")]
        reference = best_reference(rows, task, metric, higher_is_better=higher)
    by_method: dict[str, dict[int | None, str]] = defaultdict(dict)
    for c in cells:
        by_method[c["method"]][c["seed"]] = c["dir"]
    if reference not in by_method:
        raise DataError(f"reference method {reference!r} has no {task} cells; "
                        f"methods: {', '.join(sorted(by_method))}")
    if methods is None:  # the other single-modality row first, as in the tables
        refs = [m for m in REFERENCE_METHODS if m in by_method]
        methods = [m for m in refs + [m for m in by_method if m not in refs] if m != reference]
    missing = [m for m in methods if m not in by_method]
    if missing:
        raise DataError(f"no {task} cells for {missing} in {run_dir}")

    first: dict[str, object] = {}  # the first cell scored: its evaluation (image order) and the draws
    scored: dict[str, tuple[float, np.ndarray]] = {}

    def score(cell_dir: str) -> tuple[float, np.ndarray]:
        if cell_dir in scored:
            return scored[cell_dir]
        try:
            ev = adapter.evaluation(cell_dir)
        except NotImplementedError as exc:
            raise DataError(str(exc)) from None
        except OSError as exc:
            raise DataError(f"{cell_dir}: cannot read the per-image scores of this {task} cell "
                            f"({exc})") from None
        if "ev" in first:
            first["ev"].same_images(ev)  # raises on other images; puts ev's images in the first one's order
        else:
            first["ev"], first["idx"] = ev, bootstrap_indices(len(ev.ids), n_boot, seed)
        full = ev.scores(np.arange(len(ev.ids))[None])
        if metric not in full:
            raise DataError(f"{cell_dir}: the per-image scores of this {task} cell have no {metric!r} "
                            f"(have {', '.join(full)})")
        scored[cell_dir] = (float(full[metric][0]), np.asarray(ev.scores(first["idx"])[metric], np.float64))
        return scored[cell_dir]

    out = []
    for m in methods:
        per_seed = []
        for s in sorted(set(by_method[m]) & set(by_method[reference]), key=_seed_order):
            est_b, reps_b = score(by_method[reference][s])
            est_a, reps_a = score(by_method[m][s])
            per_seed.append(_paired(metric, m, reference, s, est_a - est_b, reps_a - reps_b,
                                    int(first["idx"].shape[1]), confidence, seed, higher))
        if per_seed:
            out.append(combine_seeds(per_seed))
    return out


def comparison_notes(comparisons: Sequence[MethodComparison], percent: bool = True,
                     decimals: int = 1) -> list[str]:
    """Footnote lines for a table: one naming the procedure, then one per comparison, e.g.
    ``"seafusion vs vis: ΔmIoU +1.2 [+0.4, +2.0], p = 0.003 (3 seeds, seed sd 0.5)"`` (percentage points
    when ``percent``)."""
    if not comparisons:
        return []
    scale = 100.0 if percent else 1.0
    ref = comparisons[0].per_seed[0]
    unit = "percentage points" if percent else "metric units"
    lines = [f"Δ = method − reference in {unit} with its {100 * ref.confidence:g}% paired-bootstrap "
             f"interval ({ref.replicates.size} resamplings of the {ref.n_images} test images, "
             f"seed {ref.boot_seed}); p = share of resamplings where the method is not better."]

    def f(v: float) -> str:
        return "n/a" if not math.isfinite(v) else f"{scale * v:+.{decimals}f}"

    for c in comparisons:
        seeds = f"{c.n_seeds} seed{'s' if c.n_seeds > 1 else ''}"
        if c.n_seeds > 1:
            seeds += f", seed sd {scale * c.seed_std:.{decimals}f}"
        lines.append(f"{c.method_a} vs {c.method_b}: Δ{c.metric} {f(c.mean_estimate)} "
                     f"[{f(c.low)}, {f(c.high)}], p = {c.p_value:.3f} ({seeds})")
    return lines


def _check_metrics(metrics: Iterable[str], known: Sequence[str]) -> None:
    bad = [m for m in metrics if m not in known]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; choose from {', '.join(known)}")
