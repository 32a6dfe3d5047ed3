"""``taskeval segment`` and ``taskeval score-seg`` (segmentation track).

``segment`` runs, for every fusion method (``ir`` and ``vis`` rows included) and seed, the cell
fuse (cached) -> train DeepLabV3+ -> predict the test split -> score, in a run directory::

    <out>/config.yaml, provenance.json, taskeval.log
    <out>/cells/<method>/<protocol>/seed<k>/train/{model.pt,last.pt,train_log.csv}
    <out>/cells/<method>/<protocol>/seed<k>/{rows.csv,scores.json,confusion.csv[,predictions/]}
    <out>/fixed/<ref>/<protocol>/seed<k>/train/...      (fixed-segmenter protocol)
    <out>/results.csv, summary.csv                      (all rows; mean and std over seeds)

A cell with ``rows.csv`` is finished: ``--resume`` skips it, and an interrupted training resumes from
its ``last.pt``. Protocols:

* retrain (default): a segmenter is trained from the same initialisation on each method's fused
  training images and tested on that method's fused test images (the field's protocol). Rows carry
  ``<name>-<hash>`` of the :class:`~segmenters.protocol.SegProtocol`.
* ``--fixed REF``: one segmenter per seed trained on method REF's fused training images, tested on
  every method's fused test images without retraining. Rows carry ``fixed:REF:<name>-<hash>``.
* ``--fixed-checkpoint PATH``: a given ``model.pt`` tested on every method. Rows carry
  ``fixed:ckpt-<sha8>:<name>-<hash>`` and no seed.

The pipeline functions (``segmentation_cell``, ``score_label_maps``, ``check_masks``...) take plain
arguments so that ``taskeval benchmark`` can call them too.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from taskeval.cli.common import DEVICE_HELP, add_overrides, parse_pairs, parse_seeds, print_json
from taskeval.console import print_table
from taskeval.data.card import DatasetCard, load_card
from taskeval.data.dataset import PairedDataset
from taskeval.data.labels import read_mask
from taskeval.data.problems import Problems
from taskeval.errors import ConfigError, DataError
from taskeval.fusedset import FusedSet, fuse_split, precomputed_set
from taskeval.imageio import list_images
from taskeval.metrics.segmentation import (
    DEFINITIONS,
    OVERALL_METRICS,
    SegmentationMetrics,
    SegScores,
    confmat_to_csv,
)
from taskeval.results import OVERALL, Row, read_rows, write_rows
from taskeval.rundir import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
TASK = "segmentation"


# --------------------------------------------------------------------------------------------- data

def check_masks(ds: PairedDataset) -> np.ndarray:
    """Validate every mask of a split and count its labelled pixels per class.

    Returns:
        (K,) int64 pixel counts per class (ignore-index pixels not counted).

    Raises:
        DataError: listing every missing mask, mask whose size differs from its image, and label id
            outside the class list (with the file and the ids).
    """
    k = len(ds.card.seg_classes)
    if not k:
        raise ConfigError(f"dataset card {ds.card.name!r} defines no seg_classes")
    problems = Problems(collect=True)
    counts = np.zeros(k, np.int64)
    for i, rec in enumerate(ds.records):
        if rec.seg is None:
            problems.error("missing-mask", rec.vis, f"pair {rec.id!r} has no segmentation mask")
            continue
        before = len(problems.errors)
        mask = read_mask(rec.seg, k, ds.card.ignore_index, ds.size(i), ds.card.palette, problems)
        if len(problems.errors) == before:
            counts += np.bincount(mask[mask != ds.card.ignore_index].ravel(), minlength=k)[:k]
    if problems.errors:
        errs = problems.errors
        raise DataError(f"{ds.card.name}/{ds.split}: {len(errs)} mask problem(s):\n  " +
                        "\n  ".join(f"{p.path}: {p.message}" for p in errs[:20]) +
                        (f"\n  ... and {len(errs) - 20} more" if len(errs) > 20 else ""))
    return counts


def score_label_maps(preds: dict[str, np.ndarray], ds: PairedDataset) -> SegScores:
    """Score ``{id: (H,W) class ids}`` against the split's masks (one pooled confusion matrix).

    Raises:
        DataError: missing predictions (listed) or a prediction whose size differs from its mask.
    """
    missing = [s for s in ds.ids if s not in preds]
    if missing:
        raise DataError(f"predictions lack {len(missing)} of {len(ds)} ids of {ds.card.name}/{ds.split}: "
                        f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
    metric = SegmentationMetrics(len(ds.card.seg_classes), ds.card.ignore_index)
    for i, sid in enumerate(ds.ids):
        mask = ds.mask(i)
        pred = preds[sid]
        if pred.shape != mask.shape:
            raise DataError(f"prediction for {sid!r} is {pred.shape[1]}x{pred.shape[0]} but its mask is "
                            f"{mask.shape[1]}x{mask.shape[0]}")
        metric.update(torch.from_numpy(pred), torch.from_numpy(mask))
    return SegScores.from_confmat(metric.confmat, ds.card.seg_classes)


def scores_to_rows(scores: SegScores, method: str, dataset: str, protocol: str, seed: int | None) -> list[Row]:
    """Overall rows (definition in ``note``) and per-class IoU / Acc rows."""
    names = scores.class_names
    notes = {"mIoU": f"over all {len(names)} classes incl. {names[0]!r}; classes absent from GT and "
                     "prediction excluded",
             "mIoU_nobg": f"over {len(names) - 1} classes, {names[0]!r} excluded; absent classes excluded",
             "mAcc": "mean per-class accuracy over classes present in GT",
             "pixel_acc": "correct / labelled pixels"}
    rows = [Row(method, TASK, dataset, protocol, seed, m, OVERALL, v, notes[m]) for m, v in scores.overall().items()]
    rows += [Row(method, TASK, dataset, protocol, seed, "IoU", n, v) for n, v in zip(names, scores.iou)]
    rows += [Row(method, TASK, dataset, protocol, seed, "Acc", n, v) for n, v in zip(names, scores.acc)]
    return rows


def fused_sets(methods: list[str], ds: PairedDataset, cache: Path, weights: dict[str, str],
               precomputed: dict[str, str], device: torch.device) -> dict[str, FusedSet]:
    """Fused images of ``ds`` per method: registered methods through the cache, others from folders.

    Under DDP the processes take turns (process 0 first, it computes; the others then read the cache).
    """
    from segmenters import distributed

    info = distributed.current()
    out: dict[str, FusedSet] = {}
    for turn in range(info.world):
        if turn == info.rank:
            for m in methods:
                if m in precomputed:
                    root = Path(precomputed[m])
                    # <dir>/<split>/, or one flat folder holding every split's images (as in `detect`)
                    folder = root / ds.split if (root / ds.split).is_dir() else root
                    out[m] = precomputed_set(folder, ds, name=m, allow_extra=folder == root)
                else:
                    out[m] = fuse_split(ds, m, cache, weights=weights.get(m), device=str(device),
                                        progress=info.is_main)
        distributed.barrier()
    return out


# --------------------------------------------------------------------------------------------- cells

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def cell_dir(out: Path, method: str, protocol: str, seed: int | None) -> Path:
    return out / "cells" / _slug(method) / _slug(protocol) / ("fixed" if seed is None else f"seed{seed}")


def evaluate_cell(checkpoint: Path, fused_test: FusedSet, test_ds: PairedDataset, protocol, folder: Path,
                  method: str, protocol_str: str, seed: int | None, device: torch.device,
                  save_predictions: str = "none", train_note: dict | None = None) -> list[Row]:
    """Predict, score and write one cell's files (``rows.csv`` last: it marks the cell finished)."""
    from segmenters import deeplab

    t0 = time.perf_counter()
    preds = deeplab.predict(checkpoint, fused_test, protocol, device, ids=test_ds.ids)
    predict_s = time.perf_counter() - t0
    scores = score_label_maps(preds, test_ds)
    if save_predictions != "none":
        deeplab.write_label_pngs(preds, folder / "predictions",
                                 test_ds.card.palette if save_predictions == "palette" else None)
    rows = scores_to_rows(scores, method, test_ds.card.name, protocol_str, seed)
    atomic_write_text(folder / "confusion.csv", confmat_to_csv(scores.confmat, scores.class_names))
    atomic_write_json(folder / "scores.json", {
        "method": method, "dataset": test_ds.card.name, "protocol": protocol_str, "seed": seed,
        "checkpoint": str(checkpoint), "fused_test_key": fused_test.key, "n_test": len(test_ds),
        **scores.as_dict(), "definitions": DEFINITIONS,
        "timing": {"predict_seconds": round(predict_s, 2), **(train_note or {})}})
    write_rows(rows, folder / "rows.csv")
    return rows


