"""``taskeval benchmark CONFIG``: methods x tasks x seeds in one resumable run with tables, figures, report."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from taskeval.cli.common import add_overrides
from taskeval.config import to_dict
from taskeval.errors import TaskevalError
from taskeval.rundir import RunDir

log = logging.getLogger(__name__)


def run(args) -> int:
    from taskeval.benchmark import Benchmark, load_benchmark_config, weight_hashes
    from taskeval.store import parse_shard

    cfg = load_benchmark_config(args.config, args.overrides)
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise TaskevalError(str(exc)) from None
    out = Path(args.out) if args.out else Path("runs") / f"benchmark-{cfg.name}"
    resuming = (out / "cells").is_dir()
    if resuming:
        previous = json.loads((out / "dataset.json").read_text()) if (out / "dataset.json").is_file() else {}
        if previous and cfg.data.card != "synth" and previous.get("card") != cfg.data.card:
            raise TaskevalError(f"{out} holds a benchmark of dataset {previous.get('card')!r}, not "
                                f"{cfg.data.card!r}; choose another --out")
    run_dir = RunDir.create(out, "benchmark", resume=True)
    # matplotlib's font cache (figures, ultralytics) inside the run, set before anything imports matplotlib
    os.environ.setdefault("MPLCONFIGDIR", str(run_dir.third_party_dir() / "matplotlib"))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    run_dir.write_provenance({**to_dict(cfg), "weight_hashes": weight_hashes(cfg), "shard": args.shard},
                             seeds=cfg.seeds)
    run_dir.attach_log()
    if not args.verbose:  # the terminal shows one progress bar and warnings; INFO lines go to taskeval.log
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.WARNING)
    bench = Benchmark(cfg, run_dir, progress=not args.quiet)
    cells = bench.cells()
    done = sum(not bench.needs(c) for c in cells)
    print(f"benchmark {cfg.name!r} in {out}: {len(cells)} cells ({len(cfg.methods)} methods x "
          f"{', '.join(cfg.tasks)} x seeds {list(cfg.seeds)}); {done} already done"
          + (f"; shard {args.shard}" if shard else ""))
    computed = bench.execute(shard)
    print(f"computed {len(computed)} cell(s); results: {out / 'results.csv'}")
    missing = sum(bench.needs(c) for c in cells)
    if shard and missing:
        print(f"{missing} cell(s) of other shards are not finished yet: no report now. When every shard is done, "
              f"run `taskeval report {out}` or this command without --shard (it computes nothing more).")
    elif not args.no_report:
        from taskeval.reporting.finalize import finalize

        finalize(out, progress=not args.quiet)
    return 0


def register(sub) -> None:
    from taskeval.benchmark import builtin_configs

    p = sub.add_parser("benchmark", help="methods x tasks x seeds in one resumable run with tables, figures, report",
                       description="Run every (method, task, seed) cell of CONFIG once. Re-running the same "
                                   "command resumes (finished cells are skipped); adding a method computes only its "
                                   "cells. Built-in configs: " + ", ".join(builtin_configs()) + ".")
    p.add_argument("config", help="benchmark YAML, or a built-in name (quick, msrs_sample)")
    p.add_argument("--out", help="run directory (default runs/benchmark-<name>)")
    p.add_argument("--shard", help="i/n: compute every n-th cell starting at i (cluster job arrays); all shards "
                                   "write into the same --out")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--no-report", action="store_true", help="skip tables, figures and the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overrides(p)
    p.set_defaults(func=run)
