"""Paper-style tables: marks (bold / underline) on printed values, ties, NaN, seeds, notes, renderers."""

import csv
import io
import math

import pytest

from taskeval.errors import ConfigError, DataError
from taskeval.reporting.tables import (class_table, class_tables, latex_escape, metrics_table, rank_values,
                                       summary_table, to_csv, to_latex, to_markdown, to_rich)
from taskeval.results import Row
from taskeval.tasks import get_task

NAN = float("nan")
DET, SEG = get_task("detection").spec, get_task("segmentation").spec
QUALITY = get_task("quality").run_spec({"metrics": ["EN", "MI", "Nabf"]})


def seg(method, cls, value, seed=0, metric="IoU", note="", dataset="MSRS", protocol="quick-1"):
    return Row(method, "segmentation", dataset, protocol, seed, metric, cls, value, note)


def test_rank_values_ties_nan_direction():
    assert rank_values([3, 3, 2, 1]) == [1, 1, 2, 0]
    assert rank_values([NAN, 1.0, 2.0]) == [0, 2, 1]
    assert rank_values([NAN, NAN]) == [0, 0]
    assert rank_values([5.0, NAN]) == [1, 0]
    assert rank_values([0.1, 0.2, 0.2, 0.3], higher_is_better=False) == [1, 2, 2, 0]


@pytest.fixture
def rows():
    """4 methods, classes (unlabeled, car, person), 3 seeds except one method with a single seed."""
    out = []
    for seed, d in ((0, 0.0), (1, 0.002), (2, -0.002)):
        out += [seg("vis", "unlabeled", 0.90 + d, seed), seg("vis", "car", 0.700 + d, seed),
                seg("vis", "person", 0.40 + d, seed), seg("vis", "", 0.60 + d, seed, "mIoU"),
                seg("ir", "unlabeled", 0.85 + d, seed), seg("ir", "car", 0.6004 + d, seed),
                seg("ir", "person", 0.55 + d, seed), seg("ir", "", 0.58 + d, seed, "mIoU"),
                seg("fuse_a", "unlabeled", 0.95 + d, seed, note="weights trained by taskeval (fusion loss)"),
                seg("fuse_a", "car", 0.5996 + d, seed, note="weights trained by taskeval (fusion loss)"),
                seg("fuse_a", "person", NAN, seed, note="weights trained by taskeval (fusion loss)"),
                seg("fuse_a", "", 0.70 + d, seed, "mIoU", note="weights trained by taskeval (fusion loss)")]
    out += [seg("one_seed", "unlabeled", 0.95, 0), seg("one_seed", "car", 0.65, 0), seg("one_seed", "", 0.62, 0, "mIoU")]
    return out


def test_marks_ties_nan_missing_and_seeds(rows):
    t = class_table(rows, SEG, "MSRS", "quick-1", methods=["one_seed", "fuse_a"])
    assert t.methods == ["ir", "vis", "one_seed", "fuse_a"]          # references first, then the given order
    assert [c.header for c in t.columns] == ["unlabeled", "car", "person", "mIoU"]
    marks = {c.header: t.ranks(j) for j, c in enumerate(t.columns)}
    # unlabeled: one_seed 95.0 and fuse_a 95.0 tie for best, vis 90.0 second
    assert marks["unlabeled"] == {"ir": 0, "vis": 2, "one_seed": 1, "fuse_a": 1}
    # car: vis 70.0 best, one_seed 65.0 second, ir 60.04 and fuse_a 59.96 both print 60.0 (unmarked)
    assert marks["car"] == {"ir": 0, "vis": 1, "one_seed": 2, "fuse_a": 0}
    # person: fuse_a NaN, one_seed missing: neither is marked
    assert marks["person"] == {"ir": 1, "vis": 2, "one_seed": 0, "fuse_a": 0}
    assert t.value_text("fuse_a", 2) == "n/a" and t.value_text("one_seed", 2) == "–"
    # several seeds: mean ± sample std; one seed: the mean alone
    assert t.value_text("vis", 1) == "70.0 ± 0.2" and t.value_text("one_seed", 1) == "65.0"
    assert t.value_text("ir", 1) == "60.0 ± 0.2" and t.value_text("fuse_a", 1) == "60.0 ± 0.2"
    # the note becomes a marker and a footnote; a method with fewer seeds gets one too
    assert t.markers("fuse_a") == "‡" and t.markers("one_seed") == "†"
    assert dict(t.footnotes) == {"†": "1 of 3 seeds", "‡": "weights trained by taskeval (fusion loss)"}
    assert "3 classes: unlabeled, car, person" in t.caption and "over 3 training seeds" in t.caption
    assert t.caption.startswith(SEG.caption)
    t1 = class_table(rows, SEG, "MSRS", "quick-1", show_std=False)
    assert t1.value_text("vis", 1) == "70.0"


def test_rich_styles(rows):
    t = class_table(rows, SEG, "MSRS", "quick-1")
    rt = to_rich(t)
    car = [cell for cell in rt.columns[2]._cells]
    styles = dict(zip(t.methods, (str(c.style) for c in car)))
    assert styles == {"ir": "", "vis": "bold", "fuse_a": "", "one_seed": "underline"}
    assert rt.rows[1].end_section and not rt.rows[0].end_section  # rule under the reference rows


