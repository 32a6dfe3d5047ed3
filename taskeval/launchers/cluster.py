"""A run on a SLURM cluster: the runner's cells as one job array (:mod:`taskeval.launchers.slurm`).

``taskeval benchmark CONFIG --launcher slurm`` plans the run on the login node, then submits

1. a **prepare** job: the shared work of the cells to run, once (dataset checks, every fused set the
   cells read, fusion networks trained with ``weights: train``; the array starts only if it succeeds);
2. the **array**: one cell (``slurm.cells_per_task`` cells) per task, each running the runner on its
   cells; a cell that raises is recorded in the store as failed (``cells/<id>/failed.json`` and
   ``error.txt``), its array task ends FAILED and the other tasks go on;
3. a **final** job after every task (``afterany``): ``results.csv``, tables, figures and the report when
   every cell is done, otherwise a line saying which are missing.

The job callables below take a :class:`JobSpec` (the resolved config, the run folder, the plug-in files,
execution settings), so a job rebuilds the same plan from the same config. Running the same command again
submits only the cells that are neither done nor queued or running (failed, cancelled, timed out, never
submitted). :func:`cell_status` joins the store (done, failed) with SLURM's view (queued, running,
cancelled...) for ``taskeval status``; it never needs ``sacct``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from taskeval.errors import TaskevalError

log = logging.getLogger(__name__)
SLURM_FOLDER = "slurm"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs to rebuild the run's plan: picklable, no open files or devices."""

    run: str
    config: object                       # taskeval.benchmark.BenchmarkConfig
    plugins: tuple[str, ...] = ()
    threads: int | None = None
    workers: int = 0
    backend: str = "auto"


def _runner(spec: JobSpec, check_data: bool = True):
    import logging as _logging

    from taskeval.registry import load_plugin_file
    from taskeval.rundir import RunDir
    from taskeval.runner import Plan, Runner, make_execution

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for plugin in spec.plugins:
        load_plugin_file(plugin)
    run = RunDir(Path(spec.run))
    run.attach_log()
    exe = make_execution(spec.config.device, spec.threads, spec.workers, False, spec.backend, run.third_party_dir())
    if any(t == "detection" for t in spec.config.tasks):
        from detectors.ultralytics_env import prepare

        prepare(exe.state_dir, exe.threads)
    return Runner(Plan(spec.config, run.path, progress=False, check_data=check_data), exe)


def _cells(runner, ids):
    by_id = {c.id: c for c in runner.plan.cells()}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise TaskevalError(f"cells {missing} are not in the plan of {runner.path}")
    return [by_id[i] for i in ids]


def prepare_job(spec: JobSpec, cell_ids: list[str]) -> int:
    """The shared work of these cells (fusion, fusion training) and the run's records, once."""
    runner = _runner(spec)
    runner.plan.write_records()
    runner.check_resumable(runner.plan.cells())
    runner.prepare(_cells(runner, cell_ids))
    return len(cell_ids)


def cell_job(spec: JobSpec, cell_id: str) -> str:
    """One cell; raises (so that SLURM marks the task failed) when it failed, after recording it."""
    runner = _runner(spec, check_data=False)  # the prepare job checked the data
    report = runner.execute(cells=_cells(runner, [cell_id]))
    if report.failed:
        raise TaskevalError(f"cell {cell_id} failed: {report.failed[cell_id]} (traceback: "
                            f"{runner.store.cells_dir / cell_id / 'error.txt'})")
    return cell_id


def final_job(spec: JobSpec) -> str:
    """After the array: merge the results and, when every cell is done, write the tables, figures and report."""
    runner = _runner(spec, check_data=False)
    runner.store.merge()
    missing = runner.pending()
    if missing:
        msg = (f"{len(missing)} cell(s) not done ({', '.join(c.id for c in missing[:5])}"
               f"{' ...' if len(missing) > 5 else ''}): no report; see `taskeval status {spec.run}` and run the same "
               "command again to submit them")
        print(msg, flush=True)
        return msg
    from taskeval.reporting.finalize import finalize

    return str(finalize(spec.run, progress=False))


