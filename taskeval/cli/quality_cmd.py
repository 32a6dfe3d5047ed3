"""``taskeval quality``: fusion-quality metrics."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "quality", "fusion-quality metrics (EN, SD, SF, AG, MI, VIF, Qabf, SSIM...)",
            "score fused images per method or a folder of fused images against their IR and visible sources", 8)
