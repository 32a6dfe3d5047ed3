"""``taskeval segment`` and ``taskeval score-seg`` (segmentation track).

``segment`` is the runner (:mod:`taskeval.runner`) with one task: for every fusion method (``ir`` and
``vis`` rows included) and seed, fuse (cached) -> train DeepLabV3+ -> predict the test split -> score
per-class IoU, mIoU with and without class 0, mAcc and pixel accuracy. The run folder is a results store
like a benchmark's (``cells/<id>/`` with ``cell.json``, ``rows.csv``, ``pred/<id>.png``,
``per_image_confmat.npz``, ``work/`` with the training checkpoints): ``--resume`` skips finished cells, an
interrupted training resumes from its ``last.pt``, and ``taskeval report RUN`` renders it. Protocols:

* retrain (default): a segmenter is trained from the same initialisation on each method's fused
  training images and tested on that method's fused test images (the field's protocol). Rows carry
  ``<name>-<hash>`` of the :class:`~segmenters.protocol.SegProtocol`.
* ``--fixed REF``: one segmenter per seed trained on method REF's fused training images, tested on
  every method's fused test images without retraining. Rows carry ``fixed:REF@<name>-<hash>``.
* ``--fixed-checkpoint PATH``: a given ``model.pt`` tested on every method. Rows carry
  ``fixed:ckpt-<sha8>@<name>-<hash>`` and no seed.

Multi-GPU: launch with ``torchrun`` (see :mod:`taskeval.distributed`).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from taskeval.cli.common import add_overrides, print_json
from taskeval.cli.run_common import add_task_command_options, execute, finish_task_command, start_run, \
    task_command_config
from taskeval.console import print_table
from taskeval.data.card import load_card
from taskeval.data.labels import read_mask
from taskeval.errors import ConfigError, DataError
from taskeval.imageio import list_images
from taskeval.metrics.segmentation import DEFINITIONS, SegmentationMetrics, SegScores, confmat_to_csv
from taskeval.rundir import atomic_write_text

log = logging.getLogger(__name__)
TASK = "segmentation"


def run_segment(args) -> int:
    if args.save_predictions != "none":
        log.warning("--save-predictions is no longer needed: every cell keeps its predicted class ids in "
                    "cells/<id>/pred/ (the report draws them in the dataset palette)")
    cfg = task_command_config(args, TASK, "segment")
    run = start_run(cfg, args.out, "segment", args.resume, args)
    plan, runner, report = execute(cfg, run, args)
    if not runner.exe.is_main:
        return 0
    code = finish_task_command(cfg, run, args, runner, report, TASK)
    if not args.json:
        for m in ("mIoU", "mIoU_nobg", "mAcc", "pixel_acc"):
            print(f"{m}: {DEFINITIONS[m]}")
    return code


def _console() -> Console:
    # per-class tables of 9+ classes are wider than rich's 80-column default for pipes and log files
    return Console() if sys.stdout.isatty() else Console(width=160)


def read_label_png(path: Path, class_names: tuple[str, ...], ignore_index: int,
                   palette: tuple[tuple[int, int, int], ...] = (), size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H,W) int64 class ids of a label PNG: grey class ids, indexed ("P" mode: the index is the class
    id, whatever the embedded colours), or RGB mapped through ``palette``.

    Raises:
        DataError: unknown colours, ids outside the class list, or a size other than ``size_hw``.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            indexed = im.mode == "P"
            arr = np.asarray(im) if indexed else None
    except OSError as exc:
        raise DataError(f"{path}: unreadable label image ({exc})") from None
    if not indexed:
        return read_mask(path, len(class_names), ignore_index, size_hw, palette)
    mask = arr.astype(np.int64)
    if size_hw is not None and mask.shape != tuple(size_hw):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, expected {size_hw[1]}x{size_hw[0]}")
    bad = np.unique(mask[(mask >= len(class_names)) & (mask != ignore_index)])
    if bad.size:
        raise DataError(f"{path}: label ids {bad.tolist()[:10]} not in 0..{len(class_names) - 1} "
                        f"(ignore index {ignore_index})")
    return mask


def score_folders(gt_dir: Path, pred_dir: Path, class_names: tuple[str, ...], ignore_index: int = 255,
                  palette: tuple[tuple[int, int, int], ...] = ()) -> tuple[SegScores, int]:
    """Score a folder of predicted label PNGs against a folder of ground-truth label PNGs (matched by stem).

    Returns:
        (scores, number of images scored).

    Raises:
        DataError: missing predictions (all listed), size mismatches, unknown ids or colours, or
            predictions holding the ignore index.
    """
    gt, pred = list_images(gt_dir), list_images(pred_dir)
    if not gt:
        raise DataError(f"{gt_dir}: no label images")
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise DataError(f"{pred_dir}: {len(missing)} of {len(gt)} predictions missing: {', '.join(missing[:50])}"
                        f"{' ...' if len(missing) > 50 else ''}")
    extra = sorted(set(pred) - set(gt))
    if extra:
        log.warning("%s: %d prediction(s) without ground truth ignored: %s", pred_dir, len(extra), ", ".join(extra[:10]))
    metric = SegmentationMetrics(len(class_names), ignore_index)
    for sid in sorted(gt):
        g = read_label_png(gt[sid], class_names, ignore_index, palette)
        p = read_label_png(pred[sid], class_names, ignore_index, palette, size_hw=g.shape)
        if (p == ignore_index).any():
            raise DataError(f"{pred[sid]}: prediction holds the ignore index {ignore_index} "
                            f"({int((p == ignore_index).sum())} pixels); predictions must assign a class to every pixel")
        metric.update(torch.from_numpy(p), torch.from_numpy(g))
    return SegScores.from_confmat(metric.confmat, class_names), len(gt)


def run_score(args) -> int:
    if args.data:
        card = load_card(args.data)
        names, palette, ignore = card.seg_classes, card.palette, card.ignore_index
        if not names:
            raise ConfigError(f"dataset card {card.name!r} has no seg_classes")
    elif args.classes:
        names = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        palette, ignore = (), 255
    else:
        raise ConfigError("give --data CARD (classes and palette) or --classes name0,name1,...")
    if args.ignore_index is not None:
        ignore = args.ignore_index
    if len(names) < 2:
        raise ConfigError("at least two classes are needed")
    scores, n = score_folders(Path(args.gt), Path(args.pred), names, ignore, palette)
    if args.confusion:
        atomic_write_text(Path(args.confusion), confmat_to_csv(scores.confmat, names))
    if args.json:
        print_json({"gt": args.gt, "pred": args.pred, "n_images": n, "ignore_index": ignore, **scores.as_dict(),
                    "definitions": DEFINITIONS})
        return 0
    con = _console()
    t = Table(title=f"{n} images: {args.pred} vs {args.gt}")
    for col in ("class", "IoU %", "Acc %"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, iou, acc in zip(names, scores.iou, scores.acc):
        t.add_row(name, "-" if math.isnan(iou) else f"{100 * iou:.2f}", "-" if math.isnan(acc) else f"{100 * acc:.2f}")
    print_table(t, con)
    for m, v in scores.overall().items():
        con.print(f"[bold]{m}[/] = {'-' if math.isnan(v) else f'{100 * v:.2f}'} %   ({DEFINITIONS[m]})",
                  highlight=False, soft_wrap=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="retrain DeepLabV3+ per fusion method and report mIoU",
        description="Fuse each method's images (cached), train DeepLabV3+ (segmentation-models-pytorch) per method "
                    "and seed under one protocol, and report per-class IoU, mIoU with and without class 0, mAcc "
                    "and pixel accuracy on the test split. key=value arguments override protocol fields "
                    "(e.g. epochs=3 encoder=resnet34). Multi-GPU: launch with torchrun (see taskeval.distributed).")
    add_task_command_options(p, "segment", "preset (quick, paper) or YAML file (default: quick)")
    p.add_argument("--save-predictions", choices=("none", "ids", "palette"), default="none",
                   help="(no longer needed: predictions are always kept in each cell's pred/ folder)")
    add_overrides(p)
    p.set_defaults(func=run_segment)

    s = sub.add_parser(
        "score-seg", help="score existing segmentation predictions (mIoU)",
        description="Score predicted label PNGs against ground-truth label PNGs matched by file stem. PNGs hold "
                    "class ids (grey or indexed) or palette colours (palette from --data). Ground-truth pixels "
                    "equal to the ignore index are not scored.")
    s.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    s.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    s.add_argument("--data", help="dataset card giving class names, palette and ignore index")
    s.add_argument("--classes", help="comma-separated class names (without --data)")
    s.add_argument("--ignore-index", type=int, default=None, help="ground-truth value not scored (default 255)")
    s.add_argument("--confusion", metavar="FILE.csv", help="also write the confusion matrix")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_score)
