"""The SLURM launcher against a real single-node SLURM (tests/slurm_cluster.py), plus its settings and script.

Job states come from squeue/scontrol only: this cluster has no accounting, so ``sacct`` fails here as
it does on any cluster without slurmdbd.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_jobs

from taskeval.errors import ConfigError
from taskeval.launchers.slurm import (
    SlurmSettings,
    TaskGroup,
    TasksFailed,
    latest_jobs,
    log_paths,
    parse_time,
    read_records,
    render_sbatch,
    slurm_settings,
    submit_array,
    task_states,
)
from taskeval.launchers.slurm_status import UNKNOWN, cancel, job_info, last_error_line, query_states

TESTS = Path(__file__).resolve().parent
# the job imports slurm_jobs: this setup line, run before Python starts, puts tests/ on its path
SETUP = (f"export PYTHONPATH={TESTS}${{PYTHONPATH:+:$PYTHONPATH}}",)


def _settings(**kw) -> SlurmSettings:
    return SlurmSettings(**{"cpus_per_task": 1, "time": 5, "setup": SETUP, **kw})


def _wait(job_ids: list[str], until, timeout: float = 40.0) -> dict:
    """Poll query_states every 0.2 s until ``until(states)`` holds; fail with the last states otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        states = query_states(job_ids)
        if until(states):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {job_ids} did not get there within {timeout:.0f} s: {states}")
        time.sleep(0.2)


def _wait_for_file(path: str, job: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        assert time.monotonic() < deadline, f"task {job} did not start: {query_states([job])}"
        time.sleep(0.1)


def _ended(states: dict) -> bool:
    return all(s.state not in ("queued", "running") for s in states.values())


# --- settings, time limits, the sbatch script (no SLURM needed) ---

@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("01:30:00", 90), ("1-00:00:00", 1440),
                                            ("2-12", 3600), ("10:30", 11), ("0:0:59", 1)])
def test_parse_time(value, minutes):
    assert parse_time(value) == minutes


