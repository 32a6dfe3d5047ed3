"""Submit keyed Python callables to SLURM as one job array through submitit, and find out how they did.

The launcher knows nothing about what a task computes: it gets ``{key: callable}`` (one key per cell),
groups ``cells_per_task`` of them into each array task, and optionally submits a ``prepare`` job that
the array waits for (``afterok``) and a ``final`` job that waits for the whole array (``afterany``, so
it runs even when tasks failed). Every submission is appended to ``FOLDER/jobs.json``; submitit's
pickles and logs go to ``FOLDER/logs/<job id>/``.

How a task runs: sbatch runs the ``setup`` lines, then ``srun python -u -m submitit.core._submit``
with the submitting process's interpreter (``sys.executable``, i.e. the same venv) and environment
(sbatch exports it unless the cluster sets ``SBATCH_EXPORT``; then activate the venv in ``setup``);
that process unpickles the task and calls it. The callables must therefore be picklable by reference
(module-level functions of an importable module, ``functools.partial`` of them, instances of
importable classes) and return something picklable and small (submitit pickles the return value
next to the logs). ``FOLDER`` must be on a file system that the compute nodes share. An array
larger than the cluster's ``MaxArraySize`` (1001 by default) is refused by sbatch: raise
``cells_per_task``.

Time limits, preemption and ``requeue`` (submitit 1.5): every job is submitted with
``--signal=USR2@90``, so SLURM sends SIGUSR2 90 s before the time limit. submitit ignores SIGTERM
(what SLURM sends first on a cancel or a preemption; SIGKILL follows after ``KillWait``). On SIGUSR2
it calls the job "timed out" when it has run for at least ``min(0.8 * time, time - 10 min)`` (for a
limit under 50 minutes that is always), otherwise "preempted":

- ``requeue=False``: a timed-out task raises ``UncompletedJobError`` ("timed-out and not
  checkpointable") and ends FAILED (or TIMEOUT if the kill comes first); on a "preempted" SIGUSR2
  submitit still requeues it (``scontrol requeue``) where the cluster allows requeueing.
- ``requeue=True``: the job gets ``--requeue`` and each task is a ``submitit.helpers.Checkpointable``
  that remembers which of its callables finished; on SIGUSR2 submitit pickles it, requeues the job
  (same job id, ``Restarts`` + 1, pending for ``cred_expire`` + 1 s, 120 s by default) and exits; the
  requeued task skips the callables it had finished. At most 3 time-outs per task (submitit's
  ``max_num_timeout``), then it ends FAILED.

A cluster with ``PreemptMode=REQUEUE`` requeues a preempted job itself, without SIGUSR2: the task then
starts its group from the beginning. Either way the callables are expected to resume by themselves
(the benchmark runner skips cells already in its store), and a task that ends failed, timed out or
cancelled is simply submitted again.

Example ``launcher:`` section of a benchmark config for a typical GPU partition::

    launcher:
      slurm:
        partition: gpu
        gpus_per_task: 1          # default 1 when the config's device is a GPU
        cpus_per_task: 8
        mem_gb: 32
        time: "04:00:00"          # or minutes: 240
        cells_per_task: 1         # cells run one after the other in each array task
        array_parallelism: 16     # at most 16 array tasks at once
        requeue: true             # requeue on time-out/preemption; finished cells are skipped
        setup:
          - module load cuda/12.1
          - source /path/to/taskeval/.venv/bin/activate
        additional:               # any other sbatch option, without the leading --
          account: my_project
          qos: normal
          constraint: a100

Each key can also be given on the command line as ``slurm.KEY=VALUE`` (``slurm.time=02:00:00``,
``slurm.additional.account=other``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, JobPaths, UncompletedJobError
from submitit.helpers import Checkpointable
from submitit.slurm import slurm

from taskeval.config import build, deep_merge, parse_overrides, to_dict
from taskeval.errors import ConfigError
from taskeval.filelock import file_lock
from taskeval.launchers.slurm_status import JobState, SchedulerError, cancel, last_error_line, query_states
from taskeval.rundir import atomic_write_json

JOBS_FILE = "jobs.json"
LOGS = "logs"

# sbatch options the launcher sets itself (a field of SlurmSettings, or submitit's machinery)
_FIELD_OPTIONS = {"partition": "partition", "time": "time", "cpus-per-task": "cpus_per_task",
                  "gpus-per-task": "gpus_per_task", "mem": "mem_gb", "job-name": "job_name",
                  "requeue": "requeue", "no-requeue": "requeue"}
_OWN_OPTIONS = {"array", "output", "error", "open-mode", "dependency", "kill-on-invalid-dep", "signal",
                "wrap"}
_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_time(value: int | str) -> int:
    """SLURM's ``--time`` (minutes, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) -> min.

    Seconds round up to a whole minute (submitit takes the limit in minutes).

    Raises:
        ConfigError: not a positive duration in one of those forms.
    """
    if isinstance(value, bool):
        raise ConfigError(f"slurm.time: expected minutes or 'HH:MM:SS', got {value!r}")
    if isinstance(value, int):
        minutes = value
    else:
        m = _TIME.match(str(value).strip())
        if m is None:
            raise ConfigError(f"slurm.time: {value!r} is not minutes, 'HH:MM:SS' or 'D-HH:MM:SS'")
        d, a, b, c = (int(m[g]) if m[g] is not None else None for g in "dabc")
        if d is not None:  # D-HH[:MM[:SS]]
            seconds = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
        elif c is not None:  # HH:MM:SS
            seconds = a * 3600 + b * 60 + c
        elif b is not None:  # MM:SS
            seconds = a * 60 + b
        else:  # minutes
            seconds = a * 60
        minutes = math.ceil(seconds / 60)
    if minutes <= 0:
        raise ConfigError(f"slurm.time: must be positive, got {value!r}")
    return minutes


@dataclass(frozen=True)
class SlurmSettings:
    """How array tasks are requested from SLURM (the ``launcher: slurm:`` config section).

    Attributes:
        partition: ``--partition``; None: the cluster's default partition.
        time: time limit per array task, minutes or ``"HH:MM:SS"`` / ``"D-HH:MM:SS"``.
        cpus_per_task: ``--cpus-per-task``.
        gpus_per_task: ``--gpus-per-task``; None: no GPU (see ``for_device``).
        mem_gb: ``--mem`` in GB per array task; None: the cluster's default.
        cells_per_task: how many callables (cells) run one after the other in one array task.
        array_parallelism: at most this many array tasks run at once (``--array=0-N%P``).
        requeue: requeue a task on time-out or preemption (see the module docstring).
        setup: shell lines run in the job before Python starts (module loads, activating a venv).
        additional: any other sbatch option, ``{name: value}`` without ``--`` (``account``, ``qos``,
            ``constraint``, ``exclude``...); ``True`` gives a bare flag (``exclusive: true``).
        job_name: ``--job-name`` of the array; the prepare and final jobs get ``-prepare``/``-final``.
    """

    partition: str | None = None
    time: int | str = 120
    cpus_per_task: int = 4
    gpus_per_task: int | None = None
    mem_gb: float | None = None
    cells_per_task: int = 1
    array_parallelism: int = 256
    requeue: bool = False
    setup: tuple[str, ...] = ()
    additional: dict = field(default_factory=dict)
    job_name: str = "taskeval"

    def __post_init__(self) -> None:
        parse_time(self.time)
        for name in ("cpus_per_task", "cells_per_task", "array_parallelism"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"slurm.{name}: expected a positive integer, got {value!r}")
        if self.gpus_per_task is not None and (isinstance(self.gpus_per_task, bool)
                                               or not isinstance(self.gpus_per_task, int)
                                               or self.gpus_per_task < 0):
            raise ConfigError(f"slurm.gpus_per_task: expected a non-negative integer, "
                              f"got {self.gpus_per_task!r}")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool)
                                        or not isinstance(self.mem_gb, (int, float)) or not self.mem_gb > 0):
            raise ConfigError(f"slurm.mem_gb: expected a positive number of GB, got {self.mem_gb!r}")
        if self.partition is not None and not str(self.partition).strip():
            raise ConfigError("slurm.partition: empty (leave it out for the cluster's default partition)")
        if not str(self.job_name).strip() or any(c.isspace() for c in str(self.job_name)):
            raise ConfigError(f"slurm.job_name: expected a name without spaces, got {self.job_name!r}")
        if isinstance(self.setup, str):
            raise ConfigError(f"slurm.setup: expected a list of shell lines, got the string {self.setup!r}")
        for i, line in enumerate(self.setup):
            if not isinstance(line, str) or "\n" in line:
                raise ConfigError(f"slurm.setup[{i}]: expected one shell line, got {line!r}")
        if not isinstance(self.additional, Mapping):
            raise ConfigError(f"slurm.additional: expected a mapping of sbatch options, "
                              f"got {self.additional!r}")
        for key, value in self.additional.items():
            self._check_option(str(key), value)

    @staticmethod
    def _check_option(key: str, value: Any) -> None:
        name = key.lower().lstrip("-").replace("_", "-")
        where = f"slurm.additional.{key}"
        if not _OPTION.match(name):
            raise ConfigError(f"{where}: not an sbatch option name (letters, digits and '-')")
        if name in _FIELD_OPTIONS:
            raise ConfigError(f"{where}: set slurm.{_FIELD_OPTIONS[name]} instead")
        if name in _OWN_OPTIONS:
            raise ConfigError(f"{where}: --{name} is set by the launcher")
        if value is False or value is None or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, a number or true (a bare flag), got {value!r}; "
                              "leave an option out to unset it")

    @property
    def minutes(self) -> int:
        """The time limit in whole minutes."""
        return parse_time(self.time)

    def for_device(self, device: str) -> SlurmSettings:
        """These settings with ``gpus_per_task=1`` when ``device`` is a GPU and no GPU count was given."""
        if self.gpus_per_task is None and str(device).startswith("cuda"):
            return dataclasses.replace(self, gpus_per_task=1)
        return self

    def groups(self, n_cells: int) -> int:
        """Array size for ``n_cells`` callables."""
        return math.ceil(n_cells / self.cells_per_task)


def slurm_settings(section: Mapping | None = None, overrides: Sequence[str] = ()) -> SlurmSettings:
    """Settings from a config's ``launcher: slurm:`` mapping, then ``slurm.KEY=VALUE`` overrides.

    Raises:
        ConfigError: an unknown key (with a suggestion), a value of the wrong type or out of range, or an
            override that does not start with ``slurm.``.
    """
    values = dict(section or {})
    items = []
    for item in overrides:
        if not item.startswith("slurm."):
            raise ConfigError(f"launcher override {item!r} does not start with 'slurm.'")
        items.append(item[len("slurm."):])
    values = deep_merge(values, parse_overrides(items))
    if isinstance(values.get("setup"), str):  # one line given on the command line
        values["setup"] = [values["setup"]]
    return build(SlurmSettings, values, prefix="slurm.")


class TasksFailed(RuntimeError):
    """Raised at the end of an array task when some of its callables raised (after running the others)."""


class TaskGroup:
    """The callable one array task runs: its callables in order, each failure logged, the others still run.

    A callable that raises has its traceback printed to the task's stderr log, and the next one runs;
    at the end ``TasksFailed`` names the failed keys, so SLURM records the array task as FAILED. A
    submitit time-out (``UncompletedJobError``) and ``SystemExit`` stop the group at once.

    Returns:
        ``{key: return value}`` of the callables that finished (pickled back by submitit).
    """

    def __init__(self, items: Sequence[tuple[str, Callable[[], Any]]]):
        self.items = list(items)
        self.results: dict[str, Any] = {}

    def __call__(self) -> dict[str, Any]:
        failed: list[str] = []
        for key, fn in self.items:
            if key in self.results:  # finished before a requeue
                print(f"[taskeval] {key}: finished before the requeue, skipped", flush=True)
                continue
            print(f"[taskeval] {key}: start", flush=True)
            try:
                self.results[key] = fn()
            except UncompletedJobError:
                raise
            except Exception as exc:  # noqa: BLE001 - any cell error: log it, run the next cell
                traceback.print_exc()
                sys.stderr.flush()
                failed.append(f"{key} ({type(exc).__name__}: {exc})".splitlines()[0])
                print(f"[taskeval] {key}: failed", flush=True)
                continue
            print(f"[taskeval] {key}: done", flush=True)
        if failed:
            raise TasksFailed(f"{len(failed)} of {len(self.items)} failed: {'; '.join(failed)}")
        return self.results


class RequeueableTaskGroup(TaskGroup, Checkpointable):
    """A TaskGroup that submitit requeues on time-out; its pickle keeps the results it has so far."""


def _executor(folder: Path, settings: SlurmSettings, *, dependency: str | None = None, suffix: str = "",
              offline: bool = False, kill_on_invalid_dep: bool = False):
    """A submitit ``SlurmExecutor`` with ``settings`` (the same object ``AutoExecutor(cluster="slurm")``
    wraps). ``offline`` builds it where ``srun`` is missing, to render scripts without submitting."""
    cls = slurm.SlurmExecutor
    if offline:
        class _Offline(slurm.SlurmExecutor):
            @classmethod
            def affinity(cls) -> int:  # the only check SlurmExecutor makes for a cluster (srun on PATH)
                return 2

        cls = _Offline
    executor = cls(folder)
    additional = {str(k).lstrip("-").replace("_", "-"): v for k, v in settings.additional.items()}
    if settings.requeue:
        additional["requeue"] = True
    if kill_on_invalid_dep:
        additional["kill-on-invalid-dep"] = "yes"
    params: dict[str, Any] = {"job_name": settings.job_name + suffix, "time": settings.minutes,
                              "cpus_per_task": settings.cpus_per_task,
                              "array_parallelism": settings.array_parallelism, "setup": list(settings.setup),
                              "additional_parameters": additional}
    if settings.partition is not None:
        params["partition"] = settings.partition
    if settings.gpus_per_task:
        params["gpus_per_task"] = settings.gpus_per_task
    if settings.mem_gb is not None:
        params.update(executor._convert_parameters({"mem_gb": settings.mem_gb}))  # -> mem="16GB"
    if dependency is not None:
        params["dependency"] = dependency
    try:
        executor.update_parameters(**params)
    except ValueError as exc:
        raise ConfigError(f"submitit rejected the SLURM settings: {exc}") from None
    return executor


def render_sbatch(folder: str | Path, settings: SlurmSettings, n_cells: int, prepare: bool = False) -> str:
    """The sbatch script submitit would send for ``n_cells`` callables, without submitting (``--dry-run``).

    Built by submitit's own ``SlurmExecutor`` (its ``_make_submission_file_text`` and python command), as
    ``submit_array`` builds it; works on a machine without SLURM. With ``prepare`` the dependency on the
    not yet submitted prepare job reads ``afterok:<prepare job id>``. A single array task is submitted
    as a plain job (no ``--array``), as submitit does.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be positive, got {n_cells}")
    executor = _executor(Path(folder).absolute() / LOGS / "%j", settings, offline=True,
                         dependency="afterok:<prepare job id>" if prepare else None,
                         kill_on_invalid_dep=prepare)
    groups = settings.groups(n_cells)
    if groups > 1:
        executor.parameters["map_count"] = groups  # what SlurmExecutor sets for an array submission
    return executor._make_submission_file_text(executor._submitit_command_str, uid="dry-run")


