"""Speed of the ported fusion networks on the CPU, side by side, in one run.

    python bench/bench_ports.py [--methods smfnet,film] [--threads 2] [--reps 2]
                                [--baseline REV | --no-baseline] [--large-batch 2 | --no-large]
                                [--profile] [--json results.json]

For every registered learned method (random weights: the cost does not depend on them) it prints:

* seconds per 640x480 pair at ``--threads`` threads through ``apply_fusion`` (best of ``--reps`` after a
  warm-up), and the same for the method's code at git revision ``--baseline`` (default: the ports before
  the speed work of issue 18) where that code differs, with the ratio;
* GFLOP per pair (convolutions and matrix products, counted by ``torch.utils.flop_counter`` on the meta
  device), the achieved GFLOP/s, and that as a share of this machine's plain 3x3 convolution measured in
  the same run: GFLOP / plain-conv GFLOP/s is the time the arithmetic alone would take (the floor);
* seconds per pair for a batch of ``--large-batch`` pairs at 1024x768 (M3FD size) and the peak resident
  memory of that process, next to the peak of the 640x480 one.

Every measurement runs in a fresh subprocess, one after the other (clean allocator state, its own peak
memory). Absolute times depend on the machine and its load; ratios within one run are the robust part.
With ``--profile`` the top operators of one 640x480 forward (new and baseline code) are printed too.
On 2 idle cores the default run takes a few minutes, most of it the baseline SMFNet.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "d9fe2c8"
"""The ports before the speed work (issue 18): SMFNet, FILM and the shared layers as the first ports left them."""

SIZE = (480, 640)
LARGE = (768, 1024)
TEXT_TOKENS = 149  # the VLF dataset's text features per image


# ----------------------------------------------------------------------------- child side


def _inputs(batch: int, size: tuple[int, int], text: bool):
    import torch

    g = torch.Generator().manual_seed(0)
    ir = torch.rand(batch, 1, *size, generator=g)
    vis = torch.rand(batch, 3, *size, generator=g)
    txt = 0.5 * torch.randn(batch, TEXT_TOKENS, 768, generator=g) if text else None
    return ir, vis, txt


def _baseline_factory(name: str, rev: str):
    """The factory of ``name`` as its module was at ``rev`` (registration switched off while loading)."""
    from fusion_models import get_fusion_spec, registry

    spec = get_fusion_spec(name)
    module = spec.factory.__module__
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{module.replace('.', '/')}.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{module.rsplit('.', 1)[-1]}_{rev}.py"
        path.write_text(source)
        real = registry.register_fusion_model
        registry.register_fusion_model = lambda *a, **k: (lambda fn: fn)
        try:
            spec_obj = importlib.util.spec_from_file_location(f"_baseline_{rev}_{path.stem}", path)
            old = importlib.util.module_from_spec(spec_obj)
            spec_obj.loader.exec_module(old)
        finally:
            registry.register_fusion_model = real
    return getattr(old, spec.factory.__name__)


def _count_gflop(factory, spec, size: tuple[int, int]) -> float:
    """Convolution and matrix-product GFLOP of one forward, on the meta device (no arithmetic runs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = factory(**spec.default_kwargs)
    model.eval()
    ir = torch.empty(1, 1, *size, device="meta")
    vis = torch.empty(1, 1 if spec.vis_input == "y" else 3, *size, device="meta")
    kwargs = {"text": torch.empty(1, TEXT_TOKENS, 768, device="meta")} if spec.needs_text else {}
    counter = FlopCounterMode(display=False)
    with counter:
        model(ir, vis, **kwargs)
    return counter.get_total_flops() / 1e9


def _top_ops(model, spec, ir, vis, text, rows: int = 12) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from taskeval.fusing import apply_fusion

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        apply_fusion(model, ir, vis, text=text, spec=spec)
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=28, max_shapes_column_width=60)


