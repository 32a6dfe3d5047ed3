"""Published results beside measured ones (taskeval.reporting.published): a separate, never-marked row group
in every renderer and a "Measured vs published" report section, for runs whose dataset and class list match;
statistics (cells, seeds, ranks, comparisons) identical with and without them; the acceptance run of
``msrs-seg`` on the MSRS fixture."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from hand_runs import SEG_PROTOCOL, TEST_DIGEST, masks, predictions, seg_run

from taskeval.cli.main import main
from taskeval.data import load_card
from taskeval.published import published_rows
from taskeval.reporting import published as P
from taskeval.reporting.report import render_html, table_html
from taskeval.reporting.run import RunData
from taskeval.reporting.tables import run_tables, to_csv, to_latex, to_markdown, to_rich

MSRS = load_card("msrs").seg_classes
# measured skills per seed: every method well above chance, below the published numbers
SKILLS = {"ir": [0.5, 0.55], "vis": [0.6, 0.62], "average": [0.7, 0.68], "cddfuse": [0.8, 0.75]}
LABELS = [f"{m} (CDDFuse paper, CVPR 2023)" for m in ("VI", "IR", "TarDAL", "CDDFuse")] + \
    ["EMMA (EMMA paper, CVPR 2024)"]


def section(page: str, sid: str) -> str:
    return page[page.index(f'<section id="{sid}">'):].split("</section>", 1)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return seg_run(tmp_path_factory.mktemp("published"), SKILLS,
                   notes={"cddfuse": "weights trained by taskeval"})


def seg_table(run_dir, published=True):
    tables = dict(run_tables(RunData.open(run_dir), published=published))
    return tables["summary"], tables["segmentation_per_class"]


def test_published_rows_in_every_renderer_never_marked(run):
    summary, t = seg_table(run)
    assert [line.label for line in t.published] == LABELS
    col = {c.header: j for j, c in enumerate(t.columns)}
    ir, emma = t.published[1], t.published[4]
    # values of data/published/results.yaml (CDDFuse paper: IR 84.7 ... 48.4, mIoU 51.7; EMMA: headline only)
    assert [t.published_text(ir, col[c]) for c in MSRS] == ["84.7", "67.8", "56.4", "51.8", "34.6", "39.3",
                                                              "42.2", "40.2", "48.4"]
    assert t.published_text(ir, col["mIoU"]) == "51.7" and t.published_text(ir, col["mIoU_nobg"]) == "–"
    assert t.published_text(emma, col["mIoU"]) == "63.7" and t.published_text(emma, col["unlabeled"]) == "–"
    notes = [text for _, text in t.footnotes]
    assert any(n.startswith("Published (other protocol): CDDFuse paper, CVPR 2023:")
               and "Never marked, ranked" in n for n in notes)
    # the summary shows none, and says where they are
    assert not summary.published
    assert any("Published results of msrs segmentation" in text for _, text in summary.footnotes)

    md = to_markdown(t).splitlines()
    start = md.index("| *published (other protocol)* |" + " |" * len(t.columns))
    assert md[start - 1].startswith("| cddfuse")
    assert [ln.split(" | ")[0][2:] for ln in md[start + 1:start + 6]] == LABELS
    assert not any("**" in ln or "<u>" in ln for ln in md[start:start + 6])
    assert any("**" in ln for ln in md[:start])  # the measured rows keep their marks

    tex = to_latex(t).splitlines()
    start = tex.index(r"\multicolumn{13}{l}{\textit{published (other protocol)}} \\")
    assert tex[start - 1] == r"\midrule"
    assert tex[start + 1].startswith(r"VI (CDDFuse paper, CVPR 2023) & 90.5 &")
    assert not any(r"\textbf" in ln or r"\underline" in ln for ln in tex[start:start + 6])

    rows = list(csv.DictReader(io.StringIO(to_csv(t))))
    pub = [r for r in rows if r["group"] == P.GROUP]
    assert [r["label"] for r in pub] == LABELS and {r["seeds"] for r in pub} == {""}
    assert float(pub[1]["unlabeled"]) == 84.7 and pub[1]["unlabeled std"] == "" and pub[4]["car"] == ""
    assert [r["method"] for r in rows if r["group"] == "measured"] == t.methods

    rich = to_rich(t)
    assert rich.row_count == len(t.methods) + 1 + len(LABELS)
    assert rich.rows[len(t.methods) - 1].end_section  # a rule between measured and published rows
    first = rich.columns[0]._cells
    assert str(first[len(t.methods)]) == P.GROUP
    below = range(len(t.methods) + 1, rich.row_count)
    styles = {str(c._cells[k].style) for c in rich.columns[1:] for k in below}
    assert styles == {"italic"}

    page = table_html(t)
    body = page[page.index('<tbody class="published">'):page.index("</table>")]
    assert body.count("<tr>") == 1 + len(LABELS)
    assert 'class="best"' not in body and 'class="second"' not in body
    assert 'class="best"' in page[:page.index('<tbody class="published">')]


def test_statistics_are_the_same_without_published_rows(run, tmp_path):
    s_with, t_with = seg_table(run, True)
    s_without, t_without = seg_table(run, False)
    assert not t_without.published and t_with.published
    for a, b in ((s_with, s_without), (t_with, t_without)):
        assert a.methods == b.methods and a.cells == b.cells and a.notes == b.notes
        assert a.n_reference == b.n_reference and a.columns == b.columns
        assert [a.ranks(j) for j in range(len(a.columns))] == [b.ranks(j) for j in range(len(b.columns))]
        assert [f for f in a.footnotes if "ublished" not in f[1]] == b.footnotes
    # published IR/VI are far above the measured rows: were they ranked, no measured value would be bold
    assert 1 in t_with.ranks(0).values() and set(t_with.ranks(0)) == set(SKILLS)
    # comparisons: computed from the cells alone, the same file either way, no published method in it
    render_html(run, figures=[], published=True)
    saved = (run / "stats" / "segmentation_vs_reference.json").read_text()
    render_html(run, figures=[], published=False)
    assert (run / "stats" / "segmentation_vs_reference.json").read_text() == saved
    compared = {c["method"] for rec in json.loads(saved) for c in rec["comparisons"]}
    assert compared == {"ir", "average", "cddfuse"}  # against vis, the best single-modality row


def test_names_match_case_insensitively_and_by_alias():
    rows = {r.method: r for r in published_rows("msrs", "segmentation", MSRS)}
    assert P.same_method("cddfuse", rows["cddfuse"]) and P.same_method("CDDFuse", rows["cddfuse"])
    assert all(P.same_method(m, rows["ir"]) for m in ("ir", "IR", "infrared"))
    assert all(P.same_method(m, rows["vis"]) for m in ("vis", "VI", "visible"))
    assert P.same_method("TarDAL", rows["tardal"]) and not P.same_method("tardal+", rows["tardal"])
    assert not P.same_method("vis", rows["ir"]) and not P.same_method("seafusion", rows["cddfuse"])
    assert not any(P.same_method("average", r) for r in rows.values())
    # a paper printing "Visible" under another method name still meets a measured "VI" (aliases of vis)
    other = replace(rows["vis"], method="visible_image", label="Visible")
    assert P.same_method("VI", other) and P.same_method("vi", other) and not P.same_method("ir", other)


def measured_miou(skills):
    """mIoU per seed, computed here from the same predictions (IoU = tp / (gt + pred - tp), NaN left out)."""
    k = len(MSRS)
    gts = masks(k=k)
    out = []
    for seed, skill in enumerate(skills):
        cm = np.zeros((k, k))
        for g, p in zip(gts, predictions(gts, skill, seed)):
            np.add.at(cm, (g.ravel(), p.ravel()), 1)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        out.append(np.nanmean(np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)))
    return np.array(out)


def test_measured_vs_published_section(run):
    page = html.unescape(render_html(run, figures=[]))
    sec = section(page, "published")
    assert "<h2>Measured vs published</h2>" in sec
    assert f"msrs segmentation, protocol <code>{SEG_PROTOCOL}</code>" in sec
    cells = re.findall(r"<tr><td>(\w+)</td><td>mIoU</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                       r"<td>([^<]*)</td></tr>", sec)
    assert [c[0] for c in cells] == ["ir", "vis", "cddfuse"]  # average is in no published table
    published = {"ir": 51.7, "vis": 55.4, "cddfuse": 64.3}
    for method, measured, pub, delta, source in cells:
        values = 100 * measured_miou(SKILLS[method])
        assert measured == f"{values.mean():.1f} ± {values.std(ddof=1):.1f} (2 seeds)"
        assert float(pub) == published[method]
        assert delta == f"{values.mean() - published[method]:+.1f}"
        assert source.endswith("(CDDFuse paper, CVPR 2023)")
    # the protocols, both sides; the note of a method trained here; the split with its digest
    assert f"protocol <code>{SEG_PROTOCOL}</code> (its fields under Protocols), mean ± sd over 2 seeds" in sec
    assert f"test split 'test' (files:{TEST_DIGEST[:8]})" in sec
    assert "MSRS's official split (train 1083 / test 361)" in sec and "not paired comparisons" in sec
    assert "cddfuse: weights trained by taskeval" in sec
    assert "EMMA paper" not in sec  # no measured emma: its table is not described
    # the table captions name the split and its digest
    assert page.count(f"Test split: 'test' (files:{TEST_DIGEST[:8]}).") == 2


def test_report_command_leaves_published_out_on_request(run, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out), "--no-published", "--n-scenes", "1"]) == 0
    page = out.read_text()
    assert "published (other protocol)" not in page and 'id="published"' not in page
    assert "CDDFuse paper" not in page


def test_class_list_or_dataset_that_does_not_match(tmp_path):
    # the run's manifest says 8 classes: the published 9-class table is refused, and the report says why
    run = seg_run(tmp_path / "a", {"ir": [0.5], "vis": [0.6]}, manifest_classes=MSRS[:8])
    _, t = seg_table(run)
    assert not t.published
    page = html.unescape(render_html(run, figures=[]))
    assert "published msrs segmentation results not shown" in page and "bump" in page
    assert "published (other protocol)" not in section(page, "results")
    # no dataset.json and no manifest: the class list is unknown, nothing is shown, the reason is given
    run = seg_run(tmp_path / "b", {"ir": [0.5], "vis": [0.6]}, card=None)
    (run / "inputs" / f"{TEST_DIGEST}.json").unlink()
    pub = P.published_for(RunData.open(run), RunData.open(run).spec("segmentation"), "msrs", SEG_PROTOCOL)
    assert pub.rows == () and "records no class list" in pub.reason
    # a dataset with nothing published: no rows, no section, no reason; the caption names its split file
    run = seg_run(tmp_path / "c", {"ir": [0.5], "vis": [0.6]}, card="msrs_sample", dataset="msrs_sample")
    summary, t = seg_table(run)
    assert not t.published and 'id="published"' not in render_html(run, figures=[])
    split = f"Test split: 'test' (split file splits/msrs_sample_test.txt, files:{TEST_DIGEST[:8]})."
    assert split in t.caption and split in summary.caption


def test_acceptance_msrs_seg_on_the_fixture_shows_published_rows(tmp_path):
    """A real ``taskeval benchmark msrs-seg`` on the MSRS fixture (1 epoch: learns nothing) and its report
    (about 9 s on a loaded 2-core machine: fusion, 3 trainings on 4 images of 48x64, figures, report)."""
    root = tmp_path / "msrs"
    assert main(["data", "fixture", "--format", "msrs", "--out", str(root)]) == 0
    out = tmp_path / "run"
    assert main(["benchmark", "msrs-seg", "--out", str(out), "--root", str(root), "--threads", "1", "--quiet",
                 "methods=ir,vis,average", "seeds=0", "seg_protocol=quick", "seg.epochs=1",
                 "seg.crop_size=48,64", "seg.batch=2"]) == 0
    page = html.unescape((out / "report.html").read_text())
    results = section(page, "results")
    body = results[results.index('<tbody class="published">'):]
    body = body[:body.index("</tbody>")]
    assert [re.sub(r"<.*?>", "", r) for r in re.findall(r"<tr><td>(.*?)</td>", body)] == LABELS
    assert 'class="best"' not in body
    # one epoch on 4 images learns nothing: said on top, nothing marked, published rows still shown
    assert "The protocol did not train the task network on this data" in section(page, "summary")
    assert results.index("did not train the task network") < results.index("<table>")
    assert 'class="best"' not in results and 'class="second"' not in results
    sec = section(page, "published")
    assert re.findall(r"<tr><td>(\w+)</td><td>mIoU</td>", sec) == ["ir", "vis"]
    assert "say nothing about the methods" in sec
    md = (out / "tables" / "segmentation_per_class.md").read_text()
    assert "| *published (other protocol)* |" in md and "> **Warning:** The protocol did not train" in md
    assert re.search(r"Test split: 'test' \(files:[0-9a-f]{8}\)\.", md)
    saved = json.loads((out / "stats" / "segmentation_vs_reference.json").read_text())
    compared = {c["method"] for rec in saved for c in rec["comparisons"]}
    assert compared <= {"ir", "vis", "average"}
