"""``taskeval benchmark CONFIG``: methods x tasks x seeds in one resumable run with tables, figures, report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from taskeval.cli.common import add_overrides
from taskeval.cli.run_common import add_execution_options, check_out_matches, execute, failure_lines, start_run
from taskeval.errors import TaskevalError

log = logging.getLogger(__name__)


def run(args) -> int:
    from taskeval.benchmark import load_benchmark_config
    from taskeval.launchers.local_jobs import effective_jobs, execute_jobs, job_threads
    from taskeval.store import parse_shard

    launcher_overrides = [o for o in args.overrides if o.startswith("slurm.")]
    overrides = [o for o in args.overrides if not o.startswith("slurm.")] \
        + ([f"data.root={Path(args.root).resolve()}"] if args.root else []) \
        + ([f"device={args.device}"] if args.device else [])
    cfg = load_benchmark_config(args.config, overrides)
    if launcher_overrides and args.launcher != "slurm":
        raise TaskevalError(f"{launcher_overrides[0]}: slurm.* settings need --launcher slurm")
    if args.dry_run and args.launcher != "slurm":
        raise TaskevalError("--dry-run shows what --launcher slurm would submit; for a local run use --plan")
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise TaskevalError(str(exc)) from None
    out = Path(args.out) if args.out else Path("runs") / f"benchmark-{cfg.name}"
    if (out / "cells").is_dir():
        check_out_matches(out, cfg)
    if args.plan:
        return print_plan(cfg, out, args)
    if args.launcher == "slurm":
        if shard:
            raise TaskevalError("--shard splits cells for other schedulers; --launcher slurm submits one array")
        return run_slurm(cfg, out, args, launcher_overrides)
    jobs = effective_jobs(args.jobs or cfg.jobs, args.threads, cfg.device, shard)
    run_dir = start_run(cfg, out, "benchmark", True, args, {"shard": args.shard, "jobs": jobs, "job_threads": job_threads(args.threads, jobs)} if jobs > 1 else
                        {"shard": args.shard})

    print(f"benchmark {cfg.name!r} in {out}: planning ({len(cfg.methods)} methods x {', '.join(cfg.tasks)} x seeds "
          f"{list(cfg.seeds)})" + (f"; shard {args.shard}" if shard else "") + (f"; {jobs} local jobs" if jobs > 1 else ""))
    if jobs > 1:
        plan, runner, report = execute_jobs(cfg, run_dir, args, jobs)
    else:
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


def run_slurm(cfg, out: Path, args, launcher_overrides: list[str]) -> int:
    """Submit the missing cells as one SLURM job array (prepare job before, report job after) and return."""
    from taskeval.launchers.cluster import JobSpec, submit
    from taskeval.launchers.slurm import slurm_settings
    from taskeval.rundir import RunDir
    from taskeval.runner import Plan, Runner, make_execution

    settings = slurm_settings((cfg.launcher or {}).get("slurm"), launcher_overrides).for_device(gpu_device(cfg.device))
    run_dir = RunDir(out) if args.dry_run else start_run(cfg, out, "benchmark", True, args, {"launcher": "slurm"})
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(cfg, out, progress=not args.quiet)
    runner = Runner(plan, make_execution("cpu", progress=False, state_dir=run_dir.third_party_dir()))
    spec = JobSpec(str(out.resolve()), cfg, tuple(str(Path(p).resolve()) for p in getattr(args, "plugin", [])),
                   args.threads, args.workers, args.backend)
    if not args.dry_run:
        plan.write_records()
        runner.check_resumable(plan.cells())
    sub = submit(runner, spec, settings, dry_run=args.dry_run)
    cells = plan.cells()
    print(f"benchmark {cfg.name!r} in {out}: {len(cells)} cells; {len(cells) - len(sub.cells) - len(sub.in_flight)} "
          f"done, {len(sub.in_flight)} queued or running (left alone), {len(sub.cells)} to submit")
    if args.dry_run:
        for c in sub.cells:
            print(f"  {c.id}")
        if sub.cells:
            print(f"array of {settings.groups(len(sub.cells))} task(s) ({settings.cells_per_task} cell(s) each), after "
                  "a prepare job, before a report job; the array's sbatch script:\n" + sub.script)
        return 0
    if sub.jobs is None:
        print("nothing to submit" + (f"; watch: taskeval status {out} --watch" if sub.in_flight else
                                     f"; report: taskeval report {out}"))
        return 0
    for line in sub.jobs.describe():
        print(line)
    print(f"status: taskeval status {out} [--watch]")
    return 0


def print_plan(cfg, out: Path, args) -> int:
    """``--plan``: the cells (done and to run), fused images to compute, GPU-hours, CPU-hours and disk."""
    from taskeval.estimate import estimate, print_estimate
    from taskeval.rundir import RunDir
    from taskeval.runner import Plan, Runner, make_execution

    print(f"plan of benchmark {cfg.name!r} in {out} (nothing is computed; the dataset's files are hashed once to "
          "find what is cached)")
    state = RunDir(out).path / "third_party"
    if "detection" in cfg.tasks:
        from detectors.ultralytics_env import prepare

        prepare(state)  # the detectors' FLOPs are counted on their own models: ultralytics state in the run
    plan = Plan(cfg, out, progress=not args.quiet, check_data=False)
    runner = Runner(plan, make_execution("cpu", progress=False, state_dir=state))
    print_estimate(estimate(runner))
    for m in plan.missing_weights():
        print(f"missing official weights: {m.method}: {m.file} ({m.where})")
    return 0


def gpu_device(device: str) -> str:
    """``cuda:N`` for a device setting that names a GPU (``cuda``, ``0``, ``0,1``), else the setting as it is:
    the login node's own hardware says nothing about the compute nodes' (``auto`` asks for no GPU)."""
    text = str(device).strip().lower()
    return "cuda:0" if text.startswith("cuda") or text.replace(",", "").isdigit() else text


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
    p.add_argument("--jobs", type=int, help="on a CPU: compute the cells in N local processes side by side, each "
                                            "with threads/N threads (default: the config's jobs, quick: 2)")
    p.add_argument("--local-job", action="store_true", help=argparse.SUPPRESS)  # a job started by --jobs
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local (default): compute the cells here; slurm: submit them as one job array through "
                        "submitit and return (settings: the config's launcher: slurm: section, slurm.KEY=VALUE)")
    p.add_argument("--plan", action="store_true",
                   help="print the cells (done / to run), the fused images to compute and an estimate of GPU-hours, "
                        "CPU-hours and disk from per-image costs; compute nothing")
    p.add_argument("--dry-run", action="store_true",
                   help="with --launcher slurm: print the cells, the array size and the sbatch script; submit nothing")
    p.add_argument("--backend", default="auto", help="COCO scorer (auto, pycocotools, faster-coco-eval)")
    add_execution_options(p, device_default=None)
    add_overrides(p)
    p.set_defaults(func=run)
