"""Tiny callables that the SLURM launcher tests run inside real jobs.

They live in a module of their own so that submitit pickles them by reference (``slurm_jobs.write``)
and the job imports them; the tests put this folder on the job's ``PYTHONPATH`` with a ``setup`` line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def write(path: str, text: str = "ok", requires: str | None = None) -> str:
    """Write ``text`` to ``path`` (atomically); raise if the file ``requires`` does not exist."""
    if requires is not None and not Path(requires).is_file():
        raise FileNotFoundError(f"prepare output missing: {requires}")
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(text)
    os.replace(tmp, path)
    return path


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_then_write(path: str, seconds: float, started: str | None = None) -> str:
    if started is not None:
        write(started)
    time.sleep(seconds)
    return write(path)


def summarize(out: str, paths: list[str]) -> None:
    """What the final job saw when it started: which of ``paths`` existed, and when it ran."""
    seen = {p: Path(p).is_file() for p in paths}
    write(out, json.dumps({"seen": seen, "start": time.time()}))


def resumable(attempts: str, started: str, done: str, wait_s: float) -> str:
    """Log each attempt; the first one signals ``started`` and waits for a preemption, later ones finish."""
    with open(attempts, "a") as fh:
        fh.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
    if not Path(started).exists():
        write(started)
        time.sleep(wait_s)  # the test preempts the job during this sleep
        raise RuntimeError(f"not preempted within {wait_s} s")
    return write(done)
