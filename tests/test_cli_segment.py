"""``taskeval segment`` and ``taskeval score-seg`` end to end on a tiny synthetic dataset, checked against
confusion matrices recomputed with NumPy from the label files on disk."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from taskeval.cli.main import main
from taskeval.data.synth import PALETTE, SEG_CLASSES, SynthConfig, generate
from taskeval.imageio import read_raw, write_png
from taskeval.results import read_rows

TINY = ["epochs=1", "batch=4", "crop_size=64,80", "decoder_channels=32"]
K = len(SEG_CLASSES)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_seg")
    return generate(root / "synth", SynthConfig(n_train=8, n_test=4, height=64, width=80), progress=False)


def numpy_confusion(gt_files, pred_files, k=K, ignore=255):
    cm = np.zeros((k, k), np.int64)
    for g, p in zip(gt_files, pred_files):
        g, p = read_raw(g).astype(np.int64), read_raw(p).astype(np.int64)
        keep = g != ignore
        cm += np.bincount(g[keep] * k + p[keep], minlength=k * k).reshape(k, k)
    return cm


def iou_from(cm):
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _cells(out, method=None):
    """The finished segmentation cells of a run folder: (cell.json record, folder)."""
    found = []
    for meta_path in sorted(out.glob("cells/*/cell.json")):
        meta = json.loads(meta_path.read_text())
        if meta["task"] == "segmentation" and method in (None, meta["method"]):
            found.append((meta, meta_path.parent))
    return found


def test_segment_retrain_seeds_resume_and_rows(synth, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["segment", "--methods", "vis", "--no-refs", "--data", str(synth), "--seeds", "0,1", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--device", "cpu", *TINY]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "mIoU_nobg" in text and "class 0" in text  # the definitions are printed next to the numbers
    rows = read_rows(out / "results.csv")
    assert {(r.method, r.seed) for r in rows} == {("vis", 0), ("vis", 1)}
    assert len({r.protocol for r in rows}) == 1 and rows[0].protocol.startswith("quick-")
    test_masks = sorted((synth.parent / "test" / "masks").glob("*.png"))
    cells = _cells(out)
    assert len(cells) == 2
    for _, cell in cells:
        preds = [cell / "pred" / m.name for m in test_masks]
        cm = numpy_confusion(test_masks, preds)   # recomputed from the predicted label files on disk
        saved = np.asarray(json.loads((cell / "scores.json").read_text())["confusion_matrix"], np.int64)
        np.testing.assert_array_equal(saved, cm)
        per_image = np.load(cell / "per_image_confmat.npz")
        np.testing.assert_array_equal(per_image["confmat"].sum(0), cm)
        cell_rows = {(r.metric, r.cls): r.value for r in read_rows(cell / "rows.csv")}
        iou = iou_from(cm)
        np.testing.assert_allclose([cell_rows[("IoU", c)] for c in SEG_CLASSES], iou, equal_nan=True)
        assert cell_rows[("mIoU", "")] == pytest.approx(np.nanmean(iou))
        assert cell_rows[("mIoU_nobg", "")] == pytest.approx(np.nanmean(iou[1:]))
        assert cell_rows[("pixel_acc", "")] == pytest.approx(np.trace(cm) / cm.sum())
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "method,task,dataset,protocol,metric,cls,n,mean,std"
    miou = next(line for line in summary if ",mIoU,," in line).split(",")
    vals = [r.value for r in rows if r.metric == "mIoU"]
    assert float(miou[7]) == pytest.approx(np.mean(vals)) and float(miou[8]) == pytest.approx(np.std(vals, ddof=1))

    assert main(args) == 2  # an existing run is never overwritten silently
    assert "--resume" in capsys.readouterr().err
    (meta0, cell0), (meta1, cell1) = sorted(cells, key=lambda c: c[0]["seed"])
    model = cell0 / "work" / "model.pt"
    stamp = model.stat().st_mtime_ns
    shutil.rmtree(cell1 / "pred")
    (cell1 / "cell.json").unlink()  # an unfinished cell
    assert main(args + ["--resume"]) == 0
    assert model.stat().st_mtime_ns == stamp  # finished work is reused
    def keyed(rs):
        return {(r.method, r.seed, r.metric, r.cls): r.value for r in rs}

    again, before = keyed(read_rows(out / "results.csv")), keyed(rows)
    assert again.keys() == before.keys()
    np.testing.assert_array_equal([again[k] for k in before], list(before.values()))  # same numbers again


def test_segment_fixed_protocol_and_given_checkpoint(synth, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert main(["segment", "--methods", "average", "--fixed", "vis", "--data", str(synth), "--out", str(out),
                 "--device", "cpu", "--json", *TINY]) == 0
    report = json.loads(capsys.readouterr().out)
    protocols = {s["protocol"] for s in report["summary"]}
    assert len(protocols) == 1 and protocols.pop().startswith("fixed:vis@quick-")
    assert len(list(out.glob("reference/segmentation/vis-s0-*/model.pt"))) == 1  # one network for all methods
    assert not list(out.glob("cells/*/work"))
    ckpt = next(out.glob("reference/segmentation/vis-s0-*/model.pt"))

    out2 = tmp_path / "given"
    assert main(["segment", "--methods", "vis", "--no-refs", "--fixed-checkpoint", str(ckpt), "--data", str(synth),
                 "--out", str(out2), "--device", "cpu", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    row = next(s for s in given["summary"] if s["metric"] == "mIoU")
    assert row["protocol"].startswith("fixed:ckpt-") and row["n"] == 1
    first = next(s for s in report["summary"] if s["metric"] == "mIoU" and s["method"] == "vis")
    assert row["mean"] == pytest.approx(first["mean"])  # same network, same images, same number

    # the same images as a folder made elsewhere: a missing file is an error naming it
    folder = tmp_path / "mine"
    shutil.copytree(next(out.glob("fused/synth/vis-*/test")), folder)
    gone = min(folder.glob("*.png"))
    gone.rename(tmp_path / gone.name)
    args = ["segment", "--methods", "mine", "--no-refs", "--fused", f"mine={folder}", "--fixed-checkpoint", str(ckpt),
            "--data", str(synth), "--device", "cpu", "--json"]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 2
    assert f"missing 1 of 4 fused images: {gone.stem}" in capsys.readouterr().err
    (tmp_path / gone.name).rename(gone)
    assert main([*args, "--out", str(tmp_path / "o2")]) == 0
    mine = next(s for s in json.loads(capsys.readouterr().out)["summary"] if s["metric"] == "mIoU")
    assert mine["method"] == "mine" and mine["mean"] == pytest.approx(first["mean"])


def _copy_dataset(synth, tmp_path):
    dst = tmp_path / "bad"
    shutil.copytree(synth.parent, dst)
    return dst


def test_segment_rejects_bad_masks(synth, tmp_path, capsys):
    root = _copy_dataset(synth, tmp_path)
    masks = sorted((root / "train" / "masks").glob("*.png"))
    m = read_raw(masks[0]).copy()
    m[0, :3] = [7, 9, 255]  # 7 and 9 are not classes; 255 is the ignore index
    write_png(masks[0], m)
    write_png(masks[1], np.zeros((32, 40), np.uint8))
    rc = main(["segment", "--methods", "vis", "--data", str(root / "card.yaml"), "--out", str(tmp_path / "o"),
               "--device", "cpu", *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert masks[0].name in err and "label ids [7, 9]" in err
    assert masks[1].name in err and "mask is 40x32, image is 80x64" in err


def _write_preds(folder, masks, transform):
    folder.mkdir()
    for m in masks:
        write_png(folder / m.name, transform(read_raw(m)))


def test_score_seg_ids_palette_and_indexed(synth, tmp_path, capsys):
    gt = synth.parent / "test" / "masks"
    masks = sorted(gt.glob("*.png"))
    rng = np.random.default_rng(0)
    noisy = {m.name: np.where(rng.random((64, 80)) < 0.2, rng.integers(0, K, (64, 80)), read_raw(m)).astype(np.uint8)
             for m in masks}
    ids = tmp_path / "ids"
    ids.mkdir()
    for name, arr in noisy.items():
        write_png(ids / name, arr)
    assert main(["score-seg", "--gt", str(gt), "--pred", str(ids), "--classes", ",".join(SEG_CLASSES), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    cm = numpy_confusion(masks, [ids / m.name for m in masks])
    assert got["confusion_matrix"] == cm.tolist() and got["n_images"] == len(masks)
    assert got["mIoU"] == pytest.approx(np.nanmean(iou_from(cm)))
    assert "mIoU_nobg" in got["definitions"] and "mIoU_nobg" in got

    pal = tmp_path / "palette"
    pal.mkdir()
    lut = np.asarray(PALETTE, np.uint8)
    for name, arr in noisy.items():
        write_png(pal / name, lut[arr])
    assert main(["score-seg", "--gt", str(gt), "--pred", str(pal), "--data", str(synth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion_matrix"] == cm.tolist()

    indexed = tmp_path / "indexed"
    indexed.mkdir()
    for name, arr in noisy.items():
        im = Image.fromarray(arr, mode="P")
        im.putpalette([255, 255, 255] * 256)  # colours that mean nothing: the index is the class
        im.save(indexed / name)
    assert main(["score-seg", "--gt", str(gt), "--pred", str(indexed), "--data", str(synth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion_matrix"] == cm.tolist()


def test_score_seg_bad_predictions(synth, tmp_path, capsys):
    gt = synth.parent / "test" / "masks"
    masks = sorted(gt.glob("*.png"))
    missing = tmp_path / "missing"
    _write_preds(missing, masks[:1], lambda a: a)
    assert main(["score-seg", "--gt", str(gt), "--pred", str(missing), "--data", str(synth)]) == 2
    err = capsys.readouterr().err
    assert f"{len(masks) - 1} of {len(masks)} predictions missing" in err
    assert all(m.stem in err for m in masks[1:])

    out_of_range = tmp_path / "range"
    _write_preds(out_of_range, masks, lambda a: np.where(a == 0, 6, a).astype(np.uint8))
    assert main(["score-seg", "--gt", str(gt), "--pred", str(out_of_range), "--data", str(synth)]) == 2
    err = capsys.readouterr().err
    assert "label ids [6]" in err and masks[0].name in err

    small = tmp_path / "small"
    _write_preds(small, masks, lambda a: a[:32, :40].copy())
    assert main(["score-seg", "--gt", str(gt), "--pred", str(small), "--data", str(synth)]) == 2
    assert "mask is 40x32, image is 80x64" in capsys.readouterr().err

    no_classes = main(["score-seg", "--gt", str(gt), "--pred", str(small)])
    assert no_classes == 2 and "--classes" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_under_torchrun_ddp_on_cpu(synth, tmp_path):
    """Two gloo processes on the CPU: process 0 alone writes results; both train the same network."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "taskeval.cli.main", "segment", "--methods", "vis", "--no-refs", "--data", str(synth),
                           "--out", str(out), "--device", "cpu", "--json", *TINY],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out / "results.csv")
    assert {r.method for r in rows} == {"vis"} and len([r for r in rows if r.metric == "mIoU"]) == 1
    assert len(list(out.glob("cells/*/work/model.pt"))) == 1
    assert len((next(out.glob("cells/*/work")) / "train_log.csv").read_text().splitlines()) == 2


@pytest.mark.slow
def test_quick_protocol_fusion_beats_single_modalities(tmp_path, capsys):
    """The README's claim on the default synthetic dataset: a plain average fusion beats IR-only and
    visible-only under the quick protocol for every seed (about 4 minutes on two cores)."""
    card = generate(tmp_path / "synth", SynthConfig(), progress=False)
    assert main(["segment", "--methods", "average", "--data", str(card), "--seeds", "0,1",
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--json"]) == 0
    capsys.readouterr()
    miou = {(r.method, r.seed): r.value for r in read_rows(tmp_path / "run" / "results.csv") if r.metric == "mIoU"}
    for seed in (0, 1):
        assert miou[("average", seed)] > max(miou[("ir", seed)], miou[("vis", seed)]) + 0.03, miou