def _train_note(checkpoint: Path) -> dict:
    from segmenters.train import load_checkpoint_file

    ck = load_checkpoint_file(checkpoint)
    return {"train_seconds": round(float(ck["train_seconds"]), 2), "epochs": int(ck["epoch"]),
            "train_method": ck["train_method"]}


def _check_finished(folder: Path, fused_train: FusedSet, fused_test: FusedSet, test_ds: PairedDataset) -> None:
    """A finished cell is reused only for the same fused images (cache keys: method, weights, dataset files)."""
    from segmenters.train import load_checkpoint_file

    meta = json.loads((folder / "scores.json").read_text())
    model = folder / "train" / "model.pt"
    from taskeval.fingerprint import digest

    inputs = load_checkpoint_file(model).get("train_inputs") if model.is_file() else None
    if meta.get("fused_test_key") != fused_test.key or meta.get("n_test") != len(test_ds) \
            or (inputs is not None and digest(inputs) != fused_train.key):
        raise DataError(f"{folder} was computed from other images than this command gives ({fused_test.method}: "
                        "other weights, --fused folder or dataset files); results are never mixed: choose another "
                        "--out")


def segmentation_cell(out: Path, method: str, seed: int, protocol, fused_train: FusedSet, train_ds: PairedDataset,
                      fused_test: FusedSet, test_ds: PairedDataset, device: torch.device,
                      save_predictions: str = "none") -> list[Row]:
    """One retrain cell (method, seed): train (resumable) and evaluate; finished cells are read back."""
    from segmenters import deeplab, distributed
    from segmenters.protocol import protocol_id, with_seed

    p = with_seed(protocol, seed)
    pid = protocol_id(p)
    folder = cell_dir(out, method, pid, seed)
    if (folder / "rows.csv").is_file():
        _check_finished(folder, fused_train, fused_test, test_ds)
        log.info("cell %s %s seed %d already finished: %s", method, pid, seed, folder)
        return read_rows(folder / "rows.csv")
    ckpt = deeplab.train(fused_train, train_ds, p, folder / "train", device, progress=distributed.current().is_main)
    rows: list[Row] = []
    if distributed.current().is_main:
        rows = evaluate_cell(ckpt, fused_test, test_ds, p, folder, method, pid, seed, device, save_predictions,
                             _train_note(ckpt))
    distributed.barrier()
    return rows


