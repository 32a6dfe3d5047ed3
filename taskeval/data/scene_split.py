"""Scene-disjoint splits from the images themselves (M3FD and other frame sequences).

Frames numbered in capture order are cut into scenes wherever consecutive visible frames differ much
more than usual (mean absolute difference of 64x48 grey thumbnails above ``factor`` x the median
difference); whole scenes then go to test, chosen by a seeded shuffle, until the test share is reached.
No scene is split, so same-scene frames never straddle train and test.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from taskeval.errors import DataError
from taskeval.imageio import list_images, read_rgb, rgb_to_gray


def frame_number(stem: str) -> int:
    m = re.search(r"(\d+)$", stem)
    if m is None:
        raise DataError(f"cannot read a frame number from {stem!r} (expected digits at the end)")
    return int(m.group(1))


def scene_cuts(vis_dir: str | Path, factor: float = 4.0, progress: bool = True) -> list[list[str]]:
    """Group the images of ``vis_dir`` into scenes of consecutive frames; returns lists of ids in order."""
    images = list_images(vis_dir)
    if not images:
        raise DataError(f"{vis_dir}: no images")
    ids = sorted(images, key=frame_number)
    thumbs = [cv2.resize(rgb_to_gray(read_rgb(images[i])), (64, 48), interpolation=cv2.INTER_AREA)
              for i in tqdm(ids, desc="scene thumbnails", disable=not progress, unit="img")]
    diffs = np.array([np.abs(a - b).mean() for a, b in zip(thumbs[:-1], thumbs[1:])])
    gaps = np.diff([frame_number(i) for i in ids])
    threshold = factor * float(np.median(diffs)) if len(diffs) else 0.0
    scenes, current = [], [ids[0]]
    for k, nxt in enumerate(ids[1:]):
        if diffs[k] > threshold or gaps[k] > 1:
            scenes.append(current)
            current = []
        current.append(nxt)
    scenes.append(current)
    return scenes


def split_scenes(scenes: list[list[str]], test_share: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Whole scenes to test (seeded order) until ``test_share`` of the frames is reached."""
    order = list(range(len(scenes)))
    random.Random(seed).shuffle(order)
    total = sum(len(s) for s in scenes)
    test_idx, n = set(), 0
    for k in order:
        if n >= test_share * total:
            break
        test_idx.add(k)
        n += len(scenes[k])
    train = [i for k, s in enumerate(scenes) if k not in test_idx for i in s]
    test = [i for k, s in enumerate(scenes) if k in test_idx for i in s]
    return train, test
