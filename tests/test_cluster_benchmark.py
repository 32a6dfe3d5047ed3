"""``taskeval benchmark --launcher slurm`` against a real single-node SLURM (tests/slurm_cluster.py).

A small synthetic benchmark (the fusion-quality task and the plug-in counting task of
tests/counting_task.py, which trains in milliseconds) goes through the prepare job, the array and the
report job; its results must equal those of the local launcher. Then a cancelled array task and a cell
that raises: ``taskeval status`` shows them, and the same command submits only what is missing.
States come from squeue/scontrol: the cluster has no accounting (sacct), as on many real ones.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from taskeval.cli.main import main
from taskeval.data.synth import SynthConfig, generate
from taskeval.launchers.cluster import cell_status

PLUGIN = Path(__file__).with_name("counting_task.py")
TINY = SynthConfig(n_train=6, n_test=4, height=48, width=64, objects_min=1, objects_max=3)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "synth"
    generate(root, TINY, progress=False)
    return root


def _config(tmp_path, root, name="cl") -> Path:
    cfg = {"name": name, "data": {"card": str(root / "card.yaml")}, "methods": ["ir", "vis", "average"],
           "tasks": ["quality", "boxcount"], "seeds": [0], "device": "cpu",
           "options": {"quality": {"metrics": ["EN", "SD"]}},
           "launcher": {"slurm": {"cpus_per_task": 1, "time": 10, "job_name": "te-test"}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _bench(cfg, out, *extra) -> int:
    return main(["--plugin", str(PLUGIN), "benchmark", str(cfg), "--out", str(out), "--quiet", *extra])


def _wait_until_settled(out: Path, timeout: float = 240.0) -> list:
    """Poll until no cell is queued or running and the report job has ended."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = cell_status(out)
        jobs = json.loads((out / "slurm" / "jobs.json").read_text())["submissions"]
        finals = [s["final"] for s in jobs if s.get("final")]
        final_running = subprocess.run(["squeue", "-h", "-j", ",".join(finals), "-o", "%T"], capture_output=True,
                                       text=True).stdout.strip() if finals else ""
        if statuses and not any(s.state in ("queued", "running") for s in statuses) and not final_running:
            return statuses
        assert time.monotonic() < deadline, f"not settled in {timeout:.0f} s: {statuses}"
        time.sleep(1.0)


def test_slurm_run_equals_the_local_run_and_writes_the_report(slurm, synth_root, tmp_path, capsys):
    cfg = _config(tmp_path, synth_root)
    local = tmp_path / "local"
    assert _bench(cfg, local, "--no-report") == 0
    out = tmp_path / "cluster"
    assert _bench(cfg, out, "--launcher", "slurm", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "6 to submit" in text and "#SBATCH --array=0-5" in text and "#SBATCH --cpus-per-task=1" in text
    assert not (out / "slurm" / "jobs.json").exists()            # a dry run submits nothing

    assert _bench(cfg, out, "--launcher", "slurm") == 0
    text = capsys.readouterr().out
    assert "array job" in text and "prepare job" in text and "final job" in text and "taskeval status" in text
    statuses = _wait_until_settled(out)
    assert {s.state for s in statuses} == {"done"} and len(statuses) == 6
    record = json.loads((out / "slurm" / "jobs.json").read_text())["submissions"][0]
    assert len(set(record["tasks"].values())) == 6                # one array task per cell
    for job in set(record["tasks"].values()):                    # scontrol, not sacct
        info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in info, info
    assert (out / "results.csv").read_text() == (local / "results.csv").read_text()
    assert (out / "report.html").is_file()                       # written by the report job
    assert _bench(cfg, out, "--launcher", "slurm") == 0           # nothing left: nothing submitted
    assert "nothing to submit" in capsys.readouterr().out
    assert len(json.loads((out / "slurm" / "jobs.json").read_text())["submissions"]) == 1


def test_cancelled_and_failing_cells_then_only_the_missing_are_resubmitted(slurm, synth_root, tmp_path, capsys,
                                                                          monkeypatch):
    cfg = _config(tmp_path, synth_root, name="cancel")
    local = tmp_path / "local"
    assert _bench(cfg, local, "--no-report") == 0
    out = tmp_path / "cluster"
    monkeypatch.setenv("COUNTING_FAIL", "vis")      # exported to the jobs: the vis counting cell raises
    monkeypatch.setenv("COUNTING_SLEEP", "6")       # each counting training sleeps: time to cancel one
    assert _bench(cfg, out, "slurm.array_parallelism=1", "--launcher", "slurm") == 0
    capsys.readouterr()
    tasks = json.loads((out / "slurm" / "jobs.json").read_text())["submissions"][0]["tasks"]
    victim = next(c for c in tasks if c.startswith("boxcount__average"))
    deadline = time.monotonic() + 180
    while not any(s.cell == victim and s.state == "running" for s in cell_status(out)):
        assert time.monotonic() < deadline, cell_status(out)
        time.sleep(0.5)
    subprocess.run(["scancel", tasks[victim]], check=True)
    statuses = {s.cell: s for s in _wait_until_settled(out)}
    assert statuses[victim].state == "cancelled"
    failed = next(s for s in statuses.values() if s.cell.startswith("boxcount__vis"))
    assert failed.state == "failed" and "planted failure in vis" in failed.error and failed.log
    assert sum(s.state == "done" for s in statuses.values()) == 4  # the others did not wait for them
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cancelled" in text and "planted failure in vis" in text and "4 done" in text
    assert not (out / "report.html").exists()                    # the report waits for every cell

    monkeypatch.delenv("COUNTING_FAIL")
    monkeypatch.delenv("COUNTING_SLEEP")
    assert _bench(cfg, out, "--launcher", "slurm") == 0
    assert "2 to submit" in capsys.readouterr().out              # only the cancelled and the failed cell
    second = json.loads((out / "slurm" / "jobs.json").read_text())["submissions"][1]["tasks"]
    assert set(second) == {victim, failed.cell}
    assert {s.state for s in _wait_until_settled(out)} == {"done"}
    assert (out / "results.csv").read_text() == (local / "results.csv").read_text()
    assert (out / "report.html").is_file()
