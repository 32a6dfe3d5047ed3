"""``taskeval data check`` on the real MSRS sample and on deliberately broken copies of it."""

import json
import shutil

import cv2
import numpy as np
import pytest

from taskeval.cli.main import main

IDS = ["00004N", "00016N", "00055D", "00091D"]


@pytest.fixture
def sample_copy(shared, tmp_path):
    """A small copy of shared/data/msrs_det (4 pairs, fused labels, pseudo masks) in the folders layout."""
    src = shared / "data" / "msrs_det"
    root = tmp_path / "msrs"
    for sub in ("ir", "vi", "labels_fusion"):
        (root / sub).mkdir(parents=True)
        for i in IDS:
            ext = ".txt" if sub.startswith("labels") else ".png"
            shutil.copy(src / sub / f"{i}{ext}", root / sub / f"{i}{ext}")
    (root / "masks").mkdir()
    for i in IDS:
        shutil.copy(shared / "data" / "msrs_seg_pseudo" / f"{i}.png", root / "masks" / f"{i}.png")
    shutil.copy(src / "classes.txt", root / "classes.txt")
    return root


def run_check(root, capsys, *extra):
    rc = main(["data", "check", "--format", "folders", "--root", str(root), "--json",
               "-o", "det_labels=labels_fusion", "-o", "seg_labels=masks", "--seg-classes", "msrs",
               *extra])
    out = json.loads(capsys.readouterr().out)
    return rc, out


def test_shared_sample_passes(shared, capsys):
    rc = main(["data", "check", "--card", "msrs_sample", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ok"] and out["errors"] == 0
    assert out["splits"] == {"train": 70, "test": 30}
    rc = main(["data", "check", "--format", "folders", "--root", str(shared / "data" / "msrs_det"),
               "-o", "det_labels=labels_fusion", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["splits"] == {"all": 100}
    assert sum(out["boxes"]["all"].values()) == 424  # MANIFEST: 424 boxes in labels_fusion


def test_clean_copy_passes(sample_copy, capsys):
    rc, out = run_check(sample_copy, capsys, "-o", "seg_labels=masks")
    assert rc == 0, out["problems"]


def _kinds(out):
    return {(p["kind"], p["path"].split("/")[-1]) for p in out["problems"] if p["severity"] == "error"}


def test_each_problem_is_reported_with_its_file(sample_copy, capsys):
    r = sample_copy
    (r / "vi" / "00004N.png").unlink()                                   # missing partner
    img = cv2.imread(str(r / "ir" / "00016N.png"), 0)
    cv2.imwrite(str(r / "ir" / "00016N.png"), cv2.resize(img, (320, 240)))  # size mismatch
    data = (r / "vi" / "00055D.png").read_bytes()
    (r / "vi" / "00055D.png").write_bytes(data[: len(data) // 3])         # truncated
    (r / "labels_fusion" / "00091D.txt").write_text("7 0.5 0.5 0.1 0.1\n0 0.98 0.5 0.2 0.2\n")  # id, box
    (r / "labels_fusion" / "99999X.txt").write_text("")                   # label without image
    m = cv2.imread(str(r / "masks" / "00091D.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 12
    cv2.imwrite(str(r / "masks" / "00091D.png"), m)                        # mask id out of range
    rc, out = run_check(r, capsys, "-o", "seg_labels=masks")
    assert rc == 1 and not out["ok"]
    kinds = _kinds(out)
    expected = {
        ("missing-partner", "00004N.png"),
        ("size-mismatch", "00016N.png"),
        ("unreadable-image", "00055D.png"),
        ("class-id-out-of-range", "00091D.txt"),
        ("box-outside-image", "00091D.txt"),
        ("orphan-label", "99999X.txt"),
        ("mask-id-out-of-range", "00091D.png"),
    }
    assert expected <= kinds, kinds
    messages = " ".join(p["message"] for p in out["problems"])
    assert "class id 7 not in 0..2" in messages and "[12]" in messages


def test_mask_size_and_missing_label_and_duplicates(sample_copy, capsys):
    r = sample_copy
    cv2.imwrite(str(r / "masks" / "00004N.png"), np.zeros((10, 10), np.uint8))
    (r / "labels_fusion" / "00016N.txt").unlink()
    shutil.copy(r / "ir" / "00055D.png", r / "ir" / "00055D.jpg")
    rc, out = run_check(r, capsys, "-o", "seg_labels=masks")
    kinds = _kinds(out)
    assert rc == 1
    assert {("mask-size-mismatch", "00004N.png"), ("missing-label", "00016N.txt"),
            ("duplicate-id", "00055D.png")} <= kinds, kinds


def test_human_readable_output_names_files(sample_copy, capsys):
    (sample_copy / "vi" / "00004N.png").unlink()
    rc = main(["data", "check", "--format", "folders", "--root", str(sample_copy), "--seg-classes", "msrs",
               "-o", "seg_labels=masks"])
    text = capsys.readouterr().out
    assert rc == 1 and "00004N.png" in text and "missing-partner" in text and "1 error(s)" in text
