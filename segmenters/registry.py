"""Segmentation architectures behind the segmentation task: an architecture is a registration.

``@register_segmenter("name")`` on ``build(protocol, num_classes) -> nn.Module`` (3-channel input, logits
at the input resolution, an ``encoder`` attribute for the encoder learning-rate multiplier and its
``output_stride``); :class:`segmenters.protocol.SegProtocol`'s ``arch`` picks one.
"""

from __future__ import annotations

from typing import Callable

from taskeval.registry import Registry

SEGMENTERS: Registry = Registry("segmentation architecture", entry_point_group="taskeval.segmenters",
                                builtin_modules=("segmenters.deeplab",))


def register_segmenter(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        SEGMENTERS.register(name, fn, source=getattr(fn, "__module__", "?"))
        return fn

    return deco


def build_segmenter(arch: str, protocol, num_classes: int):
    return SEGMENTERS.get(arch).factory(protocol, num_classes)
