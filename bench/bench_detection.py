"""Detection-track timings: COCO scoring and detector training.

    python bench/bench_detection.py [--images 5000] [--dets 100] [--train-images 100] [--imgsz 320]
                                    [--threads 2] [--skip-score] [--skip-train] [--json OUT.json]

1. Scoring ``--images`` images x ``--dets`` detections (3 classes, ~4 boxes per image): plain pycocotools
   (COCO + loadRes + evaluate/accumulate/summarize, nothing else) against taskeval's scoring path
   (``score_detections``: the fastest installed backend plus the precision/recall matching), with the
   mAP of both printed so the speed-up is not bought with a different number.
2. Training: seconds per epoch per 100 images for the ``quick`` protocol's model at ``--imgsz`` on the
   CPU (synthetic images of that size; the first epoch is left out, it carries the start-up cost).

Run it alone: two jobs that each use both cores slow each other down by 5 to 70 times.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def scoring_case(n_images: int, n_dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    from taskeval.metrics.detection import coco_detections, coco_ground_truth

    rng = np.random.default_rng(seed)
    sizes, boxes, preds = {}, {}, {}
    for k in range(n_images):
        sid = f"{k:06d}"
        sizes[sid] = (480, 640)
        n = int(rng.integers(0, 9))
        xy = rng.uniform(0, [600, 440], (n, 2))
        x2y2 = np.minimum(xy + rng.uniform(8, 120, (n, 2)), [640, 480])
        boxes[sid] = np.c_[rng.integers(0, 3, n), xy, x2y2]
        m = n_dets - 2 * n
        x1 = rng.uniform(0, 600, (m, 2))
        noise = np.c_[x1, x1 + rng.uniform(5, 120, (m, 2)), rng.random(m), rng.integers(0, 3, m)]
        b = boxes[sid][np.repeat(np.arange(n), 2)]
        near = np.c_[b[:, 1:5] + rng.normal(0, 6, (2 * n, 4)), rng.random(2 * n), b[:, 0]]
        preds[sid] = np.r_[near, noise]
    gt = coco_ground_truth(boxes, sizes, ("person", "bicycle", "car"))
    return gt, coco_detections(preds, gt)


def plain_pycocotools(gt: dict, dets: list[dict]) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


def bench_scoring(n_images: int, n_dets: int) -> dict:
    from taskeval.metrics.detection import score_detections

    gt, dets = scoring_case(n_images, n_dets)
    t0 = time.perf_counter()
    ref = plain_pycocotools(gt, dets)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = score_detections(gt, dets)
    t_ours = time.perf_counter() - t0
    return {"images": n_images, "detections": len(dets), "pycocotools_s": round(t_ref, 2),
            "taskeval_s": round(t_ours, 2), "taskeval_backend": ours.backend,
            "speedup": round(t_ref / t_ours, 2), "map50_pycocotools": ref, "map50_taskeval": ours.map50}


def bench_training(n_images: int, imgsz: int, epochs: int, threads: int) -> dict:
    from detectors import yolo
    from detectors.protocol import PRESETS
    from taskeval.data import PairedDataset
    from taskeval.data.synth import SynthConfig, generate
    from taskeval.fusedset import source_set

    proto = replace(PRESETS["quick"], imgsz=imgsz, epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        h = imgsz * 4 // 5
        card = generate(Path(tmp) / "synth", SynthConfig(n_train=n_images, n_test=1, height=h, width=imgsz),
                        progress=False)
        ds = PairedDataset.open(card, "train")
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        yolo.train(source_set(ds), ds, proto, run, threads=threads)
        total = time.perf_counter() - t0
        with open(run / "train" / "results.csv") as fh:
            elapsed = [float(r["time"]) for r in csv.DictReader(fh)]  # cumulative seconds at each epoch's end
    per_epoch = float(np.mean(np.diff(elapsed))) if len(elapsed) > 1 else elapsed[0]
    return {"model": proto.model, "imgsz": imgsz, "image_size": f"{imgsz}x{h}", "train_images": n_images,
            "epochs": epochs, "threads": threads, "batch": proto.batch,
            "s_per_epoch_per_100_images": round(per_epoch * 100 / n_images, 2), "total_s": round(total, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--train-images", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    if not args.skip_score:
        out["scoring"] = s = bench_scoring(args.images, args.dets)
        print(f"scoring {s['images']} images x {args.dets} detections: pycocotools {s['pycocotools_s']} s, "
              f"taskeval ({s['taskeval_backend']} + P/R) {s['taskeval_s']} s, {s['speedup']}x; mAP50 "
              f"{s['map50_pycocotools']:.6f} vs {s['map50_taskeval']:.6f}")
    if not args.skip_train:
        out["training"] = t = bench_training(args.train_images, args.imgsz, args.epochs, args.threads)
        print(f"training {t['model']} at {t['image_size']} on the CPU ({t['threads']} threads, batch "
              f"{t['batch']}): {t['s_per_epoch_per_100_images']} s per epoch per 100 images")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