def fixed_reference(out: Path, ref: str, seed: int, protocol, fused_train: FusedSet, train_ds: PairedDataset,
                    device: torch.device) -> Path:
    """Train (or find) the fixed segmenter of ``ref`` for ``seed``; returns its ``model.pt``."""
    from segmenters import deeplab, distributed
    from segmenters.protocol import protocol_id, with_seed

    p = with_seed(protocol, seed)
    folder = out / "fixed" / _slug(ref) / _slug(protocol_id(p)) / f"seed{seed}"
    return deeplab.train(fused_train, train_ds, p, folder, device, progress=distributed.current().is_main)


def _run_given_checkpoint(ck: Path, methods, test_sets, test_ds, protocol, out: Path, device,
                          save_predictions: str) -> list[Row]:
    """Fixed-segmenter protocol with a given ``model.pt``: every method's test images, no training."""
    from fusion_models.weights import file_hash
    from segmenters import distributed
    from segmenters.protocol import from_plain, protocol_id
    from segmenters.train import load_checkpoint_file

    meta = load_checkpoint_file(ck)
    card = test_ds.card
    if list(meta["classes"]) != list(card.seg_classes):
        raise ConfigError(f"{ck} was trained for classes {meta['classes']}, the card {card.name!r} has "
                          f"{list(card.seg_classes)}")
    ck_protocol = replace(from_plain(meta["protocol"]), eval_batch=protocol.eval_batch)
    pstr = f"fixed:ckpt-{file_hash(ck, 8)}:{protocol_id(ck_protocol)}"
    rows: list[Row] = []
    if distributed.current().is_main:
        for m in methods:
            folder = cell_dir(out, m, pstr, None)
            if (folder / "rows.csv").is_file():
                rows += read_rows(folder / "rows.csv")
                continue
            rows += evaluate_cell(ck, test_sets[m], test_ds, ck_protocol, folder, m, pstr, None, device,
                                  save_predictions, _train_note(ck))
    return rows


