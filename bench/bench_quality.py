"""Fusion-quality metrics: ms per 640x480 image, ours (torch) vs a straightforward NumPy/SciPy version.

    python bench/bench_quality.py [--device cpu] [--threads 1] [--images 2] [--metrics EN,FMI] [--clock cpu]

The NumPy versions below implement the same definitions as :mod:`taskeval.metrics.quality_functional`
(MATLAB-style window statistics with ``scipy.signal``, sliding-window views for FMI and MEF-SSIM); the
table also shows the largest relative difference between the two, as a sanity check. Inputs: the
``00004N`` SeAFusion pair from ``shared/`` when present (``$TASKEVAL_SHARED``), else synthetic images.
Ours is timed on a batch of ``--images`` copies; NumPy on one image. On a GPU pass ``--device cuda``.
``--clock cpu`` times with the process's CPU time instead of wall time: steadier on a shared machine,
meaningful for single-threaded CPU runs only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import convolve2d, correlate2d

from taskeval.imageio import gray_to_tensor, read_gray, read_rgb, rgb_to_tensor
from taskeval.metrics import quality_functional as qf
from taskeval.metrics.quality import QUALITY_METRICS, QUALITY_ORDER

EPS = np.finfo(np.float64).eps


# ------------------------------------------------------------------------------------ NumPy versions
def np_gray255(img: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 float in [0,1] -> 8-bit rgb2gray grey as float64 on [0,255]."""
    levels = np.rint(np.clip(img.astype(np.float32), 0, 1) * np.float32(255)).astype(np.float64)
    if levels.ndim == 2:
        return levels
    return np.floor(levels @ np.array(qf.RGB2GRAY) + 0.5)


def np_entropy(f):
    p = np.bincount(f.astype(np.int64).ravel(), minlength=256) / f.size
    p = p[p > 0]
    return -np.sum(p * np.log2(p))


def np_sd(f):
    return np.sqrt(np.mean((f - f.mean()) ** 2))


def np_sf(f):
    return np.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2))


def np_ag(f):
    gy, gx = np.gradient(f)
    return np.sum(np.sqrt((gx**2 + gy**2) / 2)) / ((f.shape[0] - 1) * (f.shape[1] - 1))


def _np_mi(a, b):
    a, b = a.astype(np.int64).ravel(), b.astype(np.int64).ravel()
    joint = np.bincount(a * 256 + b, minlength=65536) / a.size

    def h(p):
        p = p[p > 0]
        return -np.sum(p * np.log2(p))

    return h(np.bincount(a, minlength=256) / a.size) + h(np.bincount(b, minlength=256) / b.size) - h(joint)


def np_mi(f, a, b):
    return _np_mi(a, f) + _np_mi(b, f)


def _np_corr(x, y):
    x, y = x - x.mean(), y - y.mean()
    return np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))


def np_scd(f, a, b):
    return _np_corr(f - b, a) + _np_corr(f - a, b)


def np_cc(f, a, b):
    return (_np_corr(a, f) + _np_corr(b, f)) / 2


def np_mse(f, a, b):
    return (np.mean(((f - a) / 255) ** 2) + np.mean(((f - b) / 255) ** 2)) / 2


def np_psnr(f, a, b):
    return 10 * np.log10(1 / np_mse(f, a, b))


def fspecial(n, sigma):
    r = (n - 1) / 2
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < EPS * h.max()] = 0
    return h / h.sum()


def _np_ssim(x, y, win):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = correlate2d(x, win, "valid"), correlate2d(y, win, "valid")
    sxx = correlate2d(x * x, win, "valid") - mx * mx
    syy = correlate2d(y * y, win, "valid") - my * my
    sxy = correlate2d(x * y, win, "valid") - mx * my
    return np.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))


def np_ssim(f, a, b):
    win = fspecial(11, 1.5)
    return _np_ssim(f, a, win) + _np_ssim(f, b, win)


def _np_halve(x):
    """imfilter(x, ones(2)/4, 'symmetric', 'same'), then every other row and column."""
    xp = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    return ((xp[:-1, :-1] + xp[1:, :-1] + xp[:-1, 1:] + xp[1:, 1:]) / 4)[::2, ::2]


