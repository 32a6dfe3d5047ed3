"""``taskeval detect`` and ``taskeval score-det`` (detection track)."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "detect", "retrain a YOLO detector per fusion method and report COCO mAP",
            "fuse each method's images (cached), retrain an ultralytics YOLO detector per method under one "
            "fixed protocol, predict the test split and report mAP@0.5, mAP@.5:.95 and per-class AP", 4)
    planned(sub, "score-det", "score existing detection predictions (COCO mAP)",
            "score COCO-JSON or YOLO-txt predictions against ground truth with pycocotools", 4)
