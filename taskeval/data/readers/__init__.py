"""One reader per on-disk layout. Each exposes ``discover(card, split, problems) -> list[PairRecord]``
and ``SPLITS`` (the split names the layout knows)."""

from __future__ import annotations

from importlib import import_module

from taskeval.data.card import FORMATS


def get_reader(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    return import_module(f"taskeval.data.readers.{fmt}")
