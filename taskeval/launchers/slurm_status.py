"""What SLURM says about submitted jobs, without accounting: ``squeue``/``scontrol`` states, logs, cancel.

``sacct`` needs ``slurmdbd`` and fails on clusters without accounting, so nothing here calls it (nor
submitit's ``job.state``, which asks ``sacct`` and reports ``UNKNOWN`` when that fails). ``squeue
--states=all`` and ``scontrol show job`` read the controller's memory, which keeps a finished job for
``MinJobAge`` seconds (300 by default); after that a job is ``unknown`` here and the caller decides from
its own records (a finished cell is in the results store whatever SLURM remembers).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from taskeval.errors import TaskevalError

#: SLURM job state (``squeue %T``) -> taskeval's coarse state.
STATES = {
    **dict.fromkeys(("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"),
                    "queued"),
    **dict.fromkeys(("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING"),
                    "running"),
    "COMPLETED": "done",
    **dict.fromkeys(("FAILED", "BOOT_FAIL", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE", "SPECIAL_EXIT",
                     "PREEMPTED", "REVOKED"), "failed"),
    "CANCELLED": "cancelled",
    "TIMEOUT": "timeout",
}

_INVALID_ID = "Invalid job id specified"


class SchedulerError(TaskevalError, RuntimeError):
    """A SLURM command (sbatch, squeue, scontrol, scancel) failed; the message holds its stderr."""


@dataclass(frozen=True)
class JobState:
    """One job or array task as SLURM reports it.

    Attributes:
        state: queued, running, done, failed, cancelled, timeout or unknown (see ``STATES``).
        slurm: SLURM's own state (``PENDING``, ``OUT_OF_MEMORY``...); empty when unknown.
        reason: SLURM's reason (``Dependency``, ``NonZeroExitCode``...); empty when unknown or ``None``.
    """

    state: str
    slurm: str = ""
    reason: str = ""


UNKNOWN = JobState("unknown")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]} not found: is this a SLURM login node?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{' '.join(cmd)} did not answer within 60 s") from None


def query_states(job_ids: list[str]) -> dict[str, JobState]:
    """States of jobs and array tasks from one ``squeue`` call (pending array tasks expanded).

    Args:
        job_ids: ids as sbatch/submitit give them: ``"12"`` (a job, or a whole array) or ``"12_3"``
            (one array task).

    Returns:
        ``{id: JobState}`` with every array task of every array asked about (``"12_0"``, ``"12_1"``...;
        an array's own id ``"12"`` is not a key then) and every other asked id; an id the controller
        no longer knows (finished more than ``MinJobAge`` seconds ago) maps to ``UNKNOWN``.

    Raises:
        SchedulerError: squeue failed for another reason than unknown ids (controller down...).
    """
    if not job_ids:
        return {}
    parents = sorted({str(j).split("_", 1)[0] for j in job_ids}, key=int)
    proc = _run(["squeue", "--array", "--noheader", "--states=all", "--format=%i|%T|%r",
                 f"--jobs={','.join(parents)}"])
    # squeue exits 1 with "Invalid job id" only when it knows none of the ids: all unknown then
    if proc.returncode != 0 and _INVALID_ID not in proc.stderr:
        raise SchedulerError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    out: dict[str, JobState] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job, slurm, reason = parts
        out[job] = JobState(STATES.get(slurm, "unknown"), slurm, "" if reason == "None" else reason)
    arrays = {job.split("_", 1)[0] for job in out if "_" in job}
    for job in map(str, job_ids):
        if job not in out and job not in arrays:
            out[job] = UNKNOWN
    return out


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job -o JOB`` as ``{key: value}`` (``JobState``, ``ExitCode``, ``Restarts``...).

    Returns an empty dict when the controller no longer knows the job.
    """
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if proc.returncode != 0:
        if _INVALID_ID in proc.stderr:
            return {}
        raise SchedulerError(f"scontrol show job {job_id} failed ({proc.returncode}): {proc.stderr.strip()}")
    line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    # values may hold spaces (paths, reasons): a value runs up to the next " Key=" token
    return dict(re.findall(r"(?:^|\s)([A-Za-z][\w/:.]*)=(.*?)(?=\s[A-Za-z][\w/:.]*=|\s*$)", line))


def cancel(job_ids: list[str]) -> None:
    """``scancel`` jobs or single array tasks (``"12"`` cancels the whole array, ``"12_3"`` one task)."""
    if not job_ids:
        return
    proc = _run(["scancel", *map(str, job_ids)])
    if proc.returncode != 0:
        raise SchedulerError(f"scancel {' '.join(map(str, job_ids))} failed: {proc.stderr.strip()}")


# "slurmstepd-NODE: error: *** JOB 12 ON NODE CANCELLED AT ... [DUE TO TIME LIMIT] ***"
_SLURM_BANNER = re.compile(r"^slurmstepd(?:-\S+)?: error: \*\*\* .* \*\*\*$")


def last_error_line(path: str | Path, max_bytes: int = 65536) -> str | None:
    """The line that says why a task stopped, from its stderr log (submitit's ``*_log.err``).

    The later of: the exception line closing the last Python traceback, and SLURM's own
    ``slurmstepd-NODE: error: *** ... CANCELLED ... ***`` banner (cancel, time limit, preemption). Falls back
    to the last non-empty line; ``None`` for a missing or empty log. Reads only the last ``max_bytes``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - max_bytes))
        lines = fh.read().decode(errors="replace").splitlines()
    best: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            # the exception line is the first unindented line after the frames
            for j in range(i + 1, len(lines)):
                if lines[j] and not lines[j][0].isspace():
                    best = (j, lines[j].strip())
                    break
        elif _SLURM_BANNER.match(line.strip()) and (best is None or i > best[0]):
            best = (i, line.strip())
    if best is not None:
        return best[1]
    rest = [line.strip() for line in lines if line.strip()]
    return rest[-1] if rest else None