def _run_fixed(ref: str, ref_train: FusedSet, train_ds, methods, seeds, test_sets, test_ds, protocol, out: Path,
               device, save_predictions: str) -> list[Row]:
    """Fixed-segmenter protocol: per seed one network trained on ``ref``, tested on every method."""
    from segmenters import distributed
    from segmenters.protocol import protocol_id, with_seed

    rows: list[Row] = []
    for seed in seeds:
        p = with_seed(protocol, seed)
        pstr = f"fixed:{ref}:{protocol_id(p)}"
        pending = [m for m in methods if not (cell_dir(out, m, pstr, seed) / "rows.csv").is_file()]
        ckpt = fixed_reference(out, ref, seed, protocol, ref_train, train_ds, device) if pending else None
        if distributed.current().is_main:
            for m in methods:
                folder = cell_dir(out, m, pstr, seed)
                if m not in pending:
                    rows += read_rows(folder / "rows.csv")
                    continue
                rows += evaluate_cell(ckpt, test_sets[m], test_ds, p, folder, m, pstr, seed, device,
                                      save_predictions, _train_note(ckpt))
        distributed.barrier()
    return rows


# --------------------------------------------------------------------------------------------- summary

def summarize(rows: list[Row]) -> list[dict]:
    """Mean and sample standard deviation over seeds per (method, protocol, metric, class), NaN values (a class
    absent from ground truth and prediction) left out: :func:`taskeval.stats.seed_summary` as records."""
    from taskeval.stats import seed_summary

    return [{"method": method, "dataset": dataset, "protocol": protocol, "metric": metric, "cls": cls,
             "n": s.n, "mean": s.mean, "std": s.std}
            for (method, _task, dataset, protocol, metric, cls), s in seed_summary(rows).items()]


def _summary_csv(summary: list[dict]) -> str:
    keys = ["method", "dataset", "protocol", "metric", "cls", "n", "mean", "std"]
    lines = [",".join(keys)]
    for s in summary:
        lines.append(",".join(repr(s[k]) if isinstance(s[k], float) else str(s[k]) for k in keys))
    return "\n".join(lines) + "\n"


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + ("" if math.isnan(std) else f"±{100 * std:.1f}")


