"""Fusion-quality metrics: values of the public toolboxes on real fused images, and torchmetrics behaviour.

The reference values (``shared/reference/quality/values.csv``, conventions in SOURCES.md beside it) were
produced by Tang's MATLAB toolbox (run in Octave), VIFB and CDDFuse's Evaluator on SeAFusion and TarDAL
outputs for 10 MSRS and 3 M3FD pairs. Each check names the source it reproduces and a tolerance; over
the 26 images the largest relative difference is 2e-11 (1.6e-9 for the emulation of Tang's SSIM,
whose constants are nearly zero), so the tolerances only absorb summation order; the same holds on
other CPU float paths (see ``TIGHT``).
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from taskeval.errors import RegistryError
from taskeval.imageio import gray_to_tensor, read_gray, read_rgb, rgb_to_tensor, tensor_to_uint8
from taskeval.metrics import quality_functional as qf
from taskeval.metrics.quality import QUALITY_METRICS, QUALITY_ORDER, create_quality_metric

LOG255 = 20 * math.log10(255)
# Same definition, float64 on both sides. Measured on the fast cases under every CPU float path of
# tests/tolerances.py (ATen AVX512/AVX2/default, oneDNN AVX2/SSE4.1, 1 and 2 threads): <= 7.7e-11, and
# 1.4e-9..1.6e-9 for Tang's SSIM (checked at 1e-8 below).
TIGHT = 1e-9

MSRS_IMAGES = ("00004N", "00016N", "00032N", "00047N", "00091D",
               "00107D", "00119D", "00135D", "00147D", "00169D")
M3FD_IMAGES = ("M3FD_00000", "M3FD_00082", "M3FD_00159")
CASES = [(image, method) for method in ("SeAFusion", "TarDAL") for image in MSRS_IMAGES + M3FD_IMAGES]
# Unmarked subset: night and day MSRS (00091D has 10k saturated visible pixels, which exercise the
# MI saturation and FMI flat-window rules) and one 1024x768 M3FD pair; the rest runs with --runslow.
FAST_CASES = {("00004N", "SeAFusion"), ("00091D", "TarDAL"), ("M3FD_00082", "SeAFusion")}
FAST_FMI_CASES = {("00091D", "SeAFusion")}


def _params(fast: set) -> list:
    return [case if case in fast else pytest.param(*case, marks=pytest.mark.slow) for case in CASES]


def _reference_values(shared: Path) -> dict[tuple[str, str, str, str], float]:
    with open(shared / "reference" / "quality" / "values.csv", newline="") as fh:
        rows = csv.DictReader(fh)
        return {(r["image"], r["method"], r["source"], r["metric"]): float(r["value"]) for r in rows}


@pytest.fixture(scope="module")
def reference(shared) -> dict:
    return _reference_values(shared)


def _source_paths(shared: Path, image: str, method: str) -> tuple[Path, Path, Path]:
    pairs = shared / "data" / ("m3fd_pairs" if image.startswith("M3FD") else "msrs_det")
    name = f"{image}.png"
    return shared / "reference" / method / name, pairs / "ir" / name, pairs / "vi" / name


@lru_cache(maxsize=4)
def _inputs(shared: Path, image: str, method: str) -> dict[str, tuple[torch.Tensor, ...]]:
    """Tensors read with the project's own reader, and CDDFuse's grey images for its conventions."""
    fused, ir, vis = _source_paths(shared, image, method)
    project = (rgb_to_tensor(read_rgb(fused)), gray_to_tensor(read_gray(ir)), rgb_to_tensor(read_rgb(vis)))

    def cddfuse_gray(path: Path) -> torch.Tensor:
        # utils/Evaluator.py image_read_cv2(path, 'GRAY'): float32 BGR -> cvtColor -> np.round
        grey = np.round(cv2.cvtColor(cv2.imread(str(path)).astype("float32"), cv2.COLOR_BGR2GRAY))
        return torch.from_numpy(grey.astype(np.float64) / 255.0)[None, None]

    return {"project": project, "cddfuse": tuple(cddfuse_gray(p) for p in (fused, ir, vis))}


def _swapped_nabf(f, a, b):
    # Tang's analysis_Reference calls analysis_nabf(ir, vis, fused): IR in the fused image's place
    return qf.nabf(a, qf.gray255(b)[:, None] / 255.0, f)


# (metric in values.csv, source label, our call, which inputs, relative tolerance)
CHECKS = [
    ("EN", "Tang", lambda f, a, b: qf.entropy(f), "project", TIGHT),
    ("SD", "Tang", lambda f, a, b: qf.standard_deviation(f), "project", TIGHT),
    ("SF", "Tang", lambda f, a, b: qf.spatial_frequency(f), "project", TIGHT),
    ("AG", "Tang", lambda f, a, b: qf.average_gradient(f), "project", TIGHT),
    # deliberate difference: CDDFuse averages over MN pixels instead of (M-1)(N-1)
    ("AG", "CDDFuse-Evaluator-f64",
     lambda f, a, b: qf.average_gradient(f) * (1 - 1 / f.shape[-2]) * (1 - 1 / f.shape[-1]),
     "cddfuse", TIGHT),
    # MI: Tang exactly with its uint8 overflow; the default (true MI) in nats is CDDFuse's
    ("MI", "Tang", lambda f, a, b: qf.mutual_information(f, a, b, joint_saturation=True), "project", TIGHT),
    ("MI", "CDDFuse-Evaluator", lambda f, a, b: qf.mutual_information(f, a, b, base=math.e), "cddfuse",
     TIGHT),
    ("MI", "CDDFuse-Evaluator", lambda f, a, b: qf.mutual_information(f, a, b) * math.log(2), "cddfuse",
     TIGHT),
    ("SCD", "Tang", qf.scd, "project", TIGHT),
    ("SCD", "CDDFuse-Evaluator-f64", qf.scd, "cddfuse", TIGHT),
    ("CC", "Tang", qf.correlation_coefficient, "project", TIGHT),
    ("MSE", "Tang", qf.mse, "project", TIGHT),
    ("MSE", "CDDFuse-Evaluator-f64", lambda f, a, b: qf.mse(f, a, b) * 255**2, "cddfuse", TIGHT),
    # PSNR: the default is the textbook one, Tang's minus its 20 log10(255) offset
    ("PSNR", "Tang", lambda f, a, b: qf.psnr(f, a, b) + LOG255, "project", TIGHT),
    ("PSNR", "Tang", lambda f, a, b: qf.psnr(f, a, b, peak=255.0), "project", TIGHT),
    ("PSNR", "CDDFuse-Evaluator-f64", lambda f, a, b: qf.psnr(f, a, b, peak="fused_max"), "cddfuse", TIGHT),
    ("SSIM", "VIFB-gray", qf.ssim, "project", TIGHT),
    ("SSIM", "Tang", lambda f, a, b: qf.ssim(f, a, b, padding="replicate", data_range=1.0, reduction="mean"),
     "project", 1e-8),  # constants ~0: near-flat windows amplify rounding
    ("SSIM", "CDDFuse-Evaluator-f64",
     lambda f, a, b: qf.ssim(f, a, b, window_size=7, sigma=None, sample_covariance=True, data_range=2.0),
     "cddfuse", 1e-8),
    ("MS_SSIM", "Tang", qf.mef_ssim, "project", TIGHT),
    ("VIF", "Tang", qf.vif, "project", TIGHT),
    ("VIF", "CDDFuse-Evaluator-f64", qf.vif, "cddfuse", TIGHT),
    ("Qabf", "Tang", qf.qabf, "project", TIGHT),
    ("Qabf", "CDDFuse-Evaluator-f64", qf.qabf, "cddfuse", TIGHT),
    ("Nabf", "Tang-argfix", qf.nabf, "project", TIGHT),
    ("Nabf", "Tang", _swapped_nabf, "project", TIGHT),
]


@pytest.mark.reference
def test_ms_ssim_matches_torchmetrics_but_for_its_last_scale(shared):
    """Wang's MS-SSIM has no value in values.csv; torchmetrics' implementation is independent of ours and
    equal to Wang's except at the fifth scale, where it averages the same-size SSIM map of
    reflect-padded images instead of the 'valid' map. Dividing that last factor out of both leaves the
    contrast-structure product of scales 1-4, which must agree."""
    from torchmetrics.functional.image import (multiscale_structural_similarity_index_measure,
                                               structural_similarity_index_measure)

    f, a, _ = _inputs(shared, "00004N", "SeAFusion")["project"]
    f, a = f[..., :240, :320], a[..., :240, :320]  # even at every scale, as torchmetrics' pooling needs
    fused, ir = qf.gray255(f), qf.gray255(a)
    ours = qf.ms_ssim(f, a, a, reduction="mean")
    theirs = multiscale_structural_similarity_index_measure(fused[:, None], ir[:, None], data_range=255.0,
                                                            reduction="none")
    for _ in range(4):
        fused, ir = qf._halve(fused), qf._halve(ir)
    last = qf.MS_SSIM_WEIGHTS[-1]
    ours_last = qf.ssim(fused[:, None] / 255, ir[:, None] / 255, ir[:, None] / 255, reduction="mean",
                        quantize=False)
    theirs_last = structural_similarity_index_measure(fused[:, None], ir[:, None], data_range=255.0,
                                                      reduction="none")
    torch.testing.assert_close(ours / ours_last**last, theirs / theirs_last**last, rtol=1e-7, atol=0)


def test_reference_covers_the_cases(reference):
    assert {(image, method) for image, method, _, _ in reference} == set(CASES)


@pytest.mark.reference
@pytest.mark.parametrize(("image", "method"), _params(FAST_CASES))
def test_metrics_match_toolbox_values(shared, reference, image, method):
    inputs = _inputs(shared, image, method)
    failures = []
    for metric, source, fn, which, rtol in CHECKS:
        ours = float(fn(*inputs[which])[0])
        ref = reference[image, method, source, metric]
        if not math.isclose(ours, ref, rel_tol=rtol, abs_tol=0.0):
            rel = abs(ours - ref) / abs(ref)
            failures.append(f"{metric} vs {source}: ours {ours!r}, reference {ref!r}, rel {rel:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.reference
@pytest.mark.parametrize(("image", "method"), _params(FAST_FMI_CASES))
def test_pixel_fmi_matches_tang_featnone(shared, reference, image, method):
    ours = float(qf.fmi(*_inputs(shared, image, method)["project"])[0])
    assert math.isclose(ours, reference[image, method, "Tang-featnone", "FMI_pixel"], rel_tol=TIGHT)


# ------------------------------------------------------------------------------ behaviour, synthetic data
def _synthetic(n: int = 3, h: int = 164, w: int = 172, seed: int = 0):
    """Related fused/IR/visible images (smooth content plus noise), float32 in [0,1]; the default size
    is just above the smallest MS-SSIM accepts (161 px)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(n, 1, 1, 1, generator=g) * 6
    ir = (0.5 + 0.4 * torch.sin(6 * xx + phase) * torch.cos(4 * yy)).expand(n, 1, h, w).clone()
    vis = torch.stack([0.5 + 0.3 * torch.cos(5 * yy + k + phase[:, 0]) * xx for k in range(3)], 1)
    noise = lambda c: 0.05 * torch.rand(n, c, h, w, generator=g)  # noqa: E731
    vis = (vis + noise(3)).clamp(0, 1)
    fused = (0.5 * ir + 0.5 * vis + noise(3)).clamp(0, 1)
    return fused, (ir + noise(1)).clamp(0, 1), vis