def run_job(job: dict) -> dict:
    """One measurement (in a fresh process): ``kind`` is ``rates``, ``time`` or ``large``."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["kind"] == "rates":
        return plain_rates()
    from fusion_models import get_fusion_spec
    from taskeval.fusing import apply_fusion

    spec = get_fusion_spec(job["method"])
    factory = _baseline_factory(job["method"], job["rev"]) if job.get("rev") else spec.factory
    torch.manual_seed(0)
    model = factory(**spec.default_kwargs).eval()
    result = {}
    if job["kind"] == "time":
        result["gflop"] = _count_gflop(factory, spec, SIZE)
    batch, size = (job["batch"], LARGE) if job["kind"] == "large" else (1, SIZE)
    ir, vis, text = _inputs(batch, size, spec.needs_text)
    with torch.no_grad():
        # Warm-up: full size before the timed 640x480 forwards of the current code; a small image before a
        # single forward (old code, large batch), which would double the run time otherwise.
        full = job["kind"] == "time" and not job.get("rev")
        warm = _inputs(1, size if full else (64, 64), spec.needs_text)
        apply_fusion(model, *warm[:2], text=warm[2], spec=spec)
        times = []
        for _ in range(job.get("reps", 1)):
            t0 = time.perf_counter()
            apply_fusion(model, ir, vis, text=text, spec=spec)
            times.append(time.perf_counter() - t0)
    result["seconds"] = min(times) / batch
    result["times"] = times
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if job.get("profile"):
        result["profile"] = _top_ops(model, spec, ir, vis, text)
    return result


def plain_rates() -> dict:
    """GFLOP/s of a plain float32 matmul (2048^3) and 3x3 convolution (64 -> 64 channels, 640x480,
    channels-last) on this machine now: the physical reference for the networks' achieved rates."""
    import torch
    import torch.nn.functional as F

    def best(fn, flop, reps):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return flop / min(times) / 1e9

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    x = torch.randn(1, 64, *SIZE, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return {
            "matmul": best(lambda: a @ b, 2 * 2048**3, 5),
            "conv3x3": best(lambda: F.conv2d(x, w, padding=1), 2 * 64 * 64 * 9 * SIZE[0] * SIZE[1], 5),
        }


# ----------------------------------------------------------------------------- parent side


def spawn(job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline_differs(name: str, rev: str) -> bool | None:
    """Whether the method's module differs at ``rev`` (None: revision or file not available)."""
    from fusion_models import get_fusion_spec

    path = get_fusion_spec(name).factory.__module__.replace(".", "/") + ".py"
    old = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True,
                         check=False)
    if old.returncode != 0:
        return None
    return old.stdout != (REPO / path).read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", help="comma-separated registered names (default: every learned method)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2, help="timed 640x480 forwards after the warm-up (best taken)")
    ap.add_argument("--baseline", default=BASELINE_REV, help=f"git revision of the old code (default {BASELINE_REV})")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old code")
    ap.add_argument("--large-batch", type=int, default=2, help="pairs per batch at 1024x768")
    ap.add_argument("--no-large", action="store_true", help="skip the 1024x768 batch")
    ap.add_argument("--profile", action="store_true", help="print the top operators of one 640x480 forward")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_job(json.loads(args.child))))
        return

    sys.path.insert(0, str(REPO))
    from fusion_models import get_fusion_spec, list_fusion_models

    names = args.methods.split(",") if args.methods else [
        n for n in list_fusion_models() if get_fusion_spec(n).trainable]
    t_start = time.perf_counter()
    rates = spawn({"kind": "rates", "threads": args.threads})
    print(f"plain float32 rates, {args.threads} threads, this run: matmul 2048^3 {rates['matmul']:.0f} GFLOP/s, "
          f"conv 3x3 64->64 640x480 channels-last {rates['conv3x3']:.0f} GFLOP/s", flush=True)
    results = {"rates": rates, "threads": args.threads, "baseline_rev": None if args.no_baseline else args.baseline,
               "methods": {}}
    header = (f"{'method':<10} {'s/pair':>7} {'before':>7} {'ratio':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'%conv':>6} "
              f"{'floor s':>7} {'old GFLOP':>9} | {'1024x768':>9} {'peak MB 640x480':>15} {'1024x768':>9}")
    print(header + f"\n{'':<10} {'':>7} {'':>7} {'':>6} {'':>7} {'':>8} {'':>6} {'':>7} {'':>9} | "
                   f"{f'x{args.large_batch} s/pair':>9}", flush=True)
    for name in names:
        row = {"new": spawn({"kind": "time", "method": name, "threads": args.threads, "reps": args.reps,
                             "profile": args.profile})}
        if not args.no_baseline and baseline_differs(name, args.baseline):
            row["before"] = spawn({"kind": "time", "method": name, "threads": args.threads, "reps": 1,
                                   "rev": args.baseline, "profile": args.profile})
        if not args.no_large:
            row["large"] = spawn({"kind": "large", "method": name, "threads": args.threads,
                                  "batch": args.large_batch})
        results["methods"][name] = row
        print(format_row(name, row, rates["conv3x3"]), flush=True)
    print(f"({time.perf_counter() - t_start:.0f} s in all; 'before' = code at {args.baseline} where it differs; "
          f"floor = GFLOP / plain conv rate)")
    if args.profile:
        for name, row in results["methods"].items():
            for which in ("new", "before"):
                if "profile" in row.get(which, {}):
                    print(f"\n== {name} ({which}): top operators of one 640x480 forward ==\n{row[which]['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def format_row(name: str, row: dict, conv_rate: float) -> str:
    new, before, large = row["new"], row.get("before", {}), row.get("large", {})
    if "error" in new:
        return f"{name:<10} failed: {new['error']}"

    def num(value, fmt):
        return format(value, fmt) if value is not None else format("-", fmt.split(".")[0])

    gflop = new["gflop"]
    old_s, old_gflop = before.get("seconds"), before.get("gflop")
    ratio = old_s / new["seconds"] if old_s else None
    rate = gflop / new["seconds"]
    return (f"{name:<10} {new['seconds']:>7.2f} {num(old_s, '>7.2f')} {num(ratio, '>6.2f')} {gflop:>7.1f} "
            f"{rate:>8.1f} {100 * rate / conv_rate:>5.0f}% {gflop / conv_rate:>7.2f} {num(old_gflop, '>9.1f')} | "
            f"{num(large.get('seconds'), '>9.2f')} {new['peak_rss_mb']:>15.0f} {num(large.get('peak_rss_mb'), '>9.0f')}"
            + (f"  [baseline failed: {before['error']}]" if "error" in before else "")
            + (f"  [1024x768 failed: {large['error']}]" if "error" in large else ""))


if __name__ == "__main__":
    main()
