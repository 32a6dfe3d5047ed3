"""``DetProtocol``: everything that decides a detection number, as one frozen, hashable value.

A protocol's id is its name plus a short hash of all its fields (``quick-3f2a1b``); it goes into every
result row, so two numbers are comparable only when their protocol ids are equal. Execution settings
that do not change the result on a given machine (device, dataloader workers, threads) are not part of
it.

Presets:

``paper``
    What the fusion papers use: YOLOv5s at 640 px, trained from the same initialisation on every
    method's images. Hyper-parameters are YOLOv5's ``hyp.scratch-low.yaml`` defaults (SGD, lr0 0.01,
    momentum 0.937, weight decay 5e-4, 3 warm-up epochs, mosaic 1.0 for every epoch, HSV and flip
    augmentation; prediction with conf 0.001, NMS IoU 0.6, 300 detections as in its ``val.py``);
    100 epochs and batch 16 are YOLOv5's ``train.py`` defaults (the papers do not publish theirs).
    Note: ultralytics builds ``yolov5s.yaml`` as the anchor-free YOLOv5su (YOLOv5's backbone with
    ultralytics' head and loss; 9.1 M parameters for 6 classes against 7.2 M of the anchor-based YOLOv5s
    of the papers, and ``yolov5n.yaml`` gives the 2.5 M-parameter YOLOv5nu). Papers usually start from
    COCO weights: pass ``pretrained=/path/to/yolov5su.pt`` to do the same (never downloaded).
``quick``
    A CPU protocol for the synthetic benchmark (``SynthConfig()``: 120 training pairs of 160x128): YOLOv8n
    at 160 px, 7 epochs of batch 2. Ultralytics' defaults learn nothing on so little data (gradients
    accumulate to a nominal batch of 64, i.e. two optimiser steps per epoch; mosaic and warm-up eat the
    few epochs there are), so it steps every batch (``nbs = batch``: 60 steps per epoch), uses AdamW at
    2e-3 without warm-up or mosaic, and keeps the hue fixed (cones and signs differ only in hue). The
    number of optimiser steps is what a CPU budget buys here: on ``average`` fusion (one thread, seeds 0
    and 1, 96 test pairs) 5 epochs of batch 4 (150 steps) reached mAP50 55-66, 4 epochs of batch 2 (240
    steps, about the same CPU time) 93-96, and 7 epochs of batch 2 (420 steps, about 1.15x the CPU time of
    the earlier 7 epochs of batch 4) 99; the earlier preset (batch 4, the scenes of synth design 1) left
    naive fusions half-trained, so their rows moved 5-18 points between seeds and CPUs. Numbers from it
    rank methods; they are not paper numbers (measured figures: README, bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from taskeval.config import load_preset


@dataclass(frozen=True)
class DetProtocol:
    """Training and prediction settings of the detector (ultralytics argument names where they exist).

    Attributes:
        name: preset or user name; with the hash of the other fields it forms :meth:`id`.
        family: detector family (:mod:`detectors.registry`; ``ultralytics``: YOLO from ``model``).
        model: ultralytics model YAML (``yolov5s.yaml`` builds YOLOv5u, ``yolov8n.yaml``, ``yolo11n.yaml``)
            or a path to one.
        pretrained: checkpoint whose matching weights initialise the model (an explicit local path; no
            download), or None to train from scratch.
        imgsz: training and prediction image size in pixels (long side, letterboxed).
        epochs, batch: training length and batch size (images).
        nbs: nominal batch size; gradients accumulate over ``round(nbs / batch)`` batches per step.
        optimizer: "SGD", "Adam", "AdamW", ... (ultralytics names).
        lr0, lrf, momentum, weight_decay, warmup_epochs, cos_lr: optimiser schedule.
        mosaic, close_mosaic, mixup, hsv_h, hsv_s, hsv_v, degrees, translate, scale, fliplr: augmentation.
        cache: keep decoded training images in RAM (faster; same numbers).
        amp: mixed-precision training on CUDA (ultralytics' default there; ignored on the CPU). Its sanity
            check, which would download a model, is skipped (logged).
        conf, iou, max_det: prediction confidence floor, NMS IoU, detections per image (YOLOv5's ``val.py``
            settings: everything above 0.001 is kept so the AP curve is complete).
        seed: default seed (``--seeds`` overrides it per run).
        val_images: number of training images ultralytics validates on for its own logs (taskeval scores
            the test split itself and keeps the last epoch's weights, so nothing is selected on test).
    """

    name: str = "custom"
    family: str = "ultralytics"
    model: str = "yolov5s.yaml"
    pretrained: str | None = None
    imgsz: int = 640
    epochs: int = 100
    batch: int = 16
    nbs: int = 64
    optimizer: str = "SGD"
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    cos_lr: bool = False
    mosaic: float = 1.0
    close_mosaic: int = 0
    mixup: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    fliplr: float = 0.5
    cache: bool = False
    amp: bool = False
    conf: float = 0.001
    iou: float = 0.6
    max_det: int = 300
    seed: int = 0
    val_images: int = 8

    def short_hash(self) -> str:
        """6 hex digits of the SHA-256 of every field but ``name`` and ``seed`` (a row has a seed column);
        a pretrained checkpoint enters with the hash of its bytes."""
        d = {k: v for k, v in asdict(self).items() if k not in ("name", "seed")}
        for k, default in _ADDED_LATER.items():  # so that the ids of earlier runs stay valid
            if d[k] == default:
                del d[k]
        if self.pretrained:
            d["pretrained"] = _file_digest(Path(self.pretrained))
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:6]

    @property
    def id(self) -> str:
        """``<name>-<hash>``, the value of ``Row.protocol``."""
        return f"{self.name}-{self.short_hash()}"

    def train_args(self) -> dict:
        """The ultralytics ``train()`` keyword arguments this protocol fixes."""
        keys = ("imgsz", "epochs", "batch", "nbs", "optimizer", "lr0", "lrf", "momentum", "weight_decay",
                "warmup_epochs", "cos_lr", "mosaic", "close_mosaic", "mixup", "hsv_h", "hsv_s", "hsv_v",
                "degrees", "translate", "scale", "fliplr", "cache")
        return {k: getattr(self, k) for k in keys}


# fields added after protocol ids were first published: hashed only when set away from this default
_ADDED_LATER = {"family": "ultralytics", "amp": False}


def _file_digest(path: Path) -> str:
    if not path.is_file():
        from taskeval.errors import WeightsError

        raise WeightsError(f"pretrained detector weights not found: {path} (weights are never downloaded; "
                           "give a local .pt file)")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


PRESETS: dict[str, DetProtocol] = {
    "paper": DetProtocol(name="paper", amp=True),
    "quick": DetProtocol(
        name="quick", model="yolov8n.yaml", imgsz=160, epochs=7, batch=2, nbs=2, optimizer="AdamW", lr0=0.002,
        warmup_epochs=0.0, mosaic=0.0, hsv_h=0.0, hsv_s=0.2, hsv_v=0.2,
        translate=0.1, scale=0.2, max_det=100, val_images=0),
}


def load_protocol(spec: str = "quick", overrides: list[str] | None = None) -> DetProtocol:
    """A preset name or a YAML file of :class:`DetProtocol` fields, then ``key=value`` overrides.

    A protocol changed by overrides keeps its name; its hash (and so its id) changes.
    """
    return load_preset(DetProtocol, PRESETS, spec, overrides, "detection protocol")