@pytest.mark.parametrize("name", QUALITY_ORDER)
def test_batches_accumulate_like_one_shot_and_match_functional(name):
    fused, ir, vis = _synthetic(n=3)
    split = create_quality_metric(name, per_image=True)
    first = split(fused[:1], ir[:1], vis[:1])  # forward: the batch's values, and accumulates them
    split.update(fused[1:], ir[1:], vis[1:])
    whole = create_quality_metric(name)
    whole.update(fused, ir, vis)
    per_image = split.compute()
    assert per_image.shape == (3,) and per_image.dtype == torch.float64
    assert torch.isfinite(per_image).all()
    torch.testing.assert_close(per_image.mean(), whole.compute(), rtol=1e-12, atol=0)
    entry = QUALITY_METRICS.get(name)
    function = entry.factory.function
    direct = function(fused, quantize=True) if not entry.meta.needs_sources else function(fused, ir, vis)
    torch.testing.assert_close(direct, per_image, rtol=1e-12, atol=0)
    torch.testing.assert_close(first, per_image[0], rtol=1e-12, atol=0)  # torchmetrics squeezes one value


@pytest.mark.parametrize("name", QUALITY_ORDER)
def test_contract_violations_raise_value_error(name):
    fused, ir, vis = _synthetic(n=2)
    metric = create_quality_metric(name)
    bad = {
        "batch": (fused, ir[:1], vis),
        "size": (fused, ir[..., :-1], vis),
        "ir channels": (fused, vis, vis),
        "rank": (fused[0], ir, vis),
        "dtype": ((fused * 255).to(torch.uint8), ir, vis),
    }
    for args in bad.values():  # sources passed to a no-reference metric are checked too
        with pytest.raises(ValueError, match=r"shape|dtype|differ"):
            metric.update(*args)
    if QUALITY_METRICS.get(name).meta.needs_sources:
        with pytest.raises(ValueError, match="sources"):
            metric.update(fused)


