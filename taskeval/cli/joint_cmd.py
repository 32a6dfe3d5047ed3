"""``taskeval joint``: semantic-guided joint training of a fusion network with a task network."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "joint", "train a fusion network with a detection or segmentation loss",
            "train a fusion network with fusion loss + lambda x task loss (SeAFusion-style alternating or "
            "TarDAL-style end-to-end) and register the result as a new method", 7)
