"""The HTML report of a benchmark run: self-contained, complete, never overwritten silently, and it renders
in a real browser (headless Chromium) with every figure loaded."""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from test_figures import AP50, NOTE, make_fake_run

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# appended to a copy of the report: records, once the page has loaded, what the browser decoded per image
IMG_PROBE = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "img-probe";
  out.textContent = JSON.stringify(
    [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(out); });</script>"""


@pytest.fixture(scope="module")
def run_and_report(tmp_path_factory) -> tuple[Path, Path]:
    from taskeval.reporting.report import render_report

    run = make_fake_run(tmp_path_factory.mktemp("report"))
    return run, render_report(run, n_scenes=2, draw_gt=True)


def embedded_pngs(page: str) -> list[bytes]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [base64.b64decode(m) for m in found]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the PNG header (independent of any decoder)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_is_self_contained(run_and_report):
    import cv2

    run, path = run_and_report
    assert path == run / "report.html"
    page = path.read_text()
    pngs = embedded_pngs(page)
    assert len(pngs) == len(re.findall(r"<img\b", page)) == 5  # det grid, seg grid, 2 bar charts, radar
    for data in pngs:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.std() > 10
    # nothing is fetched: every src/href is inline data or an anchor on the page; no scripts, no links
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page


def test_report_content(run_and_report):
    import taskeval.metrics.detection as det

    run, path = run_and_report
    page = html.unescape(path.read_text())
    prov = json.loads((run / "provenance.json").read_text())
    if prov["git"]:
        assert prov["git"]["commit"] in page
    assert "version: numpy" in page and prov["versions"]["numpy"] in page
    assert NOTE in page
    # detection: two seeds give v and v + 0.1 per class -> mean v + 0.05, sample std 0.1 / sqrt(2) = 7.1 %
    best = 100 * (np.mean(AP50["best"]) + 0.05)
    assert re.search(rf'<td>best</td><td class="best">{best:.1f} ± 7\.1</td>', page)
    # fusion quality (EN, AG, VIF: the quality task's metric order) of avg, which carries the training note
    # as a footnote marker
    assert re.search(r'<td>avg<sup>(.)</sup></td><td>6\.500</td><td>3\.000</td><td class="best">0\.900</td>',
                     page)
    assert re.search(r"<li>\S+ " + re.escape(NOTE) + "</li>", page)
    # definitions and protocols are on the page
    assert det.__doc__.strip().splitlines()[0] in page
    assert "quick-aaaaaa" in page and "quick-bbbbbb" in page
    assert "name: fake" in page  # config.yaml


def test_report_is_never_overwritten_silently(run_and_report, tmp_path):
    from taskeval.errors import TaskevalError
    from taskeval.reporting.figures import FigureFile
    from taskeval.reporting.report import render_report

    run, path = run_and_report
    before = path.read_bytes()
    with pytest.raises(TaskevalError, match="overwrite"):
        render_report(run, figures=[])
    assert path.read_bytes() == before
    out = render_report(run, tmp_path / "r.html", figures=[])
    assert "No figures." in out.read_text()
    figs = run / "figures"
    fig = FigureFile("radar", "Radar", "caption", figs / "radar.png", figs / "radar.pdf")
    render_report(run, out, overwrite=True, figures=[fig])
    assert len(embedded_pngs(out.read_text())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # atomic: no temporary files left


def test_report_without_the_dataset_keeps_the_charts(run_and_report, tmp_path, caplog):
    from taskeval.reporting.report import render_html

    run, _ = run_and_report
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("figures", "report.html"))
    gone = {"card": str(tmp_path / "gone.yaml"), "test_split": "test"}
    (copy / "dataset.json").write_text(json.dumps(gone))
    page = render_html(copy)
    assert len(embedded_pngs(page)) == 3  # bar charts and radar chart; the image grids need the images
    assert "detection_grid skipped" in caplog.text and "not available" in caplog.text


def test_report_command(run_and_report, tmp_path):
    from taskeval.cli import report_cmd
    from taskeval.errors import TaskevalError

    run, _ = run_and_report
    parser = argparse.ArgumentParser()
    report_cmd.register(parser.add_subparsers())
    out = tmp_path / "cli.html"
    argv = ["report", str(run), "--out", str(out), "--scenes", "test00001N",
            "--inset", "test00001N:8,10,16,12"]
    args = parser.parse_args(argv)
    assert report_cmd.figure_settings(run, args)["insets"] == {"test00001N": (8.0, 10.0, 16.0, 12.0)}
    assert args.func(args) == 0
    assert len(embedded_pngs(out.read_text())) == 5
    with pytest.raises(TaskevalError, match="overwrite"):
        args.func(args)
    with pytest.raises(TaskevalError, match="ID:x,y,w,h"):
        report_cmd.parse_inset("test00001N:8,10")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(run_and_report, tmp_path):
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI runs this test")
    _, path = run_and_report
    page = path.read_text()
    expected = [[True, *png_size(data)] for data in embedded_pngs(page)]
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", IMG_PROBE + "</body>"))
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - t0
    m = re.search(r'<pre id="img-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe output after {seconds:.1f} s (rc {proc.returncode}): {proc.stderr[-2000:]}"
    assert json.loads(html.unescape(m.group(1))) == expected