@dataclass(frozen=True)
class SubmittedJobs:
    """Job ids of one submission: ``tasks`` maps each key to its array task (``"12_3"``; ``"12"`` alone)."""

    folder: Path
    tasks: dict[str, str]
    array: str | None = None
    prepare: str | None = None
    final: str | None = None

    @property
    def job_ids(self) -> list[str]:
        return [j for j in (self.prepare, self.array, self.final) if j is not None]

    def describe(self) -> list[str]:
        """Human-readable lines: what was submitted and how to watch it."""
        lines = []
        if self.prepare:
            lines.append(f"prepare job {self.prepare}")
        if self.array:
            n = len(set(self.tasks.values()))
            lines.append(f"array job {self.array}: {len(self.tasks)} cells in {n} task{'s' * (n != 1)}")
        if self.final:
            lines.append(f"final job {self.final} (after the array)")
        lines.append(f"watch: squeue -j {','.join(self.job_ids)}" if self.job_ids else "nothing submitted")
        lines.append(f"logs: {self.folder / LOGS}")
        return lines


def submit_array(folder: str | Path, tasks: Mapping[str, Callable[[], Any]], settings: SlurmSettings, *,
                 prepare: Callable[[], Any] | None = None, final: Callable[[], Any] | None = None,
                 final_settings: SlurmSettings | None = None) -> SubmittedJobs:
    """Submit ``tasks`` as one SLURM job array, with an optional prepare job before and final job after.

    Args:
        folder: launcher folder on a shared file system; logs and pickles go to ``folder/logs``, the
            record of this submission is appended to ``folder/jobs.json``.
        tasks: ``{key: callable()}`` in array order; ``settings.cells_per_task`` consecutive callables
            share one array task (``TaskGroup``). Keys are the caller's (cell keys).
        settings: resources of the prepare job and of each array task.
        prepare: run once before the array (shared work); the array starts only if it succeeds
            (``afterok``) and is cancelled by SLURM if it fails.
        final: run once after every array task has ended, failed or not (``afterany``).
        final_settings: resources of the final job; default ``settings`` without GPUs.

    Returns:
        The job ids; the same ids are in ``folder/jobs.json``.

    Raises:
        SchedulerError: sbatch failed (the jobs this call had already submitted are cancelled).
        ConfigError: submitit rejected a setting.
    """
    folder = Path(folder).absolute()
    for key, fn in tasks.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"task keys must be non-empty strings, got {key!r}")
        if not callable(fn):
            raise TypeError(f"task {key!r} is not callable: {fn!r}")
    logs = folder / LOGS / "%j"
    final_settings = final_settings or dataclasses.replace(settings, gpus_per_task=None, requeue=False)
    submitted: list[str] = []
    prepare_id = array_id = final_id = None
    task_ids: dict[str, str] = {}
    try:
        if prepare is not None:
            prepare_id = _submit(_executor(logs, settings, suffix="-prepare"), [prepare], "prepare job")[0]
            submitted.append(prepare_id)
        if tasks:
            items = list(tasks.items())
            size = settings.cells_per_task
            group_cls = RequeueableTaskGroup if settings.requeue else TaskGroup
            groups = [group_cls(items[i:i + size]) for i in range(0, len(items), size)]
            executor = _executor(logs, settings, dependency=f"afterok:{prepare_id}" if prepare_id else None,
                                 kill_on_invalid_dep=prepare_id is not None)
            ids = _submit(executor, groups, "job array")
            array_id = ids[0].split("_", 1)[0]
            submitted.append(array_id)
            for group, job_id in zip(groups, ids):
                task_ids.update({key: job_id for key, _ in group.items})
        if final is not None:
            after = array_id or prepare_id
            executor = _executor(logs, final_settings, suffix="-final",
                                 dependency=f"afterany:{after}" if after else None)
            final_id = _submit(executor, [final], "final job")[0]
            submitted.append(final_id)
    except BaseException:
        with contextlib.suppress(SchedulerError):  # best effort: the original error matters more
            cancel(submitted)
        raise
    jobs = SubmittedJobs(folder=folder, tasks=task_ids, array=array_id, prepare=prepare_id, final=final_id)
    _append_record(folder, jobs, settings)
    return jobs


