"""The ultralytics YOLO adapter: ``train`` and ``predict``. The harness hands it file paths and a dataset
split and gets back a checkpoint path and arrays; ultralytics is imported only inside ``detectors/``.

Models are built from a YAML (``DetProtocol.model``): ``yolov5s.yaml`` (the papers' detector; ultralytics
builds the anchor-free YOLOv5u from it, and ``yolov5n.yaml`` the 2.65 M-parameter YOLOv5nu),
``yolov8n.yaml``, ``yolo11n.yaml``, ... Weights come only from an explicit local path
(``DetProtocol.pretrained``); nothing is downloaded. All ultralytics state (settings, font, label
caches, training folders) stays inside the run directory (:mod:`detectors.ultralytics_env`).

Multi-GPU: ``device="0,1"`` (several CUDA devices) trains with ultralytics' own DDP: it writes a small
launcher script under its settings folder and runs it with ``torch.distributed.run``; the arguments
are the same, so the checkpoint and the numbers follow the same protocol. Prediction always runs on
the first device given. A single device (``"cpu"``, ``"0"``) runs in-process, unchanged. Mixed precision
follows ``DetProtocol.amp`` (on in the ``paper`` preset, used on CUDA only); ultralytics' AMP sanity check,
which downloads a model, is skipped (:func:`detectors.ultralytics_env.prepare`).

Example:
    >>> ckpt = train(fused_train, train_ds, PRESETS["quick"], "runs/x/vis", seed=0)  # doctest: +SKIP
    >>> preds = predict(ckpt, fused_test, PRESETS["quick"])  # {id: (N,6) [x1,y1,x2,y2,score,cls]}
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from detectors.protocol import DetProtocol
from detectors.ultralytics_env import prepare, quiet
from detectors.yolo_data import write_yolo_dataset
from taskeval.errors import DataError, TrainingError, WeightsError

log = logging.getLogger(__name__)


def first_device(device: str) -> str:
    """``"0,1"`` -> ``"0"``; ``"cpu"`` stays."""
    return str(device).split(",")[0].strip() or "cpu"


def train(train_set, train_ds, protocol: DetProtocol, run_dir: str | Path,
          device: str = "cpu", seed: int | None = None, threads: int | None = None, workers: int = 0,
          state_dir: str | Path | None = None, verbose: bool = False, progress: bool = True) -> Path:
    """Train a detector from ``protocol.model`` on ``train_images`` with the boxes of ``train_ds``.

    Args:
        train_set: the fused training images (:class:`taskeval.fusedset.FusedSet`, or any object whose
            ``paths`` maps id -> image file), for every id of ``train_ds``.
        train_ds: the training split (ids, sizes, validated boxes, class names).
        protocol: the training protocol.
        run_dir: this run's folder; gets ``data/`` (symlinks + labels) and ``train/`` (ultralytics).
        device: "cpu", "0", or "0,1,..." (DDP).
        seed: training seed (default ``protocol.seed``).
        threads: CPU threads (None: the caller's ``torch.get_num_threads()``).
        workers: dataloader worker processes (0: load in the main process, best for small data on a CPU).
        state_dir: ultralytics' settings folder (default ``<run_dir>/third_party``).
        verbose: ultralytics' detailed console output.
        progress: ultralytics' per-epoch progress bars and INFO lines (False: warnings only).

    Returns:
        The checkpoint of the last epoch (``<run_dir>/train/weights/last.pt``); no epoch is selected on
        held-out data.

    Raises:
        DataError: ``train_images`` lacks ids of ``train_ds`` (listed) or files are missing.
        WeightsError: ``protocol.pretrained`` does not exist.
        TrainingError: ultralytics finished without writing a checkpoint.
    """
    run_dir = Path(run_dir).resolve()
    seed = protocol.seed if seed is None else seed
    if protocol.pretrained and not Path(protocol.pretrained).is_file():
        raise WeightsError(f"pretrained detector weights not found: {protocol.pretrained} (never downloaded)")
    data_yaml = write_yolo_dataset(run_dir / "data", train_set.paths, train_ds, protocol.val_images)
    prepare(state_dir or run_dir / "third_party", threads)
    from ultralytics import YOLO

    model = YOLO(protocol.model, task="detect")
    trainer, save = _trainer(protocol)
    args = dict(protocol.train_args(), data=str(data_yaml), device=device, seed=int(seed), deterministic=True,
                project=str(run_dir), name="train", exist_ok=True, workers=workers, amp=protocol.amp, plots=False,
                val=False, save=save, verbose=verbose, patience=0,
                pretrained=str(Path(protocol.pretrained).resolve()) if protocol.pretrained else False)
    t0 = time.perf_counter()
    with quiet(not progress):
        model.train(trainer=trainer, **args)
    last = run_dir / "train" / "weights" / "last.pt"
    if not last.is_file():
        raise TrainingError(f"ultralytics finished without writing {last}; see {run_dir / 'train'}")
    # best.pt is an epoch picked on ultralytics' validation images (training images here): never used,
    # so it is not kept (6 MB per cell for YOLOv8n)
    (last.parent / "best.pt").unlink(missing_ok=True)
    log.info("trained %s (%s, seed %d) on %d images in %.1f s", protocol.model, protocol.id, seed,
             len(train_ds), time.perf_counter() - t0)
    return last


def _trainer(protocol: DetProtocol):
    """(trainer class or None for ultralytics' own, checkpoint after every epoch?). ``val_images=0``: nothing is
    validated and one checkpoint is written after the last epoch (:mod:`detectors.yolo_trainer`); ultralytics'
    recovery from a non-finite loss, which reloads the previous epoch's checkpoint, then fails the cell."""
    if protocol.val_images > 0:
        return None, True
    from detectors.yolo_trainer import LastEpochTrainer

    return LastEpochTrainer, False


def checkpoint_classes(checkpoint: str | Path, state_dir: str | Path | None = None) -> list[str]:
    """Class names a checkpoint was trained with, in class-index order."""
    model = _load(checkpoint, state_dir, None)
    names = model.names
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def _load(checkpoint, state_dir, threads):
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise WeightsError(f"detector checkpoint not found: {checkpoint}")
    prepare(state_dir, threads)
    from ultralytics import YOLO

    return YOLO(str(checkpoint.resolve()), task="detect")


def predict(checkpoint: str | Path, test_set, protocol: DetProtocol, device: str = "cpu",
            threads: int | None = None, batch: int = 16,
            state_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Detect objects in ``images`` with a trained checkpoint.

    Args:
        checkpoint: ultralytics ``.pt`` file (from :func:`train` or a user's).
        test_set: the fused test images (``paths``: id -> image file).
        protocol: supplies ``imgsz``, ``conf``, ``iou`` (NMS) and ``max_det``.
        device: "cpu" or a CUDA index (the first of a list is used).
        threads: CPU threads (None: the caller's setting).
        batch: images per forward pass.
        state_dir: ultralytics' settings folder (None: as already prepared in this process).

    Returns:
        id -> (N, 6) float64 ``[x1, y1, x2, y2, score, cls]`` in pixels of the original image.

    Raises:
        WeightsError: the checkpoint does not exist.
        DataError: an image file is missing.
    """
    images: Mapping[str, Path] = test_set.paths
    absent = [str(p) for p in images.values() if not Path(p).is_file()]
    if absent:
        raise DataError(f"{len(absent)} image file(s) not found: {', '.join(absent[:10])}")
    model = _load(checkpoint, state_dir, threads)
    ids = list(images)
    out: dict[str, np.ndarray] = {}
    for k in range(0, len(ids), batch):
        chunk = ids[k:k + batch]
        results = model.predict([str(images[sid]) for sid in chunk], imgsz=protocol.imgsz, conf=protocol.conf,
                                iou=protocol.iou, max_det=protocol.max_det, device=first_device(device),
                                batch=batch, verbose=False, save=False)
        for sid, r in zip(chunk, results):
            b = r.boxes
            out[sid] = np.concatenate([b.xyxy.cpu().numpy(), b.conf.cpu().numpy()[:, None],
                                       b.cls.cpu().numpy()[:, None]], axis=1).astype(np.float64)
    return out


def _register() -> None:
    from detectors.registry import register_detector

    register_detector("ultralytics", train, predict, checkpoint_classes)


_register()