def np_ms_ssim(f, a, b):
    win = fspecial(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def single(x, y):
        score = 1.0
        for level, weight in enumerate(qf.MS_SSIM_WEIGHTS):
            mx, my = correlate2d(x, win, "valid"), correlate2d(y, win, "valid")
            sxx = correlate2d(x * x, win, "valid") - mx * mx
            syy = correlate2d(y * y, win, "valid") - my * my
            sxy = correlate2d(x * y, win, "valid") - mx * my
            cs = (2 * sxy + c2) / (sxx + syy + c2)
            if level < len(qf.MS_SSIM_WEIGHTS) - 1:
                score *= np.mean(cs) ** weight
                x, y = _np_halve(x), _np_halve(y)
            else:
                score *= np.mean((2 * mx * my + c1) / (mx * mx + my * my + c1) * cs) ** weight
        return score

    return single(f, a) + single(f, b)


def _np_vifp(ref, dist):
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = fspecial(n, n / 5)
        if scale > 1:
            ref, dist = correlate2d(ref, win, "valid")[::2, ::2], correlate2d(dist, win, "valid")[::2, ::2]
        mu1, mu2 = correlate2d(ref, win, "valid"), correlate2d(dist, win, "valid")
        s1 = np.maximum(correlate2d(ref * ref, win, "valid") - mu1 * mu1, 0)
        s2 = np.maximum(correlate2d(dist * dist, win, "valid") - mu2 * mu2, 0)
        s12 = correlate2d(ref * dist, win, "valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        low1, low2 = s1 < 1e-10, s2 < 1e-10
        g[low1], sv[low1], s1[low1] = 0, s2[low1], 0
        g[low2], sv[low2] = 0, 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    return num / den


def np_vif(f, a, b):
    return _np_vifp(a, f) + _np_vifp(b, f)


def _np_qabf_edges(x):
    sx = convolve2d(x, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), "same")
    sy = convolve2d(x, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float), "same")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(sx**2 + sy**2), np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))


def _np_qabf_q(g_s, a_s, g_f, a_f):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, g_f, g_s / g_f))
    orient = 1 - np.abs(a_s - a_f) / (np.pi / 2)
    return 0.9994 / (1 + np.exp(-15 * (ratio - 0.5))) * 0.9879 / (1 + np.exp(-22 * (orient - 0.8)))


def np_qabf(f, a, b):
    (ga, aa), (gb, ab), (gf, af) = _np_qabf_edges(a), _np_qabf_edges(b), _np_qabf_edges(f)
    return np.sum(_np_qabf_q(ga, aa, gf, af) * ga + _np_qabf_q(gb, ab, gf, af) * gb) / np.sum(ga + gb)


def np_nabf(f, a, b):
    def edges(x):
        xe = np.pad(x, 1, mode="reflect")
        gv = correlate2d(xe, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8, "valid")
        gh = correlate2d(xe, np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8, "valid")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(gv**2 + gh**2), np.where((gv == 0) & (gh == 0), 0, np.arctan(gv / gh))

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)

    def q(g_s, a_s):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((g_s == 0) | (gf == 0), 0, np.where(g_s > gf, gf / g_s, g_s / gf))
        orient = np.abs(np.abs(a_s - af) - np.pi / 2) * 2 / np.pi
        q_g = 0.9999 / (1 + np.exp(-19 * (ratio - 0.5)))
        return np.sqrt(q_g * 0.9995 / (1 + np.exp(-22 * (orient - 0.5))))

    wa, wb = np.where(ga >= 2, ga**1.5, 0.001), np.where(gb >= 2, gb**1.5, 0.001)
    artifact = (gf > ga) & (gf > gb)
    return np.sum(artifact * ((1 - q(ga, aa)) * wa + (1 - q(gb, ab)) * wb)) / np.sum(wa + wb)


def _windows(x, n):
    """(H-n+1, W-n+1, n*n) windows, flattened column-major like MATLAB's X(:)."""
    w = sliding_window_view(x, (n, n))
    return w.transpose(0, 1, 3, 2).reshape(w.shape[0], w.shape[1], n * n)


def _seq_sum(x):
    s = x[..., 0].copy()
    for k in range(1, x.shape[-1]):
        s += x[..., k]
    return s


