"""Example grids of a run: rows = test scenes, columns = IR, visible, then what each method's task network
made of its fused images. Which grid a task gets follows its spec (``TaskSpec.grid``):

* ``"boxes"``: :func:`detection_grid`, boxes from the cell's COCO ``gt.json`` / ``predictions.json``;
* ``"masks"``: :func:`segmentation_grid`, label maps from the cell's ``pred/<id>.png`` and
  ``per_image_confmat.npz``.

Which cells a grid shows: one protocol per task (by default the protocol that is not a ``fixed:``
screening protocol and covers the most methods; ties by name) and one seed per method (the lowest,
unless ``seed`` is given).

Scenes "where methods disagree most" (deterministic):

* boxes: for every test image with ground truth and every method, the recall at IoU 0.5 of the
  method's boxes with score >= ``score_threshold`` (COCO's greedy matching,
  :func:`taskeval.metrics.detection.match_detections`). Images are ranked by the standard deviation of
  that recall across methods, then by the standard deviation of the number of false positives, then by
  the number of ground-truth boxes, then in dataset order.
* masks: every method's per-image mIoU (:func:`taskeval.metrics.segmentation.scores_from_confmat` of
  each image's confusion matrix); images ranked by its standard deviation across methods, then in
  dataset order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from taskeval.errors import ConfigError, DataError
from taskeval.imageio import read_raw, read_rgb
from taskeval.reporting.run import RunData
from taskeval.reporting.style import STYLE, class_colours
from taskeval.stats import REFERENCE_METHODS

IGNORE_RGB = (255, 255, 255)
INSET_CORNERS = {"lower right": (0.59, 0.02), "lower left": (0.02, 0.02), "upper right": (0.59, 0.59),
                 "upper left": (0.02, 0.59)}  # axes fractions of the inset's lower-left corner
INSET_ANCHORS = {"lower right": "SE", "lower left": "SW", "upper right": "NE", "upper left": "NW"}


def grid_task(run: RunData, grid: str) -> str | None:
    """The first task of the run with finished cells whose spec has this label kind (None if none)."""
    have = {c["task"] for c in run.cells}
    return next((t for t in run.tasks if t in have and run.spec(t).grid == grid), None)


# --------------------------------------------------------------------------------------- detections
@dataclass
class CellDetections:
    """A detection cell's boxes by string id: (N, 6) ``[x1, y1, x2, y2, score, cls]`` pixels, cls 0-based."""

    gt: dict
    classes: list[str]
    boxes: dict[str, np.ndarray]
    coco: list[dict]


