"""The segmentation task: a segmentation network (smp DeepLabV3+ by default, :mod:`segmenters`) retrained
per fusion method, scored with per-class IoU, mIoU (with and without class 0), mAcc and pixel accuracy
(:mod:`taskeval.metrics.segmentation`).

A cell's folder holds ``pred/<id>.png`` (predicted class ids), ``per_image_confmat.npz`` (one confusion
matrix per test image: the figures and the paired bootstrap read it) and ``scores.json``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from taskeval.errors import ConfigError, DataError
from taskeval.tasks import register_task
from taskeval.tasks.base import (
    ChanceLevel,
    Cost,
    EvalContext,
    Execution,
    Metric,
    Task,
    TaskSpec,
    TrainContext,
)

log = logging.getLogger(__name__)
# rows within this many mIoU points of the constant majority-class predictor rank nothing (the reports'
# learned-nothing guard); on MSRS-like data (94% 'unlabeled') that predictor scores about 10.5% mIoU
CHANCE_MARGIN = 0.05


def check_masks(ds) -> np.ndarray:
    """Validate every mask of a split and count its labelled pixels per class.

    Returns:
        (K,) int64 pixel counts per class (ignore-index pixels not counted).

    Raises:
        DataError: listing every missing mask, mask whose size differs from its image, and label id
            outside the class list (with the file and the ids).
    """
    from taskeval.data.labels import read_mask
    from taskeval.data.problems import Problems

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


class SegmentationEvaluation:
    """The per-image confusion matrices of one cell, resampled by summing (an image drawn twice counts twice)."""

    def __init__(self, cell_dir: str | Path):
        from taskeval.stats import load_confmats

        self.ids, self._cm = load_confmats(cell_dir)
        self.ids = list(self.ids)

    def scores(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        from taskeval.stats import seg_metrics, seg_replicate_confmats

        return seg_metrics(seg_replicate_confmats(self._cm, idx))

    def same_images(self, other: "SegmentationEvaluation") -> None:
        from taskeval.stats import align_ids

        if self._cm.shape[1:] != other._cm.shape[1:]:
            raise DataError(f"confusion matrices of {self._cm.shape[1]} and {other._cm.shape[1]} classes")
        other._cm = align_ids(self.ids, other.ids, other._cm)
        other.ids = list(self.ids)


@register_task
class SegmentationTask(Task):
    spec = TaskSpec(
        name="segmentation", short="seg", labels="masks", grid="masks",
        metrics=(Metric("mIoU", definition="mean IoU over all classes incl. class 0; classes absent from ground "
                                           "truth and prediction left out"),
                 Metric("mIoU_nobg", definition="mean IoU without class 0 (its pixels still count as errors of "
                                                "the other classes)"),
                 Metric("mAcc", definition="mean per-class pixel accuracy over the classes present in the "
                                           "ground truth"),
                 Metric("pixel_acc", header="pixel acc.", definition="correct / labelled pixels"),
                 Metric("IoU", definition="per-class intersection over union"),
                 Metric("Acc", definition="per-class pixel accuracy")),
        headline=("mIoU", "mAcc"), per_class="IoU", class_columns=("mIoU", "mIoU_nobg", "mAcc"),
        radar=("mIoU", "mAcc"), paired=("mIoU", "mIoU_nobg", "mAcc", "pixel_acc"),
        # one matrix product for all replicates: 1000 replicates of 361 images x 9 classes in ~0.1 s
        n_boot=1000, distributed=True,
        caption=("IoU per class in %; mIoU over all classes incl. class 0; mIoU_nobg without it (its pixels "
                 "still count as errors of the other classes); mAcc: mean per-class pixel accuracy over the "
                 "classes present in the ground truth. A class absent from ground truth and prediction is left "
                 "out."),
        summary="mIoU over all classes incl. class 0 and mAcc")

    # ---- protocols
    def load_protocol(self, preset: str | None, overrides: Mapping[str, Any] | None = None):
        from segmenters.protocol import SegProtocol, load_protocol
        from segmenters.registry import SEGMENTERS
        from taskeval.config import load_config
        from taskeval.registry import suggest

        p = load_protocol(preset or "quick")
        if overrides:
            p = load_config(SegProtocol, None, None, base={**asdict(p), **dict(overrides)})
        if p.arch not in SEGMENTERS:
            raise ConfigError(f"unknown segmentation architecture {p.arch!r}{suggest(p.arch, SEGMENTERS.list())}; "
                              f"registered: {', '.join(SEGMENTERS.list())}")
        return p

    def protocol_id(self, protocol) -> str:
        from segmenters.protocol import protocol_id

        return protocol_id(protocol)

    def with_seed(self, protocol, seed):
        from segmenters.protocol import with_seed

        return protocol if seed is None else with_seed(protocol, seed)

    def describe_protocol(self, protocol) -> dict:
        from segmenters.protocol import to_plain

        return to_plain(protocol)

    # ---- data and networks
    def check_data(self, ds) -> None:
        super().check_data(ds)
        counts = check_masks(ds)
        log.info("%s/%s: %d pairs, labelled pixels per class: %s", ds.card.name, ds.split, len(ds),
                 dict(zip(ds.card.seg_classes, counts.tolist())))

    def train(self, ctx: TrainContext) -> Path:
        from segmenters import deeplab

        return deeplab.train(ctx.fused, ctx.ds, ctx.protocol, ctx.work, device=ctx.exe.tensor_device,
                             progress=ctx.exe.progress and ctx.exe.is_main)

    def check_checkpoint(self, checkpoint: Path, ds, exe: Execution) -> None:
        from segmenters.train import load_checkpoint_file

        meta = load_checkpoint_file(checkpoint)
        if list(meta["classes"]) != list(ds.card.seg_classes):
            raise ConfigError(f"{checkpoint} was trained for classes {meta['classes']}, the card {ds.card.name!r} "
                              f"has {list(ds.card.seg_classes)}")

    def evaluate(self, ctx: EvalContext, checkpoint: Path | None) -> list:
        import torch

        from segmenters import deeplab
        from taskeval.metrics.segmentation import SegScores, seg_confusion_matrix
        from taskeval.rundir import atomic_write_json

        ds = ctx.ds
        preds = deeplab.predict(checkpoint, ctx.fused, ctx.protocol, device=ctx.exe.tensor_device, ids=ds.ids,
                                progress=False)
        deeplab.write_label_pngs(preds, ctx.cell_dir / "pred")
        classes = ds.card.seg_classes
        per_image = []
        for i, sid in enumerate(ds.ids):
            mask = ds.mask(i)
            if preds[sid].shape != mask.shape:
                raise DataError(f"prediction for {sid!r} is {preds[sid].shape[1]}x{preds[sid].shape[0]} but its "
                                f"mask is {mask.shape[1]}x{mask.shape[0]}")
            per_image.append(seg_confusion_matrix(torch.from_numpy(preds[sid]).long(), torch.from_numpy(mask),
                                                  len(classes), ds.card.ignore_index).numpy())
        per_image = np.stack(per_image)
        np.savez_compressed(ctx.cell_dir / "per_image_confmat.npz", ids=np.array(ds.ids), confmat=per_image)
        scores = SegScores.from_confmat(per_image.sum(0), classes)
        atomic_write_json(ctx.cell_dir / "scores.json", scores.as_dict())
        return rows_from_scores(scores, ctx.cell, ctx.note)

    def evaluation(self, cell_dir) -> SegmentationEvaluation:
        return SegmentationEvaluation(cell_dir)

    def chance_level(self, cell_dir) -> ChanceLevel:
        """mIoU of the constant predictor of the test split's majority class, from the cell's
        ``per_image_confmat.npz`` (its IoU is the class's pixel share, every other class present in the
        ground truth scores 0, classes absent from both are left out: the mIoU definition), with a margin
        of :data:`CHANCE_MARGIN`.

        Raises:
            DataError: no readable confusion matrices, or no labelled pixel in them.
        """
        from taskeval.stats import load_confmats, seg_metrics

        _, cm = load_confmats(cell_dir)
        gt = cm.sum(axis=(0, 2))  # (K,) ground-truth pixels per class (rows of the matrices)
        if gt.sum() == 0:
            raise DataError(f"{cell_dir}: the confusion matrices hold no labelled pixel")
        k = int(np.argmax(gt))
        constant = np.zeros(cm.shape[1:], np.int64)
        constant[:, k] = gt  # every labelled pixel predicted as class k
        name = _class_name(cell_dir, k)
        return ChanceLevel("mIoU", float(seg_metrics(constant)["mIoU"]), CHANCE_MARGIN,
                           f"predicting the majority class {name} ({gt[k] / gt.sum():.1%} of the test pixels) "
                           "everywhere")


    def cost(self, protocol, card, test_hw, options, costs) -> Cost:
        from dataclasses import replace

        nc = len(card.seg_classes)
        g, params = segmenter_flops(protocol, nc, tuple(protocol.crop_size))
        g_test, _ = segmenter_flops(protocol, nc, tuple(test_hw))
        ref = costs["cpu"]["segmentation_s_per_image_epoch"]
        g_ref, _ = segmenter_flops(replace(protocol, encoder=ref["encoder"], decoder_channels=64), nc, tuple(ref["crop"]))
        return Cost(train_gflop=g, infer_gflop=g_test, epochs=protocol.epochs, batch=protocol.batch, drop_last=True,
                    cpu_seconds_per_gflop=ref["seconds"] / g_ref, checkpoint_bytes=params * 4,
                    bytes_per_test_image=test_hw[0] * test_hw[1] / 5,  # predicted label PNG
                    source=f"{protocol.encoder} at {protocol.crop_size[0]}x{protocol.crop_size[1]}: {g:.1f} GFLOP per "
                           f"image (counted); CPU: {ref['encoder']} measured")


def _class_name(cell_dir, k: int) -> str:
    """``'name'`` of class ``k`` from the cell's ``scores.json``, ``k`` when it is not recorded there."""
    import json

    try:
        return repr(str(json.loads((Path(cell_dir) / "scores.json").read_text())["classes"][k]))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return str(k)

@functools.lru_cache(maxsize=32)
def segmenter_flops(protocol, nc: int, hw: tuple[int, int]) -> tuple[float, int]:
    """(forward GFLOP per image of ``hw``, parameter count) of the protocol's segmentation network."""
    import math
    from dataclasses import replace

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segmenters.deeplab import build_model

    m = build_model(replace(protocol, encoder_weights=None), nc).eval()
    h, w = (math.ceil(v / 16) * 16 for v in hw)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 3, h, w))
    return fc.get_total_flops() / 1e9, sum(p.numel() for p in m.parameters())


def rows_from_scores(scores, cell, note: str = "") -> list:
    """Overall rows (mIoU, mIoU_nobg, mAcc, pixel_acc) and per-class IoU / Acc rows of one cell."""
    from taskeval.results import OVERALL, Row

    def row(metric, cls, value):
        return Row(cell.method, "segmentation", cell.dataset, cell.protocol, cell.seed, metric, cls, float(value),
                   note)

    out = [row(m, OVERALL, v) for m, v in scores.overall().items()]
    out += [row("IoU", n, v) for n, v in zip(scores.class_names, scores.iou)]
    out += [row("Acc", n, v) for n, v in zip(scores.class_names, scores.acc)]
    return out
