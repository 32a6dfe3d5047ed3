"""Each reader against a small fixture written by the test in that format."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from taskeval.data import PairedDataset, load_card
from taskeval.data.card import parse_card
from taskeval.errors import ConfigError, DataError

H, W = 24, 32


def _img(path: Path, channels: int = 3, value: int = 100, h: int = H, w: int = W, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if channels == 1 else (h, w, channels)
    arr = np.full(shape, value, dtype)
    assert cv2.imwrite(str(path), arr)


def _voc(path: Path, objects):
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    path.write_text(f"<annotation><size><width>{W}</width><height>{H}</height></size>{objs}</annotation>")


def _card(fmt, root, **kw):
    return parse_card({"name": f"t-{fmt}", "format": fmt, "root": str(root), **kw}, None, "test")


def test_msrs_layout(tmp_path):
    for split, ids in (("train", ["00001D", "00002N"]), ("test", ["00003D"])):
        for i in ids:
            _img(tmp_path / split / "ir" / f"{i}.png", 1)
            _img(tmp_path / split / "vi" / f"{i}.png", 3)
            m = np.zeros((H, W), np.uint8)
            m[2:5, 3:9] = 2
            _img(tmp_path / split / "Segmentation_labels" / f"{i}.png", 1, 0)
            cv2.imwrite(str(tmp_path / split / "Segmentation_labels" / f"{i}.png"), m)
            (tmp_path / split / "labels").mkdir(exist_ok=True)
            (tmp_path / split / "labels" / f"{i}.txt").write_text("2 0.5  0.5 0.25 0.5\n")
    card = load_card("msrs", root=tmp_path)
    ds = PairedDataset(card, "train")
    assert ds.ids == ["00001D", "00002N"] and ds.has_masks and ds.has_boxes
    s = ds[0]
    assert s.ir.shape == (1, H, W) and s.vis.shape == (3, H, W)
    assert s.mask[3, 4] == 2 and s.mask.dtype.is_floating_point is False
    np.testing.assert_allclose(s.boxes, [[2, 12, 6, 20, 18]])
    assert PairedDataset(card, "test").ids == ["00003D"]


def test_mfnet_four_channel_and_split_files(tmp_path):
    ids = ["00001D", "00002N", "00003N"]
    for k, i in enumerate(ids):
        bgra = np.zeros((H, W, 4), np.uint8)
        bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 30, 200 + k  # B=10, R=30, thermal
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), bgra)
        cv2.imwrite(str(tmp_path / "labels" / f"{i}.png"), np.full((H, W), 8, np.uint8))
    (tmp_path / "train.txt").write_text("00001D\n00002N\n")
    (tmp_path / "test.txt").write_text("00003N\n")
    card = load_card("mfnet", root=tmp_path)
    ds = PairedDataset(card, "train")
    assert ds.ids == ["00001D", "00002N"]
    ir, vis = ds.read_pair(1)
    assert ir[0, 0] == pytest.approx(201 / 255)
    np.testing.assert_allclose(vis[0, 0], [30 / 255, 0, 10 / 255], atol=1e-7)  # RGB order
    assert int(ds.mask(0).max()) == 8
    (tmp_path / "test.txt").write_text("00003N\n00009D\n")
    with pytest.raises(DataError, match="00009D"):
        PairedDataset(card, "test")


@pytest.mark.parametrize("layout", ["raw", "yolo"])
def test_m3fd_layouts_and_frame_ids(tmp_path, layout, monkeypatch):
    ir_dir, vis_dir = ("Ir", "Vis") if layout == "raw" else ("ir", "vi")
    for frame in ("00250", "00251", "00000"):
        stem = frame if layout == "raw" else f"M3FD_{frame}"
        _img(tmp_path / ir_dir / f"{stem}.png", 3, 50)
        _img(tmp_path / vis_dir / f"{stem}.png", 3, 90)
        if layout == "raw":
            _voc(tmp_path / "Annotation" / f"{stem}.xml", [("People", 1, 2, 5, 9), ("truck", 10, 10, 20, 20)])
        else:
            (tmp_path / "labels").mkdir(exist_ok=True)
            (tmp_path / "labels" / f"{stem}.txt").write_text("5 0.5 0.5 0.5 0.5\n")
    # a card with a small split file of frame numbers instead of the shipped 4200-frame one
    split = tmp_path / "split.txt"
    split.write_text("00250\n00251\n")
    card = parse_card({"name": "m", "format": "m3fd", "root": str(tmp_path),
                       "det_classes": list(load_card("m3fd").det_classes),
                       "split_files": {"test": str(split)}}, None, "t")
    ds = PairedDataset(card, "test")
    assert len(ds) == 2
    b = ds.boxes(0)
    if layout == "raw":
        np.testing.assert_allclose(b, [[0, 1, 2, 5, 9], [5, 10, 10, 20, 20]])
    else:
        np.testing.assert_allclose(b, [[5, 8, 6, 24, 18]])
    assert ds[0].ir.shape == (1, H, W)  # 3 equal channels reduced to one


def test_shipped_m3fd_split_is_scene_block_disjoint():
    card = load_card("m3fd")
    train = card.split_file("train").read_text().split()
    test = card.split_file("test").read_text().split()
    assert len(train) == 3350 and len(test) == 850 and not set(train) & set(test)
    assert sorted(train + test) == [f"{i:05d}" for i in range(4200)]
    assert {int(i) // 50 for i in train}.isdisjoint({int(i) // 50 for i in test})


def test_llvip_voc_and_jpeg(tmp_path):
    for split, ids in (("train", ["010001"]), ("test", ["190001", "190002"])):
        for i in ids:
            _img(tmp_path / "infrared" / split / f"{i}.jpg", 1)
            _img(tmp_path / "visible" / split / f"{i}.jpg", 3)
            _voc(tmp_path / "Annotations" / f"{i}.xml", [("person", 3, 4, 10, 20)])
    ds = PairedDataset(load_card("llvip", root=tmp_path), "test")
    assert ds.ids == ["190001", "190002"]
    np.testing.assert_allclose(ds.boxes(1), [[0, 3, 4, 10, 20]])
    _voc(tmp_path / "Annotations" / "190002.xml", [("dog", 3, 4, 10, 20)])
    with pytest.raises(DataError, match="unknown class 'dog'"):
        ds.boxes(1)


def test_folders_with_split_dirs_masks_and_palette(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0]]
    for i in ("a", "b"):
        _img(tmp_path / "train" / "ir" / f"{i}.png", 1)
        _img(tmp_path / "train" / "vi" / f"{i}.png", 3)
        m = np.zeros((H, W, 3), np.uint8)
        m[:5, :5] = (0, 0, 255)  # BGR red -> class 1 via the palette
        (tmp_path / "train" / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "train" / "masks" / f"{i}.png"), m)
        (tmp_path / "train" / "labels").mkdir(exist_ok=True)
        (tmp_path / "train" / "labels" / f"{i}.txt").write_text("")  # empty: valid, no objects
    card = _card("folders", tmp_path, det_classes=["x"], seg_classes=["bg", "red"], palette=palette,
                 options={"split_dirs": True, "det_labels": "labels", "seg_labels": "masks"})
    ds = PairedDataset(card, "train")
    assert ds.boxes(0).shape == (0, 5)
    mask = ds.mask(0)
    assert mask[0, 0] == 1 and mask[10, 10] == 0


def test_missing_partner_and_orphan_label_errors(tmp_path):
    _img(tmp_path / "ir" / "a.png", 1)
    _img(tmp_path / "vi" / "a.png", 3)
    _img(tmp_path / "ir" / "b.png", 1)
    card = _card("folders", tmp_path)
    with pytest.raises(DataError, match="b.png: no visible image"):
        PairedDataset(card, "all")
    (tmp_path / "ir" / "b.png").unlink()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "labels" / "zzz.txt").write_text("")
    card = _card("folders", tmp_path, det_classes=["x"], options={"det_labels": "labels"})
    with pytest.raises(DataError, match="zzz.txt: detection label without an image"):
        PairedDataset(card, "all")
    (tmp_path / "labels" / "zzz.txt").unlink()
    (tmp_path / "labels" / "a.txt").unlink()
    with pytest.raises(DataError, match="a.txt: no detection label for image a"):
        PairedDataset(card, "all")


def test_size_mismatch_policy(tmp_path):
    _img(tmp_path / "ir" / "a.png", 1, h=12, w=16)
    _img(tmp_path / "vi" / "a.png", 3)
    ds = PairedDataset(_card("folders", tmp_path), "all")
    with pytest.raises(DataError, match="IR is 16x12 but visible a.png is 32x24"):
        ds[0]
    ds = PairedDataset(_card("folders", tmp_path), "all", size_policy="resize-ir")
    assert ds[0].ir.shape == (1, H, W)
    # the card's setting reaches every command that opens the dataset
    ds = PairedDataset(_card("folders", tmp_path, size_policy="resize-ir"), "all")
    assert ds[0].ir.shape == (1, H, W)
    with pytest.raises(ConfigError, match="size_policy must be one of"):
        _card("folders", tmp_path, size_policy="stretch")


def test_box_policy_clip_vs_error(tmp_path):
    _img(tmp_path / "ir" / "a.png", 1)
    _img(tmp_path / "vi" / "a.png", 3)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.95 0.5 0.2 0.2\n")  # x2 = 1.05 * W
    card = _card("folders", tmp_path, det_classes=["x"], options={"det_labels": "labels"})
    np.testing.assert_allclose(PairedDataset(card, "all").boxes(0)[0, 3], W)
    with pytest.raises(DataError, match="extends outside"):
        PairedDataset(card, "all", box_policy="error").boxes(0)
    strict = _card("folders", tmp_path, det_classes=["x"], options={"det_labels": "labels"}, box_policy="error")
    with pytest.raises(DataError, match="extends outside"):
        PairedDataset(strict, "all").boxes(0)
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="class id 3 not in 0..0"):
        PairedDataset(card, "all").boxes(0)


def test_card_errors():
    with pytest.raises(ConfigError, match="did you mean 'msrs'"):
        load_card("msr")
    with pytest.raises(ConfigError, match="unknown card key"):
        parse_card({"name": "x", "format": "folders", "classes": []}, None, "t")
    with pytest.raises(ConfigError, match="no root"):
        load_card("msrs").require_root()


def test_scene_split_never_cuts_a_scene(tmp_path, capsys):
    from taskeval.cli.main import main

    rng = np.random.default_rng(0)
    vis = tmp_path / "Vis"
    vis.mkdir()
    frame, truth = 0, {}
    for scene in range(6):
        base = rng.integers(0, 255, (48, 64, 3)).astype(np.float32)
        for _ in range(int(rng.integers(3, 8))):
            img = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(vis / f"M3FD_{frame:05d}.png"), img)
            truth[f"{frame:05d}"] = scene
            frame += 1
    assert main(["data", "scene-split", "--vis", str(vis), "--out", str(tmp_path / "s"), "--frame-ids",
                 "--test-share", "0.3"]) == 0
    assert "6 scenes" in capsys.readouterr().out
    train = (tmp_path / "s" / "scene_train.txt").read_text().split()
    test = (tmp_path / "s" / "scene_test.txt").read_text().split()
    assert sorted(train + test) == sorted(truth) and test
    assert {truth[i] for i in train}.isdisjoint({truth[i] for i in test})
