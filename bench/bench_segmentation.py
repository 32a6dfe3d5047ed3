"""Segmentation benchmarks: mIoU accumulation speed and CPU training speed.

1. Confusion-matrix accumulation for 361 masks of 480x640 with 9 classes (the MSRS test split's size)
   through :class:`taskeval.metrics.segmentation.SegmentationMetrics` (a torchmetrics ``Metric``, ids
   range-checked), against a straightforward NumPy ``bincount`` per mask, torchmetrics'
   ``multiclass_confusion_matrix`` without validation and ``MulticlassJaccardIndex`` with its default
   validation. The matrices must agree exactly.
2. Training seconds per epoch per 100 images at 240x320 on the CPU: a synthetic dataset of that size
   goes through the real training loop (reading, augmentation, forward, backward, checkpoint) for one
   epoch per encoder.

Run alone (two jobs on two cores slow each other by large factors)::

    python bench/bench_segmentation.py --threads 2 [--encoders tu-mobilenetv3_small_100,resnet18] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_miou(n: int = 361, h: int = 480, w: int = 640, k: int = 9, repeats: int = 3) -> dict:
    from torchmetrics.classification import MulticlassJaccardIndex
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from taskeval.metrics.segmentation import SegmentationMetrics

    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(n):
        g = rng.integers(0, k, (h, w), dtype=np.int64)
        g[rng.random((h, w)) < 0.02] = 255
        p = np.where(rng.random((h, w)) < 0.7, np.where(g == 255, 0, g), rng.integers(0, k, (h, w)))
        gts.append(g)
        preds.append(p.astype(np.int64))
    tg = [torch.from_numpy(g) for g in gts]
    tp = [torch.from_numpy(p) for p in preds]

    def numpy_ref():
        cm = np.zeros((k, k), np.int64)
        for g, p in zip(gts, preds):
            keep = g != 255
            cm += np.bincount(g[keep] * k + p[keep], minlength=k * k).reshape(k, k)
        return cm

    def ours():
        m = SegmentationMetrics(k, 255)
        for p, g in zip(tp, tg):
            m.update(p, g)
        return m.confmat.numpy()

    def tm_functional():
        cm = torch.zeros(k, k, dtype=torch.int64)
        for p, g in zip(tp, tg):
            cm += multiclass_confusion_matrix(p, g, k, ignore_index=255, validate_args=False)
        return cm.numpy()

    def tm_default():
        m = MulticlassJaccardIndex(k, average="macro", ignore_index=255)
        for p, g in zip(tp, tg):
            m.update(p, g)
        return m.compute()

    def best(fn):
        times, out = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_np, cm_np = best(numpy_ref)
    t_ours, cm_ours = best(ours)
    t_tmf, cm_tmf = best(tm_functional)
    t_tm, miou_tm = best(tm_default)
    if not (np.array_equal(cm_np, cm_ours) and np.array_equal(cm_np, cm_tmf)):
        raise SystemExit("confusion matrices differ between taskeval, torchmetrics and the NumPy reference")
    from taskeval.metrics.segmentation import seg_scores_from_confmat

    miou = float(seg_scores_from_confmat(torch.from_numpy(cm_ours))["mIoU"])
    return {"masks": n, "size": f"{w}x{h}", "classes": k, "numpy_bincount_s": round(t_np, 3),
            "taskeval_s": round(t_ours, 3), "torchmetrics_confmat_unvalidated_s": round(t_tmf, 3),
            "torchmetrics_jaccard_validated_s": round(t_tm, 3),
            "confusion_matrices_identical": True, "mIoU": miou, "mIoU_torchmetrics": float(miou_tm)}


def bench_training(encoders: list[str], n_images: int, h: int = 240, w: int = 320) -> list[dict]:
    from segmenters import deeplab
    from segmenters.protocol import load_protocol
    from segmenters.train import load_checkpoint_file
    from taskeval.data.dataset import PairedDataset
    from taskeval.data.synth import SynthConfig, generate
    from taskeval.fusedset import fuse_split

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        card = generate(Path(tmp) / "synth", SynthConfig(n_train=n_images, n_test=1, height=h, width=w),
                        progress=False)
        ds = PairedDataset.open(card, "train")
        fused = fuse_split(ds, "vis", Path(tmp) / "cache", progress=False)
        for enc in encoders:
            p = load_protocol("quick", [f"encoder={enc}", "epochs=1", f"crop_size={h},{w}"])
            t = time.perf_counter()
            ck = deeplab.train(fused, ds, p, Path(tmp) / f"run-{enc}", "cpu", progress=False)
            wall = time.perf_counter() - t
            train_s = float(load_checkpoint_file(ck)["train_seconds"])
            used = (n_images // p.batch) * p.batch
            out.append({"encoder": enc, "batch": p.batch, "decoder_channels": p.decoder_channels,
                        "images": used, "size": f"{w}x{h}", "epoch_seconds": round(train_s, 2),
                        "seconds_per_epoch_per_100_images": round(train_s / used * 100, 2),
                        "wall_incl_model_build_s": round(wall, 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--encoders", default=None, help="encoders to time (default: the quick preset's, resnet18)")
    ap.add_argument("--images", type=int, default=32, help="training images for the epoch timing (default 32)")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from segmenters.protocol import PRESETS

    encoders = args.encoders.split(",") if args.encoders else list(dict.fromkeys([PRESETS["quick"].encoder,
                                                                                    "resnet18"]))
    res = {"threads": args.threads, "torch": torch.__version__, "miou": bench_miou()}
    m = res["miou"]
    print(json.dumps(m, indent=1), flush=True)
    print(f"mIoU accumulation, {m['masks']} masks of {m['size']}, {m['classes']} classes: taskeval {m['taskeval_s']:.3f} s "
          f"({1e3 * m['taskeval_s'] / m['masks']:.2f} ms per mask); ratio to NumPy bincount "
          f"{m['numpy_bincount_s'] / m['taskeval_s']:.2f}x, to torchmetrics MulticlassJaccardIndex "
          f"{m['torchmetrics_jaccard_validated_s'] / m['taskeval_s']:.2f}x (above 1: taskeval faster)", flush=True)
    if not args.skip_training:
        res["training"] = bench_training(encoders, args.images)
        print(json.dumps(res["training"], indent=1))
        for t in res["training"]:
            print(f"training DeepLabV3+ {t['encoder']} at {t['size']}: {t['seconds_per_epoch_per_100_images']:.2f} s "
                  "per epoch per 100 images")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
