"""``taskeval detect`` and ``taskeval score-det`` (detection track).

``detect`` is the runner (:mod:`taskeval.runner`) with one task: for each method (``ir`` and ``vis``
rows included) and seed, fuse the train and test splits (cached), retrain the detector under one
protocol on the method's fused training images, predict its fused test images and score them with COCO
mAP. ``--fixed REF`` (or ``--fixed-checkpoint``) evaluates one detector, trained once per seed on REF's
images (or given), on every method: a quick screen whose rows say ``fixed:...`` in their protocol column.
The run folder is a results store like a benchmark's: ``--resume`` skips finished cells and
``taskeval report RUN`` renders it.
"""

from __future__ import annotations

from taskeval.cli.common import add_overrides, print_json
from taskeval.cli.run_common import add_task_command_options, execute, finish_task_command, start_run, \
    task_command_config
from taskeval.console import print_table

TASK = "detection"


def run_detect(args) -> int:
    cfg = task_command_config(args, TASK, "detect")
    run = start_run(cfg, args.out, "detect", args.resume, args)
    plan, runner, report = execute(cfg, run, args)
    return finish_task_command(cfg, run, args, runner, report, TASK)


def run_score(args) -> int:
    from rich.table import Table

    from taskeval.data.labels import read_class_names
    from taskeval.metrics.detection import load_ground_truth, load_predictions, score_detections

    classes = read_class_names(args.classes) if args.classes else None
    gt = load_ground_truth(args.gt, args.images, classes)
    scores = score_detections(gt, load_predictions(args.pred, gt), args.backend)
    if args.json:
        print_json(scores.to_dict())
        return 0
    t = Table(title=f"{args.pred} vs {args.gt} ({scores.n_images} images, {scores.n_gt} boxes, "
                    f"{scores.n_det} detections; {scores.backend})")
    for col in ("class", "boxes", "AP50", "AP50-95", "P", "R"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, c in scores.per_class.items():
        t.add_row(name, str(c.n_gt), *(f"{100 * v:.2f}" for v in (c.ap50, c.ap50_95, c.precision, c.recall)))
    overall = (scores.map50, scores.map50_95, scores.precision, scores.recall)
    t.add_row("all", str(scores.n_gt), *(f"{100 * v:.2f}" for v in overall), style="bold")
    print_table(t)
    print(f"values in %; P and R at IoU 0.5 at confidence {scores.conf_threshold:.4g} (best mean F1)")
    return 0


def register(sub) -> None:
    from detectors.protocol import PRESETS
    from taskeval.metrics.detection import BACKENDS

    p = sub.add_parser(
        "detect", help="retrain a YOLO detector per fusion method and report COCO mAP",
        description="For each method (ir and vis included): fuse the train and test splits (cached), train "
                    "an ultralytics YOLO detector under one protocol, predict the test split, write COCO "
                    "ground truth and predictions, and score mAP@0.5, mAP@.5:.95, per-class AP@0.5, "
                    "precision and recall. Protocols: 'quick' (YOLOv8n at 160 px, for CPUs and the synthetic "
                    "benchmark), 'paper' (YOLOv5s at 640 px with YOLOv5's defaults; ultralytics builds "
                    "yolov5s.yaml as the anchor-free YOLOv5u), or a YAML file; key=value overrides its "
                    "fields (epochs=3, model=yolo11n.yaml). Several devices (--device 0,1) train with "
                    "ultralytics' DDP.",
        epilog=f"presets: {', '.join(PRESETS)}; every result row names its protocol (name-hash).")
    add_task_command_options(p, "detect", "preset (quick, paper) or YAML file (default quick)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="COCO scorer (auto: faster-coco-eval when installed, else pycocotools)")
    add_overrides(p)
    p.set_defaults(func=run_detect)

    s = sub.add_parser("score-det", help="score existing detection predictions (COCO mAP)",
                       description="Score predictions against ground truth with COCO AP. Either side may be "
                                   "a COCO JSON file or a folder of YOLO txt files; predictions need a "
                                   "confidence column ('cls cx cy w h conf'); YOLO ground truth needs "
                                   "--images for the image sizes.")
    s.add_argument("--gt", required=True, help="COCO ground-truth JSON or YOLO label folder")
    s.add_argument("--pred", required=True, help="COCO results JSON or YOLO txt folder with confidences")
    s.add_argument("--images", help="image folder (image sizes for YOLO ground truth)")
    s.add_argument("--classes", help="class names file for YOLO ground truth (default classes.txt beside it)")
    s.add_argument("--backend", default="auto", choices=BACKENDS)
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.set_defaults(func=run_score)
