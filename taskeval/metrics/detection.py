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
* ``precision`` / ``recall``: at IoU 0.5, from the backend's own per-image matches (the ones its AP
  counts: the 100 best detections per image and class, those on crowd regions ignored), at the one
  confidence threshold that maximises the mean F1 over classes with ground truth (the YOLOv5 /
  ultralytics convention; the threshold is reported). Both backends match identically, so P, R and the
  threshold are equal whichever backend scores.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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


def _quiet(*args, **kwargs) -> None:
    return None


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector for a COCO evaluation. It creates about ten small objects per
    detection, none of them in reference cycles, and every 700 allocations trigger a collection that on
    500,000 detections walks millions of live objects for nothing (measured in bench/bench_detection.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_image_ids(gt: dict, dets: list[dict]) -> None:
    img_ids = {int(img["id"]) for img in gt["images"]}
    stray = sorted({d["image_id"] for d in dets} - img_ids, key=str)
    if stray:
        raise DataError(f"detections for {len(stray)} image id(s) that are not in the ground truth: "
                        f"{', '.join(map(str, stray[:20]))}")


def _coco_objects(gt: dict, dets: list[dict], backend: str):
    """(ground truth, results) as the backend's COCO objects; ``gt`` and ``dets`` are left unchanged.

    The results are the annotations ``loadRes`` makes of boxes (each detection's keys plus ``id`` = position
    + 1, ``area = w * h``, ``iscrowd = 0``, same order) less the polygon it adds for segmentation, which a
    box evaluation never reads, and in new dicts: ``loadRes`` writes into the ones it gets, so they would
    have to be copied first. The backends write ``ignore`` flags into the ground-truth annotations, so they
    get copies too. A ground truth without ``images`` (one image's boxes, as figures pass) gets the images
    that its boxes and ``dets`` name.
    """
    images = gt.get("images")
    if images is None:
        ids = {int(a["image_id"]) for a in gt["annotations"]} | {int(d["image_id"]) for d in dets}
        images = [{"id": i} for i in sorted(ids)]
    datasets = (
        {"images": images, "categories": gt["categories"], "annotations": [dict(a) for a in gt["annotations"]]},
        {"images": images, "categories": gt["categories"],
         "annotations": [dict(d, id=k, area=d["bbox"][2] * d["bbox"][3], iscrowd=0) for k, d in enumerate(dets, 1)]})
    if backend == "pycocotools":
        from pycocotools.coco import COCO

        kwargs = {}
    else:
        from faster_coco_eval import COCO

        kwargs = {"print_function": _quiet}
    out = []
    for data in datasets:
        coco = COCO(**kwargs)
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        out.append(coco)
    return out[0], out[1]


def _evaluate(gt: dict, dets: list[dict], backend: str, iou: float | None = None, max_dets: int = MAX_DETS):
    """The backend's COCOeval of ``dets`` after its per-image matching (``evaluate()``).

    With ``iou``, only that IoU threshold, area "all" and the ``max_dets`` best detections per image and
    category (enough for :func:`_matches`); without, COCO's standard parameters.
    """
    coco_gt, coco_dt = _coco_objects(gt, dets, backend)
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco_gt, coco_dt, "bbox")
    else:
        from faster_coco_eval import COCOeval_faster

        # separate_eval keeps the per-image results between evaluate() and accumulate(), where _matches reads
        # them; the combined call would discard them inside C++
        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_quiet, separate_eval=True)
    p = ev.params
    if p.areaRngLbl[0] != "all" or p.iouThrs[0] != IOU_PR:
        raise RuntimeError(f"{backend}: unexpected COCO parameters (areas {p.areaRngLbl}, IoU {p.iouThrs})")
    if iou is not None:
        p.iouThrs = np.array([float(iou)])
        p.areaRng, p.areaRngLbl, p.maxDets = p.areaRng[:1], p.areaRngLbl[:1], [int(max_dets)]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return ev