def load_detections(cell_dir: str | Path) -> CellDetections:
    """Read ``gt.json`` and ``predictions.json`` of a detection cell."""
    cell_dir = Path(cell_dir)
    try:
        gt = json.loads((cell_dir / "gt.json").read_text())
        coco = json.loads((cell_dir / "predictions.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{cell_dir}: cannot read gt.json / predictions.json ({exc})") from None
    from taskeval.metrics.detection import id_map

    to_str = {v: k for k, v in id_map(gt).items()}
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
    grouped: dict[str, list[list[float]]] = {sid: [] for sid in to_str.values()}
    for d in coco:
        sid = to_str.get(int(d["image_id"]))
        if sid is None or int(d["category_id"]) not in cat_index:
            raise DataError(f"{cell_dir / 'predictions.json'}: detection for image {d['image_id']} / "
                            f"category {d['category_id']} that gt.json does not have")
        x, y, w, h = d["bbox"]
        grouped[sid].append([x, y, x + w, y + h, d["score"], cat_index[int(d["category_id"])]])
    boxes = {sid: np.asarray(b, np.float64).reshape(-1, 6) for sid, b in grouped.items()}
    return CellDetections(gt, [c["name"] for c in cats], boxes, coco)


def detection_agreement(dets: Mapping[str, CellDetections], score_threshold: float) -> dict[str, dict]:
    """Per image and method: ground-truth count, correct detections and false positives at IoU 0.5.

    Returns:
        id -> {"n_gt": int, "tp": {method: int}, "fp": {method: int}} over the ids of the first
        method's ground truth.
    """
    from taskeval.metrics.detection import id_map, match_detections

    first = next(iter(dets.values())).gt
    ids = id_map(first)
    anns: dict[int, list[dict]] = {}
    for a in first["annotations"]:
        anns.setdefault(int(a["image_id"]), []).append(a)
    kept: dict[str, dict[int, list[dict]]] = {}
    for m, cd in dets.items():
        kept[m] = {}
        for d in cd.coco:
            if d["score"] >= score_threshold:
                kept[m].setdefault(int(d["image_id"]), []).append(d)
    out = {}
    for sid, img in ids.items():
        sub_gt = {"categories": first["categories"], "annotations": anns.get(img, [])}
        n_gt = sum(1 for a in sub_gt["annotations"] if not a.get("iscrowd", 0))
        tp, fp = {}, {}
        for m in dets:
            _, _, flags, _ = match_detections(sub_gt, kept[m].get(img, []))
            tp[m], fp[m] = int(flags.sum()), int(len(flags) - flags.sum())
        out[sid] = {"n_gt": n_gt, "tp": tp, "fp": fp}
    return out


def pick_detection_scenes(dets: Mapping[str, CellDetections], ids_in_order: Sequence[str], n: int,
                          score_threshold: float = 0.25) -> list[str]:
    """The ``n`` test ids where the methods' recall disagrees most (see the module docstring)."""
    if len(dets) == 0:
        return []
    stats = detection_agreement(dets, score_threshold)
    position = {sid: k for k, sid in enumerate(ids_in_order)}
    candidates = [sid for sid in ids_in_order if sid in stats and stats[sid]["n_gt"] > 0] or \
        [sid for sid in ids_in_order if sid in stats]

    def key(sid):
        s = stats[sid]
        recall = np.array([s["tp"][m] / s["n_gt"] if s["n_gt"] else 0.0 for m in dets])
        fp = np.array([s["fp"][m] for m in dets], np.float64)
        return (-float(recall.std()), -float(fp.std()), -s["n_gt"], position[sid])

    return sorted(candidates, key=key)[:n]


# ----------------------------------------------------------------------------------- segmentation
def per_image_miou(ids: Sequence[str], confmats: np.ndarray) -> dict[str, float]:
    """id -> mIoU of that image alone (``confmats`` (N, C, C) in the order of ``ids``), as
    :mod:`taskeval.metrics.segmentation` defines it (classes with an empty union left out of the mean)."""
    from taskeval.metrics.segmentation import scores_from_confmat  # imports torchmetrics: only when drawn

    if len(ids) != len(confmats):
        raise DataError(f"{len(ids)} ids but {len(confmats)} confusion matrices")
    return dict(zip(map(str, ids), scores_from_confmat(confmats)["mIoU"].tolist()))


def pick_segmentation_scenes(mious: Mapping[str, Mapping[str, float]], ids_in_order: Sequence[str],
                             n: int) -> list[str]:
    """The ``n`` ids whose per-image mIoU varies most across methods (``mious``: method -> id -> mIoU)."""
    spread = {}
    for k, sid in enumerate(ids_in_order):
        vals = np.array([m[sid] for m in mious.values() if sid in m and math.isfinite(m[sid])])
        if vals.size:
            spread[sid] = (-float(vals.std()), k)
    return sorted(spread, key=spread.get)[:n]


def colourise(mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 in the dataset palette; ignored / unknown ids are white."""
    lut = np.tile(np.asarray(IGNORE_RGB, np.uint8), (256, 1))
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    if 0 <= ignore_index < 256:
        lut[ignore_index] = IGNORE_RGB
    return lut[np.clip(mask, 0, 255).astype(np.intp)]


def dataset_palette(card) -> list[tuple[int, int, int]]:
    if card.palette:
        return [tuple(c) for c in card.palette]
    cmap = colormaps["tab20"]
    return [tuple(round(255 * v) for v in cmap(i % cmap.N)[:3]) for i in range(len(card.seg_classes))]


# -------------------------------------------------------------------------------------- grid helpers
def _grid(n_rows: int, n_cols: int, aspect: float, legend_lines: int, max_width: float = 14.0) -> tuple:
    """A figure of image panels of exactly ``pw`` x ``pw / aspect`` inches (``pw`` <= 1.7 in, smaller when
    many columns), room for column titles, row labels and ``legend_lines`` lines of legend below."""
    pw = min(1.7, max_width / n_cols)
    ph = pw / aspect
    left, right, top, gap = 0.2, 0.04, 0.2, 0.04  # inches: row labels, border, column titles, between panels
    bottom = 0.08 + 0.17 * legend_lines
    fw = left + n_cols * pw + (n_cols - 1) * gap + right
    fh = top + n_rows * ph + (n_rows - 1) * gap + bottom
    fig = Figure(figsize=(fw, fh))
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={
        "left": left / fw, "right": 1 - right / fw, "top": 1 - top / fh, "bottom": bottom / fh,
        "wspace": gap / pw, "hspace": gap / ph}))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _legend_below(fig, handles: list, ncol: int, **kwargs) -> None:
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
               borderaxespad=0.2, handlelength=1.6, columnspacing=1.2, **kwargs)


def _show(ax, img: np.ndarray, nearest: bool = False) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest" if nearest else "antialiased")
    else:
        ax.imshow(img, interpolation="nearest" if nearest else "antialiased")


def _draw_boxes(ax, boxes: np.ndarray, classes: Sequence[str], colours: Sequence, labels: bool,
                size_hw: tuple[int, int]) -> None:
    """Predicted boxes (N, 6) ``[x1, y1, x2, y2, score, cls]``: one colour per class, "class score" tags."""
    h, w = size_hw
    for x1, y1, x2, y2, score, cls in boxes[np.argsort(boxes[:, 4], kind="stable")] if len(boxes) else ():
        c = colours[int(cls)]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=0.9,
                               gid="pred"))
        if labels:
            # keep the tag inside the panel: inside the box at the top border, right-aligned at the right one
            below = y1 < 0.08 * h
            right = x1 > 0.65 * w
            ax.text(x2 if right else x1, y1, f"{classes[int(cls)]} {score:.2f}", fontsize=4.5, color="white",
                    clip_on=True, va="top" if below else "bottom", ha="right" if right else "left",
                    bbox={"facecolor": c, "edgecolor": "none", "pad": 0.4, "alpha": 0.85})


def _draw_gt(ax, boxes: np.ndarray | None) -> None:
    for _, x1, y1, x2, y2 in boxes if boxes is not None else ():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=0.8,
                               linestyle=(0, (2, 1.5)), gid="gt"))


def _inset(ax, img: np.ndarray, region: Sequence[float], corner: str, draw):
    """Magnify ``region`` (x, y, w, h pixels) of a panel in one of its corners; ``draw(axins)`` adds the
    overlays."""
    x, y, w, h = (float(v) for v in region)
    if w <= 0 or h <= 0:
        raise ConfigError(f"inset region must have a positive size, got {list(region)}")
    x0, y0 = INSET_CORNERS[corner]
    axins = ax.inset_axes([x0, y0, 0.39, 0.39])
    axins.set_anchor(INSET_ANCHORS[corner])
    _show(axins, img)
    draw(axins)
    axins.set_xlim(x, x + w)
    axins.set_ylim(y + h, y)
    axins.set_xticks([])
    axins.set_yticks([])
    for s in axins.spines.values():
        s.set_edgecolor("yellow")
        s.set_linewidth(1.0)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="yellow", linewidth=0.8, gid="inset-region"))
    return axins


# ----------------------------------------------------------------------------------- detection grid
def detection_grid(run: RunData, scenes: Sequence[str] | None = None, n_scenes: int = 3,
                   score_threshold: float = 0.25, insets: Mapping[str, Sequence[float]] | None = None,
                   inset_corner: str = "lower right", draw_gt: bool = False,
                   methods: Sequence[str] | None = None, protocol: str | None = None,
                   seed: int | None = None, task: str | None = None) -> Figure:
    """Rows = scenes; columns = IR, visible, then each fusion method's fused test image with its boxes.

    The IR and visible columns carry the boxes of the detectors trained on IR-only and visible-only
    images (methods ``ir`` and ``vis``) when the run has them.

    Args:
        run: the run directory.
        scenes: test ids; None: the ``n_scenes`` where methods disagree most.
        score_threshold: boxes with a lower score are not drawn (nor counted for the scene choice).
        insets: id -> (x, y, w, h) pixel region magnified in ``inset_corner`` of every panel of that row.
        draw_gt: also draw the ground-truth boxes (dashed white) on the visible column.
        methods, protocol, seed: which cells (see :meth:`RunData.task_cells`).
        task: the task whose cells are drawn (default: the first with ``grid == "boxes"``).

    Raises:
        DataError: no such cells, an unknown scene id, or a missing fused image or box file.
    """
    if inset_corner not in INSET_CORNERS:
        raise ConfigError(f"inset_corner must be one of {list(INSET_CORNERS)}, got {inset_corner!r}")
    task = task or grid_task(run, "boxes")
    cells = run.task_cells(task, protocol, seed, methods) if task else {}
    if not cells:
        raise DataError(f"{run.path}: no finished cells of a task with boxes")
    ds = run.dataset()
    dets = {m: load_detections(c["dir"]) for m, c in cells.items()}
    classes = next(iter(dets.values())).classes
    if scenes is None:
        scenes = pick_detection_scenes(dets, ds.ids, n_scenes, score_threshold)
    scenes = list(scenes)
    for sid in scenes:
        ds.index(sid)
    colours = class_colours(len(classes))
    fused = [m for m in cells if m not in REFERENCE_METHODS]
    columns = [("IR", "ir"), ("Visible", "vis")] + [(m, m) for m in fused]
    h, w = ds.size(ds.index(scenes[0])) if scenes else (1, 1)
    with rc_context(STYLE):
        n_items = len(classes) + draw_gt
        ncol = min(n_items, 8)
        fig, axes = _grid(max(1, len(scenes)), len(columns), w / h, 1 + math.ceil(n_items / ncol))
        for r, sid in enumerate(scenes):
            i = ds.index(sid)
            ir, vis = ds.read_pair(i)
            gt = ds.boxes(i) if draw_gt else None
            for c, (title, method) in enumerate(columns):
                ax = axes[r, c]
                if title == "IR":
                    img = ir
                elif title == "Visible":
                    img = vis
                else:
                    img = read_rgb(Path(cells[method]["fused_test_dir"]) / f"{sid}.png")
                boxes = dets[method].boxes.get(sid, np.zeros((0, 6))) if method in dets else np.zeros((0, 6))
                boxes = boxes[boxes[:, 4] >= score_threshold]
                _show(ax, img)
                _draw_boxes(ax, boxes, classes, colours, True, img.shape[:2])
                with_gt = draw_gt and title == "Visible"
                if with_gt:
                    _draw_gt(ax, gt)
                if insets and sid in insets:
                    def overlay(a, boxes=boxes, with_gt=with_gt, size=img.shape[:2], gt=gt):
                        _draw_boxes(a, boxes, classes, colours, False, size)
                        if with_gt:
                            _draw_gt(a, gt)
                    _inset(ax, img, insets[sid], inset_corner, overlay)
                if r == 0:
                    ax.set_title(title)
                if c == 0:
                    ax.set_ylabel(sid)
        handles = [Patch(facecolor=colours[k], label=name) for k, name in enumerate(classes)]
        if draw_gt:
            handles.append(Line2D([], [], color="0.4", linestyle=(0, (2, 1.5)), label="ground truth"))
        _legend_below(fig, handles, ncol, title=f"predicted boxes with score >= {score_threshold:g}",
                      title_fontsize=6.5)
    return fig


# ------------------------------------------------------------------------------- segmentation grid
def segmentation_grid(run: RunData, scenes: Sequence[str] | None = None, n_scenes: int = 3,
                      methods: Sequence[str] | None = None, protocol: str | None = None,
                      seed: int | None = None, task: str | None = None) -> Figure:
    """Rows = scenes; columns = IR, visible, ground truth, then each method's prediction, in the palette.

    Args:
        task: the task whose cells are drawn (default: the first with ``grid == "masks"``).

    Raises:
        DataError: no such cells, no masks in the dataset, unknown ids, missing predictions.
    """
    from taskeval.stats import load_confmats

    task = task or grid_task(run, "masks")
    cells = run.task_cells(task, protocol, seed, methods) if task else {}
    if not cells:
        raise DataError(f"{run.path}: no finished cells of a task with masks")
    ds = run.dataset()
    if not ds.has_masks:
        raise DataError(f"{ds.card.name}/{ds.split}: no segmentation labels to draw")
    if scenes is None:
        mious = {m: per_image_miou(*load_confmats(c["dir"])) for m, c in cells.items()}
        scenes = pick_segmentation_scenes(mious, ds.ids, n_scenes)
    scenes = list(scenes)
    for sid in scenes:
        ds.index(sid)
    card = ds.card
    palette = dataset_palette(card)
    columns = ["IR", "Visible", "Ground truth"] + list(cells)
    h, w = ds.size(ds.index(scenes[0])) if scenes else (1, 1)
    ignored_shown = False
    with rc_context(STYLE):
        n_items = len(card.seg_classes) + 1  # room for "ignored"
        ncol = min(n_items, 10)
        fig, axes = _grid(max(1, len(scenes)), len(columns), w / h, math.ceil(n_items / ncol))
        for r, sid in enumerate(scenes):
            i = ds.index(sid)
            ir, vis = ds.read_pair(i)
            gt = ds.mask(i)
            ignored_shown |= bool((gt == card.ignore_index).any())
            for c, title in enumerate(columns):
                ax = axes[r, c]
                if title == "IR":
                    _show(ax, ir)
                elif title == "Visible":
                    _show(ax, vis)
                elif title == "Ground truth":
                    _show(ax, colourise(gt, palette, card.ignore_index), nearest=True)
                else:
                    path = Path(cells[title]["dir"]) / "pred" / f"{sid}.png"
                    pred = read_raw(path)
                    if pred.shape != gt.shape:
                        raise DataError(f"{path}: prediction is {pred.shape} but the ground truth of {sid} "
                                        f"is {gt.shape} (expected one channel of class ids)")
                    _show(ax, colourise(pred, palette, card.ignore_index), nearest=True)
                if r == 0:
                    ax.set_title(title)
                if c == 0:
                    ax.set_ylabel(sid)
        handles = [Patch(facecolor=np.asarray(palette[k]) / 255, edgecolor="0.5", linewidth=0.4, label=name)
                   for k, name in enumerate(card.seg_classes)]
        if ignored_shown:
            handles.append(Patch(facecolor="white", edgecolor="0.5", linewidth=0.4, label="ignored"))
        _legend_below(fig, handles, ncol)
    return fig