# ------------------------------------------------------------------------------------------- submitting
@dataclass
class Submission:
    """What :func:`submit` decided: the cells submitted now and those left alone because they run."""

    cells: list = field(default_factory=list)
    in_flight: list = field(default_factory=list)
    jobs: object = None        # taskeval.launchers.slurm.SubmittedJobs, None when nothing was submitted
    script: str = ""


def in_flight(run: str | Path) -> set[str]:
    """Cell ids whose latest array task is queued or running."""
    from taskeval.launchers.slurm import task_states

    folder = Path(run) / SLURM_FOLDER
    if not (folder / "jobs.json").is_file():
        return set()
    return {key for key, st in task_states(folder).items() if st.state in ("queued", "running")}


def submit(runner, spec: JobSpec, settings, dry_run: bool = False) -> Submission:
    """Submit the cells of ``runner``'s plan that are not done and not queued or running."""
    from taskeval.launchers.slurm import render_sbatch, submit_array

    folder = Path(spec.run) / SLURM_FOLDER
    busy = in_flight(spec.run)
    pending = runner.pending()
    out = Submission(cells=[c for c in pending if c.id not in busy], in_flight=[c for c in pending if c.id in busy])
    if out.cells:
        out.script = render_sbatch(folder, settings, len(out.cells), prepare=True)
    if dry_run or not out.cells:
        return out
    tasks = {c.id: partial(cell_job, spec, c.id) for c in out.cells}
    out.jobs = submit_array(folder, tasks, settings, prepare=partial(prepare_job, spec, [c.id for c in out.cells]),
                            final=partial(final_job, spec))
    return out


# ---------------------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class CellStatus:
    """One cell of a run: done / queued / running / failed / cancelled / timeout / not submitted."""

    cell: str
    method: str
    task: str
    seed: int | None
    state: str
    job: str = ""
    log: str = ""
    error: str = ""


def cell_status(run: str | Path, plan_cells=None) -> list[CellStatus]:
    """Every cell of a run, from the store (done, failed) and, for the others, the scheduler.

    ``plan_cells`` are the planned cells (default: the cells the store and the job records know).
    """
    from taskeval.store import ResultsStore

    run = Path(run)
    store = ResultsStore(run)
    done = {m["id"]: m for m in store.done_cells()}
    failed = {m["id"]: m for m in store.failed_cells()}
    scheduler = {}
    if (run / SLURM_FOLDER / "jobs.json").is_file():
        from taskeval.launchers.slurm import task_states

        scheduler = task_states(run / SLURM_FOLDER)
    known = {}
    for source in (done, failed):
        for cid, m in source.items():
            known[cid] = (m["method"], m["task"], m.get("seed"))
    for c in plan_cells or ():
        known[c.id] = (c.method, c.task, c.seed)
    out = []
    for cid in sorted(set(known) | set(scheduler), key=lambda i: (i not in known, i)):
        method, task, seed = known.get(cid, ("?", "?", None))
        st = scheduler.get(cid)
        if cid in done:
            out.append(CellStatus(cid, method, task, seed, "done", st.job if st else ""))
        elif st is not None and st.state in ("queued", "running"):
            out.append(CellStatus(cid, method, task, seed, st.state, st.job, str(st.log)))
        elif cid in failed or (st is not None and st.state in ("failed", "cancelled", "timeout")):
            error = failed.get(cid, {}).get("error") or (st.error if st else "") or ""
            state = st.state if st is not None and st.state in ("cancelled", "timeout") else "failed"
            log_path = str(Path(failed[cid]["dir"]) / "error.txt") if cid in failed else (str(st.log) if st else "")
            out.append(CellStatus(cid, method, task, seed, state, st.job if st else "", log_path, error))
        else:
            out.append(CellStatus(cid, method, task, seed, "not submitted" if st is None else st.state,
                                  st.job if st else ""))
    return out
