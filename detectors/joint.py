"""The detector side of joint fusion + detection training: ultralytics' own model and loss, in-graph.

``DetectionLoss`` wraps an ultralytics ``DetectionModel`` built from YAML so that a fusion network in front
of it receives gradients of the real YOLO loss (box + cls + DFL, already scaled by the batch size as
ultralytics' trainer uses it). No loss is written by hand here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class DetectionLoss(nn.Module):
    """An ultralytics detector whose ``forward(images, boxes)`` returns the YOLO training loss.

    Args:
        num_classes: number of detection classes.
        model: ultralytics model YAML (``yolov8n.yaml``, ``yolov5n.yaml`` = YOLOv5u, ``yolo11n.yaml`` ...).
        state_dir: folder for ultralytics' settings (offline set-up, see :mod:`detectors.ultralytics_env`).
    """

    def __init__(self, num_classes: int, model: str = "yolov8n.yaml", state_dir: str | Path | None = None):
        super().__init__()
        from detectors.ultralytics_env import prepare

        prepare(state_dir, torch.get_num_threads())
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel

        self.net = DetectionModel(model, nc=num_classes, verbose=False)
        self.net.args = get_cfg()  # the loss reads its box/cls/dfl gains from here

    @staticmethod
    def targets(boxes: list[np.ndarray], size_hw: tuple[int, int], device) -> dict[str, torch.Tensor]:
        """Our per-image (K,5) ``[cls, x1, y1, x2, y2]`` pixel boxes -> ultralytics' batch targets."""
        h, w = size_hw
        cls, xywh, idx = [], [], []
        for i, b in enumerate(boxes):
            b = np.asarray(b, np.float32).reshape(-1, 5)
            if not len(b):
                continue
            cls.append(b[:, :1])
            xywh.append(np.stack([(b[:, 1] + b[:, 3]) / 2 / w, (b[:, 2] + b[:, 4]) / 2 / h,
                                  (b[:, 3] - b[:, 1]) / w, (b[:, 4] - b[:, 2]) / h], axis=1))
            idx.append(np.full(len(b), i, np.float32))
        if not cls:
            return {"cls": torch.zeros(0, 1, device=device), "bboxes": torch.zeros(0, 4, device=device),
                    "batch_idx": torch.zeros(0, device=device)}
        return {"cls": torch.from_numpy(np.concatenate(cls)).to(device),
                "bboxes": torch.from_numpy(np.concatenate(xywh)).to(device),
                "batch_idx": torch.from_numpy(np.concatenate(idx)).to(device)}  # ascending, as required

    def forward(self, images: torch.Tensor, boxes: list[np.ndarray]) -> torch.Tensor:
        """YOLO loss per image (box + cls + DFL terms, as ultralytics' trainer logs them) of RGB ``images``
        (N,3,H,W) in [0,1], H and W multiples of 32, against ``boxes`` (pixels of these images).

        ultralytics returns the terms multiplied by the batch size (for its gradient accumulation); they
        are divided back here so that lambda means the same whatever the batch size.
        """
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(f"detector input must be a multiple of 32, got {tuple(images.shape[-2:])}")
        batch = {"img": images, **self.targets(boxes, images.shape[-2:], images.device)}
        loss, _ = self.net.loss(batch)
        return loss.sum() / images.shape[0]
