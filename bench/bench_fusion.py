"""Fusion throughput per built-in method (ms per 640x480 pair) and the fused-set cache's speed-up.

    python bench/bench_fusion.py [--pairs 4] [--device cpu] [--methods a,b] [--threads 2]

Learned methods run with random weights (same cost as trained ones). Prints one table; on a GPU
machine pass --device cuda (timings synchronise the device).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fusion_models import create_fusion_model, get_fusion_spec, list_fusion_models
from taskeval.fusing import apply_fusion


def time_method(name: str, pairs: int, device: str, text_len: int = 149) -> float:
    model = create_fusion_model(name, device=device)
    spec = get_fusion_spec(name)
    g = torch.Generator().manual_seed(0)
    ir = torch.rand(1, 1, 480, 640, generator=g).to(device)
    vis = torch.rand(1, 3, 480, 640, generator=g).to(device)
    text = torch.randn(1, text_len, 768, generator=g).to(device) if spec.needs_text else None
    with torch.no_grad():
        apply_fusion(model, ir, vis, text=text)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(pairs):
            apply_fusion(model, ir, vis, text=text)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / pairs * 1000


def cache_speedup(method: str, n: int) -> tuple[float, float]:
    from taskeval.data import PairedDataset, load_card
    from taskeval.data.synth import SynthConfig, generate
    from taskeval.fusedset import fuse_split

    with tempfile.TemporaryDirectory() as tmp:
        card = generate(Path(tmp) / "synth", SynthConfig(n_train=1, n_test=n, height=480, width=640), progress=False)
        ds = PairedDataset(load_card(card), "test")
        t0 = time.perf_counter()
        fuse_split(ds, method, Path(tmp) / "cache", progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fuse_split(ds, method, Path(tmp) / "cache", progress=False)
        return first, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", help="comma-separated (default: every built-in)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-pairs", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.methods.split(",") if args.methods else list_fusion_models()
    print(f"{'method':<12} {'ms / 640x480 pair':>18}  ({args.device}, {args.threads} threads, {args.pairs} pairs)")
    for name in names:
        print(f"{name:<12} {time_method(name, args.pairs, args.device):>18.1f}")
    first, second = cache_speedup("laplacian", args.cache_pairs)
    print(f"\ncache: fusing {args.cache_pairs} 640x480 pairs with laplacian took {first:.2f} s, the second run "
          f"{second:.3f} s (speed-up x{first / max(second, 1e-9):.0f})")


if __name__ == "__main__":
    main()
