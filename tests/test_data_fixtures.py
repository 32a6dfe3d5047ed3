"""Layout fixtures of every built-in dataset: they load through the dataset's own card and pass ``data check``;
the FMB reader and ``data check`` on broken copies of the FMB fixture."""

import hashlib
import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest

from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.check import check_dataset
from taskeval.data.fixtures import FIXTURE_FORMATS, FMB_IDS, MFNET_IDS, write_fixture
from taskeval.errors import ConfigError


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("fixtures")
    return {fmt: write_fixture(fmt, base / fmt) for fmt in FIXTURE_FORMATS}


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", [f for f in FIXTURE_FORMATS if f != "m3fd"])
def test_fixture_passes_check_and_has_every_class(fixtures, fmt):
    card = load_card(fmt, root=fixtures[fmt])
    report = check_dataset(card, progress=False)
    assert report.ok, [str(p) for p in report.problems.errors]
    assert {p.kind for p in report.problems.warnings} <= {"count-differs"}
    for split, n in report.split_sizes.items():
        ds = PairedDataset(card, split)
        assert len(ds) == n > 0
        ir, vis = ds.read_pair(0)
        assert ir.ndim == 2 and vis.shape == ir.shape + (3,)
        if card.seg_classes:
            seen = set().union(*(np.unique(ds.mask(i)).tolist() for i in range(len(ds))))
            assert seen == set(range(len(card.seg_classes))), (split, seen)
        if card.det_classes and ds.has_boxes:
            seen = set().union(*(ds.boxes(i)[:, 0].astype(int).tolist() for i in range(len(ds))))
            assert seen == set(range(len(card.det_classes))), (split, seen)


def test_m3fd_fixture_fits_the_shipped_scene_split(fixtures):
    card = load_card("m3fd", root=fixtures["m3fd"])
    shipped = {s: card.split_file(s).read_text().split() for s in ("train", "test")}
    for split, frames in shipped.items():
        assert PairedDataset(card, split).ids == frames  # every frame of the split, nothing else
    report = check_dataset(card, splits=["test"], progress=False)
    assert report.ok, [str(p) for p in report.problems.errors]
    assert sorted(report.box_counts["test"]) == list(range(6)) and len(set(report.box_counts["test"].values())) == 1
    ds = PairedDataset(card, "test")
    assert ds[0].ir.shape[0] == 1  # IR stored as 3 equal channels, read as one


def test_fixtures_are_deterministic_and_reused(fixtures, tmp_path):
    for fmt in ("fmb", "mfnet", "llvip"):
        again = write_fixture(fmt, tmp_path / fmt)
        assert _digest(again) == _digest(fixtures[fmt]), fmt
    assert write_fixture("fmb", tmp_path / "fmb") == tmp_path / "fmb"  # same fixture: reused
    with pytest.raises(ConfigError, match="not the fmb fixture with seed 1"):
        write_fixture("fmb", tmp_path / "fmb", seed=1)
    with pytest.raises(ConfigError, match="no fixture for format 'kaist'"):
        write_fixture("kaist", tmp_path / "k")
    assert _digest(write_fixture("fmb", tmp_path / "fmb1", seed=1)) != _digest(fixtures["fmb"])


def test_mfnet_day_night_subsets_are_readable_but_not_checked_twice(fixtures):
    card = load_card("mfnet", root=fixtures["mfnet"])
    assert PairedDataset(card, "test_day").ids == ["00007D", "00009D"]
    assert PairedDataset(card, "test_night").ids == ["00008N"]
    report = check_dataset(card, progress=False)
    assert report.split_sizes == {s: len(ids) for s, ids in MFNET_IDS.items()}
    assert not [p for p in report.problems.items if p.kind == "id-in-two-splits"]
    raw = cv2.imread(str(fixtures["mfnet"] / "images" / "00001D.png"), cv2.IMREAD_UNCHANGED)
    assert raw.shape[2] == 4