def _submit(executor, fns: list[Callable[[], Any]], what: str) -> list[str]:
    try:
        jobs = executor.submit_array(fns)
    except FailedJobError as exc:  # submitit's wrapper of a failed sbatch, with sbatch's stderr
        raise SchedulerError(f"sbatch refused the {what}: {exc}") from None
    return [job.job_id for job in jobs]


def _append_record(folder: Path, jobs: SubmittedJobs, settings: SlurmSettings) -> None:
    """Append one submission to ``folder/jobs.json`` (locked read-modify-write, atomic replace)."""
    path = folder / JOBS_FILE
    record = {"submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "prepare": jobs.prepare, "array": jobs.array, "final": jobs.final, "tasks": jobs.tasks,
              "settings": to_dict(settings)}
    with file_lock(folder / f".{JOBS_FILE}.lock"):
        history = read_records(folder)
        atomic_write_json(path, {"submissions": [*history, record]})


def read_records(folder: str | Path) -> list[dict]:
    """Every submission recorded in ``folder/jobs.json``, oldest first (``[]`` when there is none).

    Raises:
        SchedulerError: the file exists but is not a jobs record.
    """
    path = Path(folder) / JOBS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        records = data["submissions"]
        if not isinstance(records, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SchedulerError(f"{path}: not a jobs record (expected {{'submissions': [...]}})") from None
    return records


def latest_jobs(folder: str | Path) -> dict[str, str]:
    """``{key: job id}`` of each key's latest submission."""
    out: dict[str, str] = {}
    for record in read_records(folder):
        out.update(record.get("tasks", {}))
    return out


def log_paths(folder: str | Path, job_id: str) -> tuple[Path, Path]:
    """``(stdout, stderr)`` logs of a job or array task (submitit's ``JobPaths``, first srun task)."""
    paths = JobPaths(Path(folder).absolute() / LOGS / "%j", job_id=str(job_id), task_id=0)
    return paths.stdout, paths.stderr


@dataclass(frozen=True)
class TaskStatus:
    """Where one key's latest array task stands.

    Attributes:
        job: its job id (``"12_3"``).
        state: queued, running, done, failed, cancelled, timeout or unknown (SLURM no longer remembers:
            decide from your own records).
        slurm: SLURM's state and reason, e.g. ``"FAILED (NonZeroExitCode)"``; empty when unknown.
        log: the task's stderr log.
        error: the line of that log that says why it stopped (``last_error_line``), for tasks that are
            neither queued, running nor done; None otherwise or when the log says nothing.
    """

    job: str
    state: str
    slurm: str
    log: Path
    error: str | None


def task_states(folder: str | Path) -> dict[str, TaskStatus]:
    """The status of every key ever submitted from ``folder``, by its latest submission (one squeue call)."""
    latest = latest_jobs(folder)
    states = query_states(sorted(set(latest.values())))
    out = {}
    for key, job in latest.items():
        st: JobState = states[job]
        log = log_paths(folder, job)[1]
        error = last_error_line(log) if st.state not in ("queued", "running", "done") else None
        slurm = f"{st.slurm} ({st.reason})" if st.reason else st.slurm
        out[key] = TaskStatus(job=job, state=st.state, slurm=slurm, log=log, error=error)
    return out