def _console() -> Console:
    # per-class tables of 9+ classes are wider than rich's 80-column default for pipes and log files
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_summary(summary: list[dict], classes: tuple[str, ...], con: Console) -> None:
    """One table of overall scores and one of per-class IoU per protocol, then the definitions."""
    by = {(s["method"], s["protocol"], s["metric"], s["cls"]): s for s in summary}
    for protocol in sorted({s["protocol"] for s in summary}):
        methods = list(dict.fromkeys(s["method"] for s in summary if s["protocol"] == protocol))
        dataset = next(s["dataset"] for s in summary if s["protocol"] == protocol)

        def cell(method, metric, cls="", protocol=protocol):
            s = by.get((method, protocol, metric, cls))
            return _fmt(s["mean"], s["std"]) if s else "-"

        overall = Table(title=f"segmentation, {dataset}, protocol {protocol} (%, mean±std over seeds)")
        per_class = Table(title="per-class IoU (%)")
        for t, cols in ((overall, ("n", *OVERALL_METRICS)), (per_class, classes)):
            t.add_column("method")
            for c in cols:
                t.add_column(c, justify="right")
        for m in methods:
            n = by[(m, protocol, "mIoU", "")]["n"] if (m, protocol, "mIoU", "") in by else 0
            overall.add_row(m, str(n), *(cell(m, k) for k in OVERALL_METRICS))
            per_class.add_row(m, *(cell(m, "IoU", c) for c in classes))
        print_table(overall, con)
        print_table(per_class, con)
    for m in OVERALL_METRICS:
        con.print(f"[bold]{m}[/]: {DEFINITIONS[m]}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------- commands

def run_segment(args) -> int:
    from segmenters import distributed
    from segmenters.protocol import load_protocol, protocol_id, to_plain

    info = distributed.init_distributed(args.device)
    device = info.device
    card: DatasetCard = load_card(args.data, args.root)
    if not card.seg_classes:
        raise ConfigError(f"dataset card {card.name!r} has no seg_classes: it cannot be used for segmentation")
    protocol = load_protocol(args.protocol, args.overrides)
    seeds = parse_seeds(args.seeds, protocol.seed)
    listed = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    if len(set(listed)) != len(listed):
        raise ConfigError(f"--methods lists a method twice: {args.methods}")
    methods = list(dict.fromkeys(([] if args.no_refs else ["ir", "vis"]) + listed))
    if not methods or not seeds:
        raise ConfigError("--methods (or the ir/vis reference rows) and --seeds must name at least one method "
                          "and one seed")
    weights = parse_pairs(args.weights, "--weights")
    precomputed = parse_pairs(args.fused, "--fused")
    from fusion_models import get_fusion_spec

    for m in methods:
        if m not in precomputed:
            get_fusion_spec(m)  # unknown names fail here, with a suggestion
    if args.fixed and args.fixed not in methods and args.fixed not in precomputed:
        get_fusion_spec(args.fixed)

    run = None
    if info.is_main:
        run = RunDir.create(args.out, "segment", resume=args.resume)
    out = Path(distributed.broadcast_object(str(run.path) if run else None))
    if info.is_main:
        run.attach_log()
        mode = "checkpoint" if args.fixed_checkpoint else "fixed" if args.fixed else "retrain"
        run.write_provenance({"command": "segment", "mode": mode, "methods": methods, "data": card.name,
                              "root": str(card.root), "protocol": to_plain(protocol),
                              "protocol_id": protocol_id(protocol), "fixed": args.fixed,
                              "checkpoint": args.fixed_checkpoint, "weights": weights, "fused_folders": precomputed,
                              "device": str(device), "world_size": info.world}, seeds)
    cache = Path(args.cache) if args.cache else out / "fused"

    test_ds = PairedDataset(card, args.test_split)
    train_ds = None if args.fixed_checkpoint else PairedDataset(card, args.train_split)
    if info.is_main:
        for ds in (train_ds, test_ds):
            if ds is not None:
                counts = check_masks(ds)
                log.info("%s/%s: %d pairs, labelled pixels per class: %s", card.name, ds.split, len(ds),
                         dict(zip(card.seg_classes, counts.tolist())))
    distributed.barrier()

    test_sets = fused_sets(methods, test_ds, cache, weights, precomputed, device)
    if args.fixed_checkpoint:
        rows = _run_given_checkpoint(Path(args.fixed_checkpoint), methods, test_sets, test_ds, protocol, out, device,
                                     args.save_predictions)
    elif args.fixed:
        ref_train = fused_sets([args.fixed], train_ds, cache, weights, precomputed, device)[args.fixed]
        rows = _run_fixed(args.fixed, ref_train, train_ds, methods, seeds, test_sets, test_ds, protocol, out,
                          device, args.save_predictions)
    else:
        train_sets = fused_sets(methods, train_ds, cache, weights, precomputed, device)
        rows = [r for m in methods for seed in seeds
                for r in segmentation_cell(out, m, seed, protocol, train_sets[m], train_ds, test_sets[m], test_ds,
                                           device, args.save_predictions)]
    if not info.is_main:
        return 0
    write_rows(rows, out / "results.csv")
    summary = summarize(rows)
    atomic_write_text(out / "summary.csv", _summary_csv(summary))
    if args.json:
        print_json({"run": str(out), "protocol": protocol_id(protocol), "definitions": DEFINITIONS,
                    "summary": summary})
    else:
        con = _console()
        print_summary(summary, card.seg_classes, con)
        con.print(f"results: {out / 'results.csv'} (confusion matrices in each cell folder)")
    return 0


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
                    "(e.g. epochs=3 encoder=resnet34). Multi-GPU: launch with torchrun (see segmenters.distributed).")
    p.add_argument("--methods", help="comma-separated fusion methods (ir and vis are always added)")
    p.add_argument("--no-refs", action="store_true", help="do not add the ir and vis reference rows")
    p.add_argument("--data", required=True, help="dataset card (built-in name or YAML path)")
    p.add_argument("--root", help="dataset root (overrides the card's)")
    p.add_argument("--protocol", default="quick", help="preset (quick, paper) or YAML file (default: quick)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, one training per seed (default: the protocol's seed, 0)")
    p.add_argument("--weights", action="append", metavar="METHOD=PATH", help="weights of a learned method")
    p.add_argument("--fused", action="append", metavar="NAME=DIR",
                   help="fused images made elsewhere: DIR/<split>/<id>.png (or DIR/<id>.png for the test split)")
    fixed = p.add_mutually_exclusive_group()
    fixed.add_argument("--fixed", metavar="REF", help="fixed-segmenter protocol: train once per seed on method "
                                                      "REF's images and test every method with that network")
    fixed.add_argument("--fixed-checkpoint", metavar="MODEL.pt",
                       help="fixed-segmenter protocol with a given checkpoint (a model.pt of a segment run)")
    p.add_argument("--out", help="run directory (default runs/segment/<time>)")
    p.add_argument("--resume", action="store_true", help="continue an existing run directory")
    p.add_argument("--cache", help="fusion cache folder (default <out>/fused)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--save-predictions", choices=("none", "ids", "palette"), default="none",
                   help="write predicted label PNGs per cell (class ids or palette colours)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
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
