"""Detector families behind the detection task: a family is a registration, not an edit of the task.

A family provides ``train(fused_train, train_ds, protocol, work_dir, device, seed, threads, workers,
state_dir, progress) -> checkpoint``, ``predict(checkpoint, fused_test, protocol, device, threads,
state_dir) -> {id: (N, 6) [x1, y1, x2, y2, score, cls]}`` and ``checkpoint_classes(checkpoint,
state_dir) -> [names]``; :class:`detectors.protocol.DetProtocol`'s ``family`` picks one (default
``ultralytics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from taskeval.registry import Registry


@dataclass(frozen=True)
class Detector:
    name: str
    train: Callable
    predict: Callable
    checkpoint_classes: Callable


DETECTORS: Registry[Detector] = Registry("detector family", entry_point_group="taskeval.detectors",
                                         builtin_modules=("detectors.yolo",))


def register_detector(name: str, train: Callable, predict: Callable, checkpoint_classes: Callable) -> None:
    DETECTORS.register(name, train, Detector(name, train, predict, checkpoint_classes))


def get_detector(name: str) -> Detector:
    return DETECTORS.get(name).meta
