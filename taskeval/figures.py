"""Figures of a benchmark run directory: detection grid, segmentation grid, per-class bars, radar chart.

Everything is read from the run directory (:mod:`taskeval.store`, ``RUN/dataset.json``); figures are
drawn on plain :class:`matplotlib.figure.Figure` objects (Agg and PDF canvases, no pyplot state, no
display) with the DejaVu fonts shipped with matplotlib, so rendering needs no network and no X server.
Set ``MPLCONFIGDIR`` before the first import of matplotlib to keep its font cache out of the home
folder (``taskeval report`` points it into the run directory).

Which cells a figure shows: one task protocol per task (by default the protocol that is not a
``fixed:`` screening protocol and covers the most methods; ties by name) and, for the image grids, one
seed per method (the lowest, unless ``seed`` is given). Bars and the radar chart average over seeds.

Scenes "where methods disagree most" (deterministic):

* detection: for every test image with ground truth and every method, the recall at IoU 0.5 of the
  method's boxes with score >= ``score_threshold`` (COCO's greedy matching,
  :func:`taskeval.metrics.detection.match_detections`). Images are ranked by the standard deviation of
  that recall across methods, then by the standard deviation of the number of false positives, then by
  the number of ground-truth boxes, then in dataset order.
* segmentation: every method's per-image mIoU (from ``per_image_confmat.npz``, classes present in
  neither ground truth nor prediction left out); images ranked by its standard deviation across
  methods, then in dataset order.

Radar normalisation (per axis, across the methods drawn): ``"minmax"`` maps the worst value to radius
0.2 and the best to 1.0 linearly (all equal: 1.0); ``"rank"`` gives the best method radius 1 and the
k-th best (k - 1 better) radius ``1 - (k - 1) / n`` (ties share their mean rank). Metrics where lower is
better (:func:`higher_is_better`: the quality-metric registry's flag, e.g. MSE and Nabf) are flipped, so
outward is always better. A method without a value on an axis leaves a gap in its polygon.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from taskeval.data import PairedDataset, load_card
from taskeval.errors import ConfigError, DataError
from taskeval.imageio import read_raw, read_rgb
from taskeval.results import OVERALL, Row
from taskeval.rundir import atomic_write_bytes, latest_config
from taskeval.stats import REFERENCE_METHODS, SeedStat, summarize_values
from taskeval.store import ResultsStore

log = logging.getLogger(__name__)
# matplotlib subsets the embedded fonts of every PDF with fontTools, which logs each table at INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)

RADAR_TASK_METRICS = (("detection", "mAP50"), ("segmentation", "mIoU"), ("segmentation", "mAcc"))
PER_CLASS = {"detection": ("AP50", "mAP50"), "segmentation": ("IoU", "mIoU")}  # per-class metric, its mean
IGNORE_RGB = (255, 255, 255)
INSET_CORNERS = {"lower right": (0.59, 0.02), "lower left": (0.02, 0.02), "upper right": (0.59, 0.59),
                 "upper left": (0.02, 0.59)}  # axes fractions of the inset's lower-left corner
INSET_ANCHORS = {"lower right": "SE", "lower left": "SW", "upper right": "NE", "upper left": "NW"}

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable and searchable in papers
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}


# ------------------------------------------------------------------------------------------- the run
@dataclass
class RunData:
    """What the figures read from a run directory.

    Attributes:
        path: the run directory.
        cells: metadata of every finished cell (``cell.json`` plus ``"dir"``).
        rows: every result row of the finished cells.
        method_order: methods in the order of ``config.yaml``'s ``methods`` (others appended, sorted).
    """

    path: Path
    cells: list[dict]
    rows: list[Row]
    method_order: list[str]
    _dataset: PairedDataset | None = field(default=None, repr=False)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunData":
        path = Path(run_dir)
        if not path.is_dir():
            raise DataError(f"run directory not found: {path}")
        store = ResultsStore(path)
        cells = [c for c in store.done_cells() if c.get("status", "done") == "done"]
        rows = store.rows()
        configured: list[str] = []
        for m in latest_config(path).get("methods") or ():
            configured.append(str(m["name"]) if isinstance(m, dict) else str(m))
        seen = {c["method"] for c in cells} | {r.method for r in rows}
        rest = sorted(seen - set(configured), key=lambda m: (m not in REFERENCE_METHODS, m))
        return cls(path, cells, rows, [m for m in configured if m in seen] + rest)

    def dataset(self) -> PairedDataset:
        """The test split named by ``RUN/dataset.json`` (IR resized to the visible size for display)."""
        if self._dataset is None:
            spec_path = self.path / "dataset.json"
            if not spec_path.is_file():
                raise DataError(f"{spec_path}: missing; the image grids need the dataset of the run")
            spec = json.loads(spec_path.read_text())
            root = spec.get("root")
            try:
                card = load_card(spec["card"], None if root in (None, "None") else root)
                self._dataset = PairedDataset(card, spec.get("test_split", "test"), size_policy="resize-ir")
            except ConfigError as exc:  # e.g. a report made on a machine without the dataset
                raise DataError(f"the dataset of the run ({spec_path}) is not available: {exc}") from None
        return self._dataset

    def ordered(self, methods: Iterable[str]) -> list[str]:
        methods = set(methods)
        return [m for m in self.method_order if m in methods] + sorted(methods - set(self.method_order))

    def task_cells(self, task: str, protocol: str | None = None, seed: int | None = None,
                   methods: Sequence[str] | None = None) -> dict[str, dict]:
        """method -> the one cell of ``task`` a grid shows (see the module docstring), in method order."""
        cells = [c for c in self.cells if c["task"] == task]
        if not cells:
            return {}
        protocol = protocol if protocol is not None else default_protocol(c["protocol"] for c in cells)
        by_method: dict[str, dict] = {}
        for c in sorted(cells, key=lambda c: (c["seed"] is None, c["seed"] or 0)):
            if c["protocol"] == protocol and (seed is None or c["seed"] == seed):
                by_method.setdefault(c["method"], c)
        if methods is not None:
            unknown = [m for m in methods if m not in by_method]
            if unknown:
                raise ConfigError(f"no finished {task} cell for method(s) {unknown} (protocol {protocol}"
                                  f"{'' if seed is None else f', seed {seed}'}); have: {sorted(by_method)}")
            return {m: by_method[m] for m in methods}
        return {m: by_method[m] for m in self.ordered(by_method)}


def default_protocol(protocols: Iterable[str]) -> str:
    """The protocol figures show by default: not a ``fixed:`` screening, most cells, then by name."""
    counts: dict[str, int] = {}
    for p in protocols:
        counts[p] = counts.get(p, 0) + 1
    if not counts:
        raise DataError("no protocol to choose from (no rows or cells)")
    return min(counts, key=lambda p: (p.startswith("fixed:"), -counts[p], p))


def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """One colour per method; given every method of the run, the same in all its charts."""
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def class_colours(n: int) -> list[tuple]:
    cmap = colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


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
def load_confmats(cell_dir: str | Path) -> dict[str, np.ndarray]:
    """id -> (C, C) confusion matrix of one image, from a segmentation cell's ``per_image_confmat.npz``."""
    path = Path(cell_dir) / "per_image_confmat.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, cms = z["ids"], z["confmat"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read arrays 'ids' and 'confmat' ({exc})") from None
    if cms.ndim != 3 or cms.shape[0] != len(ids) or cms.shape[1] != cms.shape[2]:
        raise DataError(f"{path}: expected confmat (N, C, C) for {len(ids)} ids, got shape {cms.shape}")
    return {str(i): cms[k] for k, i in enumerate(ids)}


