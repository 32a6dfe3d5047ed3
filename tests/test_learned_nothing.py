"""The learned-nothing guard (taskeval.reporting.guard) and the tasks' chance levels: a table whose every cell
scores no better than a network that learned nothing carries a warning on top and no best / second-best
mark, and the report says so in its summary and above its results; one cell above chance is enough to rank."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
from hand_runs import DET_PROTOCOL, SEG_PROTOCOL, add_detection, seg_run

from taskeval.errors import DataError
from taskeval.reporting import guard
from taskeval.reporting.report import render_html
from taskeval.reporting.run import RunData
from taskeval.reporting.tables import run_tables, to_latex, to_markdown, to_rich
from taskeval.tasks import get_task

SEG, DET = get_task("segmentation"), get_task("detection")


def write_confmats(d, cms, classes=None):
    d.mkdir(parents=True, exist_ok=True)
    cms = np.asarray(cms, np.int64)
    np.savez_compressed(d / "per_image_confmat.npz", ids=np.array([f"i{k}" for k in range(len(cms))]),
                        confmat=cms)
    if classes:
        (d / "scores.json").write_text(json.dumps({"classes": list(classes)}))
    return d


def test_segmentation_chance_level_by_hand(tmp_path):
    # ground truth 60 / 30 / 10 pixels over two images (rows = ground truth; predictions do not matter):
    # 'road' everywhere has IoU 60/100, the two other classes 0 -> mIoU (0.6 + 0 + 0) / 3
    a = [[20, 5, 5], [0, 10, 0], [0, 0, 0]]
    b = [[30, 0, 0], [10, 10, 0], [5, 0, 5]]
    level = SEG.chance_level(write_confmats(tmp_path / "c1", [a, b], ["road", "car", "sign"]))
    assert level.metric == "mIoU" and level.value == pytest.approx(0.6 / 3) and level.margin == 0.05
    assert level.threshold == pytest.approx(0.25)
    assert "'road'" in level.what and "60.0%" in level.what
    # a class absent from the ground truth (and so from the constant prediction) is left out: 2 classes
    level = SEG.chance_level(write_confmats(tmp_path / "c2", [[[40, 0, 0], [20, 0, 0], [0, 0, 0]]]))
    assert level.value == pytest.approx((40 / 60) / 2) and "class 0" in level.what
    # the majority need not be class 0
    level = SEG.chance_level(write_confmats(tmp_path / "c3", [[[1, 0], [0, 9]]]))
    assert level.value == pytest.approx(0.9 / 2) and "class 1" in level.what
    with pytest.raises(DataError, match="no labelled pixel"):
        SEG.chance_level(write_confmats(tmp_path / "c4", [[[0, 0], [0, 0]]]))
    with pytest.raises(DataError, match="per_image_confmat.npz"):
        SEG.chance_level(tmp_path / "nothing")


def test_detection_chance_level_is_a_floor(tmp_path):
    level = DET.chance_level(tmp_path)
    assert (level.metric, level.value, level.threshold) == ("mAP50", 0.0, 0.05)
    assert DET.spec.headline_metric == level.metric and SEG.spec.headline_metric == "mIoU"


def test_fires_when_every_segmenter_is_at_chance(tmp_path):
    # skill 0 predicts 'unlabeled' everywhere (exactly the chance level), 0.05 a few pixels more
    run = seg_run(tmp_path, {"ir": [0.0, 0.05], "vis": [0.05, 0.0], "average": [0.02, 0.03]})
    data = RunData.open(run)
    v = guard.verdict(data, "segmentation", "msrs", SEG_PROTOCOL)
    assert v.fired and v.n_cells == 6 and v.low == pytest.approx(v.chance.value)
    assert v.high <= v.chance.threshold
    tables = dict(run_tables(data))
    for name in ("summary", "segmentation_per_class"):
        t = tables[name]
        assert t.warning.startswith(guard.HEADLINE)
        assert "predicting the majority class 'unlabeled'" in t.warning
        assert all(set(t.ranks(j).values()) == {0} for j in range(len(t.columns)))
        assert "No best or second best marked" in t.caption and "Best in bold" not in t.caption
        md = to_markdown(t)
        assert md.splitlines()[2].startswith("> **Warning:** The protocol did not train")
        assert "**" not in "\n".join(md.splitlines()[4:]) and "<u>" not in md
        assert r"\textbf" not in to_latex(t) and r"\underline" not in to_latex(t)
        assert "Warning: The protocol did not train" in str(to_rich(t).title)
    page = html.unescape(render_html(run, figures=[]))
    summary = page[page.index('<section id="summary">'):page.index('<section id="results">')]
    results = page[page.index('<section id="results">'):]
    assert "did not train the task network on this data: these rows do not rank" in summary
    assert results.index('<p class="warning">') < results.index("<table>")
    assert 'class="best"' not in results and 'class="second"' not in results


def test_one_method_above_chance_is_enough_to_rank(tmp_path):
    run = seg_run(tmp_path, {"ir": [0.0], "vis": [0.0], "good": [0.9]})
    data = RunData.open(run)
    v = guard.verdict(data, "segmentation", "msrs", SEG_PROTOCOL)
    assert v is not None and not v.fired and v.high > v.chance.threshold
    t = dict(run_tables(data))["segmentation_per_class"]
    miou = next(j for j, c in enumerate(t.columns) if c.metric == "mIoU")
    assert t.warning == "" and t.ranks(miou)["good"] == 1
    assert "Best in bold, second underlined." in t.caption
    assert "did not train the task network" not in render_html(run, figures=[])


def test_detection_floor_and_summary_marks_per_group(tmp_path):
    # segmentation learned something; detection scored at most 5% mAP50 everywhere: only its columns unmarked
    run = seg_run(tmp_path, {"ir": [0.5], "vis": [0.6], "average": [0.7]})
    add_detection(run, {"ir": [0.003], "vis": [0.05], "average": [0.0]})
    data = RunData.open(run)
    assert guard.verdict(data, "detection", "msrs", DET_PROTOCOL).fired
    assert not guard.verdict(data, "segmentation", "msrs", SEG_PROTOCOL).fired
    tables = dict(run_tables(data))
    s = tables["summary"]
    det = [j for j, c in enumerate(s.columns) if c.task == "detection"]
    seg = [j for j, c in enumerate(s.columns) if c.task == "segmentation"]
    assert det and seg and s.unmarked == frozenset(det)
    assert all(set(s.ranks(j).values()) == {0} for j in det) and all(1 in s.ranks(j).values() for j in seg)
    assert "except in the columns whose task networks learned nothing" in s.caption
    assert "mAP@.5 of msrs detection" in s.warning and "of msrs segmentation" not in s.warning
    assert tables["detection_per_class"].warning and not tables["segmentation_per_class"].warning
    # just above the floor: ranked
    run2 = seg_run(tmp_path / "b", {"ir": [0.5], "vis": [0.6]})
    add_detection(run2, {"ir": [0.003], "vis": [0.0501]})
    assert not guard.verdict(RunData.open(run2), "detection", "msrs", DET_PROTOCOL).fired


def test_undecided_without_artefacts_or_hook(tmp_path, caplog):
    run = seg_run(tmp_path, {"ir": [0.0], "vis": [0.0]})
    next((run / "cells").glob("*/per_image_confmat.npz")).unlink()
    data = RunData.open(run)
    assert guard.verdict(data, "segmentation", "msrs", SEG_PROTOCOL) is None
    assert "no learned-nothing guard for segmentation" in caplog.text
    assert dict(run_tables(data))["segmentation_per_class"].warning == ""
    # a task without a chance level (quality: nothing is trained) is never flagged
    assert get_task("quality").chance_level(tmp_path) is None
