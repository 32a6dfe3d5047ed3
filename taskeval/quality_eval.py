"""Fusion-quality metrics over a fused set: per-image values of every requested metric.

The fused image, the IR and the visible image of each pair go through the registered metrics of
:mod:`taskeval.metrics.quality` (8-bit quantisation and grey conversion as defined there).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from taskeval.data.dataset import PairedDataset
from taskeval.fusedset import FusedSet
from taskeval.metrics.quality import QUALITY_ORDER, create_quality_metric


def score_fused_set(fused: FusedSet, ds: PairedDataset, metrics: tuple[str, ...] | list[str] = (),
                    device: str = "cpu", progress: bool = False) -> dict[tuple[str, str], float]:
    """{(id, metric): value} for every id of ``ds`` (which ``fused`` must cover) and metric (default: all)."""
    names = list(metrics) or list(QUALITY_ORDER)
    scorers = {n: create_quality_metric(n) for n in names}
    fused.require(ds.ids)
    out: dict[tuple[str, str], float] = {}
    for i, sid in enumerate(tqdm(ds.ids, desc=f"quality {fused.method}", disable=not progress, unit="img")):
        ir, vis = ds.read_pair(i)
        f = torch.from_numpy(fused.read(sid)).permute(2, 0, 1)[None].to(device)
        ir_t = torch.from_numpy(ir)[None, None].to(device)
        vis_t = torch.from_numpy(vis).permute(2, 0, 1)[None].to(device)
        if f.shape[-2:] != ir_t.shape[-2:]:
            from taskeval.errors import DataError

            raise DataError(f"{fused.paths[sid]}: fused image is {f.shape[-1]}x{f.shape[-2]}, sources are "
                            f"{ir_t.shape[-1]}x{ir_t.shape[-2]}")
        for name, metric in scorers.items():
            out[(sid, name)] = float(metric.score(f, ir_t, vis_t)[0])
    return out


def summarise(per_image: dict[tuple[str, str], float]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, population std) over images."""
    metrics = dict.fromkeys(m for _, m in per_image)
    return {m: (float(np.mean(v)), float(np.std(v)))
            for m in metrics for v in [[val for (_, mm), val in per_image.items() if mm == m]]}
