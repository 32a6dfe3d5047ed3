"""``taskeval benchmark``: every cell once, interrupt and resume, adding a method, shards, changed inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from taskeval.benchmark import load_benchmark_config
from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import ConfigError, TaskevalError
from taskeval.results import read_rows
from taskeval.rundir import RunDir
from taskeval.runner import Plan, Runner
from taskeval.tasks import Execution

TINY = SynthConfig(n_train=8, n_test=4, height=64, width=80, objects_min=2, objects_max=3)
SEG = {"crop_size": [64, 80], "epochs": 1, "batch": 4}
DET = {"imgsz": 64, "epochs": 1, "batch": 4}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "synth"
    generate(root, TINY, progress=False)
    return root


def _folder_method(synth_root, dest, modality):
    """A folder of 'fused' images, one sub-folder per split (copies of one modality's images)."""
    card = load_card(synth_root / "card.yaml")
    for split in ("train", "test"):
        (dest / split).mkdir(parents=True)
        for r in PairedDataset(card, split).records:
            src = getattr(r, modality)
            shutil.copy(src, dest / split / f"{r.id}{src.suffix}")
    return dest


def _config(tmp_path, synth_root, methods, tasks, seeds, name="tiny", figures=None):
    cfg = {"name": name, "data": {"card": "synth", "root": str(synth_root),
                                  "synth": {k: getattr(TINY, k) for k in ("n_train", "n_test", "height", "width",
                                                                          "objects_min", "objects_max")}},
           "methods": methods, "tasks": tasks, "seeds": seeds, "seg": SEG, "det": DET,
           "quality_metrics": ["EN", "SD"], "device": "cpu", "figures": figures or {"n_scenes": 2}}
    path = tmp_path / f"{name}-{len(methods)}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


_REAL_RUN_CELL = Runner.run_cell


class _Count:
    """Spy on Runner.run_cell: counts computed cells and can interrupt the run at the k-th."""

    def __init__(self, monkeypatch, interrupt_at: int | None = None):
        self.cells, self.interrupt_at = [], interrupt_at
        real = _REAL_RUN_CELL

        def spy(runner, cell):
            if self.interrupt_at is not None and len(self.cells) + 1 == self.interrupt_at:
                raise KeyboardInterrupt
            real(runner, cell)
            self.cells.append(cell)

        monkeypatch.setattr(Runner, "run_cell", spy)


class _Bench:
    """The runner of one config in one run folder, as the benchmark command builds it."""

    def __init__(self, path, out, overrides):
        run = RunDir.create(out, "benchmark", resume=True)
        self.runner = Runner(Plan(load_benchmark_config(path, list(overrides)), run.path, progress=False),
                             Execution(state_dir=run.third_party_dir()))

    def cells(self):
        return self.runner.plan.cells()

    def execute(self):
        report = self.runner.execute(keep_going=False)
        return report.computed


def _run(path, out, overrides=()):
    return _Bench(path, out, overrides)


def test_interrupt_resume_add_method_and_changed_inputs(tmp_path, synth_root, monkeypatch):
    vis_folder = _folder_method(synth_root, tmp_path / "ext_vis", "vis")
    methods = ["ir", "average", {"name": "ext", "folder": str(vis_folder)}]
    path = _config(tmp_path, synth_root, methods, ["segmentation", "quality"], [0, 1])
    out = tmp_path / "run"
    bench = _run(path, out)
    cells = bench.cells()
    assert len(cells) == 3 * 2 + 3   # segmentation x seeds + quality once per method

    spy = _Count(monkeypatch, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        bench.execute()
    first = list(spy.cells)
    assert len(first) == 3
    assert sorted(p.name for p in (out / "cells").iterdir() if (p / "cell.json").is_file()) == \
        sorted(c.id for c in first)

    spy = _Count(monkeypatch)
    _run(path, out).execute()          # resumes: only the missing cells
    assert {c.id for c in spy.cells} == {c.id for c in cells} - {c.id for c in first}
    rows = read_rows(out / "results.csv")
    assert {(r.method, r.task, r.seed) for r in rows if r.metric in ("mIoU", "EN")} == \
        {(c.method, c.task, c.seed) for c in cells}
    before = (out / "results.csv").read_text()

    spy = _Count(monkeypatch)
    _run(path, out).execute()          # nothing left to do, nothing recomputed or rewritten differently
    assert spy.cells == [] and (out / "results.csv").read_text() == before

    more = _config(tmp_path, synth_root, methods + ["max"], ["segmentation", "quality"], [0, 1])
    spy = _Count(monkeypatch)
    _run(more, out).execute()          # adding a method computes only its cells
    assert {c.method for c in spy.cells} == {"max"} and len(spy.cells) == 3

    ir_folder = _folder_method(synth_root, tmp_path / "ext_ir", "ir")
    changed = _config(tmp_path, synth_root, ["ir", "average", {"name": "ext", "folder": str(ir_folder)}],
                      ["segmentation", "quality"], [0, 1], name="tiny")
    spy = _Count(monkeypatch)
    with pytest.raises(TaskevalError, match=r"other inputs") as err:
        _run(changed, out).execute()   # same method name, other images: never mixed silently
    assert spy.cells == []
    # the refusal names the method and the fused files that changed, not only two hashes
    ids = PairedDataset(load_card(synth_root / "card.yaml"), "test").ids
    assert f"ext: synth/test: {len(ids)} pair(s) changed: {ids[0]} (fused)" in str(err.value), str(err.value)


def test_cli_shards_merge_and_report(tmp_path, synth_root, capsys):
    ids = PairedDataset(load_card(synth_root / "card.yaml"), "test").ids
    figures = {"scenes": ids[:2], "insets": {ids[0]: [0, 0, 24, 20]}, "draw_gt": True, "radar": "rank"}
    path = _config(tmp_path, synth_root, ["ir", "vis", "average"], ["detection", "segmentation", "quality"], [0],
                   name="cli", figures=figures)
    out = tmp_path / "run"
    assert main(["benchmark", str(path), "--out", str(out), "--shard", "1/2", "--no-report", "--quiet"]) == 0
    half = [json.loads(p.read_text())["id"] for p in (out / "cells").glob("*/cell.json")]
    assert len(half) == 5              # 9 cells, every second one from the first
    assert main(["benchmark", str(path), "--out", str(out), "--shard", "2/2", "--no-report", "--quiet"]) == 0
    assert len(list((out / "cells").glob("*/cell.json"))) == 9
    capsys.readouterr()
    assert main(["benchmark", str(path), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "9 already done" in text and "computed 0 cell(s)" in text
    rows = read_rows(out / "results.csv")
    assert {r.method for r in rows} == {"ir", "vis", "average"}
    assert {r.task for r in rows} == {"detection", "segmentation", "quality"}
    assert (out / "report.html").is_file() and (out / "tables" / "detection_per_class.md").is_file()
    for fig in ("detection_grid", "segmentation_grid", "radar"):
        assert (out / "figures" / f"{fig}.png").is_file(), fig
    assert "…" not in text             # terminal tables are printed whole
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["name"] == "cli" and "versions" in json.dumps(prov)


def test_config_errors(tmp_path, synth_root):
    path = _config(tmp_path, synth_root, ["ir", "averag"], ["segmentation"], [0])
    with pytest.raises(TaskevalError, match="did you mean 'average'"):
        load_benchmark_config(path)
    with pytest.raises(ConfigError, match="unknown task"):
        load_benchmark_config(_config(tmp_path, synth_root, ["ir"], ["detektion"], [0], name="t"))
    with pytest.raises(ConfigError, match="listed twice"):
        load_benchmark_config(_config(tmp_path, synth_root, ["ir", "ir"], ["quality"], [0], name="u"))
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        load_benchmark_config("quik")


def test_quality_cells_gain_metrics_without_touching_others(tmp_path, synth_root, monkeypatch):
    path = _config(tmp_path, synth_root, ["ir", "average"], ["quality"], [0], name="q")
    out = tmp_path / "run"
    _run(path, out).execute()
    assert {r.metric for r in read_rows(out / "results.csv")} == {"EN", "SD"}
    spy = _Count(monkeypatch)
    _run(path, out, ["quality_metrics=EN,SD,AG"]).execute()   # a metric added: the quality cells are redone
    assert {c.method for c in spy.cells} == {"ir", "average"}
    rows = read_rows(out / "results.csv")
    assert {r.metric for r in rows} == {"EN", "SD", "AG"} and len(rows) == 6
    spy = _Count(monkeypatch)
    _run(path, out, ["quality_metrics=EN"]).execute()         # a subset: nothing to do
    assert spy.cells == []


def test_corrected_labels_are_not_mixed_with_old_cells(tmp_path, synth_root, monkeypatch):
    root = tmp_path / "synth"
    shutil.copytree(synth_root, root)
    path = _config(tmp_path, root, ["ir"], ["quality"], [0], name="labels")
    out = tmp_path / "run"
    _run(path, out).execute()
    label = sorted((root / "test" / "labels").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")   # a corrected annotation
    spy = _Count(monkeypatch)
    with pytest.raises(TaskevalError, match="other inputs"):
        _run(path, out).execute()
    assert spy.cells == []
