"""Speed of the ported fusion networks on the CPU, side by side, in one run.

    python bench/bench_ports.py [--methods smfnet,film] [--threads 2,1] [--reps 2]
                                [--baseline REV | --no-baseline] [--baseline-methods smfnet,film,ignet]
                                [--large-batch 2 | --no-large] [--profile] [--json results.json]
    python bench/bench_ports.py --summary results.json      # the table of an earlier run

For every registered learned method (random weights: the cost does not depend on them) it prints:

* seconds per 640x480 pair at each of ``--threads`` through ``apply_fusion`` (best of ``--reps`` after a
  full-size warm-up): wall-clock, process CPU and the calling thread's CPU, and the same for the code at
  git revision ``--baseline`` (default: the ports before the speed work of issue 18) of the methods that
  work changed, with the ratio;
* GFLOP per pair (convolutions and matrix products, counted by ``torch.utils.flop_counter`` on the meta
  device) and the floor: that GFLOP at this machine's plain 3x3 convolution rate (the time the arithmetic
  alone would take), with the port's share of that rate;
* seconds per pair for a batch of ``--large-batch`` pairs at 1024x768 (M3FD size) and the peak resident
  memory of the forward passes, next to the peak at 640x480.

Every measurement runs in a fresh subprocess, one after the other (clean allocator state, its own peak
memory). On a shared machine wall-clock times swing with the other jobs (a 2-core machine with a load of
10 stretches them 3-7x), so the table leads with estimates for idle cores that the load barely moves:
CPU time at one thread; at more threads, with passive OpenMP waiting (no CPU burnt spinning for a
descheduled peer), the CPU time of the calling thread, which runs every serial step and its share of
each parallel one (a lower bound, short by its waits for slower threads). The plain convolution's idle
rate is measured the same way. Ratios within one run are the robust part.
With ``--profile`` the top operators of one 640x480 forward (new and baseline code) are printed too.
On 2 idle cores the default run takes several minutes, most of it SMFNet (old and new).
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

BASELINE_METHODS = ("smfnet", "film", "ignet")
"""The ports whose forward pass the speed work changed (the others gained only ``official_image`` since)."""

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
    """The factory registered as ``name`` by its module as it was at ``rev`` (captured, not registered)."""
    from fusion_models import get_fusion_spec, registry

    spec = get_fusion_spec(name)
    module = spec.factory.__module__
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{module.replace('.', '/')}.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{module.rsplit('.', 1)[-1]}_{rev}.py"
        path.write_text(source)
        real, factories = registry.register_fusion_model, {}

        def capture(reg_name=None, **meta):
            def deco(fn):
                factories[reg_name or fn.__name__] = fn
                return fn
            return deco

        registry.register_fusion_model = capture
        try:
            spec_obj = importlib.util.spec_from_file_location(f"_baseline_{rev}_{path.stem}", path)
            old = importlib.util.module_from_spec(spec_obj)
            spec_obj.loader.exec_module(old)
        finally:
            registry.register_fusion_model = real
    if name not in factories:
        raise KeyError(f"{module} at {rev} registers no fusion model {name!r} (it registers {sorted(factories)})")
    return factories[name]


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


def _reset_peak_rss() -> bool:
    """Restart the kernel's resident-size high-water mark of this process (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(reset: bool) -> float:
    """Peak resident size in MB since :func:`_reset_peak_rss` (``VmHWM``), else since the process began."""
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: dict) -> dict:
    """One measurement (in a fresh process): ``kind`` is ``rates``, ``time`` or ``large``."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["kind"] == "rates":
        return plain_rates(job["threads"])
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
        del warm
        reset = _reset_peak_rss()
        times, cpu, main_cpu = [], [], []
        for _ in range(job.get("reps", 1)):
            t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
            apply_fusion(model, ir, vis, text=text, spec=spec)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            main_cpu.append(time.thread_time() - m0)
    result["peak_rss_mb"] = _peak_rss_mb(reset)
    best = min(range(len(times)), key=times.__getitem__)
    result["seconds"] = times[best] / batch
    result["cpu_seconds"] = cpu[best] / batch
    # The calling thread runs every serial step and its share of each parallel one (OpenMP master): with
    # passive waiting its CPU time is the forward's wall-clock time on idle cores, short of load imbalance.
    result["main_thread_cpu_seconds"] = main_cpu[best] / batch
    result["times"] = times
    if job.get("profile"):
        result["profile"] = _top_ops(model, spec, ir, vis, text)
    return result


CONV_GFLOP = 2 * 64 * 64 * 9 * SIZE[0] * SIZE[1] / 1e9
"""GFLOP of the plain reference convolution (3x3, 64 -> 64 channels, 640x480)."""


def plain_rates(threads: int) -> dict:
    """GFLOP/s of a plain float32 matmul (2048^3) and 3x3 convolution (64 -> 64 channels, 640x480,
    channels-last) on this machine: the physical reference for the networks' achieved rates.

    ``matmul`` and ``conv3x3`` are wall-clock rates now (they depend on the load); ``*_cpu`` are the same
    FLOP over the CPU seconds / ``threads``, i.e. the idle rate if the threads stay busy, which other
    processes on the machine barely change. Outputs come from the heap after a warm-up call, so neither
    counts the page faults of a fresh output.
    """
    import torch
    import torch.nn.functional as F

    from fusion_models.layers import large_tensors_on_heap

    def best(fn, flop, reps):
        fn()
        wall, cpu = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return flop / min(wall) / 1e9, flop / (min(cpu) / threads) / 1e9

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    x = torch.randn(1, 64, *SIZE, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), large_tensors_on_heap():
        matmul = best(lambda: a @ b, 2 * 2048**3, 5)
        conv = best(lambda: F.conv2d(x, w, padding=1), CONV_GFLOP * 1e9, 5)
    return {"matmul": matmul[0], "matmul_cpu": matmul[1], "conv3x3": conv[0], "conv3x3_cpu": conv[1]}


# ----------------------------------------------------------------------------- parent side


def spawn(job: dict) -> dict:
    # Passive waiting: on a shared machine a spinning OpenMP thread burns CPU while its peer is descheduled,
    # and the CPU times (the load-independent figures here) would count it.
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]),
               OMP_WAIT_POLICY="PASSIVE",
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
    ap.add_argument("--threads", default="2", help="comma-separated thread counts, each measured in turn")
    ap.add_argument("--reps", type=int, default=2, help="timed 640x480 forwards after the warm-up (best taken)")
    ap.add_argument("--baseline", default=BASELINE_REV, help=f"git revision of the old code (default {BASELINE_REV})")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old code")
    ap.add_argument("--baseline-methods", default=",".join(BASELINE_METHODS),
                    help="methods whose old code is timed too (default: the ports the speed work changed)")
    ap.add_argument("--large-batch", type=int, default=2, help="pairs per batch at 1024x768")
    ap.add_argument("--no-large", action="store_true", help="skip the 1024x768 batch")
    ap.add_argument("--profile", action="store_true", help="print the top operators of one 640x480 forward")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--summary", metavar="JSON", help="only print the table of an earlier run's --json file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_job(json.loads(args.child))))
        return
    if args.summary:
        earlier = json.loads(Path(args.summary).read_text())
        print(summary(earlier, earlier["large_batch"]))
        return

    sys.path.insert(0, str(REPO))
    from fusion_models import get_fusion_spec, list_fusion_models

    names = args.methods.split(",") if args.methods else [
        n for n in list_fusion_models() if get_fusion_spec(n).trainable]
    thread_counts = [int(t) for t in args.threads.split(",")]
    t_start = time.perf_counter()
    results = {"baseline_rev": None if args.no_baseline else args.baseline, "large_batch": args.large_batch,
               "conv_gflop": CONV_GFLOP, "runs": {}}
    for threads in thread_counts:
        rates = spawn({"kind": "rates", "threads": threads})
        print(f"\n{threads} thread(s): plain float32 matmul 2048^3 {rates['matmul']:.0f} GFLOP/s, conv 3x3 "
              f"64->64 640x480 channels-last {rates['conv3x3']:.0f} GFLOP/s", flush=True)
        run = results["runs"][str(threads)] = {"rates": rates, "methods": {}}
        for name in names:
            row = {"new": spawn({"kind": "time", "method": name, "threads": threads, "reps": args.reps,
                                 "profile": args.profile})}
            if not args.no_baseline and name in args.baseline_methods.split(",") and \
                    baseline_differs(name, args.baseline):
                row["before"] = spawn({"kind": "time", "method": name, "threads": threads, "reps": 1,
                                       "rev": args.baseline, "profile": args.profile})
            if not args.no_large:
                row["large"] = spawn({"kind": "large", "method": name, "threads": threads,
                                      "batch": args.large_batch})
            run["methods"][name] = row
            print(f"  {name}: {progress(row)}", flush=True)
    print(f"({time.perf_counter() - t_start:.0f} s in all)\n")
    print(summary(results, args.large_batch))
    if args.profile:
        for threads, run in results["runs"].items():
            for name, row in run["methods"].items():
                for which in ("new", "before"):
                    if "profile" in row.get(which, {}):
                        print(f"\n== {name} ({which}, {threads} threads): top operators of one 640x480 forward ==\n"
                              f"{row[which]['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def idle_estimate(measure: dict, threads: int) -> float | None:
    """Seconds per pair the measurement would take on idle cores.

    One thread: its CPU time. More: the calling thread's CPU time (it runs every serial step and its share
    of every parallel one; a lower bound, short by the time it waits for slower threads), measured with
    passive OpenMP waiting; None for measurements without it.
    """
    if "seconds" not in measure:
        return None
    if threads == 1:
        return measure["cpu_seconds"]
    return measure.get("main_thread_cpu_seconds")


def progress(row: dict) -> str:
    """One line per finished method: the raw figures as they arrive."""
    parts = []
    for which in ("new", "before", "large"):
        m = row.get(which)
        if m is None:
            continue
        if "error" in m:
            parts.append(f"{which} failed: {m['error']}")
        else:
            main = m.get("main_thread_cpu_seconds")
            parts.append(f"{which} {m['seconds']:.2f} s/pair (cpu {m['cpu_seconds']:.2f}"
                         + (f", main thread {main:.2f}" if main is not None else "")
                         + f", peak {m['peak_rss_mb']:.0f} MB)")
    return "; ".join(parts)


def summary(results: dict, large_batch: int) -> str:
    """A Markdown table of every run: times, idle estimates, ratios to the old code, FLOP and the floor.

    The floor is the port's GFLOP at the plain convolution's idle rate (its FLOP over CPU seconds per
    thread, measured in the run's ``rates`` job); ``% of conv`` = floor / idle estimate.
    """

    def f(value, fmt=".2f"):
        return "-" if value is None else format(value, fmt)

    lines = [
        ("| method | threads | wall s/pair | CPU s/pair | idle est s/pair | before: wall / CPU / idle est | "
         "ratio before/now (idle est) | GFLOP | old GFLOP | idle floor s | % of plain conv | "
         f"1024x768 x{large_batch}: idle est s/pair | peak MB 640x480 | peak MB 1024x768 x{large_batch} |"),
        "|" + "---|" * 14,
    ]
    notes = []
    for threads, run in results["runs"].items():
        t = int(threads)
        conv_rate = run["rates"].get("conv3x3_cpu")
        notes.append(f"{threads} thread(s): plain conv 3x3 64->64 640x480 {f(conv_rate, '.0f')} GFLOP/s idle "
                     f"(CPU-time rate), {run['rates']['conv3x3']:.0f} GFLOP/s wall-clock in the run; matmul "
                     f"2048^3 {f(run['rates'].get('matmul_cpu'), '.0f')} / {run['rates']['matmul']:.0f} GFLOP/s")
        for name, row in run["methods"].items():
            new, before, large = row["new"], row.get("before", {}), row.get("large", {})
            if "error" in new:
                lines.append(f"| {name} | {threads} | failed: {new['error']} |" + " |" * 11)
                continue
            idle, idle_old = idle_estimate(new, t), idle_estimate(before, t)
            floor = new["gflop"] / conv_rate if conv_rate else None
            if "seconds" in before:
                old = f"{before['seconds']:.1f} / {before['cpu_seconds']:.1f} / {f(idle_old)}"
                ratio = f(idle_old / idle if idle and idle_old else None)
            else:
                old, ratio = (f"failed: {before['error']}" if "error" in before else "-"), "-"
            lines.append(
                f"| {name} | {threads} | {new['seconds']:.2f} | {new['cpu_seconds']:.2f} | {f(idle)} | {old} | "
                f"{ratio} | {new['gflop']:.1f} | {f(before.get('gflop'), '.0f')} | {f(floor)} | "
                f"{f(100 * floor / idle if floor and idle else None, '.0f')} | "
                f"{f(idle_estimate(large, t)) if 'seconds' in large else large.get('error', '-')} | "
                f"{new['peak_rss_mb']:.0f} | {f(large.get('peak_rss_mb'), '.0f')} |")
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    main()
