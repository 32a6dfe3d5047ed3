"""``taskeval detect`` and ``taskeval score-det`` end to end on tiny data; numbers checked with plain
pycocotools on the files the command wrote."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil

import numpy as np
import pytest

from taskeval.cli.run_common import method_list, write_summary
from taskeval.cli.main import main
from taskeval.data.synth import SynthConfig, generate
from taskeval.results import Row, read_rows

TINY = ["epochs=1", "imgsz=64", "batch=4", "nbs=4", "val_images=2"]


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    cfg = SynthConfig(n_train=12, n_test=6, height=64, width=80)
    return generate(tmp_path_factory.mktemp("tiny") / "synth", cfg, progress=False)


def _pycocotools_map(gt_path, dt_path) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        dets = json.loads(dt_path.read_text())
        if not dets:
            return 0.0, 0.0
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[1], ev.stats[0]


def _value(rows, method, metric, protocol=None):
    (v,) = [r.value for r in rows if r.method == method and r.metric == metric and r.cls == ""
            and (protocol is None or r.protocol == protocol)]
    return v


def test_method_list_adds_reference_rows():
    assert method_list("max,average") == ["ir", "vis", "max", "average"]
    assert method_list("vis,max", extra=["mine"]) == ["ir", "vis", "max", "mine"]
    assert method_list("max", no_refs=True) == ["max"]


def test_summary_mean_and_sample_std(tmp_path):
    rows = [Row("m", "detection", "d", "p", s, "mAP50", "", v) for s, v in enumerate([0.2, 0.4, 0.9])]
    (rec,) = write_summary(rows, tmp_path / "summary.csv")
    assert rec["n"] == 3 and rec["mean"] == pytest.approx(0.5)
    assert rec["std"] == pytest.approx(math.sqrt((0.3 ** 2 + 0.1 ** 2 + 0.4 ** 2) / 2))
    (one,) = write_summary(rows[:1], tmp_path / "one.csv")
    assert one["std"] is None
    nan = rows + [Row("m", "detection", "d", "p", 3, "mAP50", "", float("nan"))]
    (rec,) = write_summary(nan, tmp_path / "nan.csv")   # a NaN seed is left out, as in every table
    assert rec["n"] == 3 and rec["mean"] == pytest.approx(0.5)
    assert (tmp_path / "summary.csv").read_text().splitlines()[0] == "method,task,dataset,protocol,metric,cls,n,mean,std"


def test_detect_resume_and_fixed_checkpoint(tiny_card, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["detect", "--data", str(tiny_card), "--methods", "vis", "--no-refs", "--out", str(out),
            "--threads", "1", "--seeds", "0", *TINY]
    assert main(args) == 0
    rows = read_rows(out / "results.csv")
    assert {r.method for r in rows} == {"vis"} and {r.seed for r in rows} == {0}
    (protocol,) = {r.protocol for r in rows}
    assert re.fullmatch(r"quick-[0-9a-f]{6}", protocol)
    assert {r.metric for r in rows} >= {"mAP50", "mAP50_95", "precision", "recall", "AP50"}
    (cell,) = list((out / "cells").iterdir())
    ref50, ref = _pycocotools_map(cell / "gt.json", cell / "predictions.json")
    assert abs(_value(rows, "vis", "mAP50") - ref50) < 1e-9
    assert abs(_value(rows, "vis", "mAP50_95") - ref) < 1e-9
    assert json.loads((out / "results.json").read_text())[0]["protocol"] == protocol
    assert "vis" in (out / "summary.csv").read_text()
    assert "mAP50" in capsys.readouterr().out

    stamp = (cell / "cell.json").stat().st_mtime_ns
    assert main([*args, "--resume", "--json"]) == 0  # nothing to do: the finished cell is kept, not retrained
    assert (cell / "cell.json").stat().st_mtime_ns == stamp
    printed = json.loads(capsys.readouterr().out)     # --json: stdout is one JSON document
    (m50,) = [s for s in printed["summary"] if s["metric"] == "mAP50" and s["cls"] == ""]
    assert m50["method"] == "vis" and m50["n"] == 1 and m50["std"] is None
    assert abs(m50["mean"] - ref50) < 1e-9 and printed["protocol"] == protocol
    assert "done before, skipped" in (out / "taskeval.log").read_text()

    ckpt = cell / "work" / "train" / "weights" / "last.pt"
    out2 = tmp_path / "fixed"
    assert main(["detect", "--data", str(tiny_card), "--methods", "ir,vis", "--no-refs", "--out", str(out2),
                 "--threads", "1", "--fixed-checkpoint", str(ckpt), *TINY]) == 0
    fixed = read_rows(out2 / "results.csv")
    protocols = {r.protocol for r in fixed}
    assert len(protocols) == 1 and re.fullmatch(rf"fixed:ckpt-[0-9a-f]{{8}}@{protocol}", protocols.pop())
    assert {r.seed for r in fixed} == {None}
    assert not list((out2 / "cells").glob("*/work"))  # no training
    # the same checkpoint on the same vis images gives the same numbers as the retrain cell
    assert _value(fixed, "vis", "mAP50") == pytest.approx(_value(rows, "vis", "mAP50"), abs=1e-12)


def test_detect_refuses_incomplete_fused_folder(tiny_card, tmp_path, capsys):
    fused = tmp_path / "mine"
    for split in ("train", "test"):
        shutil.copytree(tiny_card.parent / split / "vi", fused / split)
    missing = sorted((fused / "test").iterdir())[:2]
    for p in missing:
        p.unlink()
    code = main(["detect", "--data", str(tiny_card), "--no-refs", "--fused", f"mine={fused}",
                 "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing 2 of 6 fused images" in err and all(p.stem in err for p in missing)
    assert not list((tmp_path / "run").glob("cells/*/work"))  # failed before any training


def test_detect_unknown_method(tiny_card, tmp_path, capsys):
    assert main(["detect", "--data", str(tiny_card), "--methods", "maxx", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'max'" in capsys.readouterr().err


def _score_case(tmp_path):
    from taskeval.metrics.detection import coco_detections, coco_ground_truth

    rng = np.random.default_rng(0)
    sizes = {f"s{k}": (100, 120) for k in range(8)}
    boxes = {}
    preds = {}
    for sid in sizes:
        xy = rng.uniform(0, 80, (3, 2))
        b = np.c_[rng.integers(0, 2, 3), xy, xy + rng.uniform(8, 30, (3, 2))]
        boxes[sid] = b
        preds[sid] = np.c_[b[:, 1:5] + rng.normal(0, 3, (3, 4)), rng.random(3), b[:, 0]]
    gt = coco_ground_truth(boxes, sizes, ("a", "b"))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(coco_detections(preds, gt)))


def test_score_det_json(tmp_path, capsys):
    _score_case(tmp_path)
    gt_dt = ["--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "dt.json")]
    assert main(["score-det", *gt_dt, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    ref50, ref = _pycocotools_map(tmp_path / "gt.json", tmp_path / "dt.json")
    assert abs(got["map50"] - ref50) < 1e-9 and abs(got["map50_95"] - ref) < 1e-9
    assert set(got["per_class"]) == {"a", "b"}
    assert main(["score-det", *gt_dt]) == 0
    assert "AP50" in capsys.readouterr().out


def test_score_det_unknown_ids(tmp_path, capsys):
    _score_case(tmp_path)
    dets = json.loads((tmp_path / "dt.json").read_text())
    dets.append({**dets[0], "image_id": "nowhere"})
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    assert main(["score-det", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "dt.json")]) == 2
    assert "not in the ground truth: nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_msrs_sample_detect_matches_independent_pycocotools(shared, tmp_path):
    """A real training on the MSRS sample (30 epochs at 320 px from scratch: mAP50 about 0.09, not a useful
    detector, but real predictions); its mAP equals plain pycocotools on the files it wrote."""
    out = tmp_path / "run"
    assert main(["detect", "--data", "msrs_sample", "--root", str(shared / "data" / "msrs_det"), "--no-refs",
                 "--methods", "vis", "--out", str(out), "--threads", "1", "epochs=30", "imgsz=320"]) == 0
    rows = read_rows(out / "results.csv")
    (cell,) = list((out / "cells").iterdir())
    ref50, ref = _pycocotools_map(cell / "gt.json", cell / "predictions.json")
    assert len(json.loads((cell / "gt.json").read_text())["images"]) == 30
    assert ref50 > 0  # a non-trivial comparison
    assert abs(_value(rows, "vis", "mAP50") - ref50) < 1e-9
    assert abs(_value(rows, "vis", "mAP50_95") - ref) < 1e-9


def test_resume_refuses_other_images_and_bad_fixed_options(tiny_card, tmp_path, capsys):
    from taskeval.data import PairedDataset, load_card

    card = load_card(tiny_card)
    for name, modality in (("a", "vis"), ("b", "ir")):
        for split in ("train", "test"):
            (tmp_path / name / split).mkdir(parents=True)
            for r in PairedDataset(card, split).records:
                src = getattr(r, modality)
                shutil.copy(src, tmp_path / name / split / f"{r.id}{src.suffix}")
    out = tmp_path / "run"
    base = ["detect", "--data", str(tiny_card), "--no-refs", "--out", str(out), "--threads", "1", *TINY]
    assert main([*base, "--fused", f"ext={tmp_path / 'a'}"]) == 0
    # same method name, other images: the finished cell is not reused under the new folder
    assert main([*base, "--fused", f"ext={tmp_path / 'b'}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "computed from other inputs" in err and "ext: " in err and "(fused)" in err, err
    # option errors come before the run directory exists
    assert main(["detect", "--data", str(tiny_card), "--methods", "vis", "--out", str(tmp_path / "x"),
                 "--fixed", "ir", "--fixed-checkpoint", str(tmp_path / "none.pt"), *TINY]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("backend", ["pycocotools", "auto"])
def test_msrs_sample_scoring_matches_independent_pycocotools(shared, tmp_path, backend):
    """The real MSRS sample's labels (3 classes, 30 test pairs) against noisy detections (jittered boxes,
    missed objects, false positives, random scores): the harness's numbers equal plain pycocotools."""
    from taskeval.data import PairedDataset, load_card
    from taskeval.metrics.detection import dataset_ground_truth, score_predictions, write_json

    ds = PairedDataset(load_card("msrs_sample", shared / "data" / "msrs_det"), "test")
    gt = dataset_ground_truth(ds)
    n_lines = sum(len([ln for ln in r.det.read_text().splitlines() if ln.strip()]) for r in ds.records)
    assert len(gt["images"]) == len(ds) == 30 and len(gt["annotations"]) == n_lines > 0
    rng = np.random.default_rng(7)
    preds = {}
    for i, sid in enumerate(ds.ids):
        b = ds.boxes(i)                                   # (N, 5) cls x1 y1 x2 y2
        keep = b[rng.random(len(b)) > 0.2]
        xyxy = keep[:, 1:5] + rng.normal(0, 4, (len(keep), 4))
        fp = rng.uniform(0, 400, (2, 2))
        xyxy = np.r_[xyxy, np.c_[fp, fp + 40]]
        cls = np.r_[keep[:, 0], rng.integers(0, 3, 2)]
        preds[sid] = np.c_[xyxy, rng.random(len(cls)), cls]
    scores, dets = score_predictions(preds, gt, backend)
    write_json(tmp_path / "gt.json", gt)
    write_json(tmp_path / "dt.json", dets)
    ref50, ref = _pycocotools_map(tmp_path / "gt.json", tmp_path / "dt.json")
    assert 0.2 < ref50 < 0.99                              # a non-trivial comparison
    assert abs(scores.map50 - ref50) < 1e-9 and abs(scores.map50_95 - ref) < 1e-9