@pytest.mark.parametrize("kw, key", [
    ({"time": "1:2:3:4"}, "slurm.time"), ({"time": 0}, "slurm.time"), ({"time": "soon"}, "slurm.time"),
    ({"cpus_per_task": 0}, "slurm.cpus_per_task"), ({"cells_per_task": -1}, "slurm.cells_per_task"),
    ({"array_parallelism": True}, "slurm.array_parallelism"), ({"gpus_per_task": -1}, "slurm.gpus_per_task"),
    ({"mem_gb": 0}, "slurm.mem_gb"), ({"partition": " "}, "slurm.partition"),
    ({"job_name": "a b"}, "slurm.job_name"),
    ({"setup": "module load x"}, "slurm.setup"), ({"setup": ("a\nb",)}, "slurm.setup[0]"),
    ({"additional": {"partition": "gpu"}}, "slurm.partition instead"),
    ({"additional": {"cpus_per_task": 2}}, "slurm.cpus_per_task instead"),
    ({"additional": {"array": "0-3"}}, "set by the launcher"),
    ({"additional": {"dependency": "x"}}, "set by the launcher"),
    ({"additional": {"exclusive": False}}, "slurm.additional.exclusive"),
    ({"additional": {"bad option": 1}}, "slurm.additional.bad option"),
])
def test_settings_reject_bad_values(kw, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        SlurmSettings(**kw)


def test_settings_from_config_and_overrides():
    section = {"partition": "gpu", "time": "04:00:00", "setup": ["module load cuda"],
               "additional": {"account": "a"}}
    s = slurm_settings(section, ["slurm.cpus_per_task=8", "slurm.additional.qos=high", "slurm.requeue=true",
                                 "slurm.mem_gb=15.5"])
    assert (s.partition, s.minutes, s.cpus_per_task, s.requeue, s.mem_gb) == ("gpu", 240, 8, True, 15.5)
    assert s.setup == ("module load cuda",) and s.additional == {"account": "a", "qos": "high"}
    assert s.for_device("cuda:0").gpus_per_task == 1 and s.for_device("cpu").gpus_per_task is None
    assert slurm_settings({"gpus_per_task": 2}).for_device("cuda").gpus_per_task == 2
    assert slurm_settings({}, ["slurm.setup=source venv/bin/activate"]).setup == ("source venv/bin/activate",)
    with pytest.raises(ConfigError, match="did you mean 'partition'"):
        slurm_settings({"partion": "gpu"})
    with pytest.raises(ConfigError, match="does not start with 'slurm.'"):
        slurm_settings({}, ["partition=gpu"])
    with pytest.raises(ConfigError, match="slurm.cpus_per_task: expected int"):
        slurm_settings({}, ["slurm.cpus_per_task=many"])


def test_render_sbatch_has_every_setting(tmp_path):
    s = SlurmSettings(partition="gpu", gpus_per_task=1, cpus_per_task=6, mem_gb=24, time="02:00:00",
                      cells_per_task=2, array_parallelism=3, requeue=True, job_name="bench",
                      setup=("module load cuda/12.1", "source /opt/venv/bin/activate"),
                      additional={"account": "proj", "exclusive": True})
    script = render_sbatch(tmp_path / "slurm", s, n_cells=9)
    lines = script.splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --mem=24GB", "#SBATCH --time=120", "#SBATCH --array=0-4%3", "#SBATCH --requeue",
                 "#SBATCH --job-name=bench", "#SBATCH --account=proj", "#SBATCH --exclusive",
                 "#SBATCH --signal=USR2@90", "module load cuda/12.1", "source /opt/venv/bin/activate"):
        assert line in lines, f"{line!r} not in:\n{script}"
    # setup runs before the python call, which is this interpreter running submitit's entry point
    assert lines.index("source /opt/venv/bin/activate") < next(i for i, x in enumerate(lines) if "srun" in x)
    assert "-m submitit.core._submit" in script and str(tmp_path / "slurm" / "logs") in script
    single = render_sbatch(tmp_path, SlurmSettings(mem_gb=1.5), n_cells=1, prepare=True)
    assert "--array" not in single and "#SBATCH --mem=1536MB" in single
    assert "#SBATCH --dependency='afterok:<prepare job id>'" in single
    assert "#SBATCH --kill-on-invalid-dep=yes" in single


def test_task_group_runs_every_callable_and_reports_failures(tmp_path, capsys):
    paths = [str(tmp_path / f"{k}.txt") for k in "ab"]
    group = TaskGroup([("a", functools.partial(slurm_jobs.write, paths[0])),
                       ("bad", functools.partial(slurm_jobs.fail, "boom")),
                       ("b", functools.partial(slurm_jobs.write, paths[1]))])
    with pytest.raises(TasksFailed, match=r"1 of 3 failed: bad \(ValueError: boom\)"):
        group()
    assert all(Path(p).is_file() for p in paths) and set(group.results) == {"a", "b"}
    assert "ValueError: boom" in capsys.readouterr().err


def test_last_error_line(tmp_path):
    log = tmp_path / "x_log.err"
    assert last_error_line(log) is None
    log.write_text("warning: something\n")
    assert last_error_line(log) == "warning: something"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\n"
                   "ValueError: first line\nsecond line\n"
                   "srun: error: localhost: task 0: Exited with exit code 1\n")
    assert last_error_line(log) == "ValueError: first line"
    with open(log, "a") as fh:
        fh.write("slurmstepd-localhost: error: *** JOB 7 ON localhost CANCELLED AT 2026-01-01T00:00:00 ***\n")
    assert last_error_line(log).endswith("CANCELLED AT 2026-01-01T00:00:00 ***")


# --- against the real SLURM ---