def per_image_miou(confmats: Mapping[str, np.ndarray]) -> dict[str, float]:
    """id -> mIoU of that image alone, as :mod:`taskeval.metrics.segmentation` defines it (classes with an
    empty union left out of the mean); in numpy, because importing torchmetrics takes seconds."""
    out = {}
    for sid, cm in confmats.items():
        cm = np.asarray(cm, np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        out[sid] = float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else float("nan")
    return out


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
    return [tuple(int(round(255 * v)) for v in cmap(i % cmap.N)[:3]) for i in range(len(card.seg_classes))]


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
                   seed: int | None = None) -> Figure:
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

    Raises:
        DataError: no detection cells, an unknown scene id, or a missing fused image.
    """
    if inset_corner not in INSET_CORNERS:
        raise ConfigError(f"inset_corner must be one of {list(INSET_CORNERS)}, got {inset_corner!r}")
    cells = run.task_cells("detection", protocol, seed, methods)
    if not cells:
        raise DataError(f"{run.path}: no finished detection cells")
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
                    def overlay(a, boxes=boxes, with_gt=with_gt):
                        _draw_boxes(a, boxes, classes, colours, False, img.shape[:2])
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
                      seed: int | None = None) -> Figure:
    """Rows = scenes; columns = IR, visible, ground truth, then each method's prediction, in the palette.

    Raises:
        DataError: no segmentation cells, no masks in the dataset, unknown ids, missing predictions.
    """
    cells = run.task_cells("segmentation", protocol, seed, methods)
    if not cells:
        raise DataError(f"{run.path}: no finished segmentation cells")
    ds = run.dataset()
    if not ds.has_masks:
        raise DataError(f"{ds.card.name}/{ds.split}: no segmentation labels to draw")
    if scenes is None:
        mious = {m: per_image_miou(load_confmats(c["dir"])) for m, c in cells.items()}
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


# ---------------------------------------------------------------------------------- rows -> numbers
def select_rows(rows: Sequence[Row], task: str, dataset: str | None = None,
                protocol: str | None = None) -> list[Row]:
    """The rows of one task, dataset and protocol (defaults: the only dataset, :func:`default_protocol`)."""
    rows = [r for r in rows if r.task == task]
    if not rows:
        return []
    datasets = sorted({r.dataset for r in rows})
    if dataset is None:
        if len(datasets) > 1:
            raise ConfigError(f"the run has {task} rows of several datasets {datasets}: choose one")
        dataset = datasets[0]
    rows = [r for r in rows if r.dataset == dataset]
    protocol = protocol if protocol is not None else default_protocol(r.protocol for r in rows)
    return [r for r in rows if r.protocol == protocol]


def aggregate(rows: Sequence[Row], metric: str) -> dict[tuple[str, str], SeedStat]:
    """(method, cls) -> mean and sample standard deviation over seeds of one metric
    (:func:`taskeval.stats.summarize_values`: NaN values are left out)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.metric == metric:
            groups.setdefault((r.method, r.cls), []).append(r.value)
    return {k: summarize_values(v) for k, v in groups.items()}


