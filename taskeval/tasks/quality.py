"""The fusion-quality task: no network is trained; every fused test image is scored against its IR and
visible sources with the metrics of :mod:`taskeval.metrics.quality` (EN, SD, SF, AG, MI, VIF, Qabf...).

Its option ``metrics`` lists the metrics (default: all, in canonical order). A cell (one per method, no
seed) holds ``per_image.csv`` (``id,metric,value``); its rows are the means over images. A finished cell
that lacks a newly requested metric is computed again from the same fused images.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from taskeval.errors import DataError
from taskeval.tasks import register_task
from taskeval.tasks.base import Cost, EvalContext, Metric, Task, TaskSpec

_DEFAULT_SUMMARY = ("EN", "VIF", "AG", "CC", "SCD", "Qabf")  # the quality axes of IGNet's radar charts


def quality_metric(name: str) -> Metric:
    from taskeval.metrics.quality import QUALITY_METRICS

    return Metric(name, higher_is_better=bool(QUALITY_METRICS.get(name).meta.higher_is_better), percent=False,
                  definition="mean over the fused test images")


class QualityEvaluation:
    """Per-image values of one quality cell; a resampled set's score is the mean of its images' values."""

    def __init__(self, cell_dir: str | Path):
        values: dict[str, dict[str, float]] = {}
        with open(Path(cell_dir) / "per_image.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                values.setdefault(row["metric"], {})[row["id"]] = float(row["value"])
        if not values:
            raise DataError(f"{cell_dir}/per_image.csv holds no values")
        self.ids = list(next(iter(values.values())))
        self._v = {m: np.array([v[i] for i in self.ids]) for m, v in values.items()}

    def scores(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {m: v[idx].mean(axis=-1) for m, v in self._v.items()}

    def summary(self) -> dict[str, tuple[float, float]]:
        """metric -> (mean, population std) over the images."""
        return {m: (float(v.mean()), float(v.std())) for m, v in self._v.items()}

    def same_images(self, other: "QualityEvaluation") -> None:
        if sorted(self.ids) != sorted(other.ids):
            raise DataError("paired comparison needs the same test images")
        pos = {s: k for k, s in enumerate(other.ids)}
        other._v = {m: v[[pos[s] for s in self.ids]] for m, v in other._v.items()}
        other.ids = list(self.ids)


@register_task
class QualityTask(Task):
    spec = TaskSpec(
        name="quality", short="quality", labels=None,
        metrics=tuple(Metric(m, percent=False) for m in _DEFAULT_SUMMARY), headline=_DEFAULT_SUMMARY,
        radar=_DEFAULT_SUMMARY, trains=False, paired=_DEFAULT_SUMMARY,
        caption="Fusion-quality metrics of the fused test images, mean over images (↑ higher is better, ↓ lower).",
        summary="mean over fused test images (↑ higher is better, ↓ lower)")

    def metric_names(self, options: Mapping[str, Any]) -> list[str]:
        from taskeval.metrics.quality import QUALITY_METRICS, QUALITY_ORDER

        names = options.get("metrics") or QUALITY_ORDER
        if isinstance(names, str):  # options.quality.metrics=EN,SD on the command line
            names = [m.strip() for m in names.split(",") if m.strip()]
        names = list(names)
        for n in names:
            QUALITY_METRICS.get(n)  # unknown names fail here, with a suggestion
        return names

    def run_spec(self, options: Mapping[str, Any]) -> TaskSpec:
        names = self.metric_names(options)
        summary = tuple(m for m in _DEFAULT_SUMMARY if m in names) or tuple(names[:6])
        return TaskSpec(name="quality", short="quality", labels=None,
                        metrics=tuple(quality_metric(n) for n in names), headline=summary,
                        radar=tuple(names), trains=False, paired=tuple(names), n_boot=1000,
                        caption=self.spec.caption, summary=self.spec.summary)

    def load_protocol(self, preset: str | None, overrides: Mapping[str, Any] | None = None):
        return None

    def protocol_id(self, protocol) -> str:
        return "-"

    def describe_protocol(self, protocol) -> dict:
        return {}

    def cell_meta(self, options: Mapping[str, Any]) -> dict:
        return {"metrics": self.metric_names(options)}

    def outdated(self, meta: Mapping[str, Any], options: Mapping[str, Any]) -> bool:
        return not set(self.metric_names(options)) <= set(meta.get("metrics", ()))

    def evaluate(self, ctx: EvalContext, checkpoint: Path | None) -> list:
        from taskeval.quality_eval import score_fused_set
        from taskeval.results import OVERALL, Row
        from taskeval.rundir import atomic_write_text

        names = self.metric_names(ctx.options)
        per_image = score_fused_set(ctx.fused, ctx.ds, names, device=ctx.exe.tensor_device)
        lines = ["id,metric,value"] + [f"{sid},{m},{v!r}" for (sid, m), v in per_image.items()]
        atomic_write_text(ctx.cell_dir / "per_image.csv", "\n".join(lines) + "\n")
        c = ctx.cell
        return [Row(c.method, "quality", c.dataset, c.protocol, c.seed, m, OVERALL,
                    float(np.mean([v for (_, mm), v in per_image.items() if mm == m])), ctx.note)
                for m in sorted({m for _, m in per_image})]

    def evaluation(self, cell_dir) -> QualityEvaluation:
        return QualityEvaluation(cell_dir)

    def cost(self, protocol, card, test_hw, options, costs) -> Cost:
        per = costs.get("quality_cpu_seconds_per_image", {})
        seconds = sum(per.get(m, per.get("default", 0.05)) for m in self.metric_names(options))
        return Cost(cpu_seconds_per_test_image=seconds * test_hw[0] * test_hw[1] / (640 * 480),
                    source="quality metrics per 640x480 image on 2 cores (bench/RESULTS.md), scaled by pixels")
