"""Fusion-quality metrics as ``torchmetrics.Metric`` classes, and the :data:`QUALITY_METRICS` registry.

Every metric shares ``update(fused, ir, vis)`` -- fused ``(N,1|3,H,W)``, IR ``(N,1,H,W)``, visible
``(N,1|3,H,W)``, float in [0,1] -- keeps one value per image (state ``values``, concatenated across
processes) and ``compute()`` returns their mean (``per_image=True``: the ``(N_total,)`` values in
update order). Definitions, colour handling and the toolbox each one matches are in the functional
twins, :mod:`taskeval.metrics.quality_functional`. Example::

    metric = create_quality_metric("Qabf")  # = QUALITY_METRICS.get("Qabf").factory()
    for fused, ir, vis in batches:
        metric.update(fused, ir, vis)
    metric.compute()  # mean Qabf over all images

    for name in QUALITY_ORDER:  # every metric, canonical order
        QUALITY_METRICS.get(name).meta.higher_is_better
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from taskeval.metrics import quality_functional as qf
from taskeval.registry import Registry


class FusionQualityMetric(Metric):
    """Base class: per-image values of one functional metric, averaged by :meth:`compute`.

    Args:
        per_image: ``compute()`` returns the per-image values ``(N_total,)`` instead of their mean
            (torchmetrics squeezes a single value to a 0-d tensor; the raw list is ``self.values``).
        quantize: round the inputs to 8 bits and the grey image to integers as the toolboxes do
            (see :func:`~taskeval.metrics.quality_functional.gray255`).
        **kwargs: passed to ``torchmetrics.Metric`` (``dist_sync_on_step``, ``compute_on_cpu``...).
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better: bool = True
    needs_sources: bool = True
    function: Callable[..., torch.Tensor]

    def __init__(self, per_image: bool = False, quantize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.per_image = per_image
        self.quantize = quantize
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def _options(self) -> dict[str, Any]:
        """Keyword arguments of the functional twin besides ``quantize``."""
        return {}

    def score(self, fused: torch.Tensor, ir: torch.Tensor | None = None,
              vis: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image values ``(N,)`` float64 of one batch, without touching the state."""
        if self.needs_sources:
            return type(self).function(fused, ir, vis, quantize=self.quantize, **self._options())
        qf.check_inputs(fused, ir, vis, need_sources=False)
        return type(self).function(fused, quantize=self.quantize, **self._options())

    def update(self, fused: torch.Tensor, ir: torch.Tensor | None = None,
               vis: torch.Tensor | None = None) -> None:
        """Score a batch; ``ir`` and ``vis`` may be omitted for no-reference metrics (EN, SD, SF, AG)."""
        self.values.append(self.score(fused, ir, vis))

    def compute(self) -> torch.Tensor:
        values = dim_zero_cat(self.values)
        return values if self.per_image else values.mean()


class Entropy(FusionQualityMetric):
    """EN (bits) of the fused image; :func:`~taskeval.metrics.quality_functional.entropy`."""

    needs_sources = False
    function = staticmethod(qf.entropy)


class StandardDeviation(FusionQualityMetric):
    """SD of the fused grey values on [0,255];
    :func:`~taskeval.metrics.quality_functional.standard_deviation`."""

    needs_sources = False
    function = staticmethod(qf.standard_deviation)


class SpatialFrequency(FusionQualityMetric):
    """SF of the fused image; :func:`~taskeval.metrics.quality_functional.spatial_frequency`."""

    needs_sources = False
    function = staticmethod(qf.spatial_frequency)


class AverageGradient(FusionQualityMetric):
    """AG of the fused image; :func:`~taskeval.metrics.quality_functional.average_gradient`."""

    needs_sources = False
    function = staticmethod(qf.average_gradient)


class MutualInformation(FusionQualityMetric):
    """MI(IR,F) + MI(VIS,F); :func:`~taskeval.metrics.quality_functional.mutual_information`.

    Args:
        base: 2 (bits, default) or ``math.e`` (nats).
        joint_saturation: reproduce Tang's uint8 overflow in the joint histogram.
    """

    function = staticmethod(qf.mutual_information)

    def __init__(self, base: float = 2.0, joint_saturation: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not base > 0 or base == 1:
            raise ValueError(f"base must be positive and not 1, got {base!r}")
        self.base, self.joint_saturation = base, joint_saturation

    def _options(self) -> dict[str, Any]:
        return {"base": self.base, "joint_saturation": self.joint_saturation}


class FeatureMutualInformation(FusionQualityMetric):
    """FMI on pixels (3x3 windows); :func:`~taskeval.metrics.quality_functional.fmi`."""

    function = staticmethod(qf.fmi)


class SumOfCorrelationDifferences(FusionQualityMetric):
    """SCD; :func:`~taskeval.metrics.quality_functional.scd`."""

    function = staticmethod(qf.scd)


class CorrelationCoefficient(FusionQualityMetric):
    """CC; :func:`~taskeval.metrics.quality_functional.correlation_coefficient`."""

    function = staticmethod(qf.correlation_coefficient)


class MeanSquaredError(FusionQualityMetric):
    """MSE on the [0,1] scale; :func:`~taskeval.metrics.quality_functional.mse`."""

    higher_is_better = False
    function = staticmethod(qf.mse)


class PeakSignalNoiseRatio(FusionQualityMetric):
    """PSNR (dB); :func:`~taskeval.metrics.quality_functional.psnr`.

    Args:
        peak: 1.0 (textbook), 255.0 (Tang's +48.13 dB) or ``"fused_max"`` (CDDFuse).
    """

    function = staticmethod(qf.psnr)

    def __init__(self, peak: float | Literal["fused_max"] = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        number = isinstance(peak, (int, float)) and not isinstance(peak, bool)
        if peak != "fused_max" and not (number and peak > 0):
            raise ValueError(f"peak must be a positive number or 'fused_max', got {peak!r}")
        self.peak = peak

    def _options(self) -> dict[str, Any]:
        return {"peak": self.peak}


class StructuralSimilarity(FusionQualityMetric):
    """SSIM(F,IR) + SSIM(F,VIS) (VIFB's convention by default);
    :func:`~taskeval.metrics.quality_functional.ssim`, whose keyword arguments select Tang's or CDDFuse's
    settings."""

    function = staticmethod(qf.ssim)

    def __init__(self, window_size: int = 11, sigma: float | None = 1.5, data_range: float = 255.0,
                 padding: Literal["valid", "replicate"] = "valid", sample_covariance: bool = False,
                 reduction: Literal["sum", "mean"] = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction not in ("sum", "mean") or padding not in ("valid", "replicate"):
            raise ValueError(f"reduction must be 'sum' or 'mean' and padding 'valid' or 'replicate', "
                             f"got {reduction!r}, {padding!r}")
        if window_size < 2 or (sigma is not None and sigma <= 0) or data_range <= 0:
            raise ValueError(f"invalid SSIM window ({window_size}, sigma={sigma}) or data_range {data_range}")
        self._ssim = {"window_size": window_size, "sigma": sigma, "data_range": data_range,
                      "padding": padding, "sample_covariance": sample_covariance, "reduction": reduction}

    def _options(self) -> dict[str, Any]:
        return dict(self._ssim)


class MultiScaleSSIM(FusionQualityMetric):
    """Wang's MS-SSIM, summed over the sources; :func:`~taskeval.metrics.quality_functional.ms_ssim`.

    Args:
        reduction: ``"sum"`` (default, like SSIM) or ``"mean"`` of the two source scores.
    """

    function = staticmethod(qf.ms_ssim)

    def __init__(self, reduction: Literal["sum", "mean"] = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def _options(self) -> dict[str, Any]:
        return {"reduction": self.reduction}


class MEFSSIM(FusionQualityMetric):
    """MEF-SSIM (Tang's ``MS_SSIM``); :func:`~taskeval.metrics.quality_functional.mef_ssim`."""

    function = staticmethod(qf.mef_ssim)


class VisualInformationFidelity(FusionQualityMetric):
    """VIF (VIFF), summed over the sources; :func:`~taskeval.metrics.quality_functional.vif`."""

    function = staticmethod(qf.vif)


class Qabf(FusionQualityMetric):
    """Qabf; :func:`~taskeval.metrics.quality_functional.qabf`."""

    function = staticmethod(qf.qabf)


class Nabf(FusionQualityMetric):
    """Nabf (fusion artifacts, lower is better); :func:`~taskeval.metrics.quality_functional.nabf`."""

    higher_is_better = False
    function = staticmethod(qf.nabf)


@dataclass(frozen=True)
class QualitySpec:
    """Registry metadata of a quality metric.

    Attributes:
        higher_is_better: the metric class's flag (False for MSE and Nabf).
        needs_sources: compares the fused image with IR and visible (False for EN, SD, SF, AG).
        source: the public toolbox whose values the default settings reproduce.
    """

    higher_is_better: bool
    needs_sources: bool
    source: str


QUALITY_METRICS: Registry[type[FusionQualityMetric]] = Registry("quality metric")
"""Short name -> metric class (``entry.factory``) with a :class:`QualitySpec` (``entry.meta``)."""

# (short name, class, toolbox whose values the defaults reproduce; labels of SOURCES.md), in the
# canonical order of tables and charts
_BUILTIN = (
    ("EN", Entropy, "Tang"),
    ("SD", StandardDeviation, "Tang"),
    ("SF", SpatialFrequency, "Tang"),
    ("AG", AverageGradient, "Tang"),
    ("MI", MutualInformation, "Tang without its joint-histogram saturation (base=e: CDDFuse)"),
    ("FMI", FeatureMutualInformation, "Tang-featnone"),
    ("SCD", SumOfCorrelationDifferences, "Tang"),
    ("CC", CorrelationCoefficient, "Tang"),
    ("PSNR", PeakSignalNoiseRatio, "Tang - 20 log10(255)"),
    ("MSE", MeanSquaredError, "Tang"),
    ("SSIM", StructuralSimilarity, "VIFB"),
    ("MS_SSIM", MultiScaleSSIM, "Wang's msssim.m (torchmetrics but for its last scale)"),
    ("MEF_SSIM", MEFSSIM, "Tang MS_SSIM"),
    ("VIF", VisualInformationFidelity, "Tang"),
    ("Qabf", Qabf, "Tang"),
    ("Nabf", Nabf, "Tang-argfix"),
)
QUALITY_ORDER = tuple(name for name, _, _ in _BUILTIN)
for _name, _cls, _source in _BUILTIN:
    QUALITY_METRICS.register(_name, _cls, QualitySpec(_cls.higher_is_better, _cls.needs_sources, _source),
                             source=__name__)


def create_quality_metric(name: str, **kwargs: Any) -> FusionQualityMetric:
    """Instantiate a registered metric by short name (raises with a suggestion on a typo)."""
    return QUALITY_METRICS.get(name).factory(**kwargs)


__all__ = [
    "QUALITY_METRICS", "QUALITY_ORDER", "QualitySpec", "FusionQualityMetric", "create_quality_metric",
    "Entropy", "StandardDeviation", "SpatialFrequency", "AverageGradient", "MutualInformation",
    "FeatureMutualInformation", "SumOfCorrelationDifferences", "CorrelationCoefficient", "MeanSquaredError",
    "PeakSignalNoiseRatio", "StructuralSimilarity", "MultiScaleSSIM", "MEFSSIM", "VisualInformationFidelity",
    "Qabf", "Nabf",
]
