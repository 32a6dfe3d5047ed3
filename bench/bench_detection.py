"""Detection-track timings: COCO scoring and detector training.

    python bench/bench_detection.py [--images 5000] [--dets 100] [--repeat 3] [--skip-pycocotools]
                                    [--breakdown N] [--train-images 100] [--imgsz 320] [--threads 2]
                                    [--skip-score] [--skip-train] [--json OUT.json]

1. Scoring ``--images`` images x ``--dets`` detections (3 classes, ~4 boxes per image), side by side in one
   process and ``--repeat`` times in rotating order, so that the ratios hold on a loaded machine where
   absolute times do not:

   - pycocotools alone and faster-coco-eval alone: ``COCO`` + ``loadRes`` (on copies of the detections,
     which it writes into) + ``evaluate/accumulate/summarize``, nothing else; the time of the last three
     is also given on its own;
   - faster-coco-eval alone with Python's garbage collector paused (taskeval pauses it while scoring), to
     show how much of the difference that is;
   - taskeval's ``score_detections`` with each backend: AP, per-class AP and precision / recall at the
     best-F1 confidence from one evaluation.

   Every ratio is printed for wall-clock and for CPU time of this process (``time.process_time``; less
   disturbed by other jobs, the work is single-threaded). The COCO numbers are checked, not assumed:
   taskeval's 12 COCO statistics equal those of the same backend alone bit for bit, and P / R / confidence
   are equal across backends. ``--breakdown N`` times each step of taskeval's faster-coco-eval scoring.
2. Training: seconds per epoch per 100 images for the ``quick`` protocol's model at ``--imgsz`` on the
   CPU (synthetic images of that size; the first epoch is left out, it carries the start-up cost).

Run it alone: two jobs that each use both cores slow each other down by 5 to 70 times.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
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


def _quiet(*args, **kwargs) -> None:
    return None


def pycocotools_alone(gt: dict, dets: list[dict]) -> tuple[np.ndarray, float, float]:
    """(12 COCO stats, wall seconds of evaluate/accumulate/summarize, CPU seconds of it) of plain
    pycocotools; the caller times the whole call."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in dets]), "bbox")
        t0, c0 = time.perf_counter(), time.process_time()
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), time.perf_counter() - t0, time.process_time() - c0


def faster_coco_eval_alone(gt: dict, dets: list[dict]) -> tuple[np.ndarray, float, float]:
    """As :func:`pycocotools_alone`, with faster-coco-eval (its default, combined evaluation)."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO({k: gt[k] for k in ("images", "annotations", "categories")}, print_function=_quiet)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes([dict(d) for d in dets]), "bbox", print_function=_quiet)
    t0, c0 = time.perf_counter(), time.process_time()
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats), time.perf_counter() - t0, time.process_time() - c0


def faster_coco_eval_alone_gc_paused(gt: dict, dets: list[dict]) -> tuple[np.ndarray, float, float]:
    """:func:`faster_coco_eval_alone` with Python's cyclic garbage collector paused, as taskeval runs."""
    gc.disable()
    try:
        return faster_coco_eval_alone(gt, dets)
    finally:
        gc.enable()


def _taskeval(backend: str):
    def run(gt: dict, dets: list[dict]):
        from taskeval.metrics.detection import score_detections

        return score_detections(gt, dets, backend)
    return run


CASES = {  # name -> runner; the "alone" ones return (stats, e/a/s wall, e/a/s CPU), taskeval's DetectionScores
    "pycocotools alone": pycocotools_alone,
    "faster-coco-eval alone": faster_coco_eval_alone,
    "faster-coco-eval alone, gc paused": faster_coco_eval_alone_gc_paused,
    "taskeval, pycocotools": _taskeval("pycocotools"),
    "taskeval, faster-coco-eval": _taskeval("faster-coco-eval"),
}
RATIOS = (  # (numerator, denominator, what of the denominator)
    ("taskeval, faster-coco-eval", "faster-coco-eval alone", "all"),
    ("taskeval, faster-coco-eval", "faster-coco-eval alone", "eas"),
    ("taskeval, faster-coco-eval", "faster-coco-eval alone, gc paused", "all"),
    ("taskeval, pycocotools", "pycocotools alone", "all"),
    ("taskeval, faster-coco-eval", "pycocotools alone", "all"),
    ("faster-coco-eval alone", "pycocotools alone", "all"),
)


def scoring_round(gt: dict, dets: list[dict], order: list[str]) -> dict:
    """One run of every case in ``order``: seconds (wall and CPU, whole call and e/a/s) and results."""
    out = {}
    for name in order:
        gc.collect()  # start each case from the same collector state
        t0, c0 = time.perf_counter(), time.process_time()
        res = CASES[name](gt, dets)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[name] = {"wall": wall, "cpu": cpu, "result": res}
        if isinstance(res, tuple):
            out[name].update(eas_wall=res[1], eas_cpu=res[2])
    return out


def check_identical(r: dict) -> dict:
    """Raise unless taskeval gives each backend's own 12 COCO numbers and the same P / R / confidence with
    both; returns the largest difference between the backends (pycocotools adds ``np.spacing(1)`` to
    precision's denominator, faster-coco-eval does not: up to 1e-15)."""
    tp, tf = r["taskeval, pycocotools"]["result"], r["taskeval, faster-coco-eval"]["result"]
    for ours, alone in ((tp, "pycocotools alone"), (tf, "faster-coco-eval alone")):
        if not np.array_equal(np.asarray(ours.stats), r[alone]["result"][0]):
            raise AssertionError(f"taskeval's COCO stats differ from {alone}: {ours.stats} vs {r[alone]['result'][0]}")
    if (tp.precision, tp.recall, tp.conf_threshold) != (tf.precision, tf.recall, tf.conf_threshold):
        raise AssertionError("precision / recall differ between the backends")
    ap = [(tp.per_class[n].ap50, tf.per_class[n].ap50, tp.per_class[n].ap50_95, tf.per_class[n].ap50_95)
          for n in tp.per_class]
    return {"stats": float(np.abs(np.asarray(tp.stats) - np.asarray(tf.stats)).max()),
            "per_class_ap": float(max(max(abs(a - b), abs(c - d)) for a, b, c, d in ap)),
            "map50": tp.map50, "map50_95": tp.map50_95, "precision": tp.precision, "recall": tp.recall,
            "conf": tp.conf_threshold}


