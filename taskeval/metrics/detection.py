"""COCO box metrics for the detection track: ground truth and predictions as COCO JSON, scored with
pycocotools or faster-coco-eval. The two agree to 1e-15 (the last bit of a double: pycocotools divides
by ``tp + fp + np.spacing(1)``, faster-coco-eval by ``tp + fp``); precision and recall are identical.

Conventions (every file taskeval writes follows them):

* Ground-truth boxes in taskeval are ``(K, 5)`` ``[cls, x1, y1, x2, y2]`` pixels; predictions of one
  image are ``(N, 6)`` ``[x1, y1, x2, y2, score, cls]`` pixels (:data:`Predictions` maps string ids to
  them).
* COCO files: ``bbox = [x, y, w, h]`` pixels, ``area = w * h``, ``iscrowd = 0``; ``category_id`` is the
  class index + 1 (as ultralytics writes it for non-COCO data); image ids are ``1..N`` in dataset order,
  and the ground-truth JSON keeps the map to our string ids under ``"taskeval": {"ids": {id: int}}``.
* Metrics (area "all", at most 100 detections per image and class, COCO's 101-point interpolation):
  ``mAP50`` = COCO AP at IoU 0.5, ``mAP50_95`` = COCO AP averaged over IoU 0.50:0.05:0.95, per-class
  ``AP50`` / ``AP50_95`` from the same precision array. A class without ground truth has no AP and is
  left out of the means (COCO's rule), so its false positives cost nothing.
* ``precision`` / ``recall``: at IoU 0.5, detections matched to ground truth greedily by score as COCO
  does, counted at the one confidence threshold that maximises the mean F1 over classes with ground
  truth (the YOLOv5 / ultralytics convention; the threshold is reported). This part is computed here,
  not by the backend, so it is identical whichever backend scores the AP.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from taskeval.errors import ConfigError, DataError
from taskeval.imageio import image_size, list_images
from taskeval.results import OVERALL, Row

Predictions = Mapping[str, np.ndarray]  # id -> (N, 6) [x1, y1, x2, y2, score, cls] pixels
BACKENDS = ("auto", "pycocotools", "faster-coco-eval")
MAX_DETS = 100  # COCO's per-image, per-class cut-off
IOU_PR = 0.5


# ----------------------------------------------------------------------------------------------- COCO JSON
def coco_ground_truth(boxes: Mapping[str, np.ndarray], sizes: Mapping[str, tuple[int, int]],
                      class_names: Sequence[str], file_names: Mapping[str, str] | None = None) -> dict:
    """COCO ground truth from our boxes.

    Args:
        boxes: id -> (K, 5) ``[cls, x1, y1, x2, y2]`` pixels (an empty array for an image without objects).
        sizes: id -> (height, width) pixels; its order fixes the integer image ids (1, 2, ...).
        class_names: the card's detection classes; class ``c`` becomes category ``c + 1``.
        file_names: id -> file name stored in ``images[].file_name`` (default ``<id>.png``).

    Raises:
        DataError: a class id outside ``0..len(class_names)-1`` or an id without boxes.
    """
    missing = [i for i in sizes if i not in boxes]
    if missing:
        raise DataError(f"no ground-truth boxes given for {len(missing)} image(s): {', '.join(missing[:10])}")
    images, annotations, ids = [], [], {}
    for k, (sid, (h, w)) in enumerate(sizes.items(), 1):
        ids[sid] = k
        images.append({"id": k, "file_name": (file_names or {}).get(sid, f"{sid}.png"), "height": int(h),
                       "width": int(w)})
        b = np.asarray(boxes[sid], dtype=np.float64).reshape(-1, 5)
        bad = [int(c) for c in b[:, 0] if c != int(c) or not 0 <= c < len(class_names)]
        if bad:
            raise DataError(f"image {sid!r}: class id(s) {bad} outside 0..{len(class_names) - 1} "
                            f"({', '.join(class_names)})")
        for cls, x1, y1, x2, y2 in b:
            w_, h_ = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": int(cls) + 1,
                                "bbox": [float(x1), float(y1), float(w_), float(h_)], "area": float(w_ * h_),
                                "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c + 1, "name": n} for c, n in enumerate(class_names)],
            "taskeval": {"ids": ids, "classes": list(class_names)}}


def dataset_ground_truth(ds) -> dict:
    """COCO ground truth of a :class:`~taskeval.data.PairedDataset` split (boxes validated by its reader:
    class ids outside the card are errors, boxes past the border are clipped or rejected per its
    ``box_policy``, empty label files are images without objects)."""
    if not ds.has_boxes:
        raise DataError(f"{ds.card.name}/{ds.split} has no detection labels (card det_classes: "
                        f"{list(ds.card.det_classes) or 'none'})")
    sizes = {sid: ds.size(i) for i, sid in enumerate(ds.ids)}
    boxes = {sid: ds.boxes(i) for i, sid in enumerate(ds.ids)}
    names = {r.id: r.vis.name for r in ds.records}
    return coco_ground_truth(boxes, sizes, ds.card.det_classes, names)


def id_map(gt: dict) -> dict[str, int]:
    """String id -> COCO image id of a ground truth (ours, or file-name stems of a foreign file)."""
    if "taskeval" in gt and "ids" in gt["taskeval"]:
        return {str(k): int(v) for k, v in gt["taskeval"]["ids"].items()}
    out: dict[str, int] = {}
    for img in gt["images"]:
        if "file_name" in img:
            stem = Path(img["file_name"]).stem
            if stem in out:
                raise DataError(f"ground truth has two images with the file stem {stem!r}")
            out[stem] = int(img["id"])
    return out


def coco_detections(preds: Predictions, gt: dict) -> list[dict]:
    """COCO results (``[{image_id, category_id, bbox, score}]``) from ``preds`` keyed by string ids.

    Raises:
        DataError: ids that are not in the ground truth, class indices outside its categories,
            non-finite numbers or arrays of the wrong shape.
    """
    ids = id_map(gt)
    unknown = [sid for sid in preds if sid not in ids]
    if unknown:
        raise DataError(f"predictions for {len(unknown)} image(s) that are not in the ground truth: "
                        f"{', '.join(map(str, unknown[:20]))}{' ...' if len(unknown) > 20 else ''}")
    cat_ids = sorted(c["id"] for c in gt["categories"])
    out = []
    for sid, arr in preds.items():
        arr = np.asarray(arr, dtype=np.float64)
        if arr.size == 0:
            continue
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise DataError(f"predictions of {sid!r}: expected an (N, 6) array [x1, y1, x2, y2, score, cls], "
                            f"got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"predictions of {sid!r}: non-finite values")
        cls = arr[:, 5]
        bad = sorted({int(c) for c in cls if c != int(c) or not 0 <= c < len(cat_ids)})
        if bad:
            raise DataError(f"predictions of {sid!r}: class index(es) {bad} outside 0..{len(cat_ids) - 1}")
        img = ids[sid]
        for x1, y1, x2, y2, s, c in arr.tolist():
            out.append({"image_id": img, "category_id": cat_ids[int(c)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": s})
    return out


def write_json(path: str | Path, obj) -> None:
    from taskeval.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(obj) + "\n")


# ------------------------------------------------------------------------------------------ foreign files
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from None


def load_ground_truth(path: str | Path, images: str | Path | None = None,
                      classes: Sequence[str] | None = None) -> dict:
    """Ground truth from a COCO JSON file or a folder of YOLO label files.

    Args:
        path: ``*.json`` (COCO) or a folder of ``<stem>.txt`` files (``cls cx cy w h`` normalised).
        images: for YOLO labels, the folder of the images (their sizes turn normalised boxes into pixels;
            an image without a label file has no objects).
        classes: for YOLO labels, the class names (default: ``classes.txt`` in the label folder or its
            parent).

    Raises:
        DataError: unreadable files, label files without an image, class ids outside the classes.
    """
    from taskeval.data.labels import read_class_names, read_yolo_txt

    path = Path(path)
    if path.is_file():
        gt = _read_json(path)
        if not isinstance(gt, dict) or not all(k in gt for k in ("images", "annotations", "categories")):
            raise DataError(f"{path}: not a COCO ground-truth file (needs 'images', 'annotations' and "
                            "'categories')")
        for img in gt["images"]:
            if not all(k in img for k in ("id", "width", "height")):
                raise DataError(f"{path}: image entry {img} lacks id, width or height")
        return gt
    if not path.is_dir():
        raise DataError(f"ground truth not found: {path}")
    if images is None:
        raise ConfigError(f"{path} holds YOLO labels: give the image folder (--images DIR) for the image "
                          "sizes")
    if classes is None:
        for cand in (path / "classes.txt", path.parent / "classes.txt"):
            if cand.is_file():
                classes = read_class_names(cand)
                break
        else:
            raise ConfigError(f"{path}: no classes.txt beside the YOLO labels; give the class names "
                              "(--classes FILE)")
    found = list_images(images)
    if not found:
        raise DataError(f"no images in {images}")
    labels = {p.stem: p for p in sorted(path.glob("*.txt")) if p.name != "classes.txt"}
    orphans = sorted(set(labels) - set(found))
    if orphans:
        raise DataError(f"{path}: {len(orphans)} label file(s) without an image in {images}: "
                        f"{', '.join(orphans[:20])}")
    unlabelled = sorted(set(found) - set(labels))
    if unlabelled:  # a lost label file would count its objects as false positives: never assume "no objects"
        raise DataError(f"{path}: {len(unlabelled)} image(s) of {images} have no label file (an image without "
                        f"objects needs an empty .txt): {', '.join(unlabelled[:20])}"
                        f"{' ...' if len(unlabelled) > 20 else ''}")
    sizes = {sid: image_size(found[sid]) for sid in sorted(found)}
    boxes = {sid: read_yolo_txt(labels[sid], len(classes), sizes[sid]) for sid in sizes}
    return coco_ground_truth(boxes, sizes, tuple(classes), {sid: found[sid].name for sid in sizes})


def _yolo_prediction_file(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            v = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{path}: line {line_no}: not numbers: {line.strip()!r}") from None
        if len(v) == 5:
            raise DataError(f"{path}: line {line_no}: no confidence; predictions need 'cls cx cy w h conf' "
                            "(ultralytics: save_txt=True save_conf=True)")
        if len(v) != 6 or not all(math.isfinite(x) for x in v):
            raise DataError(f"{path}: line {line_no}: expected 6 finite numbers 'cls cx cy w h conf'")
        c, cx, cy, bw, bh, s = v
        rows.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, s, c])
    return np.asarray(rows, np.float64).reshape(-1, 6)


def load_predictions(path: str | Path, gt: dict) -> list[dict]:
    """Predictions for ``gt`` from a COCO results JSON or a folder of YOLO txt files with confidence.

    A COCO file is a list of ``{image_id, category_id, bbox, score}`` (or a dict with ``annotations``);
    ``image_id`` may be the ground truth's integer id or a string id / file stem. YOLO files are
    ``<stem>.txt`` with ``cls cx cy w h conf`` (normalised); class ``c`` is the ``c``-th category by id;
    an image without a file has no detections.

    Raises:
        DataError: ids or stems that are not in the ground truth, unknown categories, malformed entries.
    """
    path = Path(path)
    ids = id_map(gt)
    if path.is_dir():
        files = {p.stem: p for p in sorted(path.glob("*.txt")) if p.name != "classes.txt"}
        unknown = sorted(set(files) - set(ids))
        if unknown:
            raise DataError(f"{path}: prediction files for {len(unknown)} image(s) that are not in the "
                            f"ground truth: {', '.join(unknown[:20])}")
        sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in gt["images"]}
        preds = {sid: _yolo_prediction_file(p, sizes[ids[sid]]) for sid, p in files.items()}
        return coco_detections(preds, gt)
    if not path.is_file():
        raise DataError(f"predictions not found: {path}")
    raw = _read_json(path)
    if isinstance(raw, dict) and "annotations" in raw:
        raw = raw["annotations"]
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a list of COCO detections")
    img_ids = {int(img["id"]) for img in gt["images"]}
    cat_ids = {int(c["id"]) for c in gt["categories"]}
    out, unknown = [], []
    for k, d in enumerate(raw):
        if not isinstance(d, dict) or not all(k in d for k in ("image_id", "category_id", "bbox", "score")):
            raise DataError(f"{path}: entry {k} lacks image_id, category_id, bbox or score: {d!r}"[:300])
        img = d["image_id"]
        if isinstance(img, str) and img in ids:
            img = ids[img]
        if not isinstance(img, int) or img not in img_ids:
            unknown.append(str(d["image_id"]))
            continue
        if d["category_id"] not in cat_ids:
            raise DataError(f"{path}: entry {k}: category_id {d['category_id']} is not in the ground truth "
                            f"({sorted(cat_ids)})")
        bbox = [float(x) for x in d["bbox"]]
        if len(bbox) != 4 or not all(math.isfinite(x) for x in bbox + [float(d["score"])]):
            raise DataError(f"{path}: entry {k}: bbox must be 4 finite numbers [x, y, w, h], got {d['bbox']}")
        out.append({"image_id": img, "category_id": int(d["category_id"]), "bbox": bbox,
                    "score": float(d["score"])})
    if unknown:
        uniq = sorted(set(unknown))
        raise DataError(f"{path}: detections for {len(uniq)} image id(s) that are not in the ground truth: "
                        f"{', '.join(uniq[:20])}{' ...' if len(uniq) > 20 else ''}")
    return out


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class ClassScores:
    ap50: float
    ap50_95: float
    precision: float
    recall: float
    n_gt: int


@dataclass
class DetectionScores:
    """COCO scores of one prediction set. AP values are fractions in [0, 1]."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    conf_threshold: float        # the confidence at which precision / recall are counted
    per_class: dict[str, ClassScores]
    n_images: int
    n_gt: int
    n_det: int
    backend: str
    stats: list[float] = field(default_factory=list)  # the backend's 12 COCO summary numbers

    def to_dict(self) -> dict:
        return asdict(self)

    def rows(self, method: str, dataset: str, protocol: str, seed: int | None, note: str = "") -> list[Row]:
        """Result rows: overall ``mAP50``, ``mAP50_95``, ``precision``, ``recall``; per class ``AP50``,
        ``AP50_95``, ``precision``, ``recall`` (classes without ground truth have no rows)."""
        def row(metric, cls, value):
            return Row(method, "detection", dataset, protocol, seed, metric, cls, float(value), note)

        out = [row("mAP50", OVERALL, self.map50), row("mAP50_95", OVERALL, self.map50_95),
               row("precision", OVERALL, self.precision), row("recall", OVERALL, self.recall)]
        for name, c in self.per_class.items():
            out += [row("AP50", name, c.ap50), row("AP50_95", name, c.ap50_95),
                    row("precision", name, c.precision), row("recall", name, c.recall)]
        return out