def _np_fmi_pair(a, f):
    ap, fp = a / a.sum(-1, keepdims=True), f / f.sum(-1, keepdims=True)
    ac, fc = np.cumsum(ap, -1), np.cumsum(fp, -1)
    at, ft = ap - (_seq_sum(ap) / 9)[..., None], fp - (_seq_sum(fp) / 9)[..., None]
    s = _seq_sum(at * ft)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(s == 0, 0.0, s / np.sqrt(_seq_sum(at * at) * _seq_sum(ft * ft)))
    i = np.arange(1, 10, dtype=float)
    a_sd = np.sqrt(np.maximum((i * i * ap).sum(-1) - (i * ap).sum(-1) ** 2, 0))
    f_sd = np.sqrt(np.maximum((i * i * fp).sum(-1) - (i * fp).sum(-1) ** 2, 0))
    fi, aj = fc[..., :, None], ac[..., None, :]
    bound = np.where((c >= 0)[..., None, None], np.minimum(fi, aj), np.maximum(fi + aj - 1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = c / ((bound - fi * aj).sum((-1, -2)) / (f_sd * a_sd))
    w = np.where((f_sd * a_sd == 0) | ((c >= 0) & (c == 0)), 0.0, w)[..., None, None]
    padded = np.pad(bound, [(0, 0)] * (bound.ndim - 2) + [(1, 0), (1, 0)])
    bound_pdf = padded[..., 1:, 1:] - padded[..., :-1, 1:] - padded[..., 1:, :-1] + padded[..., :-1, :-1]
    jpdf = w * bound_pdf + (1 - w) * fp[..., :, None] * ap[..., None, :]

    def h(p, axes):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p != 0, -p * np.log2(np.abs(p)), 0.0).sum(axes)

    mi = h(ap, -1) + h(fp, -1) - h(jpdf, (-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mi == 0, 0.0, 2 * mi / (h(ap, -1) + h(fp, -1)))


def _np_minmax(w):
    hi, lo = w.max(-1, keepdims=True), w.min(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hi == lo, 1.0, (w - lo) / np.where(hi == lo, 1, hi - lo))


def np_fmi(f, a, b, rows=32):
    fw, aw, bw = _windows(f, 3), _windows(a, 3), _windows(b, 3)
    total = 0.0
    for r in range(0, fw.shape[0], rows):
        fs, as_, bs = fw[r:r + rows], aw[r:r + rows], bw[r:r + rows]
        f_norm = _np_minmax(fs)
        eq_a = (as_ == fs).all(-1)
        eq_b = (bs == np.where(eq_a[..., None], fs, f_norm)).all(-1)
        v_af = np.where(eq_a, 1.0, _np_fmi_pair(_np_minmax(as_), f_norm))
        v_bf = np.where(eq_b, 1.0, _np_fmi_pair(_np_minmax(bs), f_norm))
        total += ((v_af + v_bf) / 2).sum()
    return total / (fw.shape[0] * fw.shape[1])


def _np_mef_scale(seq, f, win, rows=24, k=0.03):
    n, c = 11, (k * 255) ** 2
    sw, fw = [_windows(s, n) for s in seq], _windows(f, n)
    total = 0.0
    for r in range(0, fw.shape[0], rows):
        v = np.stack([s[r:r + rows] for s in sw])  # (sources, rows, cols, 121)
        fv = fw[r:r + rows]
        mu = v.mean(-1)
        ed = np.sqrt(np.maximum(n * n * ((v * v).mean(-1) - mu * mu), 0)) + 0.001
        den = np.linalg.norm(v - mu[..., None], axis=-1).sum(0)
        total_v = v.sum(0)
        num = np.linalg.norm(total_v - total_v.mean(-1, keepdims=True), axis=-1)
        ratio = (num + EPS) / (den + EPS)
        ratio[ratio > 1], ratio[ratio < 0] = 1 - EPS, EPS
        p = np.minimum(np.tan(np.pi / 2 * ratio), 10)
        wmap = (ed / n) ** p[None] + EPS
        wmap /= wmap.sum(0)
        block = (wmap[..., None] * (v - mu[..., None]) / ed[..., None]).sum(0)
        norm = np.linalg.norm(block, axis=-1)
        scaled = block / np.where(norm > 0, norm, 1)[..., None] * ed.max(0)[..., None]
        block = np.where((norm > 0)[..., None], scaled, block)
        mu1, mu2 = (win * block).sum(-1), (win * fv).sum(-1)
        s1 = (win * (block - mu1[..., None]) ** 2).sum(-1)
        s2 = (win * (fv - mu2[..., None]) ** 2).sum(-1)
        s12 = (win * (block - mu1[..., None]) * (fv - mu2[..., None])).sum(-1)
        total += ((2 * s12 + c) / (s1 + s2 + c)).sum()
    return total / (fw.shape[0] * fw.shape[1])


def np_mef_ssim(f, a, b):
    win = fspecial(11, 1.5).ravel(order="F")
    weights = np.array([0.0448, 0.2856, 0.3001])
    weights /= weights.sum()

    seq, scores = [a, b], []
    for level in range(3):
        scores.append(_np_mef_scale(seq, f, win))
        if level < 2:
            seq, f = [_np_halve(s) for s in seq], _np_halve(f)
    return float(np.prod(np.array(scores) ** weights))


NUMPY = {
    "EN": lambda f, a, b: np_entropy(f), "SD": lambda f, a, b: np_sd(f), "SF": lambda f, a, b: np_sf(f),
    "AG": lambda f, a, b: np_ag(f), "MI": np_mi, "FMI": np_fmi, "SCD": np_scd, "CC": np_cc, "PSNR": np_psnr,
    "MSE": np_mse, "SSIM": np_ssim, "MS_SSIM": np_ms_ssim, "MEF_SSIM": np_mef_ssim, "VIF": np_vif,
    "Qabf": np_qabf, "Nabf": np_nabf,
}


# ------------------------------------------------------------------------------------------- timing
def load_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Fused RGB, IR, visible RGB float32 arrays at 640x480, and where they come from."""
    root = Path(os.environ.get("TASKEVAL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    fused = root / "reference" / "SeAFusion" / "00004N.png"
    if fused.is_file():
        pair = root / "data" / "msrs_det"
        return (read_rgb(fused), read_gray(pair / "ir" / "00004N.png"), read_rgb(pair / "vi" / "00004N.png"),
                "00004N (SeAFusion, MSRS)")
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640] / 480.0
    ir = (0.5 + 0.4 * np.sin(9 * xx) * np.cos(7 * yy) + 0.05 * g.random((480, 640))).clip(0, 1)
    vis = np.stack([0.5 + 0.3 * np.cos(8 * yy + k) * xx + 0.05 * g.random((480, 640)) for k in range(3)], -1)
    vis = vis.clip(0, 1)
    fused = (0.5 * ir[..., None] + 0.5 * vis).clip(0, 1)
    return fused.astype(np.float32), ir.astype(np.float32), vis.astype(np.float32), "synthetic"


def _timed(fn, clock, min_seconds: float = 0.3, max_runs: int = 5) -> tuple[float, object]:
    """Mean seconds per call of ``fn``, repeated until ``min_seconds`` have elapsed (at most ``max_runs``)."""
    runs, start, out = 0, clock(), None
    while runs < max_runs and (runs == 0 or clock() - start < min_seconds):
        out = fn()
        runs += 1
    return (clock() - start) / runs, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (NumPy: OMP_NUM_THREADS)")
    ap.add_argument("--images", type=int, default=2, help="batch size for ours")
    ap.add_argument("--metrics", default=",".join(QUALITY_ORDER))
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    fused, ir, vis, origin = load_pair()
    f_t = rgb_to_tensor(fused).repeat(args.images, 1, 1, 1).to(args.device)
    ir_t = gray_to_tensor(ir).repeat(args.images, 1, 1, 1).to(args.device)
    vis_t = rgb_to_tensor(vis).repeat(args.images, 1, 1, 1).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"input: {origin}, {fused.shape[1]}x{fused.shape[0]}; ours on {args.device} "
          f"({args.threads} thread(s), batch {args.images}), NumPy on 1 image; {args.clock} clock")
    print(f"{'metric':<9} {'ours ms/img':>12} {'numpy ms/img':>13} {'numpy/ours':>11} {'rel diff':>9}")
    for name in names:
        entry = QUALITY_METRICS.get(name)

        def run_ours(f=f_t, a=ir_t, b=vis_t, fn=entry.factory.function, sources=entry.meta.needs_sources):
            out = fn(f, a, b) if sources else fn(f)
            sync()
            return out

        run_ours(f_t[:1, :, :176, :176], ir_t[:1, :, :176, :176], vis_t[:1, :, :176, :176])  # warm-up
        ours_s, ours_val = _timed(run_ours, clock)
        def run_numpy(name=name):
            return NUMPY[name](np_gray255(fused), np_gray255(ir), np_gray255(vis))

        numpy_s, numpy_val = _timed(run_numpy, clock)
        rel = abs(float(ours_val[0]) - numpy_val) / max(abs(numpy_val), 1e-300)
        ours_ms, numpy_ms = ours_s * 1000 / args.images, numpy_s * 1000
        print(f"{name:<9} {ours_ms:>12.1f} {numpy_ms:>13.1f} {numpy_ms / ours_ms:>11.2f} {rel:>9.1e}")


if __name__ == "__main__":
    main()
