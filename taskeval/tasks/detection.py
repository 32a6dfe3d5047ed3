"""The detection task: a detector (ultralytics YOLO by default, :mod:`detectors`) retrained per fusion
method, scored with COCO mAP (:mod:`taskeval.metrics.detection`).

A cell's folder holds ``gt.json`` and ``predictions.json`` (COCO format; the figures and the paired
bootstrap read them) and ``scores.json`` (every number, the COCO backend, the confidence of P and R).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from taskeval.errors import ConfigError
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

# an untrained or constant detector scores about 0 mAP@.5 (nothing it predicts overlaps an object by chance
# often enough); rows within this many points of it rank nothing (the reports' learned-nothing guard)
CHANCE_MARGIN = 0.05
_COCO = ("COCO evaluation: 101-point interpolation, all object sizes, at most 100 detections per image; "
         "classes without test objects are left out")


class DetectionEvaluation:
    """Per-image COCO matching of one cell (:func:`taskeval.stats.evaluate_images`), resampled by
    :func:`taskeval.stats.detection_replicates`."""

    def __init__(self, cell_dir: str | Path):
        from taskeval import stats

        self._ev = stats.evaluate_images(*stats.load_detections(cell_dir))
        self.ids = [str(i) for i in self._ev.image_ids]

    def scores(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        from taskeval.stats import detection_replicates

        return detection_replicates(self._ev, idx)

    def same_images(self, other: "DetectionEvaluation") -> None:
        from taskeval.stats import _same_ground_truth

        _same_ground_truth(self._ev, other._ev)


@register_task
class DetectionTask(Task):
    spec = TaskSpec(
        name="detection", short="det", labels="boxes", grid="boxes",
        metrics=(Metric("mAP50", header="mAP@.5", definition="COCO AP at IoU 0.5, mean over classes"),
                 Metric("mAP50_95", header="mAP@.5:.95", definition="COCO AP averaged over IoU 0.5:0.95"),
                 Metric("precision", header="P", definition="precision at IoU 0.5 at the confidence of best "
                                                            "mean F1"),
                 Metric("recall", header="R", definition="recall at IoU 0.5 at that confidence"),
                 Metric("AP50", header="AP@.5", definition="per-class COCO AP at IoU 0.5"),
                 Metric("AP50_95", header="AP@.5:.95", definition="per-class COCO AP at IoU 0.5:0.95")),
        headline=("mAP50", "mAP50_95"), per_class="AP50", class_columns=("mAP50", "mAP50_95"), radar=("mAP50",),
        paired=("mAP50", "mAP50_95"),
        # one per-image evaluation per cell (~8 s for 840 images x 100 detections), then ~20 ms per replicate
        n_boot=200,
        caption=f"AP@0.5 per class, mAP@0.5 and mAP@0.5:0.95 in % ({_COCO}).",
        summary="COCO mAP")

    def __init__(self):
        self._gt: dict[str, dict] = {}

    # ---- protocols
    def load_protocol(self, preset: str | None, overrides: Mapping[str, Any] | None = None):
        from detectors.protocol import DetProtocol, load_protocol
        from taskeval.config import load_config

        p = load_protocol(preset or "quick")
        return load_config(DetProtocol, None, None, base={**asdict(p), **dict(overrides or {})}) if overrides else p

    def protocol_id(self, protocol) -> str:
        return protocol.id

    def with_seed(self, protocol, seed):
        from dataclasses import replace

        return protocol if seed is None else replace(protocol, seed=int(seed))

    # ---- data and networks
    def _ground_truth(self, ds) -> dict:
        from taskeval.fingerprint import dataset_fingerprint
        from taskeval.metrics.detection import dataset_ground_truth

        key = dataset_fingerprint(ds, labels=True)
        if key not in self._gt:
            self._gt[key] = dataset_ground_truth(ds)
        return self._gt[key]

    def check_data(self, ds) -> None:
        super().check_data(ds)
        self._ground_truth(ds)  # every label file parsed and validated before any training

    def train(self, ctx: TrainContext) -> Path:
        from detectors.registry import get_detector

        return get_detector(ctx.protocol.family).train(
            ctx.fused, ctx.ds, ctx.protocol, ctx.work, device=ctx.exe.device, seed=ctx.seed,
            threads=ctx.exe.threads, workers=ctx.exe.workers, state_dir=ctx.exe.state_dir,
            progress=ctx.exe.progress)

    def check_checkpoint(self, checkpoint: Path, ds, exe: Execution) -> None:
        from detectors.registry import get_detector

        names = get_detector("ultralytics").checkpoint_classes(checkpoint, exe.state_dir)
        if tuple(names) != tuple(ds.card.det_classes):
            raise ConfigError(f"checkpoint {checkpoint} detects {names}, but {ds.card.name} has classes "
                              f"{list(ds.card.det_classes)}")

    def evaluate(self, ctx: EvalContext, checkpoint: Path | None) -> list:
        from detectors.registry import get_detector
        from taskeval.metrics.detection import score_predictions, write_json

        preds = get_detector(ctx.protocol.family).predict(checkpoint, ctx.fused, ctx.protocol,
                                                          device=ctx.exe.device, threads=ctx.exe.threads,
                                                          state_dir=ctx.exe.state_dir)
        gt = self._ground_truth(ctx.ds)
        scores, dets = score_predictions(preds, gt, ctx.exe.backend)
        write_json(ctx.cell_dir / "gt.json", gt)
        write_json(ctx.cell_dir / "predictions.json", dets)
        write_json(ctx.cell_dir / "scores.json", scores.to_dict())
        c = ctx.cell
        return scores.rows(c.method, c.dataset, c.protocol, c.seed, ctx.note)

    def evaluation(self, cell_dir) -> DetectionEvaluation:
        return DetectionEvaluation(cell_dir)

    def chance_level(self, cell_dir) -> ChanceLevel:
        """mAP@.5 of a detector that learned nothing: 0, with a floor of :data:`CHANCE_MARGIN` above it (the
        same for every test set, so ``cell_dir`` is not read)."""
        return ChanceLevel("mAP50", 0.0, CHANCE_MARGIN, "an untrained or constant detector (about 0)")

    def cost(self, protocol, card, test_hw, options, costs) -> Cost:
        nc = len(card.det_classes)
        g, params = detector_flops(protocol.model, protocol.imgsz, nc)
        ref = costs["cpu"]["detection_s_per_image_epoch"]
        g_ref, _ = detector_flops(ref["model"], ref["imgsz"], nc)
        return Cost(train_gflop=g, infer_gflop=g, epochs=protocol.epochs, cpu_seconds_per_gflop=ref["seconds"] / g_ref,
                    checkpoint_bytes=params * 2,  # ultralytics keeps fp16 weights, optimiser stripped
                    bytes_per_test_image=2000.0,  # COCO predictions JSON, up to max_det boxes
                    source=f"{protocol.model} at {protocol.imgsz} px: {g:.2f} GFLOP per image (counted); CPU: "
                           f"{ref['model']} at {ref['imgsz']} px measured")


@functools.lru_cache(maxsize=32)
def detector_flops(model: str, imgsz: int, nc: int) -> tuple[float, int]:
    """(forward GFLOP per image at ``imgsz``, parameter count) of an ultralytics model YAML."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from detectors.ultralytics_env import prepare, quiet

    prepare()
    from ultralytics.nn.tasks import DetectionModel

    with quiet():
        m = DetectionModel(model, nc=nc, verbose=False).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 3, imgsz, imgsz))
    return fc.get_total_flops() / 1e9, sum(p.numel() for p in m.parameters())
