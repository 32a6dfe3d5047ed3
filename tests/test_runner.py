"""The runner once, against a plug-in task that trains in milliseconds (``tests/counting_task.py``):
a new task through the benchmark, tables and report; interrupt and resume; shards; stale inputs; failed
cells; the fixed protocol; torchrun. The real tasks have their own end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from taskeval.benchmark import load_benchmark_config
from taskeval.cli.main import main
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import TaskevalError
from taskeval.registry import load_plugin_file
from taskeval.results import read_rows
from taskeval.rundir import RunDir
from taskeval.runner import Plan, Runner
from taskeval.tasks import Execution

PLUGIN = Path(__file__).with_name("counting_task.py")
TINY = SynthConfig(n_train=8, n_test=6, height=48, width=64, objects_min=1, objects_max=4)


@pytest.fixture(scope="module", autouse=True)
def boxcount():
    load_plugin_file(PLUGIN)  # the task registers itself, as with `taskeval --plugin tests/counting_task.py`


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner") / "synth"
    generate(root, TINY, progress=False)
    return root


def _config(tmp_path, root, methods=("ir", "vis", "average"), seeds=(0, 1), name="count", **extra) -> Path:
    cfg = {"name": name, "data": {"card": str(root / "card.yaml")}, "methods": list(methods),
           "tasks": ["boxcount"], "seeds": list(seeds), "device": "cpu", **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _runner(path, out, overrides=()) -> Runner:
    run = RunDir.create(out, "benchmark", resume=True)
    return Runner(Plan(load_benchmark_config(path, list(overrides)), run.path, progress=False),
                  Execution(state_dir=run.third_party_dir()))


def _values(out) -> dict:
    return {(r.method, r.seed): r.value for r in read_rows(out / "results.csv")}


def test_a_new_task_runs_through_benchmark_tables_and_report(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, synth_root, options={"boxcount": {"scale": 1.0}})
    assert main(["--plugin", str(PLUGIN), "benchmark", str(cfg), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    values = _values(out)
    assert set(values) == {(m, s) for m in ("ir", "vis", "average") for s in (0, 1)}
    spec = json.loads((out / "tasks.json").read_text())["boxcount"]
    assert spec["metrics"][0] == {**spec["metrics"][0], "name": "mae", "higher_is_better": False}
    summary = (out / "tables" / "summary.md").read_text()
    assert "mae" in summary
    best = min({m for m, _ in values}, key=lambda m: sum(values[(m, s)] for s in (0, 1)))
    bold_rows = [line for line in summary.splitlines() if line.startswith("|") and "**" in line]
    assert len(bold_rows) == 1 and ("IR" if best == "ir" else "VI" if best == "vis" else best) in bold_rows[0]
    page = (out / "report.html").read_text()
    assert "boxcount" in page and "mean absolute error of the object count" in page
    assert not list((out / "figures").glob("boxcount_grid*"))   # its cells have nothing to draw as a grid


def test_interrupt_resume_shards_and_the_same_numbers(synth_root, tmp_path, monkeypatch):
    cfg = _config(tmp_path, synth_root)
    whole = tmp_path / "whole"
    assert _runner(cfg, whole).execute(keep_going=False).computed
    expected = (whole / "results.csv").read_text()

    out = tmp_path / "interrupted"
    real, seen = Runner.run_cell, []

    def stop_at_third(runner, cell):
        if len(seen) == 2:
            raise KeyboardInterrupt
        real(runner, cell)
        seen.append(cell)

    monkeypatch.setattr(Runner, "run_cell", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        _runner(cfg, out).execute()
    monkeypatch.setattr(Runner, "run_cell", real)
    report = _runner(cfg, out).execute()
    assert len(report.computed) == 4 and report.skipped == 2
    assert (out / "results.csv").read_text() == expected

    sharded = tmp_path / "sharded"
    first = _runner(cfg, sharded).execute(shard=(0, 2))
    second = _runner(cfg, sharded).execute(shard=(1, 2))
    assert len(first.computed) == 3 and len(second.computed) == 3
    assert not {c.id for c in first.computed} & {c.id for c in second.computed}
    assert (sharded / "results.csv").read_text() == expected


def test_stale_inputs_are_refused_naming_the_files(synth_root, tmp_path):
    root = tmp_path / "synth"
    import shutil

    shutil.copytree(synth_root, root)
    cfg = _config(tmp_path, root, methods=("vis",), seeds=(0,))
    out = tmp_path / "run"
    _runner(cfg, out).execute()
    label = sorted((root / "test" / "labels").glob("*.txt"))[1]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(TaskevalError, match=rf"vis: synth/test: 1 pair\(s\) changed: {label.stem} \(det\)"):
        _runner(cfg, out).execute()
    # a method that is not configured any more still counts: its cells are in the same store
    other = _config(tmp_path, root, methods=("average",), seeds=(0,), name="other")
    with pytest.raises(TaskevalError, match=rf"boxcount__vis__s0__\w+: synth/test: 1 pair\(s\) changed: {label.stem} "
                       r"\(det\)\); one results store never mixes class lists, split files or images"):
        _runner(other, out).execute()
    card = root / "card.yaml"
    card.write_text(card.read_text().replace("- sign", "- signs"))      # another class list, same dataset name
    label.write_text(label.read_text().rsplit("\n", 2)[0] + "\n")        # the label as it was
    with pytest.raises(TaskevalError, match=r"setting seg_classes"):
        _runner(other, out).execute()


def test_a_failing_cell_is_recorded_and_the_others_go_on(synth_root, tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path, synth_root)
    out = tmp_path / "run"
    monkeypatch.setenv("COUNTING_FAIL", "vis")
    code = main(["--plugin", str(PLUGIN), "benchmark", str(cfg), "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 1 and "2 cell(s) failed" in text and "planted failure in vis" in text
    failed = sorted(out.glob("cells/*/failed.json"))
    assert len(failed) == 2 and all("RuntimeError" in (p.parent / "error.txt").read_text() for p in failed)
    assert {m for m, _ in _values(out)} == {"ir", "average"}
    assert not (out / "report.html").exists()   # no report while cells are missing
    monkeypatch.delenv("COUNTING_FAIL")
    assert main(["--plugin", str(PLUGIN), "benchmark", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert "computed 2 cell(s), 4 already done" in capsys.readouterr().out
    assert not list(out.glob("cells/*/failed.json")) and (out / "report.html").is_file()


def test_fixed_protocol_trains_one_network_per_seed(synth_root, tmp_path):
    out = tmp_path / "run"
    runner = _runner(_config(tmp_path, synth_root, fixed="vis"), out)
    runner.execute(keep_going=False)
    refs = sorted(p.name for p in (out / "reference" / "boxcount").iterdir() if p.is_dir())
    assert [r.split("-")[:2] for r in refs] == [["vis", "s0"], ["vis", "s1"]]
    cells = [json.loads(p.read_text()) for p in out.glob("cells/*/cell.json")]
    assert {c["protocol"] for c in cells} == {f"fixed:vis@{runner.plan.tasks['boxcount'].protocol_id(runner.plan.protocols['boxcount'])}"}
    assert not list(out.glob("cells/*/work"))
    for seed in (0, 1):
        assert len({c["checkpoint"] for c in cells if c["seed"] == seed}) == 1

    given = tmp_path / "given"
    ckpt = json.loads(next((out / "reference" / "boxcount").glob("vis-s0-*/done.json")).read_text())["checkpoint"]
    runner = _runner(_config(tmp_path, synth_root, name="given", fixed_checkpoint={"boxcount": ckpt}), given)
    runner.execute(keep_going=False)
    rows = read_rows(given / "results.csv")
    assert {r.seed for r in rows} == {None} and {r.protocol.split("@")[0][:11] for r in rows} == {"fixed:ckpt-"}
    fixed = {(r.method, r.seed): r.value for r in read_rows(out / "results.csv")}
    assert {r.method: r.value for r in rows} == {m: fixed[(m, 0)] for m in ("ir", "vis", "average")}


def test_torchrun_every_process_trains_and_process_0_writes(synth_root, tmp_path):
    cfg = _config(tmp_path, synth_root, methods=("vis", "average"), seeds=(0,))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "taskeval.cli.main", "--plugin", str(PLUGIN), "benchmark", str(cfg), "--out",
                           str(out), "--no-report", "--quiet"], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = sorted(out.glob("cells/*/cell.json"))
    assert len(cells) == 2
    for c in cells:  # the task is distributed: both processes trained, process 0 evaluated and wrote
        assert sorted(p.name for p in (c.parent / "work").iterdir()) == ["model-rank0.json", "model-rank1.json"]
        assert json.loads((c.parent / "work" / "model-rank1.json").read_text())["world"] == 2
    assert len(read_rows(out / "results.csv")) == 2
    assert (out / "taskeval.log").is_file() and len(list(out.glob("provenance*.json"))) == 1


def test_provenance_names_the_cpu_its_float_path_and_the_threads(synth_root, tmp_path, monkeypatch):
    """Results differ between CPUs (SIMD kernels) and thread counts: every run records both."""
    import torch

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # recorded as set; this process already chose its kernels
    out = tmp_path / "run"
    assert main(["--plugin", str(PLUGIN), "benchmark", str(_config(tmp_path, synth_root, seeds=(0,))), "--out",
                 str(out), "--quiet", "--no-report", "--threads", "1"]) == 0
    hw = json.loads((out / "provenance.json").read_text())["hardware"]
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    if model is not None:
        assert hw["cpu_model"] == model
    assert hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert hw["aten_cpu_capability_env"] == "default" and hw["torch_threads"] == 1