# ------------------------------------------------------------------------------------ per-class bars
def per_class_bars(run: RunData, task: str, dataset: str | None = None, protocol: str | None = None,
                   methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars (classes x methods) of AP50 (detection) or IoU (segmentation) in %, plus their mean.

    Bars are the mean over seeds; error bars the sample standard deviation when a method has several
    seeds. NaN values (a class absent from ground truth and prediction) are left out.
    """
    metric, overall = PER_CLASS[task]
    rows = select_rows(run.rows, task, dataset, protocol)
    per_class = aggregate([r for r in rows if r.cls != OVERALL], metric)
    means = aggregate([r for r in rows if r.cls == OVERALL], overall)
    if not per_class:
        raise DataError(f"{run.path}: no per-class {metric} rows for {task}")
    classes = list(dict.fromkeys(r.cls for r in rows if r.metric == metric and r.cls != OVERALL))
    present = {m for m, _ in per_class}
    methods = [m for m in (methods or run.ordered(present)) if m in present]
    groups = classes + [overall]
    colours = method_colours(run.method_order)
    n = len(methods)
    width = 0.8 / max(n, 1)
    with rc_context(STYLE):
        fig = Figure(figsize=(min(14.0, max(6.0, 1.0 + len(groups) * (0.13 * n + 0.25))), 2.8),
                     layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(groups))
        top = 100.0
        for k, m in enumerate(methods):
            stats = [per_class.get((m, c)) if c != overall else means.get((m, OVERALL)) for c in groups]
            mean = np.array([s.mean if s else np.nan for s in stats]) * 100
            std = np.array([s.std if s else np.nan for s in stats]) * 100
            top = max(top, float(np.nanmax(np.where(np.isfinite(std), mean + std, mean), initial=0.0)))
            ax.bar(x + (k - (n - 1) / 2) * width, mean, width, yerr=std if np.isfinite(std).any() else None,
                   color=colours[m], label=m, error_kw={"elinewidth": 0.6, "capsize": 1.2})
        ax.set_xticks(x, [g if g != overall else f"mean ({overall})" for g in groups],
                      rotation=30 if len(groups) > 10 else 0, ha="right" if len(groups) > 10 else "center")
        ax.axvline(len(classes) - 0.5, color="0.6", linewidth=0.6, linestyle=":")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, top * 1.02)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        seeds = max((s.n for s in per_class.values()), default=1)
        spread = f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""
        ax.set_title(f"{task}: per-class {metric}{spread}")
        fig.legend(loc="outside upper center", ncol=min(n, 8), frameon=False)
    return fig


# -------------------------------------------------------------------------------------------- radar
@dataclass
class RadarData:
    """Values of the radar chart: ``raw`` and ``radius`` are (methods, axes), NaN where a method has none."""

    methods: list[str]
    axes: list[tuple[str, str]]  # (task, metric)
    raw: np.ndarray
    radius: np.ndarray
    normalise: str
    higher_is_better: list[bool]


def radar_data(run: RunData, methods: Sequence[str] | None = None,
               metrics: Sequence[tuple[str, str]] | None = None, normalise: str = "minmax",
               dataset: str | None = None) -> RadarData:
    """Mean-over-seeds values of task metrics (mAP50, mIoU, mAcc) and fusion-quality metrics, normalised.

    Axes are ``metrics`` or every default metric that at least two methods have. See the module
    docstring for the normalisations.
    """
    if normalise not in ("minmax", "rank"):
        raise ConfigError(f"normalise must be 'minmax' or 'rank', got {normalise!r}")
    values: dict[tuple[str, str], dict[str, float]] = {}
    for task in ("detection", "segmentation", "quality"):
        rows = [r for r in select_rows(run.rows, task, dataset) if r.cls == OVERALL]
        for metric in dict.fromkeys(r.metric for r in rows):
            values[(task, metric)] = {m: s.mean for (m, _), s in aggregate(rows, metric).items()}
    if metrics is None:
        quality = [k for k in values if k[0] == "quality"]
        if quality:
            from taskeval.metrics.quality import QUALITY_ORDER

            order = {m: k for k, m in enumerate(QUALITY_ORDER)}
            quality.sort(key=lambda k: (order.get(k[1], len(order)), k[1]))
        metrics = [k for k in RADAR_TASK_METRICS if k in values] + quality
        metrics = [k for k in metrics if sum(math.isfinite(v) for v in values[k].values()) >= 2]
    else:
        missing = [k for k in metrics if k not in values]
        if missing:
            raise ConfigError(f"no rows for radar axes {missing}; have {sorted(values)}")
    metrics = list(metrics)
    have = {m for k in metrics for m, v in values[k].items() if math.isfinite(v)}
    methods = [m for m in (methods or run.ordered(have)) if m in have]
    raw = np.array([[values[k].get(m, np.nan) for k in metrics] for m in methods], np.float64).reshape(
        len(methods), len(metrics))
    higher = [higher_is_better(task, metric) for task, metric in metrics]
    radius = np.full_like(raw, np.nan)
    for j in range(len(metrics)):
        col = raw[:, j] if higher[j] else -raw[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        if normalise == "minmax":
            lo, hi = col[ok].min(), col[ok].max()
            radius[ok, j] = 1.0 if hi == lo else 0.2 + 0.8 * (col[ok] - lo) / (hi - lo)
        else:
            v = col[ok]
            # methods better than each one, a tie counting half: the mean of the tied ranks, 0-based
            better = (v[None, :] > v[:, None]).sum(1) + ((v[None, :] == v[:, None]).sum(1) - 1) / 2
            radius[ok, j] = 1.0 - better / ok.sum()
    return RadarData(methods, metrics, raw, radius, normalise, higher)


def higher_is_better(task: str, metric: str) -> bool:
    """Task metrics are higher-is-better; a quality metric follows its registry entry
    (:data:`taskeval.metrics.quality.QUALITY_METRICS`: MSE and Nabf are lower-is-better); unknown: higher."""
    if task != "quality":
        return True
    from taskeval.metrics.quality import QUALITY_METRICS

    if metric not in QUALITY_METRICS:
        return True
    return bool(getattr(QUALITY_METRICS.get(metric).meta, "higher_is_better", True))


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.3g}"


def radar_chart(run: RunData, methods: Sequence[str] | None = None,
                metrics: Sequence[tuple[str, str]] | None = None, normalise: str = "minmax",
                dataset: str | None = None) -> Figure:
    """One polygon per method over task and fusion-quality metrics, each axis normalised across methods.

    Axis labels give the metric and the raw range over methods (worst - best).
    """
    data = radar_data(run, methods, metrics, normalise, dataset)
    if len(data.axes) < 3 or not data.methods:
        raise DataError(f"{run.path}: a radar chart needs at least 3 metrics with values for 2 methods "
                        f"(have {[m for _, m in data.axes]})")
    colours = method_colours(run.method_order)
    angles = np.linspace(0, 2 * np.pi, len(data.axes), endpoint=False)
    with rc_context(STYLE):
        # fixed margins leave room for the axis labels around the circle (constrained layout ignores them)
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_axes((0.16, 0.11, 0.52, 0.52 * 6.4 / 4.4 * 0.98), projection="polar")
        ax.set_theta_offset(np.pi / 2)
        ax.set_theta_direction(-1)
        for k, m in enumerate(data.methods):
            r = np.r_[data.radius[k], data.radius[k, :1]]
            a = np.r_[angles, angles[:1]]
            ax.plot(a, r, color=colours[m], linewidth=1.2, marker="o", markersize=2.5, label=m,
                    gid=f"radar:{m}")
            if np.isfinite(r).all():
                ax.fill(a, r, color=colours[m], alpha=0.07)
        labels = []
        for j, (_, metric) in enumerate(data.axes):
            col = data.raw[:, j][np.isfinite(data.raw[:, j])]
            lo, hi = (col.min(), col.max()) if col.size else (np.nan, np.nan)
            worst, best = (lo, hi) if data.higher_is_better[j] else (hi, lo)
            labels.append(f"{metric}\n{_fmt(worst)}–{_fmt(best)}")
        ax.set_xticks(angles, labels)
        ax.tick_params(axis="x", pad=4)
        for label, angle in zip(ax.get_xticklabels(), angles):
            side = np.sin(angle)  # clockwise from the top: > 0 on the right half
            label.set_horizontalalignment("left" if side > 0.1 else "right" if side < -0.1 else "center")
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0], [])
        ax.grid(linewidth=0.4, alpha=0.6)
        how = "min-max over methods (worst 0.2, best 1)" if normalise == "minmax" else "rank over methods"
        fig.suptitle(f"Ranking, each axis normalised: {how}", y=0.985)
        fig.legend(loc="center left", bbox_to_anchor=(0.8, 0.5), frameon=False)
    return fig


# ------------------------------------------------------------------------------------------- saving
def save_figure(fig: Figure, base: str | Path) -> tuple[Path, Path]:
    """Write ``base.png`` (200 dpi) and ``base.pdf`` (TrueType fonts, no timestamp), atomically."""
    base = Path(base)
    out = []
    with rc_context(STYLE):
        for ext, kw in (("png", {"dpi": STYLE["savefig.dpi"]}),
                        ("pdf", {"metadata": {"CreationDate": None}})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, facecolor="white", **kw)
            path = base.with_name(f"{base.name}.{ext}")
            atomic_write_bytes(path, buf.getvalue())
            out.append(path)
    return out[0], out[1]


@dataclass(frozen=True)
class FigureFile:
    """A figure written by :func:`render_all`."""

    name: str
    title: str
    caption: str
    png: Path
    pdf: Path


def render_all(run_dir: str | Path, out_dir: str | Path | None = None, scenes: Sequence[str] = (),
               n_scenes: int = 3, score_threshold: float = 0.25,
               insets: Mapping[str, Sequence[float]] | None = None, draw_gt: bool = False,
               normalise: str = "minmax") -> list[FigureFile]:
    """Draw every figure the run has data for into ``out_dir`` (default ``RUN/figures``), PNG and PDF.

    Figures without data (no detection cells, fewer than 3 radar axes, ...) are skipped with a log line.
    Existing figure files are replaced: they are derived from the results store, never results themselves.

    Args:
        scenes: test ids for both image grids; empty: chosen where the methods disagree most.
        n_scenes, score_threshold, insets, draw_gt: see :func:`detection_grid`.
        normalise: radar normalisation, "minmax" or "rank".
    """
    run = RunData.open(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run.path / "figures"
    chosen = list(scenes) or None
    tasks = {c["task"] for c in run.cells}
    row_tasks = {r.task for r in run.rows}

    def rows_text(why: str) -> str:
        return "Rows: the given test scenes. " if chosen else f"Rows: scenes where {why} disagrees most. "

    plans = []
    if "detection" in tasks:
        caption = (rows_text("the methods' recall at IoU 0.5") +
                   "Columns: IR and visible images with the boxes of the detectors trained on IR-only and "
                   "visible-only images, then each method's fused image with the boxes of the detector "
                   f"retrained on it (score >= {score_threshold:g}; one colour per class"
                   + ("; dashed white: ground truth" if draw_gt else "") + ").")
        plans.append(("detection_grid", "Detection examples", caption,
                      lambda: detection_grid(run, chosen, n_scenes, score_threshold, insets,
                                             draw_gt=draw_gt)))
    if "segmentation" in tasks:
        caption = (rows_text("the methods' per-image mIoU") + "Columns: IR, visible, ground truth, then each "
                   "method's prediction in the dataset palette.")
        plans.append(("segmentation_grid", "Segmentation examples", caption,
                      lambda: segmentation_grid(run, chosen, n_scenes)))
    for task in ("detection", "segmentation"):
        if task in row_tasks:
            metric = PER_CLASS[task][0]
            caption = (f"Per-class {metric} in %, mean over seeds; error bars: sample standard deviation "
                       "over seeds where a method has several.")
            plans.append((f"{task}_per_class", f"Per-class {metric} ({task})", caption,
                          lambda task=task: per_class_bars(run, task)))
    if row_tasks:
        how = "by min-max (worst 0.2, best 1.0)" if normalise == "minmax" else "by rank (best 1.0)"
        caption = (f"Task metrics and fusion-quality metrics (means over seeds), each axis normalised across "
                   f"methods {how}; outward is better (lower-is-better metrics flipped); the labels give the "
                   "raw worst–best range.")
        plans.append(("radar", "Ranking (radar chart)", caption,
                      lambda: radar_chart(run, normalise=normalise)))
    written = []
    for name, title, caption, make in plans:
        try:
            fig = make()
        except DataError as exc:
            log.warning("figure %s skipped: %s", name, exc)
            continue
        png, pdf = save_figure(fig, out_dir / name)
        written.append(FigureFile(name, title, caption, png, pdf))
    return written