def _matches(ev, backend: str, t: int = 0):
    """COCO's own per-image matches at IoU threshold index ``t``, area "all", concatenated per category.

    Returns:
        (scores (D,), category ids (D,), true-positive flags (D,) bool) of the detections COCO counts: the
        best ``maxDets[-1]`` of each image and category (descending score, stable), less those matched to a
        crowd region (COCO ignores them), in category, image, rank order; and category id -> ground-truth
        boxes COCO counts (not crowd).
    """
    p = ev.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    scores, cats, tps, n_gt = [], [], [], {}
    for k, cat in enumerate(p.catIds):
        first = k * n_area * n_img  # evalImgs is [category][area][image]; area 0 is "all"
        s_k, m_k, ig_k, n = [], [], [], 0
        if backend == "pycocotools":
            for e in ev.evalImgs[first:first + n_img]:
                if e is None:  # neither boxes nor detections
                    continue
                s_k += e["dtScores"]
                m_k += e["dtMatches"][t].tolist()
                ig_k += e["dtIgnore"][t].tolist()
                n += len(e["gtIgnore"]) - int(np.count_nonzero(e["gtIgnore"]))
        else:
            for e in ev._evalImgs_cpp[first:first + n_img]:
                # the C++ ImageEvaluation exposes its fields through pickling only: (detection matches (T*D,),
                # ground-truth matches, detection scores (D,), ground-truth ignore flags, detection ignore
                # flags (T*D,), matched pairs)
                dt_match, _, s, gt_ignore, dt_ignore, _ = e.__getstate__()
                d = len(s)
                s_k += s
                m_k += dt_match[t * d:(t + 1) * d]
                ig_k += dt_ignore[t * d:(t + 1) * d]
                n += len(gt_ignore) - sum(gt_ignore)
        counted = ~np.asarray(ig_k, bool).reshape(-1)
        scores.append(np.asarray(s_k, np.float64).reshape(-1)[counted])
        tps.append(np.asarray(m_k, np.float64).reshape(-1)[counted] > 0)  # a matched box's id, 0 when none
        cats.append(np.full(int(counted.sum()), int(cat), np.int64))
        n_gt[int(cat)] = n
    if not scores:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), n_gt
    return np.concatenate(scores), np.concatenate(cats), np.concatenate(tps), n_gt


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def match_detections(gt: dict, dets: list[dict], iou: float = IOU_PR, max_dets: int = MAX_DETS,
                     backend: str = "auto"):
    """COCO's greedy matching at one IoU threshold, as the backend's own per-image evaluation does it.

    Per (image, category), detections in descending score order (stable) and cut to ``max_dets`` each take
    the unmatched ground-truth box of highest IoU >= ``iou`` (ties: the later box); one matched to a crowd
    region is ignored (neither true nor false positive) and left out. ``gt`` may lack ``images`` (then its
    boxes and ``dets`` name them).

    Returns:
        (scores (D,), category ids (D,), true-positive flags (D,) bool) of the counted detections, in
        category, image, descending-score order, and a dict category id -> number of (non-crowd)
        ground-truth boxes.

    Raises:
        DataError: detections for images that are not in ``gt["images"]``.
    """
    backend = resolve_backend(backend)
    if "images" in gt:
        _check_image_ids(gt, dets)
    with _gc_paused():
        return _matches(_evaluate(gt, dets, backend, iou=iou, max_dets=max_dets), backend)


def precision_recall_at_best_f1(score: np.ndarray, cat: np.ndarray, tp: np.ndarray,
                                n_gt: Mapping[int, int]) -> tuple[float, float, float, dict]:
    """Precision and recall at the confidence that maximises the mean F1 over classes with ground truth
    (the lowest such confidence on ties; candidates: every score of a counted detection).

    Args:
        score, cat, tp, n_gt: the output of :func:`match_detections`.

    Returns:
        (P, R, threshold, {category id: (P, R)}); P and R are means over the classes with ground truth.
    """
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


def _coco_eval(gt: dict, dets: list[dict], backend: str):
    """(stats (12,), precision (T, R, K, A, M), category ids in K order, :func:`_matches` at IoU 0.5) of one
    COCO evaluation with standard parameters.

    Only these small results leave the garbage-collector pause: the backend's millions of objects are freed
    inside it, otherwise the first collection after it would walk every one of them.
    """
    with _gc_paused():
        ev = _evaluate(gt, dets, backend)
        matches = _matches(ev, backend)  # IoU threshold 0 is 0.5
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
            ev.summarize()
        out = (np.asarray(ev.stats[:12], dtype=np.float64), np.asarray(ev.eval["precision"]),
               [int(c) for c in ev.params.catIds], matches)
        del ev
    return out


def _coco_mean(stat: float) -> float:
    return float(stat) if stat > -1 else float("nan")  # COCO writes -1 where no class has ground truth


def score_detections(gt: dict, dets: list[dict], backend: str = "auto") -> DetectionScores:
    """COCO-score ``dets`` (COCO results) against ``gt`` (COCO ground truth). See the module docstring.

    One evaluation by the backend gives everything: AP from its accumulation, precision and recall from
    its own per-image matches at IoU 0.5 (no second matcher).

    Raises:
        DataError: detections for images that are not in the ground truth.
    """
    backend = resolve_backend(backend)
    _check_image_ids(gt, dets)
    names = {int(c["id"]): c["name"] for c in gt["categories"]}
    stats, precision, cat_ids, matches = _coco_eval(gt, dets, backend)
    n_gt = matches[3]
    p, r, thr, per_pr = precision_recall_at_best_f1(*matches)
    per_class = {}
    for k, c in enumerate(cat_ids):
        if n_gt[c] == 0:
            continue
        pk = precision[:, :, k, 0, -1]
        cp, cr = per_pr[c]
        per_class[names[c]] = ClassScores(_mean_valid(pk[0]), _mean_valid(pk), cp, cr, n_gt[c])
    return DetectionScores(
        map50=_coco_mean(stats[1]), map50_95=_coco_mean(stats[0]), precision=p, recall=r, conf_threshold=thr,
        per_class=per_class, n_images=len(gt["images"]), n_gt=sum(n_gt.values()), n_det=len(dets),
        backend=backend, stats=[float(x) for x in stats])


def score_predictions(preds: Predictions, gt: dict,
                      backend: str = "auto") -> tuple[DetectionScores, list[dict]]:
    """Score predictions keyed by string id; returns the scores and the COCO results that were scored."""
    dets = coco_detections(preds, gt)
    return score_detections(gt, dets, backend), dets
