"""Metrics: detection (COCO mAP), segmentation and fusion quality."""