def available_backends() -> list[str]:
    out = []
    for name, module in (("faster-coco-eval", "faster_coco_eval"), ("pycocotools", "pycocotools")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            continue
    return out


def resolve_backend(name: str = "auto") -> str:
    """``auto`` -> faster-coco-eval when installed, else pycocotools."""
    if name not in BACKENDS:
        from taskeval.registry import suggest

        raise ConfigError(f"unknown COCO backend {name!r}{suggest(name, BACKENDS)}; choose from "
                          f"{', '.join(BACKENDS)}")
    have = available_backends()
    if name == "auto":
        if not have:
            raise ConfigError("no COCO backend installed: pip install pycocotools (or faster-coco-eval)")
        return have[0]
    if name not in have:
        raise ConfigError(f"COCO backend {name!r} is not installed (pip install {name})")
    return name


def _run_backend(gt: dict, dets: list[dict], backend: str):
    """(stats (12,), precision array (T,R,K,A,M), category ids in K order) of a COCO bbox evaluation."""
    dets = [dict(d) for d in dets]  # both backends write area/id/segmentation into the dicts
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    else:
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args, **kwargs):
            return None

        coco_gt = COCO({k: gt[k] for k in ("images", "annotations", "categories")}, print_function=quiet)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=quiet)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return (np.asarray(ev.stats[:12], dtype=np.float64), np.asarray(ev.eval["precision"]),
            list(ev.params.catIds))


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _iou_xywh(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(D, G) IoU of boxes ``[x, y, w, h]`` as COCO computes it for non-crowd ground truth."""
    dx2, dy2 = d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]
    gx2, gy2 = g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = np.minimum(dx2[:, None], gx2[None]) - np.maximum(d[:, None, 0], g[None, :, 0])
    ih = np.minimum(dy2[:, None], gy2[None]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detections(gt: dict, dets: list[dict], iou: float = IOU_PR, max_dets: int = MAX_DETS):
    """COCO's greedy matching at one IoU threshold.

    Per (image, category), detections in descending score order (stable) and cut to ``max_dets`` each take
    the unmatched ground-truth box of highest IoU >= ``iou`` (ties: the later box, as COCO).

    Returns:
        (scores (D,), category ids (D,), true-positive flags (D,) bool) of the kept detections, and a dict
        category id -> number of ground-truth boxes.
    """
    n_gt = {int(c["id"]): 0 for c in gt["categories"]}
    gt_groups: dict[tuple[int, int], list[list[float]]] = {}
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        n_gt[int(a["category_id"])] = n_gt.get(int(a["category_id"]), 0) + 1
        gt_groups.setdefault((int(a["image_id"]), int(a["category_id"])), []).append(a["bbox"])
    if not dets:
        return np.zeros(0), np.zeros(0, int), np.zeros(0, bool), n_gt
    img = np.fromiter((d["image_id"] for d in dets), np.int64, len(dets))
    cat = np.fromiter((d["category_id"] for d in dets), np.int64, len(dets))
    score = np.fromiter((d["score"] for d in dets), np.float64, len(dets))
    box = np.asarray([d["bbox"] for d in dets], np.float64).reshape(-1, 4)
    order = np.lexsort((np.arange(len(dets)), -score, cat, img))  # group, then score desc, then input order
    img, cat, score, box = img[order], cat[order], score[order], box[order]
    starts = np.flatnonzero(np.r_[True, (img[1:] != img[:-1]) | (cat[1:] != cat[:-1])])
    ends = np.r_[starts[1:], len(order)]
    keep = np.zeros(len(order), bool)
    tp = np.zeros(len(order), bool)
    thr = min(iou, 1 - 1e-10)
    for s, e in zip(starts, ends):
        e = min(e, s + max_dets)
        keep[s:e] = True
        g = gt_groups.get((int(img[s]), int(cat[s])))
        if not g:
            continue
        ious = _iou_xywh(box[s:e], np.asarray(g, np.float64))
        rows = np.flatnonzero((ious >= thr).any(axis=1))
        taken = np.zeros(ious.shape[1], bool)
        for r in rows:
            cand = np.where(taken, -1.0, ious[r])
            best = cand.max()
            if best < thr:
                continue
            m = len(cand) - 1 - int(np.argmax(cand[::-1]))  # the last of equal maxima
            taken[m] = True
            tp[s + r] = True
    return score[keep], cat[keep], tp[keep], n_gt


def precision_recall(gt: dict, dets: list[dict]) -> tuple[float, float, float, dict]:
    """Precision and recall at IoU 0.5 at the confidence that maximises the mean F1 over classes with
    ground truth (the lowest such confidence on ties). Returns (P, R, threshold, {cat: (P, R)})."""
    score, cat, tp, n_gt = match_detections(gt, dets)
    cats = [c for c in sorted(n_gt) if n_gt[c] > 0]
    if not cats:
        return float("nan"), float("nan"), float("nan"), {}
    thresholds = np.unique(score)
    if thresholds.size == 0:
        return 0.0, 0.0, float("nan"), {c: (0.0, 0.0) for c in cats}
    prec = np.zeros((len(cats), thresholds.size))
    rec = np.zeros_like(prec)
    for k, c in enumerate(cats):
        sel = cat == c
        s = np.sort(score[sel])[::-1]
        cum_tp = np.cumsum(tp[sel][np.argsort(-score[sel], kind="stable")])
        n_above = np.searchsorted(-s, -thresholds, side="right")
        tps = np.where(n_above > 0, cum_tp[np.maximum(n_above - 1, 0)] if cum_tp.size else 0, 0)
        prec[k] = np.divide(tps, n_above, out=np.zeros(thresholds.size), where=n_above > 0)
        rec[k] = tps / n_gt[c]
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=(prec + rec) > 0).mean(axis=0)
    j = int(np.argmax(f1))
    per = {c: (float(prec[k, j]), float(rec[k, j])) for k, c in enumerate(cats)}
    return float(prec[:, j].mean()), float(rec[:, j].mean()), float(thresholds[j]), per


def score_detections(gt: dict, dets: list[dict], backend: str = "auto") -> DetectionScores:
    """COCO-score ``dets`` (COCO results) against ``gt`` (COCO ground truth). See the module docstring.

    Raises:
        DataError: detections for images that are not in the ground truth.
    """
    backend = resolve_backend(backend)
    img_ids = {int(img["id"]) for img in gt["images"]}
    stray = sorted({d["image_id"] for d in dets} - img_ids, key=str)
    if stray:
        raise DataError(f"detections for {len(stray)} image id(s) that are not in the ground truth: "
                        f"{', '.join(map(str, stray[:20]))}")
    names = {int(c["id"]): c["name"] for c in gt["categories"]}
    p, r, thr, per_pr = precision_recall(gt, dets)
    n_gt = {c: 0 for c in names}
    for a in gt["annotations"]:
        n_gt[int(a["category_id"])] += 0 if a.get("iscrowd", 0) else 1
    if not dets:  # pycocotools cannot load an empty result list; COCO's answer is AP 0 for every class
        zero = 0.0 if any(n_gt.values()) else float("nan")
        per_class = {names[c]: ClassScores(0.0, 0.0, 0.0, 0.0, n) for c, n in sorted(n_gt.items()) if n}
        return DetectionScores(zero, zero, p, r, thr, per_class, len(gt["images"]), sum(n_gt.values()), 0,
                               backend)
    stats, precision, cat_order = _run_backend(gt, dets, backend)
    per_class = {}
    for k, c in enumerate(cat_order):
        if n_gt[c] == 0:
            continue
        pk = precision[:, :, k, 0, -1]
        cp, cr = per_pr.get(c, (0.0, 0.0))
        per_class[names[c]] = ClassScores(_mean_valid(pk[0]), _mean_valid(pk), cp, cr, n_gt[c])
    return DetectionScores(
        map50=float(stats[1]), map50_95=float(stats[0]), precision=p, recall=r, conf_threshold=thr,
        per_class=per_class, n_images=len(gt["images"]), n_gt=sum(n_gt.values()), n_det=len(dets),
        backend=backend, stats=[float(x) for x in stats])


def score_predictions(preds: Predictions, gt: dict,
                      backend: str = "auto") -> tuple[DetectionScores, list[dict]]:
    """Score predictions keyed by string id; returns the scores and the COCO results that were scored."""
    dets = coco_detections(preds, gt)
    return score_detections(gt, dets, backend), dets
