"""``jobs: N``: a local CPU run split into N shard processes gives the cells and rows of a one-process run."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest
import yaml

from taskeval.cli.main import main
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import TaskevalError
from taskeval.launchers.local_jobs import effective_jobs, job_argv
from taskeval.results import read_rows

TINY = SynthConfig(n_train=4, n_test=3, height=48, width=64, objects_min=1, objects_max=2)


def _config(tmp_path, root, jobs):
    cfg = {"name": f"jobs{jobs}", "data": {"card": "synth", "root": str(root),
                                           "synth": {k: getattr(TINY, k) for k in ("n_train", "n_test", "height",
                                                                                   "width", "objects_min",
                                                                                   "objects_max")}},
           "methods": ["ir", "vis", "average"], "tasks": ["quality"], "seeds": [0],
           "quality_metrics": ["EN", "SD"], "device": "cpu", "jobs": jobs}
    path = tmp_path / f"jobs{jobs}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_effective_jobs():
    assert effective_jobs(2, 2, "cpu", None) == 2
    assert effective_jobs(2, 1, "cpu", None) == 1          # --threads is the budget the jobs share
    assert effective_jobs(4, 2, "cpu", None) == 2
    assert effective_jobs(2, 2, "cpu", (1, 2)) == 1        # a shard is one job already
    assert effective_jobs(1, 8, "cpu", None) == 1
    with pytest.raises(TaskevalError, match="jobs"):
        effective_jobs(0, 2, "cpu", None)


def test_job_argv_is_one_shard_of_the_same_command():
    args = Namespace(config="quick", overrides=["seeds=[0]"], out="runs/x", root=None, device="cpu", workers=0,
                     backend="auto", fail_fast=True, verbose=False, plugin=["p.py"])
    argv = job_argv(args, 2, 3, 1)
    assert argv[1:3] == ["-m", "taskeval.cli.main"] and argv[3:5] == ["--plugin", "p.py"]
    text = " ".join(argv)
    for part in ("benchmark quick", "--shard 2/3", "--threads 1", "--no-report", "--local-job", "--out runs/x",
                 "--device cpu", "--fail-fast"):
        assert part in text, part
    assert argv[-1] == "seeds=[0]"


def test_two_jobs_give_the_rows_of_one_process(tmp_path):
    root = tmp_path / "synth"
    generate(root, TINY, progress=False)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["benchmark", str(_config(tmp_path, root, 1)), "--out", str(one), "--quiet", "--no-report"]) == 0
    assert main(["benchmark", str(_config(tmp_path, root, 2)), "--out", str(two), "--quiet", "--no-report",
                 "--threads", "2"]) == 0
    assert len(list((two / "cells").glob("*/cell.json"))) == 3
    key = lambda r: (r.method, r.metric, r.cls)
    a, b = sorted(read_rows(one / "results.csv"), key=key), sorted(read_rows(two / "results.csv"), key=key)
    assert [(key(r), r.value) for r in a] == [(key(r), r.value) for r in b]
    prov = json.loads((two / "provenance.json").read_text())
    assert prov["jobs"] == 2 and prov["job_threads"] == 1
    # the same command again: nothing to compute, no job started
    assert main(["benchmark", str(_config(tmp_path, root, 2)), "--out", str(two), "--quiet", "--no-report",
                 "--threads", "2"]) == 0