def test_array_with_prepare_and_final_after_a_failing_task(slurm, tmp_path):
    folder = tmp_path / "slurm"
    marker = str(tmp_path / "prepared.txt")
    outs = {k: str(tmp_path / f"{k}.txt") for k in ("a", "b", "c")}
    tasks = {k: functools.partial(slurm_jobs.write, p, k, requires=marker) for k, p in outs.items()}
    tasks["bad"] = functools.partial(slurm_jobs.fail, "cell bad exploded")
    summary = str(tmp_path / "final.json")
    jobs = submit_array(folder, tasks, _settings(array_parallelism=2),
                        prepare=functools.partial(slurm_jobs.write, marker),
                        final=functools.partial(slurm_jobs.summarize, summary, list(outs.values())))
    array = jobs.array
    assert jobs.tasks == {"a": f"{array}_0", "b": f"{array}_1", "c": f"{array}_2", "bad": f"{array}_3"}
    assert jobs.prepare and jobs.final and len({jobs.prepare, array, jobs.final}) == 3

    states = _wait(jobs.job_ids, lambda s: s[jobs.final].state == "done")
    assert set(states) == {jobs.prepare, jobs.final, *jobs.tasks.values()}  # the array as its tasks
    assert {k: states[j].state for k, j in jobs.tasks.items()} == {"a": "done", "b": "done", "c": "done",
                                                                  "bad": "failed"}
    assert states[jobs.prepare].state == "done"
    assert states[jobs.tasks["bad"]].slurm == "FAILED"
    assert all(Path(p).read_text() == k for k, p in outs.items())  # the tasks saw the prepare job's output
    seen = json.loads(Path(summary).read_text())["seen"]
    assert all(seen.values()), f"the final job started before the array ended: {seen}"
    # the final job started after the last array task ended
    ends = [job_info(j)["EndTime"] for j in jobs.tasks.values()]
    assert job_info(jobs.final)["StartTime"] >= max(ends)
    assert job_info(jobs.tasks["bad"])["ExitCode"] == "1:0"

    status = task_states(folder)
    assert status["bad"].state == "failed" and status["bad"].log == log_paths(folder, jobs.tasks["bad"])[1]
    assert status["bad"].error == ("taskeval.launchers.slurm.TasksFailed: "
                                   "1 of 1 failed: bad (ValueError: cell bad exploded)")
    assert status["a"].state == "done" and status["a"].error is None
    assert "ValueError: cell bad exploded" in status["bad"].log.read_text()  # the cell's own traceback

    (record,) = read_records(folder)
    assert (record["tasks"], record["prepare"], record["final"]) == (jobs.tasks, jobs.prepare, jobs.final)
    assert record["settings"]["setup"] == list(SETUP)

    # submit again what failed, two cells per task: jobs.json keeps both submissions, the latest wins
    fixed = str(tmp_path / "bad.txt")
    again = submit_array(folder, {"bad": functools.partial(slurm_jobs.write, fixed),
                                  "d": functools.partial(slurm_jobs.write, str(tmp_path / "d.txt")),
                                  "e": functools.partial(slurm_jobs.write, str(tmp_path / "e.txt"))},
                         _settings(cells_per_task=2))
    assert again.tasks == {"bad": f"{again.array}_0", "d": f"{again.array}_0", "e": f"{again.array}_1"}
    assert [r["array"] for r in read_records(folder)] == [array, again.array]
    assert latest_jobs(folder)["bad"] == again.tasks["bad"] and latest_jobs(folder)["a"] == jobs.tasks["a"]
    _wait([again.array], _ended)
    status = task_states(folder)
    assert {k: v.state for k, v in status.items()} == dict.fromkeys(("a", "b", "c", "bad", "d", "e"), "done")
    assert Path(fixed).is_file() and (tmp_path / "e.txt").is_file()