def bench_scoring(n_images: int, n_dets: int, repeat: int, with_pycocotools: bool = True) -> dict:
    gt, dets = scoring_case(n_images, n_dets)
    names = [n for n in CASES if with_pycocotools or "pycocotools" not in n]
    used = [(a, b, w) for a, b, w in RATIOS if a in names and b in names]
    rounds, ratios = [], {f"{a} / {b}{' e/a/s' if w == 'eas' else ''}": {"wall": [], "cpu": []}
                          for a, b, w in used}
    for k in range(repeat):
        r = scoring_round(gt, dets, names[k % len(names):] + names[:k % len(names)])
        same = check_identical(r) if with_pycocotools else None
        for a, b, what in used:
            key = f"{a} / {b}{' e/a/s' if what == 'eas' else ''}"
            for clock in ("wall", "cpu"):
                den = r[b][f"eas_{clock}" if what == "eas" else clock]
                ratios[key][clock].append(r[a][clock] / den)
        rounds.append({name: {k2: round(v, 2) for k2, v in r[name].items() if k2 != "result"} for name in names})
        print(f"round {k + 1}:")
        for name in names:
            t = r[name]
            eas = f" (evaluate/accumulate/summarize {t['eas_wall']:.1f} s, CPU {t['eas_cpu']:.1f} s)" \
                if "eas_wall" in t else ""
            print(f"  {name:34s} {t['wall']:6.1f} s, CPU {t['cpu']:6.1f} s{eas}")
    print(f"ratios over {repeat} round(s), median (min-max), wall | CPU:")
    for key, v in ratios.items():
        print(f"  {key:68s} {_spread(v['wall'])} | {_spread(v['cpu'])}")
    out = {"images": n_images, "detections": len(dets), "rounds": rounds,
           "ratios": {k: {c: [round(x, 3) for x in v[c]] for c in v} for k, v in ratios.items()}}
    if same is not None:
        out["identical"] = same
        print(f"identical: taskeval's 12 COCO stats = each backend alone, bit for bit; P/R/conf equal across "
              f"backends; backends differ by {same['stats']:.1e} (stats), {same['per_class_ap']:.1e} (per-class "
              f"AP); mAP50 {same['map50']:.6f}, mAP50-95 {same['map50_95']:.6f}, P {same['precision']:.4f}, "
              f"R {same['recall']:.4f} at conf {same['conf']:.4f}")
    return out


def taskeval_breakdown(gt: dict, dets: list[dict], repeat: int) -> dict[str, float]:
    """Median CPU seconds of each step of taskeval's faster-coco-eval scoring over ``repeat`` runs, with the
    collector paused as ``score_detections`` pauses it: where the time goes beside the backend's own work.
    Building the COCO objects is timed on its own and subtracted from ``_evaluate``, which includes it."""
    from taskeval.metrics import detection as det

    backend, clock, steps = "faster-coco-eval", time.process_time, {}
    for _ in range(repeat):
        gc.collect()
        with det._gc_paused():
            t = clock()
            objects = det._coco_objects(gt, dets, backend)
            build = clock() - t
            del objects
            t = clock()
            ev = det._evaluate(gt, dets, backend)
            times = {"build the COCO objects": build, "backend: evaluate": clock() - t - build}
            t = clock()
            matches = det._matches(ev, backend)
            times["read the IoU-0.5 matches"] = clock() - t
            t = clock()
            ev.accumulate()
            ev.summarize()
            times["backend: accumulate + summarize"] = clock() - t
            t = clock()
            det.precision_recall_at_best_f1(*matches)
            times["precision / recall at best F1"] = clock() - t
            t = clock()
            del ev
            times["free the backend's objects"] = clock() - t
        for k, v in times.items():
            steps.setdefault(k, []).append(v)
    return {k: float(np.median(v)) for k, v in steps.items()}


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


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
    ap.add_argument("--repeat", type=int, default=3, help="scoring rounds in this process")
    ap.add_argument("--skip-pycocotools", action="store_true",
                    help="time the faster-coco-eval cases only (more rounds in the same time; no identity check)")
    ap.add_argument("--breakdown", type=int, default=0, metavar="N",
                    help="also time each step of taskeval's faster-coco-eval scoring N times (median CPU s)")
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
        print(f"scoring {args.images} images x {args.dets} detections, 3 classes, one process:")
        out["scoring"] = bench_scoring(args.images, args.dets, args.repeat, not args.skip_pycocotools)
    if args.breakdown:
        out["breakdown"] = b = taskeval_breakdown(*scoring_case(args.images, args.dets), args.breakdown)
        print(f"taskeval with faster-coco-eval, step by step (median CPU s of {args.breakdown}):")
        for k, v in b.items():
            print(f"  {k:34s} {v:6.2f}")
    if not args.skip_train:
        out["training"] = t = bench_training(args.train_images, args.imgsz, args.epochs, args.threads)
        print(f"training {t['model']} at {t['image_size']} on the CPU ({t['threads']} threads, batch "
              f"{t['batch']}): {t['s_per_epoch_per_100_images']} s per epoch per 100 images")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
