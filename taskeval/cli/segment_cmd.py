"""``taskeval segment`` and ``taskeval score-seg`` (segmentation track)."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "segment", "retrain DeepLabV3+ per fusion method and report mIoU",
            "fuse each method's images (cached), retrain a DeepLabV3+ (segmentation-models-pytorch) per "
            "method under one protocol and report per-class IoU, mIoU (with and without unlabeled), mAcc", 5)
    planned(sub, "score-seg", "score existing segmentation predictions (mIoU)",
            "score class-id or palette PNG predictions against ground truth label PNGs", 5)
