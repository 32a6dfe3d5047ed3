"""Local jobs: the cells of one benchmark computed by N processes side by side on this machine's CPU.

The quick protocols' networks are small (YOLOv8n at 160 px, a MobileNetV3 DeepLabV3+ at 128x160) and use a
second CPU thread poorly: one training took about 30 s on two idle cores with two threads and about 35-38 s
of CPU time with one (bench/RESULTS.md). Two single-thread processes that each compute every other cell
(``--shard i/N``, the mechanism other schedulers use) therefore finish a run sooner than one process with
two threads, with the same cells, keys and results store.

The parent first makes what the cells share (the dataset, trained fusion weights, fused images) with all of
its threads, so that no job waits on another's lock, then starts the N jobs (the same command with
``--shard i/N --threads T/N --no-report``), shows one progress bar over their cells and merges their rows.
A cell computed with one thread differs from one computed with two in the last float bits (as between
CPUs); the run's provenance records the threads of each job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tqdm import tqdm

from taskeval.errors import TaskevalError


def effective_jobs(jobs: int, threads: int | None, device: str, shard) -> int:
    """How many local jobs to start: ``jobs`` capped by the CPU threads (``--threads``, else torch's
    default), 1 on a GPU (its processes would share one device), under ``--shard`` (already one of many) and
    inside a job."""
    import torch

    from taskeval.devices import pick_device

    if jobs < 1:
        raise TaskevalError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or shard is not None or pick_device(device) != "cpu":
        return 1
    return max(1, min(jobs, threads or torch.get_num_threads()))


def job_threads(threads: int | None, n: int) -> int:
    """CPU threads of each of ``n`` jobs sharing ``threads`` (``--threads``, else torch's default)."""
    import torch

    return max(1, (threads or torch.get_num_threads()) // n)


def job_argv(args, i: int, n: int, threads: int) -> list[str]:
    """The command line of job ``i`` of ``n``: this benchmark command, one shard of it, no report."""
    argv = [sys.executable, "-m", "taskeval.cli.main"]
    if getattr(args, "verbose", False):
        argv.append("--verbose")
    for plugin in getattr(args, "plugin", []):
        argv += ["--plugin", plugin]
    argv += ["benchmark", args.config, "--shard", f"{i}/{n}", "--threads", str(threads), "--no-report",
             "--quiet", "--local-job", "--workers", str(args.workers), "--backend", args.backend]
    for flag in ("out", "root", "device"):
        if getattr(args, flag, None):
            argv += [f"--{flag}", str(getattr(args, flag))]
    if args.fail_fast:
        argv.append("--fail-fast")
    return argv + list(args.overrides)


def execute_jobs(cfg, run, args, n: int):
    """Prepare the shared inputs here, compute the missing cells in ``n`` local jobs, merge; returns
    ``(plan, runner, report)`` as :func:`taskeval.cli.run_common.execute` does."""
    from taskeval.cli.run_common import make_runner
    from taskeval.runner import RunReport

    plan, runner = make_runner(cfg, run, args)
    every = plan.cells()
    plan.write_records()
    runner.check_resumable(every)
    todo = runner.pending(every)
    runner.prepare(todo)  # fusion training and fused images once, with every thread, before the jobs start
    report = RunReport(skipped=len(every) - len(todo))
    if not todo:
        runner.store.merge()
        return plan, runner, report
    per_job = job_threads(args.threads, n)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_job)}
    # a job's own summary lines would repeat the parent's; its log goes to the run's log, errors to stderr
    procs = [subprocess.Popen(job_argv(args, i, n, per_job), env=env, stdout=subprocess.DEVNULL)
             for i in range(1, n + 1)]
    bar = tqdm(total=len(every), initial=report.skipped, desc=f"cells ({n} jobs x {per_job} thread"
               f"{'s' if per_job > 1 else ''})", unit="cell", disable=not runner.exe.progress)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            bar.update(sum(runner.store.is_done(c) for c in todo) + report.skipped - bar.n)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        bar.close()
    runner.store.merge()
    report.computed = [c for c in todo if runner.store.is_done(c)]
    failed = {f["id"]: f["error"] for f in runner.store.failed_cells()}
    report.failed = {c.id: failed[c.id] for c in todo if c.id in failed}
    crashed = [(i, p.returncode) for i, p in enumerate(procs, 1) if p.returncode not in (0, 1)]
    if crashed:
        raise TaskevalError(", ".join(f"local job {i}/{n} exited with status {rc}" for i, rc in crashed)
                            + f"; its cells are missing: run the same command again to compute them ({run.path})")
    return plan, runner, report
