"""Fusion-quality metrics, functional form: batched torch, per-image values ``(N,)`` in float64.

Every function takes the fused image ``(N,1|3,H,W)`` and, for reference metrics, the IR ``(N,1,H,W)``
and visible ``(N,1|3,H,W)`` sources, float in [0,1] (the project's tensor contract), on any device.
Each definition is that of one named public toolbox, read from its code and checked against its values
on real fused images (``tests/test_quality_metrics.py``; sources and quirks in
``shared/reference/quality/SOURCES.md``):

* **Tang** -- Linfeng-Tang/Evaluation-for-Image-Fusion (MATLAB, run in Octave), the toolbox behind
  most numbers in infrared-visible fusion papers;
* **VIFB** -- xingchenzhang/VIFB ``metrics/``;
* **CDDFuse** -- Zhaozixiang1228/MMIF-CDDFuse ``utils/Evaluator.py``.

Grey images and scale (:func:`gray255`): like the toolboxes, every metric scores one grey channel on
the [0,255] scale. With ``quantize=True`` (the default) the inputs are first rounded to the 8 bits a
saved PNG holds (``round(255 x)`` in float32, clamped, as :func:`taskeval.imageio.tensor_to_uint8`
does), and an RGB image is reduced with MATLAB's ``rgb2gray`` (0.298936 R + 0.587043 G + 0.114021 B,
rounded half up to an integer), so a tensor read from a PNG scores exactly as Tang's toolbox scores
that PNG. ``quantize=False`` skips both roundings (same weights, continuous values); EN and MI
then round to 256 integer levels for their histograms.

All arithmetic is float64. Window statistics use separable filters (sums of shifted slices: fast on a
CPU, fine on a GPU); the branch tests of the MATLAB code (exact zeros, equal windows) are reproduced as
written, so results agree with the toolboxes to ~1e-11 per image rather than only on average.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

# MATLAB rgb2gray weights (Octave's are the same to six digits; no grey level differs on the references)
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
_EPS = torch.finfo(torch.float64).eps  # MATLAB's eps
# windows per FMI chunk: on a CPU its 9x9-cell temporaries (~2.6 MB) stay near the L2 cache (2.6x
# faster than 8192 windows on a 2-core EPYC); on a GPU large enough to keep it busy
_FMI_CHUNK = {"cpu": 1 << 11, "cuda": 1 << 16}

# A 3x3 window flattened by unfold is row-major; MATLAB's X(:) is column-major.
_COLUMN_MAJOR_3x3 = (0, 3, 6, 1, 4, 7, 2, 5, 8)


# ------------------------------------------------------------------------------------------ inputs
def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


def check_inputs(fused: torch.Tensor, ir: torch.Tensor | None = None, vis: torch.Tensor | None = None,
                 *, need_sources: bool = True, min_size: int = 1) -> None:
    """Validate the tensor contract of the quality metrics.

    Args:
        fused: ``(N,1|3,H,W)`` float.
        ir: ``(N,1,H,W)`` float (required when ``need_sources``).
        vis: ``(N,1|3,H,W)`` float (required when ``need_sources``).
        need_sources: the metric compares the fused image with its sources.
        min_size: smallest height and width the metric's windows allow.

    Raises:
        ValueError: wrong type, rank, channel count, dtype, device, or batch/size mismatch.
    """
    named = [("fused", fused, (1, 3))]
    if need_sources:
        if ir is None or vis is None:
            raise ValueError("this metric compares the fused image with its sources: pass fused, ir and vis")
    named += [(n, t, c) for n, t, c in (("ir", ir, (1,)), ("vis", vis, (1, 3))) if t is not None]
    for name, t, channels in named:
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] not in channels:
            want = "(N,1,H,W)" if channels == (1,) else "(N,1,H,W) or (N,3,H,W)"
            raise ValueError(f"{name} must be a tensor {want}, got {_describe(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [0,1], got dtype {t.dtype}")
    ref = fused
    for name, t, _ in named[1:]:
        if t.shape[0] != ref.shape[0] or t.shape[-2:] != ref.shape[-2:]:
            raise ValueError(
                f"fused {tuple(ref.shape)} and {name} {tuple(t.shape)} differ in batch size or image size"
            )
        if t.device != ref.device:
            raise ValueError(f"fused is on {ref.device} but {name} is on {t.device}")
    h, w = fused.shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"images of {h}x{w} pixels are too small for this metric "
                         f"(needs at least {min_size}x{min_size})")


def gray255(img: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """The grey channel the metrics score: ``(N,1|3,H,W)`` in [0,1] -> ``(N,H,W)`` float64 in [0,255].

    Args:
        img: one-channel or RGB image, float in [0,1].
        quantize: round to 8 bits first and round the grey value (MATLAB ``rgb2gray`` on a uint8 image);
            False keeps continuous values (``255 * (w . RGB)``).
    """
    if quantize:
        x = img.float().clamp(0.0, 1.0).mul_(255.0).round_().double()
    else:
        x = img.double() * 255.0
    if x.shape[1] == 1:
        return x[:, 0]
    grey = x[:, 0] * RGB2GRAY[0]
    grey += x[:, 1] * RGB2GRAY[1]
    grey += x[:, 2] * RGB2GRAY[2]
    return grey.add_(0.5).floor_() if quantize else grey


def _grays(fused, ir, vis, quantize, min_size=1):
    check_inputs(fused, ir, vis, min_size=min_size)
    return gray255(fused, quantize), gray255(ir, quantize), gray255(vis, quantize)


def _levels(g: torch.Tensor) -> torch.Tensor:
    """Integer grey levels 0..255 (exact for quantized inputs)."""
    return torch.round(g).clamp(0, 255).long()


def _correlate_1d(x: torch.Tensor, taps, dim: int) -> torch.Tensor:
    """'valid' correlation of ``x`` with 1-D ``taps`` (python floats) along ``dim``, one shifted slice
    per tap (on a CPU this is far faster than a float64 ``conv2d``)."""
    n = x.shape[dim] - len(taps) + 1
    out = None
    for t, tap in enumerate(taps):
        if tap == 0:
            continue
        part = x.narrow(dim, t, n)
        out = part * tap if out is None else out.add_(part, alpha=tap)
    return out


def _filter(x: torch.Tensor, taps_rows, taps_cols=None) -> torch.Tensor:
    """MATLAB ``filter2(taps_rows' * taps_cols, x, 'valid')`` for a separable kernel, ``(N,H,W)`` maps.

    Summing the separable passes instead of the 2-D products changes results only in the last bits
    (integer kernels on 8-bit data stay exact).
    """
    return _correlate_1d(_correlate_1d(x, taps_cols if taps_cols is not None else taps_rows, 2), taps_rows, 1)


def gaussian_taps(size: int, sigma: float) -> list[float]:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)``: its outer product with itself is the
    2-D kernel (exactly so while no tail falls below eps * max, which holds for every window used here)."""
    r = (size - 1) / 2.0
    e = [math.exp(-((t - r) ** 2) / (2.0 * sigma * sigma)) for t in range(size)]
    if min(e) ** 2 < _EPS:
        raise ValueError(f"fspecial('gaussian', {size}, {sigma}) zeroes its tails and is not separable")
    total = math.fsum(e)
    return [v / total for v in e]


def _corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image pair (MATLAB ``corr2``), ``(N,H,W)`` -> ``(N,)``."""
    x = x - x.mean((1, 2), keepdim=True)
    y = y - y.mean((1, 2), keepdim=True)
    return (x * y).sum((1, 2)) / torch.sqrt((x * x).sum((1, 2)) * (y * y).sum((1, 2)))


# ------------------------------------------------------------------------------- no-reference metrics
def _probabilities(index: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-image histograms as probabilities: integer indices ``(N, P)`` in [0, bins) -> ``(N, bins)``."""
    n, size = index.shape
    offsets = torch.arange(n, device=index.device)[:, None] * bins
    return torch.bincount((index + offsets).flatten(), minlength=n * bins).view(n, bins).double() / size


def _entropy_of(p: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1) / math.log(base)


def entropy(fused: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """EN: Shannon entropy (bits) of the 256-level grey histogram of the fused image (Tang ``entropy``).

    Returns:
        ``(N,)`` float64 in [0, 8].
    """
    check_inputs(fused, need_sources=False)
    return _entropy_of(_probabilities(_levels(gray255(fused, quantize)).flatten(1), 256))


def standard_deviation(fused: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """SD: population standard deviation of the fused grey values on [0,255] (Tang)."""
    check_inputs(fused, need_sources=False)
    g = gray255(fused, quantize)
    return torch.sqrt(((g - g.mean((1, 2), keepdim=True)) ** 2).mean((1, 2)))


def spatial_frequency(fused: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """SF: ``sqrt(mean(dI/dx^2) + mean(dI/dy^2))`` with forward differences, means over the ``M(N-1)``
    and ``(M-1)N`` differences (Tang; CDDFuse is the same, VIFB divides by ``MN``)."""
    check_inputs(fused, need_sources=False, min_size=2)
    g = gray255(fused, quantize)
    rf = ((g[:, :, 1:] - g[:, :, :-1]) ** 2).mean((1, 2))
    cf = ((g[:, 1:, :] - g[:, :-1, :]) ** 2).mean((1, 2))
    return torch.sqrt(rf + cf)


def average_gradient(fused: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """AG: ``sum(sqrt((gx^2 + gy^2) / 2)) / ((M-1)(N-1))`` with MATLAB ``gradient`` (central differences,
    one-sided at the borders) -- Tang and VIFB. CDDFuse divides by ``MN`` instead (0.33% smaller at
    640x480)."""
    check_inputs(fused, need_sources=False, min_size=2)
    g = gray255(fused, quantize)
    gx = torch.cat([g[..., 1:2] - g[..., :1], (g[..., 2:] - g[..., :-2]) / 2, g[..., -1:] - g[..., -2:-1]], 2)
    gy = torch.cat([g[:, 1:2] - g[:, :1], (g[:, 2:] - g[:, :-2]) / 2, g[:, -1:] - g[:, -2:-1]], 1)
    m, n = g.shape[-2:]
    return torch.sqrt((gx * gx + gy * gy) / 2).sum((1, 2)) / ((m - 1) * (n - 1))


# ----------------------------------------------------------------------------- information metrics
def mutual_information(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, base: float = 2.0,
                       joint_saturation: bool = False, quantize: bool = True) -> torch.Tensor:
    """MI: ``MI(IR, F) + MI(VIS, F)`` from 256-level grey histograms.

    Args:
        base: logarithm base; 2 gives bits (Tang's unit), ``math.e`` nats (CDDFuse's
            ``sklearn.metrics.mutual_info_score`` and VIFB).
        joint_saturation: reproduce Tang's ``Hab.m`` exactly: its ``uint8(x) + 1`` saturates, so grey
            levels 254 and 255 share one bin of the joint histogram (not of the marginals), which
            raises MI by up to ~0.5% on images with saturated pixels. Off by default: the true MI.
    """
    f, a, b = (_levels(g).flatten(1) for g in _grays(fused, ir, vis, quantize))
    h_f = _entropy_of(_probabilities(f, 256), base)

    def with_fused(src):
        js, jf = (src.clamp(max=254), f.clamp(max=254)) if joint_saturation else (src, f)
        h_joint = _entropy_of(_probabilities(js * 256 + jf, 256 * 256), base)
        return _entropy_of(_probabilities(src, 256), base) + h_f - h_joint

    return with_fused(a) + with_fused(b)


def _cumsum_sequential(x: torch.Tensor, dim: int) -> torch.Tensor:
    # Left-to-right prefix sums, as the MATLAB loops add (torch.cumsum may use a parallel scan on a
    # GPU): the Pearson test of two flat windows depends on the last bit (see fmi()).
    out = torch.empty_like(x)
    out.select(dim, 0).copy_(x.select(dim, 0))
    for k in range(1, x.shape[dim]):
        torch.add(out.select(dim, k - 1), x.select(dim, k), out=out.select(dim, k))
    return out


def _minmax_normalise(w: torch.Tensor) -> torch.Tensor:
    """Min-max normalise windows ``(9, W)``; a constant window becomes all ones."""
    hi, lo = w.amax(0), w.amin(0)
    flat = hi == lo
    return torch.where(flat, torch.ones_like(w), (w - lo) / torch.where(flat, torch.ones_like(hi), hi - lo))


def _neg_plogp(p: torch.Tensor, dims) -> torch.Tensor:
    """``sum(-p * log2(|p|))`` over ``dims``, zero terms skipped (MATLAB's ``real(-p .* log2(p))`` of a
    slightly negative ``p`` is ``-p * log2(|p|)``); overwrites ``p``'s absolute value buffer only."""
    return -(p * p.abs().clamp_(min=1e-300).log2_()).sum(dims)


def _fmi_pair(a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Haghighat's fast-FMI of min-max normalised 3x3 windows ``(9, W)`` (rows in MATLAB's column-major
    window order) -> ``(W,)``. Windows lie along the last, contiguous axis."""
    l = a.shape[0]

    def window_sum(x):  # MATLAB sum(sum(X)) of a 3x3 window: column sums, then their sum
        cols = [x[3 * j] + x[3 * j + 1] + x[3 * j + 2] for j in range(3)]
        return (cols[0] + cols[1]) + cols[2]

    pdf = torch.stack([a / window_sum(a), f / window_sum(f)])  # (2, l, W): a, f
    cdf = _cumsum_sequential(pdf, 1)
    centred = pdf - cdf[:, -1:] / l
    idx = torch.arange(1, l + 1, dtype=a.dtype, device=a.device)[:, None]
    terms = torch.cat([centred[0:1] * centred[1:2], centred * centred, idx * pdf, idx * idx * pdf])
    s, ss_a, ss_f, e_a, e_f, e2_a, e2_f = _cumsum_sequential(terms, 1)[:, -1]
    c = torch.where(s == 0, torch.zeros_like(s), s / torch.sqrt(ss_a * ss_f))
    a_sd, f_sd = torch.sqrt((e2_a - e_a**2).clamp(min=0)), torch.sqrt((e2_f - e_f**2).clamp(min=0))
    ap, fp, ac, fc = pdf[0], pdf[1], cdf[0], cdf[1]
    # Nelsen's simplified joint pdf w * bound + (1 - w) * f_i a_j, where the bound is Frechet's upper
    # copula min(F_i, A_j) if c >= 0 and the lower one max(F_i + A_j - 1, 0) otherwise (i: fused, j: source)
    positive = c >= 0
    upper = torch.minimum(fc[:, None], ac[None])
    bound = torch.where(positive, upper, (fc[:, None] + ac[None] - 1).clamp_(min=0))
    sd_prod = f_sd * a_sd
    degenerate = (sd_prod == 0) | (positive & (c == 0))
    safe_sd = torch.where(degenerate, torch.ones_like(sd_prod), sd_prod)
    corr_bound = (bound.sum((0, 1)) - fc.sum(0) * ac.sum(0)) / safe_sd
    weight = torch.where(degenerate, torch.zeros_like(c), c / corr_bound)
    # pdf of the bound: differences along i, then along j (the cdf is 0 before the first row/column)
    step = torch.empty_like(bound)
    step[0] = bound[0]
    torch.sub(bound[1:], bound[:-1], out=step[1:])
    bound[:, 0] = step[:, 0]
    torch.sub(step[:, 1:], step[:, :-1], out=bound[:, 1:])
    jpdf = torch.addcmul(bound.mul_(weight), ((1 - weight) * fp)[:, None], ap[None])
    joint = _neg_plogp(jpdf, (0, 1))
    a_ent, f_ent = _neg_plogp(ap.clone(), 0), _neg_plogp(fp.clone(), 0)
    mi = a_ent + f_ent - joint
    return torch.where(mi == 0, torch.zeros_like(mi), 2 * mi / (a_ent + f_ent))


def _windows3(x: torch.Tensor) -> torch.Tensor:
    """``(N,H,W)`` -> ``(9, N*(H-2)*(W-2))`` 3x3 windows, rows in MATLAB's column-major window order."""
    w = F.unfold(x[:, None], 3)[:, list(_COLUMN_MAJOR_3x3)]  # (N, 9, L)
    return w.transpose(0, 1).reshape(9, -1)


def fmi(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """FMI (pixel): feature mutual information on raw grey values, 3x3 sliding windows, Haghighat's
    fast-FMI -- Tang's ``analysis_fmi(ir, vis, fused, 'none')``.

    Tang's toolbox reports as ``FMI_pixel`` the *edge* variant (its ``analysis_fmi`` defaults to the
    ``'edge'`` feature); this is the pixel one the name promises (``Tang-featnone`` in SOURCES.md,
    ~0.41 vs ~0.91 for the edge maps). Per window: ``(fmi(IR, F) + fmi(VIS, F)) / 2``, mean over the
    ``(M-2)(N-2)`` windows. As in the MATLAB code, a source window equal to the fused one scores 1, the
    second comparison sees the fused window already min-max normalised, and two constant windows score
    ~1 (the Pearson correlation of two uniform pdfs is +-1 from rounding; summed left to right as the
    loops do).
    """
    f, a, b = _grays(fused, ir, vis, quantize, min_size=3)
    n = f.shape[0]
    fw, aw, bw = _windows3(f), _windows3(a), _windows3(b)
    values = torch.empty(fw.shape[1], dtype=torch.float64, device=f.device)
    chunk = _FMI_CHUNK.get(f.device.type, _FMI_CHUNK["cpu"])
    for start in range(0, fw.shape[1], chunk):
        sl = slice(start, start + chunk)
        fs, as_, bs = fw[:, sl], aw[:, sl], bw[:, sl]
        f_norm = _minmax_normalise(fs)
        eq_a = (as_ == fs).all(0)
        # the MATLAB code overwrites the fused window with its normalised version in the first comparison
        eq_b = (bs == torch.where(eq_a, fs, f_norm)).all(0)
        sources = torch.cat([_minmax_normalise(as_), _minmax_normalise(bs)], 1)
        both = _fmi_pair(sources, torch.cat([f_norm, f_norm], 1))
        one = torch.ones_like(eq_a, dtype=fs.dtype)
        width = fs.shape[1]
        values[sl] = (torch.where(eq_a, one, both[:width]) + torch.where(eq_b, one, both[width:])) / 2
    return values.view(n, -1).mean(1)


# ---------------------------------------------------------------------------- correlation and error
def scd(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """SCD: sum of the correlations of differences, ``corr(F - VIS, IR) + corr(F - IR, VIS)`` (Tang,
    CDDFuse). Range [-2, 2]."""
    f, a, b = _grays(fused, ir, vis, quantize)
    return _corr(f - b, a) + _corr(f - a, b)


def correlation_coefficient(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *,
                            quantize: bool = True) -> torch.Tensor:
    """CC: mean of the Pearson correlations ``corr(IR, F)`` and ``corr(VIS, F)`` (Tang, CDDFuse)."""
    f, a, b = _grays(fused, ir, vis, quantize)
    return (_corr(a, f) + _corr(b, f)) / 2


def mse(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """MSE: mean over the two sources of the mean squared error on the [0,1] scale (Tang). CDDFuse
    reports the same on [0,255], i.e. 65025 times larger."""
    f, a, b = _grays(fused, ir, vis, quantize)
    return ((((f - a) / 255) ** 2).mean((1, 2)) + (((f - b) / 255) ** 2).mean((1, 2))) / 2


def psnr(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *,
         peak: float | Literal["fused_max"] = 1.0, quantize: bool = True) -> torch.Tensor:
    """PSNR (dB): ``10 log10(peak^2 / MSE)`` with :func:`mse` on the [0,1] scale.

    Args:
        peak: 1.0 (default) is the textbook PSNR (= 255 peak on 8-bit data). ``255.0`` reproduces Tang
            exactly, whose ``20 log10(255 / sqrt(MSE))`` on [0,1] data adds 20 log10(255) = 48.13 dB.
            ``"fused_max"`` reproduces CDDFuse (the fused image's maximum as the peak).
    """
    err = mse(fused, ir, vis, quantize=quantize)
    if peak == "fused_max":
        top = gray255(fused, quantize).amax((1, 2)) / 255
    elif isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
        top = torch.full_like(err, float(peak))
    else:
        raise ValueError(f"peak must be a positive number or 'fused_max', got {peak!r}")
    return 10 * torch.log10(top * top / err)


# ------------------------------------------------------------------------------- structural metrics
def _moments(x: torch.Tensor, y: torch.Tensor, taps: list[float]):
    """Windowed means, variances and covariance of two maps (MATLAB ``filter2`` 'valid' formulas)."""
    mx, my = _filter(x, taps), _filter(y, taps)
    sxx, syy = _filter(x * x, taps) - mx * mx, _filter(y * y, taps) - my * my
    return mx, my, sxx, syy, _filter(x * y, taps) - mx * my


def _ssim_single(x, y, taps, data_range, padding, sample_covariance):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    if padding == "replicate":
        r = len(taps) // 2
        x = F.pad(x[:, None], (r, r, r, r), mode="replicate")[:, 0]
        y = F.pad(y[:, None], (r, r, r, r), mode="replicate")[:, 0]
    mx, my, sxx, syy, sxy = _moments(x, y, taps)
    if sample_covariance:
        k = len(taps) ** 2 / (len(taps) ** 2 - 1)
        sxx, syy, sxy = sxx * k, syy * k, sxy * k
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean((1, 2))


def ssim(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, window_size: int = 11,
         sigma: float | None = 1.5, data_range: float = 255.0,
         padding: Literal["valid", "replicate"] = "valid", sample_covariance: bool = False,
         reduction: Literal["sum", "mean"] = "sum", quantize: bool = True) -> torch.Tensor:
    """SSIM, fusion form: ``SSIM(F, IR) + SSIM(F, VIS)`` (range up to 2).

    Defaults = VIFB (``metricsSsim``): Wang et al.'s SSIM with an 11x11 Gaussian window (sigma 1.5),
    K = (0.01, 0.03), L = 255, mean of the 'valid' map, summed over the two sources. The toolboxes
    disagree (SOURCES.md quirk 2); their settings:

    * Tang: ``padding="replicate", data_range=1.0, reduction="mean"`` (MATLAB ``ssim`` on double
      images in [0,255] keeps DynamicRange 1, so its constants are ~65000x too small);
    * CDDFuse: ``window_size=7, sigma=None, sample_covariance=True, data_range=2.0`` (skimage 0.19
      defaults on float32 images: 7x7 box, ``data_range`` 2 from the dtype).

    Args:
        window_size: side of the window.
        sigma: Gaussian sigma (MATLAB ``fspecial``); None for a uniform window.
        data_range: L in C1 = (0.01 L)^2, C2 = (0.03 L)^2, on the [0,255] data.
        padding: ``"valid"`` map, or a same-size map with ``"replicate"`` padding.
        sample_covariance: scale variances by n / (n - 1) (skimage's default).
        reduction: ``"sum"`` or ``"mean"`` of the two source SSIMs.
    """
    if reduction not in ("sum", "mean") or padding not in ("valid", "replicate"):
        raise ValueError(f"reduction must be 'sum' or 'mean' and padding 'valid' or 'replicate', "
                         f"got {reduction!r}, {padding!r}")
    f, a, b = _grays(fused, ir, vis, quantize, min_size=window_size if padding == "valid" else 1)
    taps = [1.0 / window_size] * window_size if sigma is None else gaussian_taps(window_size, sigma)
    total = (_ssim_single(f, a, taps, data_range, padding, sample_covariance)
             + _ssim_single(f, b, taps, data_range, padding, sample_covariance))
    return total if reduction == "sum" else total / 2


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _ms_ssim_single(x: torch.Tensor, y: torch.Tensor, taps: list[float], data_range: float) -> torch.Tensor:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    score = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        mx, my, sxx, syy, sxy = _moments(x, y, taps)
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level < len(MS_SSIM_WEIGHTS) - 1:
            score = score * cs.mean((1, 2)) ** weight
            x, y = _halve(x), _halve(y)
        else:
            score = score * ((2 * mx * my + c1) / (mx * mx + my * my + c1) * cs).mean((1, 2)) ** weight
    return score


def ms_ssim(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *,
            reduction: Literal["sum", "mean"] = "sum", quantize: bool = True) -> torch.Tensor:
    """MS-SSIM, fusion form: Wang, Simoncelli & Bovik's multi-scale SSIM (``msssim.m``), summed like
    :func:`ssim` over ``(F, IR)`` and ``(F, VIS)`` (``reduction="mean"`` halves it).

    Five scales, 11x11 Gaussian window (sigma 1.5), L = 255, K = (0.01, 0.03), weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 mean and decimation between scales: contrast-structure
    at the first four scales, full SSIM at the fifth. No toolbox in SOURCES.md reports it (Tang's
    ``MS_SSIM`` is :func:`mef_ssim`). torchmetrics' ``multiscale_structural_similarity_index_measure``
    (``data_range=255``) agrees at scales 1-4 but averages a reflect-padded same-size SSIM map at the
    fifth (0.5-3% apart on 640x480 images). A negative contrast-structure mean at some scale (unrelated
    images) gives NaN. Needs at least 161x161 pixels.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    f, a, b = _grays(fused, ir, vis, quantize, min_size=161)
    taps = gaussian_taps(11, 1.5)
    total = _ms_ssim_single(f, a, taps, 255.0) + _ms_ssim_single(f, b, taps, 255.0)
    return total if reduction == "sum" else total / 2


def _box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    # Integer weights keep sums of 8-bit data exact in float64 (flat windows give exactly zero variance).
    return _filter(x, [1.0] * size)


def _mef_ssim_scale(sources: list[torch.Tensor], f: torch.Tensor, window: list[float],
                    k: float = 0.03) -> torch.Tensor:
    """One scale of Ma et al.'s MEF-SSIM (``mef_ssim.m``), written with window moments instead of the
    per-window loops; ``sources``: list of ``(N,H,W)``, ``f``: ``(N,H,W)`` -> ``(N,)``."""
    size = len(window)
    count = float(size * size)
    sums = [_box_sum(x, size) for x in sources]
    # per window, sum((x_i - mu_i) * (x_j - mu_j)) of every pair, from exact integer-weighted sums
    cross = {}
    for i, xi in enumerate(sources):
        for j in range(i, len(sources)):
            cross[i, j] = cross[j, i] = (count * _box_sum(xi * sources[j], size) - sums[i] * sums[j]) / count
    mu = [s / count for s in sums]
    ed = [torch.sqrt(torch.clamp(count * (_box_sum(x * x, size) / count - m * m), min=0)) + 0.001
          for x, m in zip(sources, mu)]
    den = sum(torch.sqrt(cross[i, i].clamp(min=0)) for i in range(len(sources)))
    num = torch.sqrt(sum(cross[i, j] for i in range(len(sources)) for j in range(len(sources))).clamp(min=0))
    r = (num + _EPS) / (den + _EPS)
    r = torch.where(r > 1, torch.full_like(r, 1 - _EPS), r)
    r = torch.where(r < 0, torch.full_like(r, _EPS), r)
    p = torch.tan(math.pi / 2 * r).clamp(max=10)
    wmap = [(e / size) ** p + _EPS for e in ed]
    norm = sum(wmap)
    coef = [w / norm / e for w, e in zip(wmap, ed)]  # weight of each centred source in the reference block
    max_ed = torch.stack(ed).amax(0)
    block_sq = sum(coef[i] * coef[j] * cross[i, j] for i in range(len(sources)) for j in range(len(sources)))
    block_norm = torch.sqrt(block_sq.clamp(min=0))
    nonzero = block_norm > 0
    scale = torch.where(nonzero, max_ed / torch.where(nonzero, block_norm, torch.ones_like(block_norm)),
                        torch.zeros_like(block_norm))
    coef = [c * scale for c in coef]
    # Gaussian-weighted moments of the reference block sum_k coef_k x_k and of f (constants cancel)
    g = [_filter(x, window) for x in sources]
    gf = _filter(f, window)
    var_ref = sum(coef[i] * coef[j] * (_filter(sources[i] * sources[j], window) - g[i] * g[j])
                  for i in range(len(sources)) for j in range(len(sources)))
    var_f = _filter(f * f, window) - gf * gf
    cov = sum(c * (_filter(x * f, window) - gi * gf) for c, x, gi in zip(coef, sources, g))
    big_c = (k * 255) ** 2
    return ((2 * cov + big_c) / (var_ref + var_f + big_c)).mean((1, 2))


def _halve(x: torch.Tensor) -> torch.Tensor:
    # imfilter(x, ones(2)/4, 'symmetric', 'same') then x(1:2:end, 1:2:end)
    return F.avg_pool2d(F.pad(x[:, None], (0, 1, 0, 1), mode="replicate"), 2)[:, 0]


def mef_ssim(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *,
             quantize: bool = True) -> torch.Tensor:
    """MEF-SSIM: Ma et al.'s multi-exposure-fusion structural similarity with IR and VIS as the source
    sequence -- what Tang's toolbox reports as ``MS_SSIM`` (``analysis_ms_ssim(cat(3, IR, VIS), F)``).

    Three scales (2x2 mean and decimation between them), 11x11 Gaussian window (sigma 1.5) for the
    structure comparison and 11x11 box for the source statistics, C = (0.03 * 255)^2, scale weights
    (0.0448, 0.2856, 0.3001) normalised, result = prod(Q_s ^ w_s). Not Wang et al.'s MS-SSIM
    (:func:`ms_ssim`). A negative score at some scale (unrelated images) gives NaN where MATLAB returns a
    complex number. Needs images of at least 44x44 pixels (the toolbox returns -Inf below that).
    """
    f, a, b = _grays(fused, ir, vis, quantize, min_size=44)
    window = gaussian_taps(11, 1.5)
    weights = torch.tensor([0.0448, 0.2856, 0.3001], dtype=torch.float64, device=f.device)
    weights = weights / weights.sum()
    sources, scores = [a, b], []
    for level in range(3):
        scores.append(_mef_ssim_scale(sources, f, window))
        if level < 2:
            sources, f = [_halve(x) for x in sources], _halve(f)
    return torch.prod(torch.stack(scores, 1) ** weights, 1)


def _vifp(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Sheikh & Bovik's pixel-domain VIF (``vifp_mscale.m``), ``(N,H,W)`` pair -> ``(N,)``."""
    sigma_nsq, tiny = 2.0, 1e-10
    num = torch.zeros(ref.shape[0], dtype=torch.float64, device=ref.device)
    den = torch.zeros_like(num)
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        win = gaussian_taps(size, size / 5.0)
        if scale > 1:
            ref, dist = _filter(ref, win)[:, ::2, ::2], _filter(dist, win)[:, ::2, ::2]
        mu1, mu2 = _filter(ref, win), _filter(dist, win)
        s1 = (_filter(ref * ref, win) - mu1 * mu1).clamp(min=0)
        s2 = (_filter(dist * dist, win) - mu2 * mu2).clamp(min=0)
        s12 = _filter(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + tiny)
        sv = s2 - g * s12
        low1, low2 = s1 < tiny, s2 < tiny
        g = torch.where(low1, torch.zeros_like(g), g)
        sv = torch.where(low1, s2, sv)
        s1 = torch.where(low1, torch.zeros_like(s1), s1)
        g = torch.where(low2, torch.zeros_like(g), g)
        sv = torch.where(low2, torch.zeros_like(sv), sv)
        neg = g < 0
        sv = torch.where(neg, s2, sv)
        g = torch.where(neg, torch.zeros_like(g), g)
        sv = torch.where(sv <= tiny, torch.full_like(sv, tiny), sv)
        num = num + torch.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum((1, 2))
        den = den + torch.log10(1 + s1 / sigma_nsq).sum((1, 2))
    return num / den


def _vif_min_size() -> int:
    # smallest side whose four scales all leave a non-empty 'valid' map
    side = 1
    while True:
        s, ok = side, True
        for scale in range(1, 5):
            size = 2 ** (4 - scale + 1) + 1
            if scale > 1:
                s = (s - size + 1 + 1) // 2
            if s - size + 1 < 1:
                ok = False
                break
        if ok:
            return side
        side += 1


VIF_MIN_SIZE = _vif_min_size()


def vif(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """VIF (VIFF): ``vifp(IR, F) + vifp(VIS, F)``, multi-scale pixel-domain visual information fidelity
    (4 scales, Gaussian windows 17/9/5/3, sigma_n^2 = 2) summed over the sources (Tang, CDDFuse).
    Range ~0..2."""
    f, a, b = _grays(fused, ir, vis, quantize, min_size=VIF_MIN_SIZE)
    return _vifp(a, f) + _vifp(b, f)


# -------------------------------------------------------------------------------- gradient metrics
def _qabf_edges(x: torch.Tensor):
    # MATLAB conv2(x, h, 'same') (true convolution, zero padding) with h3 = [-1 0 1; -2 0 2; -1 0 1]
    # and h1 = h3': correlation with the flipped, separable kernels
    xp = F.pad(x[:, None], (1, 1, 1, 1))[:, 0]
    sx = _filter(xp, [1.0, 2.0, 1.0], [1.0, 0.0, -1.0])
    sy = _filter(xp, [-1.0, 0.0, 1.0], [1.0, 2.0, 1.0])
    strength = torch.sqrt(sx * sx + sy * sy)
    angle = torch.where(sx == 0, torch.full_like(sx, math.pi / 2),
                        torch.atan(sy / torch.where(sx == 0, torch.ones_like(sx), sx)))
    return strength, angle


def _qabf_preservation(g_s, a_s, g_f, a_f):
    # Tang's quirk kept: where g_s == g_f the "relative strength" is g_f itself, not 1
    ratio = torch.where(g_s > g_f, g_f / torch.where(g_s > g_f, g_s, torch.ones_like(g_s)),
                        torch.where(g_s == g_f, g_f, g_s / torch.where(g_s < g_f, g_f, torch.ones_like(g_f))))
    orient = 1 - torch.abs(a_s - a_f) / (math.pi / 2)
    q_g = 0.9994 / (1 + torch.exp(-15 * (ratio - 0.5)))
    q_a = 0.9879 / (1 + torch.exp(-22 * (orient - 0.8)))
    return q_g * q_a


def qabf(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """Qabf: Xydeas & Petrovic's edge-information preservation (Tang ``analysis_Qabf``; VIFB and CDDFuse
    run the same code).

    3x3 Sobel by ``conv2(..., 'same')`` (zero padding), Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879,
    ka = -22, Da = 0.8, weights = source edge strengths (L = 1). The toolbox's quirk is kept: where a
    source and the fused image have equal edge strength the ratio is set to that strength, not to 1
    (so Qabf of three identical images is not 1).
    """
    f, a, b = _grays(fused, ir, vis, quantize)
    g_a, ang_a = _qabf_edges(a)
    g_b, ang_b = _qabf_edges(b)
    g_f, ang_f = _qabf_edges(f)
    q_af = _qabf_preservation(g_a, ang_a, g_f, ang_f)
    q_bf = _qabf_preservation(g_b, ang_b, g_f, ang_f)
    return (q_af * g_a + q_bf * g_b).sum((1, 2)) / (g_a + g_b).sum((1, 2))


def _sobel8(x: torch.Tensor):
    # sobel_fn.m: correlation with [-1 0 1; -2 0 2; -1 0 1] / 8 and its transpose, symmetric extension
    xp = F.pad(x[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]
    smooth, diff = [0.125, 0.25, 0.125], [-1.0, 0.0, 1.0]
    return _filter(xp, smooth, diff), _filter(xp, diff, smooth)


def nabf(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """Nabf: Shreyamsha Kumar's modified fusion-artifact measure (``analysis_nabf`` /
    ``objective_fusion_perform_fn``); lower is better.

    Sobel / 8 with symmetric (reflect) extension, Td = 2, Lg = 1.5, w_min = 0.001, Petrovic's sigmoids
    (kg = 19, ka = 22, centres 0.5). Called with the fused image first -- ``Tang-argfix`` in SOURCES.md:
    Tang's ``analysis_Reference`` passes ``(ir, vis, fused)``, scoring the IR image as if it were the
    fused one (0.0093 as called vs 0.0194 on the 26 references); ``nabf(ir, grey_vis, fused)``, with the
    visible image as one grey channel, reproduces that.
    """
    f, a, b = _grays(fused, ir, vis, quantize, min_size=2)

    def edges(x):
        gv, gh = _sobel8(x)
        # atan(gv / 0) = +-pi/2 as in MATLAB; only 0/0 is set to 0
        angle = torch.where((gv == 0) & (gh == 0), torch.zeros_like(gv), torch.atan(gv / gh))
        return torch.sqrt(gh * gh + gv * gv), angle

    (g_a, ang_a), (g_b, ang_b), (g_f, ang_f) = edges(a), edges(b), edges(f)

    def preservation(g_s, ang_s):
        zero = (g_s == 0) | (g_f == 0)
        one = torch.ones_like(g_s)
        stronger = g_s > g_f
        ratio = torch.where(stronger, g_f / torch.where(stronger, g_s, one),
                            g_s / torch.where(zero, one, g_f))
        ratio = torch.where(zero, torch.zeros_like(ratio), ratio)
        orient = torch.abs(torch.abs(ang_s - ang_f) - math.pi / 2) * 2 / math.pi
        q_g = 0.9999 / (1 + torch.exp(-19 * (ratio - 0.5)))
        q_a = 0.9995 / (1 + torch.exp(-22 * (orient - 0.5)))
        return torch.sqrt(q_g * q_a)

    q_af, q_bf = preservation(g_a, ang_a), preservation(g_b, ang_b)
    w_a = torch.where(g_a >= 2, g_a**1.5, torch.full_like(g_a, 0.001))
    w_b = torch.where(g_b >= 2, g_b**1.5, torch.full_like(g_b, 0.001))
    artifact = (g_f > g_a) & (g_f > g_b)
    loss = torch.where(artifact, (1 - q_af) * w_a + (1 - q_bf) * w_b, torch.zeros_like(w_a))
    return loss.sum((1, 2)) / (w_a + w_b).sum((1, 2))
