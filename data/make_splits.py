"""Regenerate the split files in data/splits/ (deterministic; run from anywhere).

* M3FD, scene-disjoint by blocks: the 4200 frames (00000..04199) are numbered in capture order, so
  neighbouring frames show the same scene. Frames are cut into 84 contiguous blocks of 50; a seeded
  permutation (seed 0) sends 17 blocks (850 frames) to test and 67 (3350) to train. No block is split, so
  a scene leaks only if it straddles a block boundary (at most the frames on each side of 16 cuts).
  `taskeval data scene-split --vis DIR/Vis --out DIR` cuts at real scene changes when you have the images.
* msrs_sample: the 100 shared MSRS pairs, 35 day + 35 night to train and 15 + 15 to test (sorted ids,
  every 10th pair of each half, offsets 0, 3, 6 go to test).

Usage: python data/make_splits.py [--msrs-ids FILE]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "splits"
M3FD_FRAMES, M3FD_BLOCK, M3FD_TEST_BLOCKS, SEED = 4200, 50, 17, 0


def m3fd_split() -> tuple[list[str], list[str]]:
    blocks = list(range(M3FD_FRAMES // M3FD_BLOCK))
    test_blocks = set(random.Random(SEED).sample(blocks, M3FD_TEST_BLOCKS))
    train, test = [], []
    for frame in range(M3FD_FRAMES):
        (test if frame // M3FD_BLOCK in test_blocks else train).append(f"{frame:05d}")
    return train, test


def msrs_sample_split(ids: list[str]) -> tuple[list[str], list[str]]:
    train, test = [], []
    for tag in ("D", "N"):
        group = sorted(i for i in ids if i.endswith(tag))
        for k, i in enumerate(group):
            (test if k % 10 in (0, 3, 6) else train).append(i)
    return sorted(train), sorted(test)


def write(name: str, ids: list[str]) -> None:
    HERE.mkdir(exist_ok=True)
    (HERE / name).write_text("\n".join(ids) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--msrs-ids", help="file with the 100 shared MSRS ids (one per line)")
    args = ap.parse_args()
    train, test = m3fd_split()
    write("m3fd_scene_train.txt", train)
    write("m3fd_scene_test.txt", test)
    if args.msrs_ids:
        ids = [line.strip() for line in Path(args.msrs_ids).read_text().splitlines() if line.strip()]
        train, test = msrs_sample_split(ids)
        write("msrs_sample_train.txt", train)
        write("msrs_sample_test.txt", test)


if __name__ == "__main__":
    main()