def test_too_small_images_raise():
    fused, ir, vis = _synthetic(n=1, h=40, w=200)
    with pytest.raises(ValueError, match="too small"):
        qf.mef_ssim(fused, ir, vis)
    with pytest.raises(ValueError, match="too small"):
        qf.ms_ssim(fused[..., :160, :], ir[..., :160, :], vis[..., :160, :])
    with pytest.raises(ValueError, match="too small"):
        qf.vif(fused[..., :20, :20], ir[..., :20, :20], vis[..., :20, :20])


def test_identical_images_exact_properties():
    fused, _, _ = _synthetic(n=2)
    grey = qf.gray255(fused)[:, None] / 255
    same = (grey, grey, grey)
    # Exact on purpose: with identical inputs each ratio's numerator and denominator are the same float
    # expression, and each difference is x - x.
    assert torch.equal(qf.ssim(*same), torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.equal(qf.ms_ssim(*same), torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.equal(qf.mse(*same), torch.zeros(2, dtype=torch.float64))
    assert torch.isinf(qf.psnr(*same)).all()
    assert torch.equal(qf.fmi(*same), torch.ones(2, dtype=torch.float64))  # every window equals the fused one
    assert torch.equal(qf.nabf(*same), torch.zeros(2, dtype=torch.float64))  # no edge beyond the sources
    torch.testing.assert_close(qf.mutual_information(*same), 2 * qf.entropy(grey), rtol=1e-13, atol=0)
    torch.testing.assert_close(qf.correlation_coefficient(*same), torch.ones(2, dtype=torch.float64))


def test_constant_image_has_no_information():
    flat = torch.full((1, 3, 32, 32), 0.4)
    for fn in (qf.entropy, qf.standard_deviation, qf.spatial_frequency, qf.average_gradient):
        assert fn(flat).item() == 0.0


def test_rgb_is_scored_as_its_rgb2gray_grey():
    """An RGB image scores exactly as its 8-bit rgb2gray grey given as one channel (Tang's reduction)."""
    fused, ir, vis = _synthetic(n=2)
    grey_f, grey_v = qf.gray255(fused)[:, None] / 255, qf.gray255(vis)[:, None] / 255
    assert torch.equal(grey_f * 255, torch.round(grey_f * 255))
    for name in QUALITY_ORDER:
        metric = create_quality_metric(name)
        # Exact on purpose: both calls reduce to the same 8-bit grey and run the same computation.
        assert torch.equal(metric.score(fused, ir, vis), metric.score(grey_f, ir, grey_v)), name


def test_quantize_scores_the_png_a_fused_image_is_saved_as():
    fused, ir, vis = _synthetic(n=1)
    png = torch.from_numpy(tensor_to_uint8(fused[0]).astype(np.float32) / 255).permute(2, 0, 1)[None]
    for name in ("EN", "SD", "Qabf", "VIF"):
        metric = create_quality_metric(name)
        assert torch.equal(metric.score(fused, ir, vis), metric.score(png, ir, vis)), name  # same 8-bit input
    continuous = qf.standard_deviation(fused, quantize=False)
    assert not torch.equal(continuous, qf.standard_deviation(fused))
    torch.testing.assert_close(continuous, qf.standard_deviation(fused), rtol=0.02, atol=0)


def test_registry_lists_every_metric_with_direction():
    assert set(QUALITY_METRICS.list()) == set(QUALITY_ORDER)
    lower = {n for n in QUALITY_ORDER if not QUALITY_METRICS.get(n).meta.higher_is_better}
    assert lower == {"MSE", "Nabf"}
    for name in QUALITY_ORDER:
        entry = QUALITY_METRICS.get(name)
        assert entry.factory.higher_is_better is entry.meta.higher_is_better
    with pytest.raises(RegistryError, match="did you mean 'Qabf'"):
        QUALITY_METRICS.get("qabf")


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="peak"):
        create_quality_metric("PSNR", peak=0)
    with pytest.raises(ValueError, match="reduction"):
        create_quality_metric("SSIM", reduction="max")
    with pytest.raises(ValueError, match="base"):
        create_quality_metric("MI", base=1)


@pytest.mark.gpu
@pytest.mark.parametrize("name", QUALITY_ORDER)
def test_cuda_matches_cpu(name):
    fused, ir, vis = _synthetic(n=2)
    cpu = create_quality_metric(name, per_image=True)
    cpu.update(fused, ir, vis)
    gpu = create_quality_metric(name, per_image=True).to("cuda")
    gpu.update(fused.cuda(), ir.cuda(), vis.cuda())
    result = gpu.compute()
    assert result.is_cuda
    torch.testing.assert_close(result.cpu(), cpu.compute(), rtol=1e-9, atol=1e-12)
