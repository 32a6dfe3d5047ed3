"""``taskeval fuse``: fuse a dataset split or two folders with a method (issue 3)."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "fuse", "fuse a dataset split or two folders with a fusion method",
            "fuse with a registered method and weights, batched, writing PNGs and an HDF5 cache", 3)