def test_fmb_reader_layout_and_color_labels(fixtures):
    root = fixtures["fmb"]
    for split, ids in FMB_IDS.items():
        for sub in ("Visible", "Infrared", "Label", "color"):
            assert sorted(p.stem for p in (root / split / sub).iterdir()) == ids
    card = load_card("fmb", root=root)
    assert len(card.seg_classes) == 15 and card.seg_classes[0] == "background" and card.seg_classes[-1] == "Pole"
    ds = PairedDataset(card, "train")
    s = ds[0]
    assert s.ir.shape == (1, 48, 64) and s.vis.shape == (3, 48, 64) and s.mask.shape == (48, 64)
    # the color/ folder is the same annotation in the card's palette
    by_colour = PairedDataset(replace(card, options={"seg_labels": "color"}), "train")
    for i in range(len(ds)):
        np.testing.assert_array_equal(by_colour.mask(i), ds.mask(i))


def _check(root, capsys):
    rc = main(["data", "check", "--card", "fmb", "--root", str(root), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_fmb_check_names_planted_problems(fixtures, tmp_path, capsys):
    root = tmp_path / "fmb"
    shutil.copytree(fixtures["fmb"], root)
    rc, out = _check(root, capsys)
    assert rc == 0 and out["ok"] and out["splits"] == {"train": 4, "test": 2}
    (root / "train" / "Visible" / "00001.png").unlink()                               # missing partner
    ir = cv2.imread(str(root / "train" / "Infrared" / "00002.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / "train" / "Infrared" / "00002.png"), cv2.resize(ir, (32, 24)))  # mis-sized
    lab = cv2.imread(str(root / "train" / "Label" / "00003.png"), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 15
    cv2.imwrite(str(root / "train" / "Label" / "00003.png"), lab)                     # id out of range
    (root / "test" / "Label" / "00006.png").unlink()                                  # missing label
    cv2.imwrite(str(root / "test" / "Label" / "00099.png"), lab)                      # label without image
    data = (root / "test" / "Visible" / "00005.png").read_bytes()
    (root / "test" / "Visible" / "00005.png").write_bytes(data[: len(data) // 3])     # truncated
    cv2.imwrite(str(root / "train" / "Label" / "00004.png"), np.zeros((10, 10), np.uint8))  # mask size
    rc, out = _check(root, capsys)
    assert rc == 1 and not out["ok"]
    kinds = {(p["kind"], p["path"].split("/")[-1]) for p in out["problems"] if p["severity"] == "error"}
    assert {("missing-partner", "00001.png"), ("size-mismatch", "00002.png"), ("mask-id-out-of-range", "00003.png"),
            ("missing-label", "00006.png"), ("orphan-label", "00099.png"), ("unreadable-image", "00005.png"),
            ("mask-size-mismatch", "00004.png")} <= kinds, kinds
    assert "label ids [15] not in 0..14" in " ".join(p["message"] for p in out["problems"])


def test_fmb_missing_split_and_label_folders(fixtures, tmp_path, capsys):
    root = tmp_path / "fmb"
    shutil.copytree(fixtures["fmb"], root)
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "train" / "Label")
    rc, out = _check(root, capsys)
    kinds = {(p["kind"], p["path"].split("/")[-1]) for p in out["problems"] if p["severity"] == "error"}
    assert rc == 1 and {("missing-folder", "test"), ("missing-folder", "Label")} <= kinds, kinds


def test_cli_fixture_then_check(tmp_path, capsys):
    assert main(["data", "fixture", "--format", "llvip", "--out", str(tmp_path / "llvip")]) == 0
    assert "data check --card llvip" in capsys.readouterr().out
    rc = main(["data", "check", "--card", "llvip", "--root", str(tmp_path / "llvip"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["splits"] == {"train": 4, "test": 2} and out["boxes"]["test"] == {"0": 2}