def test_markdown_exact():
    rows = [seg("vis", "car", 0.5, metric="IoU"), seg("vis", "", 0.25, metric="mIoU"),
            seg("ir", "car", 0.4, metric="IoU"), seg("ir", "", 0.3, metric="mIoU"),
            seg("my_net", "car", 0.61, metric="IoU", note="official weights"),
            seg("my_net", "", 0.2, metric="mIoU", note="official weights")]
    t = class_table(rows, SEG, "MSRS", "quick-1")
    t.caption = "Caption."
    t.add_notes(["Plain | note."])
    assert to_markdown(t) == (
        "**MSRS segmentation**\n"
        "\n"
        "| Method | car | mIoU |\n"
        "|:--|--:|--:|\n"
        "| IR | 40.0 | **30.0** |\n"
        "| VI | <u>50.0</u> | <u>25.0</u> |\n"
        "| my\\_net† | **61.0** | 20.0 |\n"
        "\n"
        "Caption.\n"
        "- † official weights\n"
        "- Plain \\| note.\n")


def test_latex_escaping_and_marks():
    assert latex_escape(r"a_b&c%d$e#f{g}~^\x") == (r"a\_b\&c\%d\$e\#f\{g\}\textasciitilde{}\textasciicircum{}"
                                                    r"\textbackslash{}x")
    rows = [seg("vis", "car_stop", 0.5), seg("ir", "car_stop", 0.4), seg("A&B_v2", "car_stop", 0.6, note="50% data")]
    tex = to_latex(class_table(rows, SEG, "MSRS", "quick-1"), label="tab:seg")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\label{tab:seg}" in tex
    assert r"Method & car\_stop \\" in tex
    assert r"A\&B\_v2\textsuperscript{\dag{}} & \textbf{60.0} \\" in tex
    assert r"VI & \underline{50.0} \\" + "\n" + r"\midrule" in tex
    assert r"\textsuperscript{\dag{}}~50\% data" in tex
    assert "_v2" not in tex.replace(r"\_v2", "")  # no unescaped underscore left


def test_csv_plain_numbers(rows):
    t = class_table(rows, SEG, "MSRS", "quick-1")
    got = list(csv.DictReader(io.StringIO(to_csv(t))))
    by = {r["method"]: r for r in got}
    assert [r["method"] for r in got] == t.methods
    assert float(by["vis"]["car"]) == pytest.approx(70.0) and float(by["vis"]["car std"]) == pytest.approx(0.2)
    assert by["one_seed"]["car std"] == "" and by["one_seed"]["seeds"] == "1" and by["one_seed"]["person"] == ""
    assert by["fuse_a"]["person"] == "" and by["fuse_a"]["note"] == "weights trained by taskeval (fusion loss)"


def test_fractions_checked_and_quality_printed_as_is():
    with pytest.raises(DataError, match="fractions"):
        class_table([seg("vis", "car", 81.0)], SEG, "MSRS", "quick-1")
    with pytest.raises(ConfigError, match="no rows for method"):
        class_table([seg("vis", "car", 0.8)], SEG, "MSRS", "quick-1", methods=["nope"])
    q = [Row(m, "quality", "MSRS", "-", None, metric, "", v) for m, metric, v in
         [("ir", "EN", 6.5), ("vis", "EN", 7.25), ("avg", "EN", 7.0),
          ("ir", "Nabf", 0.02), ("vis", "Nabf", 0.05), ("avg", "Nabf", 0.01)]]
    t = metrics_table(q, QUALITY)
    assert [c.header for c in t.columns] == ["EN↑", "Nabf↓"]
    assert t.value_text("vis", 0) == "7.250"
    assert t.ranks(0) == {"ir": 0, "vis": 1, "avg": 2} and t.ranks(1) == {"ir": 2, "vis": 0, "avg": 1}


def test_detection_table_and_summary(rows):
    det = []
    for m, ap in (("ir", 0.7), ("vis", 0.8), ("fuse_a", 0.85)):
        det += [Row(m, "detection", "M3FD", "quick-d", 0, "AP50", "People", ap),
                Row(m, "detection", "M3FD", "quick-d", 0, "mAP50", "", ap - 0.1),
                Row(m, "detection", "M3FD", "quick-d", 0, "mAP50_95", "", ap - 0.4),
                Row(m, "detection", "M3FD", "fixed:vis", None, "mAP50", "", ap - 0.2)]
    tables = class_tables(rows + det, {"segmentation": SEG, "detection": DET})
    assert [(t.columns[0].task, t.columns[0].protocol) for t in tables] == [
        ("segmentation", "quick-1"), ("detection", "quick-d"), ("detection", "fixed:vis")]
    assert [c.header for c in tables[1].columns] == ["People", "mAP@.5", "mAP@.5:.95"]
    assert tables[1].value_text("fuse_a", 1) == "75.0" and "one fixed task network" in tables[2].caption
    quality = [Row("vis", "quality", "MSRS", "-", None, "EN", "", 7.0),
               Row("only_mi", "quality", "MSRS", "-", None, "MI", "", 2.0)]
    specs = {"segmentation": SEG, "detection": DET,
             "quality": get_task("quality").run_spec({"metrics": ["EN", "MI"]})}
    s = summary_table(rows + det + quality, specs, methods=["fuse_a", "only_mi", "one_seed"])
    assert s.methods == ["ir", "vis", "fuse_a", "one_seed"]  # only_mi has no summary column: skipped
    assert [c.header for c in s.columns] == ["mIoU", "mAP@.5 (quick-d)", "mAP@.5:.95", "mAP@.5 (fixed:vis)", "EN↑"]
    assert s.value_text("one_seed", 1) == "–" and s.value_text("fuse_a", 1) == "75.0"
    assert math.isnan(s.printed_mean("ir", 4))
