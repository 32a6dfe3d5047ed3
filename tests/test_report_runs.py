"""``taskeval report RUN`` on the run folders of each command (detect, segment, benchmark, joint: one results
store, hand-made here), failed cells, task specs from ``RUN/tasks.json`` or the registry, and runs made
before the store."""

from __future__ import annotations

import html
import json
import re

import pytest
from test_figures import PROTOCOL, make_fake_run
from test_report import embedded_pngs

from taskeval.cli.main import main
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import DataError
from taskeval.results import Row, rows_to_csv
from taskeval.tasks import get_task

JOINT = {"ir": None, "vis": None, "avg": "seafusion@fusion-only", "best": "seafusion@joint-seg"}
# command -> (tasks of its run, method names, figures drawn, tasks with paired comparisons)
COMMANDS = {
    "detect": (("detection",), None, ["detection_grid", "detection_per_class"], ["detection"]),
    "segment": (("segmentation",), None, ["segmentation_grid", "segmentation_per_class"], ["segmentation"]),
    "benchmark": (("detection", "segmentation", "quality"), None,
                  ["detection_grid", "segmentation_grid", "detection_per_class", "segmentation_per_class",
                   "radar"],
                  ["detection", "segmentation"]),
    "joint": (("segmentation",), JOINT, ["segmentation_grid", "segmentation_per_class"], []),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate(root, SynthConfig(n_train=4, n_test=3, height=64, width=80), progress=False)
    return root


def section(page: str, sid: str) -> str:
    return page[page.index(f'<section id="{sid}">'):].split("</section>", 1)[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_report_command_renders_every_kind_of_run(command, data, tmp_path, caplog):
    tasks, names, figures, compared = COMMANDS[command]
    run = make_fake_run(tmp_path, tasks, names, data)
    assert main(["report", str(run), "--n-scenes", "2"]) == 0
    page = html.unescape((run / "report.html").read_text())
    results = section(page, "results")
    # tables: the summary, then one per-class table per task with a per-class breakdown (quality: its metrics)
    titles = re.findall(r"<h3>(.*?)</h3>", results)
    assert titles == ["Summary"] + [f"synth {t}" for t in tasks], titles
    # figures: the grids of the tasks' label kinds, per-class bars, the radar chart where there are 3 axes
    assert re.findall(r'<figure id="fig-(\w+)">', page) == figures
    assert len(embedded_pngs(page)) == len(figures)
    assert sorted(p.stem for p in (run / "figures").glob("*.png")) == sorted(figures)
    # paired comparisons against the best single-modality row, as footnotes of their task's table
    for task in tasks:
        headline = get_task(task).spec.headline_metric
        notes = re.findall(rf"<li>(\S+) vs vis: Δ{headline} ", results)
        if task in compared:
            assert notes == [m for m in ("ir", "avg", "best")], (task, notes)
            assert (run / "stats" / f"{task}_vs_reference.json").is_file()
        else:
            assert notes == [] and not (run / "stats" / f"{task}_vs_reference.json").exists()
    if command == "joint":  # no single-modality rows to compare with: said in the log, not on the page
        assert "no paired comparison for segmentation" in caplog.text
        assert "seafusion@joint-seg" in results and "<td>IR</td>" not in results
    for task in tasks:
        assert f"<h3>Task {task}</h3>" in section(page, "definitions")


def test_failed_cells_are_listed_never_read(data, tmp_path):
    from taskeval.reporting.report import render_html
    from taskeval.reporting.run import RunData

    run = make_fake_run(tmp_path, ("detection",), None, data)
    failed = run / "cells" / "detection__bad__s0__0000dead"
    failed.mkdir()
    (failed / "cell.json").write_text(json.dumps({
        "method": "bad", "task": "detection", "dataset": "synth", "protocol": PROTOCOL["detection"],
        "seed": 0, "id": failed.name, "status": "failed"}))
    oom = "RuntimeError: CUDA out of memory"
    (failed / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{oom}\n\n")
    (failed / "rows.csv").write_text(rows_to_csv([Row("bad", "detection", "synth", PROTOCOL["detection"], 0,
                                                      "mAP50", "", 0.99)]))  # a stale file: never read
    data_ = RunData.open(run)
    assert [f.method for f in data_.failed] == ["bad"] and data_.failed[0].error == oom
    assert "bad" not in data_.method_order and all(r.method != "bad" for r in data_.rows)
    page = html.unescape(render_html(run, figures=[]))
    note = page[page.index('id="failed-cells"'):].split("</div>", 1)[0]
    assert "<b>bad</b>, detection" in note and oom in note
    assert "<td>bad</td>" not in section(page, "results")
    assert "<td>failed</td>" in section(page, "provenance")


def test_run_before_the_store_is_refused_with_how_to_convert(tmp_path, capsys):
    run = tmp_path / "seg-run"
    cell = run / "cells" / "avg" / "quick-1a2b3c" / "seed0"
    cell.mkdir(parents=True)
    row = Row("avg", "segmentation", "msrs", "quick-1a2b3c", 0, "mIoU", "", 0.5)
    (cell / "rows.csv").write_text(rows_to_csv([row]))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "before the results store" in err and "--resume" in err and str(run) in err
    assert not (run / "report.html").exists()


def test_task_specs_from_tasks_json_win_over_the_registry(data, tmp_path):
    from taskeval.reporting.run import RunData

    run = make_fake_run(tmp_path, ("quality",), None, data)
    assert RunData.open(run).spec("quality").headline == ("EN", "VIF", "AG")  # registry: rows' metrics
    spec = get_task("quality").run_spec({"metrics": ["AG", "EN", "VIF"]})
    (run / "tasks.json").write_text(json.dumps({"quality": spec.to_dict()}))
    assert RunData.open(run).specs == {"quality": spec}
    (run / "tasks.json").write_text(json.dumps({"quality": {**spec.to_dict(), "headline": ["nope"]}}))
    with pytest.raises(DataError, match="tasks.json: the spec of task 'quality' is not valid"):
        RunData.open(run)


def test_unknown_task_is_an_error_naming_it(data, tmp_path):
    from taskeval.reporting.run import RunData
    from taskeval.store import Cell, ResultsStore

    run = make_fake_run(tmp_path, ("quality",), None, data)
    ResultsStore(run).finish(Cell("avg", "counting", "synth", "-", None),
                             [Row("avg", "counting", "synth", "-", None, "mae", "", 1.5)])
    with pytest.raises(DataError, match="task 'counting' of its cells is neither in .*tasks.json nor "
                                        "registered"):
        RunData.open(run)


def test_joint_run_shows_the_paired_comparison_with_the_fusion_only_baseline(data, tmp_path):
    """The report of a ``taskeval joint`` experiment renders ``stats/joint.json`` as the command writes it:
    per seed the paired bootstrap of (joint - fusion-only), mean over seeds, per class, fusion updates."""
    from taskeval.joint_experiment import compare, experiment_from_mapping, fusion_updates
    from taskeval.reporting.run import RunData
    from taskeval.rundir import atomic_write_json

    # the baseline gets 2 of the 3 test images right (as vis does in the fake run), the joint arm all of them
    names = {"ir": None, "vis": "seafusion@fusion-only", "avg": None, "best": "seafusion@joint-seg"}
    run = make_fake_run(tmp_path, ("segmentation",), names, data)
    exp = experiment_from_mapping({"fusion": "seafusion", "seg": {"schedule": "alternating"}, "n_boot": 50})
    rd = RunData.open(run)
    records = compare(run, exp, rd.rows, rd.spec)
    updates = {"seg": fusion_updates(exp.seg, 4)}
    atomic_write_json(run / "stats" / "joint.json", {"records": records, "fusion_updates": updates})
    assert main(["report", str(run), "--n-scenes", "2"]) == 0
    page = html.unescape((run / "report.html").read_text())
    joint = section(page, "joint")
    (rec,) = records
    assert rec["method"] == "seafusion@joint-seg" and rec["reference"] == "seafusion@fusion-only"
    assert rec["mean"] > 0 and rec["per_seed"][0]["low"] <= rec["mean"] <= rec["per_seed"][0]["high"]
    assert "<h3>segmentation: seafusion@joint-seg − seafusion@fusion-only</h3>" in joint
    assert f"<td>0</td><td>{100 * rec['mean']:+.1f} pp</td>" in joint
    assert f"[{100 * rec['per_seed'][0]['low']:+.1f}, {100 * rec['per_seed'][0]['high']:+.1f}]" in joint
    assert "joint-seg: 6 updates / 24 images; fusion-only: 6 / 24" in joint
    assert f"{rec['per_class'][0]['class']} {100 * rec['per_class'][0]['mean']:+.1f}" in joint
    # any other run has no such section
    (tmp_path / "other").mkdir()
    other = make_fake_run(tmp_path / "other", ("segmentation",), None, data)
    assert main(["report", str(other), "--n-scenes", "2"]) == 0
    assert '<section id="joint">' not in (other / "report.html").read_text()