def test_cancel_one_array_task(slurm, tmp_path):
    folder = tmp_path / "slurm"
    started = str(tmp_path / "started")
    slow_cell = functools.partial(slurm_jobs.sleep_then_write, str(tmp_path / "s"), 60, started)
    quick_cell = functools.partial(slurm_jobs.write, str(tmp_path / "q"))
    jobs = submit_array(folder, {"slow": slow_cell, "quick": quick_cell}, _settings())
    slow = jobs.tasks["slow"]
    # squeue says RUNNING as soon as the batch script starts, before srun has started Python: wait for
    # the callable itself, or the cancel hits a job without its step (and the log says just that)
    _wait_for_file(started, slow)
    assert query_states([slow])[slow].state == "running"
    cancel([slow])  # JOBID_TASKID: this array task only
    states = _wait([jobs.array], _ended)
    assert states[slow].state == "cancelled" and states[jobs.tasks["quick"]].state == "done"
    assert not (tmp_path / "s").exists() and (tmp_path / "q").is_file()
    assert "CANCELLED" in (task_states(folder)["slow"].error or "")


def test_requeue_resumes_a_preempted_task(slurm, tmp_path):
    attempts, started, done = (str(tmp_path / n) for n in ("attempts", "started", "done"))
    jobs = submit_array(tmp_path / "slurm",
                        {"cell": functools.partial(slurm_jobs.resumable, attempts, started, done, 60)},
                        _settings(requeue=True))
    job = jobs.tasks["cell"]
    _wait_for_file(started, job)
    # what SLURM sends before a time limit or (on clusters set up so) a preemption: submitit checkpoints
    # the task and requeues it with scontrol requeue; the second run finds its marker and finishes
    subprocess.run(["scancel", "--signal=USR2", job], check=True, env=os.environ)
    states = _wait([job], lambda s: s[job].state not in ("queued", "running"), timeout=40)
    assert states[job].state == "done"
    assert Path(attempts).read_text().split() == ["0", "1"]  # SLURM_RESTART_COUNT of the two runs
    assert job_info(job)["Restarts"] == "1" and Path(done).is_file()


def test_time_limit_signal_without_requeue_fails_the_task(slurm, tmp_path):
    folder = tmp_path / "slurm"
    started = str(tmp_path / "started")
    jobs = submit_array(folder, {"cell": functools.partial(slurm_jobs.resumable, str(tmp_path / "attempts"),
                                                           started, str(tmp_path / "done"), 60)}, _settings())
    job = jobs.tasks["cell"]
    _wait_for_file(started, job)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, env=os.environ)  # "90 s before the limit"
    states = _wait([job], _ended)
    assert states[job].state == "failed"
    assert task_states(folder)["cell"].error == (
        "submitit.core.utils.UncompletedJobError: "
        "Job not requeued because: timed-out and not checkpointable.")
    assert not (tmp_path / "done").exists()


def test_unknown_ids(slurm):
    assert query_states(["999999", "999999_1"]) == {"999999": UNKNOWN, "999999_1": UNKNOWN}
    assert job_info("999999") == {}


def test_a_crashed_session_is_cleaned_up(slurm):
    """A session whose pytest was killed leaves munged/slurmctld/slurmd running; the next start stops them
    by the pids in their pid files, and leaves alone a process whose pid a stale pid file names."""
    import slurm_cluster

    code = "import slurm_cluster, time; print(slurm_cluster.start().root, flush=True); time.sleep(120)"
    crashed = subprocess.Popen([sys.executable, "-c", code], cwd=TESTS, stdout=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if k != "SLURM_CONF"})
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = Path(crashed.stdout.readline().strip())
        pids = {n: int((root / f"{n}.pid").read_text()) for n in ("munged", "slurmctld", "slurmd")}
        crashed.kill()
        crashed.wait()
        assert all(slurm_cluster._alive(p) for p in pids.values())
        (root / "slurmd.pid").write_text(f"{unrelated.pid}\n")  # as if slurmd's pid had been reused
        assert slurm_cluster.clean_stale(slurm_cluster.base_dir()) == [root]
        assert not root.exists() and unrelated.poll() is None
        # slurmd's pid file was overwritten: it went with the processes that name the folder in their env
        assert not any(slurm_cluster._alive(p) for p in pids.values())
        assert slurm.root.is_dir() and query_states(["999999"])  # the live session is untouched
    finally:
        crashed.kill()
        unrelated.kill()
        unrelated.wait()
