"""``taskeval benchmark CONFIG``: methods x tasks x seeds in one resumable run with tables, figures, report."""

from __future__ import annotations

import logging
from pathlib import Path

from taskeval.cli.common import add_overrides
from taskeval.cli.run_common import add_execution_options, check_out_matches, execute, failure_lines, start_run
from taskeval.errors import TaskevalError

log = logging.getLogger(__name__)


def run(args) -> int:
    from taskeval.benchmark import load_benchmark_config
    from taskeval.store import parse_shard

    overrides = list(args.overrides) + ([f"data.root={Path(args.root).resolve()}"] if args.root else []) \
        + ([f"device={args.device}"] if args.device else [])
    cfg = load_benchmark_config(args.config, overrides)
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise TaskevalError(str(exc)) from None
    out = Path(args.out) if args.out else Path("runs") / f"benchmark-{cfg.name}"
    if (out / "cells").is_dir():
        check_out_matches(out, cfg)
    run_dir = start_run(cfg, out, "benchmark", True, args, {"shard": args.shard})

    print(f"benchmark {cfg.name!r} in {out}: planning ({len(cfg.methods)} methods x {', '.join(cfg.tasks)} x seeds "
          f"{list(cfg.seeds)})" + (f"; shard {args.shard}" if shard else ""))
    plan, runner, report = execute(cfg, run_dir, args, shard)
    cells = plan.cells()
    print(f"computed {len(report.computed)} cell(s), {report.skipped} already done; results: {out / 'results.csv'}")
    for line in failure_lines(report, runner):
        print(line)
    missing = sum(runner.needs(c) for c in cells)
    if not runner.exe.is_main:
        return 0
    if missing:
        why = "of other shards are" if shard else "are"
        print(f"{missing} cell(s) {why} not finished yet: no report now. When every cell is done, run "
              f"`taskeval report {out}` or this command again (it computes only what is missing).")
    elif not args.no_report:
        from taskeval.reporting.finalize import finalize

        finalize(out, progress=not args.quiet)
    return 1 if report.failed else 0


def register(sub) -> None:
    from taskeval.benchmark import builtin_configs

    p = sub.add_parser("benchmark", help="methods x tasks x seeds in one resumable run with tables, figures, report",
                       description="Run every (method, task, seed) cell of CONFIG once. Re-running the same "
                                   "command resumes (finished cells are skipped); adding a method computes only its "
                                   "cells. Built-in configs: " + ", ".join(builtin_configs()) + ".")
    p.add_argument("config", help="benchmark YAML, or a built-in name (" + ", ".join(builtin_configs()) + ")")
    p.add_argument("--out", help="run directory (default runs/benchmark-<name>)")
    p.add_argument("--root", help="dataset folder (sets data.root)")
    p.add_argument("--shard", help="i/n: compute every n-th cell starting at i (other schedulers' job arrays); "
                                   "all shards write into the same --out")
    p.add_argument("--no-report", action="store_true", help="skip tables, figures and the HTML report")
    p.add_argument("--backend", default="auto", help="COCO scorer (auto, pycocotools, faster-coco-eval)")
    add_execution_options(p, device_default=None)
    add_overrides(p)
    p.set_defaults(func=run)
