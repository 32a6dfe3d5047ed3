"""The ultralytics adapter: protocols, the training folder, offline state, train/predict on tiny data."""

from __future__ import annotations

import re
import shutil
import socket
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detectors.protocol import PRESETS, DetProtocol, load_protocol
from detectors.yolo_data import write_yolo_dataset
from taskeval.data import PairedDataset
from taskeval.data.labels import read_yolo_txt, yolo_label_text
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import ConfigError, DataError, WeightsError
from taskeval.fusedset import source_set

TINY = replace(PRESETS["quick"], imgsz=64, epochs=1, batch=4, nbs=4, val_images=2)


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    cfg = SynthConfig(n_train=12, n_test=6, height=64, width=80)
    return generate(tmp_path_factory.mktemp("tiny") / "synth", cfg, progress=False)


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to resolve a name or open an internet connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_protocol_ids():
    q = PRESETS["quick"]
    assert re.fullmatch(r"quick-[0-9a-f]{6}", q.id)
    assert q.id == replace(q).id
    assert replace(q, epochs=q.epochs + 1).id != q.id
    assert replace(q, seed=5).id == q.id  # the seed has its own column in result rows
    assert PRESETS["paper"].model == "yolov5s.yaml" and PRESETS["paper"].imgsz == 640
    assert load_protocol("quick", ["epochs=3", "model=yolo11n.yaml"]) == replace(q, epochs=3,
                                                                                 model="yolo11n.yaml")


def test_protocol_errors_and_files(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_protocol("quick", ["epoch=3"])
    with pytest.raises(ConfigError, match="unknown detection protocol 'quik'.*did you mean 'quick'"):
        load_protocol("quik")
    f = tmp_path / "mine.yaml"
    f.write_text("model: yolov8n.yaml\nimgsz: 96\n")
    p = load_protocol(str(f))
    assert p.name == "mine" and p.imgsz == 96 and p.epochs == DetProtocol().epochs
    with pytest.raises(WeightsError, match="never downloaded"):
        replace(p, pretrained=str(tmp_path / "absent.pt")).short_hash()
    w = tmp_path / "w.pt"
    w.write_bytes(b"one")
    a = replace(p, pretrained=str(w)).id
    w.write_bytes(b"two")
    assert replace(p, pretrained=str(w)).id != a  # the weights' bytes are part of the protocol


def test_label_text_round_trips_through_the_data_layer(tmp_path):
    boxes = np.array([[0, 1.5, 2.25, 30.0, 40.0], [3, 0.0, 0.0, 80.0, 64.0]], np.float32)
    f = tmp_path / "a.txt"
    f.write_text(yolo_label_text(boxes, (64, 80), decimals=8))
    np.testing.assert_allclose(read_yolo_txt(f, 4, (64, 80)), boxes, atol=1e-4)
    assert yolo_label_text(np.zeros((0, 5)), (64, 80)) == ""


def test_training_folder(tiny_card, tmp_path):
    ds = PairedDataset.open(tiny_card, "train")
    images = {r.id: r.vis for r in ds.records}
    data_yaml = write_yolo_dataset(tmp_path / "data", images, ds, val_images=3)
    root = data_yaml.parent
    train = sorted((root / "images" / "train").iterdir())
    assert [p.stem for p in train] == sorted(ds.ids)
    assert all(p.is_symlink() and p.resolve() == images[p.stem].resolve() for p in train)
    for i, sid in enumerate(ds.ids):
        back = read_yolo_txt(root / "labels" / "train" / f"{sid}.txt", 4, ds.size(i))
        np.testing.assert_allclose(back, ds.boxes(i), atol=1e-3)
    assert len(list((root / "images" / "val").iterdir())) == 3
    assert "names" in data_yaml.read_text()
    # a second build with fewer images leaves nothing stale behind
    ds_small = PairedDataset(ds.card, "train", records=ds.records[:5])
    write_yolo_dataset(tmp_path / "data", images, ds_small, val_images=2)
    assert len(list((root / "labels" / "train").iterdir())) == 5


def test_training_folder_empty_labels_and_gaps(tiny_card, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_card.parent, root)
    first = sorted((root / "train" / "labels").glob("*.txt"))[0]
    first.write_text("")  # an empty label file is valid: an image without objects
    ds = PairedDataset.open(root / "card.yaml", "train")
    images = {r.id: r.vis for r in ds.records}
    data_yaml = write_yolo_dataset(tmp_path / "data", images, ds)
    assert (data_yaml.parent / "labels" / "train" / first.name).read_text() == ""
    missing = dict(list(images.items())[2:])
    with pytest.raises(DataError, match=f"lack 2 of 12 ids: {ds.ids[0]}, {ds.ids[1]}"):
        write_yolo_dataset(tmp_path / "data2", missing, ds)


def test_training_folder_clips_or_rejects_bad_boxes(tiny_card, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(tiny_card.parent, root)
    labels = sorted((root / "train" / "labels").glob("*.txt"))
    labels[0].write_text("1 0.95 0.5 0.3 0.2\n")  # x from 0.8 to 1.1 of the width: clipped, with a warning
    ds = PairedDataset.open(root / "card.yaml", "train")
    images = {r.id: r.vis for r in ds.records}
    data_yaml = write_yolo_dataset(tmp_path / "data", images, ds)
    h, w = ds.size(0)
    clipped = read_yolo_txt(data_yaml.parent / "labels" / "train" / labels[0].name, 4, (h, w))
    np.testing.assert_allclose(clipped, [[1, 0.8 * w, 0.4 * h, w, 0.6 * h]], atol=1e-3)
    assert "clipped" in caplog.text and labels[0].name in caplog.text
    labels[1].write_text("7 0.5 0.5 0.1 0.1\n")  # a class the card does not have: an error naming the file
    with pytest.raises(DataError, match=rf"{labels[1].name}.*class id 7 not in 0..3"):
        write_yolo_dataset(tmp_path / "data", images, PairedDataset.open(root / "card.yaml", "train"))


def test_prepare_keeps_ultralytics_offline():
    from detectors.ultralytics_env import prepare

    prepare(None, threads=1)
    import ultralytics.utils as uu
    import ultralytics.utils.torch_utils as tu

    assert (uu.USER_CONFIG_DIR / "Arial.ttf").is_file()
    assert uu.SETTINGS["sync"] is False and uu.SETTINGS["mlflow"] is False
    assert uu.ONLINE is False and tu.NUM_THREADS == 1
    import ultralytics.nn.tasks as tasks

    assert tasks.SAFE_LOAD is True and uu.SAFE_LOAD is True


class _Payload:
    """Unpickling this runs code (creates a file): what an untrusted checkpoint can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_untrusted_detector_checkpoint_is_not_unpickled(tmp_path):
    from detectors import yolo

    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(Exception):
        yolo.checkpoint_classes(evil, tmp_path / "state")
    assert not marker.exists()


def test_train_predict_smoke(tiny_card, tmp_path, monkeypatch, no_network):
    from detectors import yolo

    monkeypatch.chdir(tmp_path)
    train_ds = PairedDataset.open(tiny_card, "train")
    test_ds = PairedDataset.open(tiny_card, "test")
    run_dir = tmp_path / "run"
    ckpt = yolo.train(source_set(train_ds), train_ds, TINY, run_dir, seed=0, threads=1)
    assert ckpt == (run_dir / "train" / "weights" / "last.pt").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing beside it (runs/, yolo*.pt)
    assert yolo.checkpoint_classes(ckpt) == list(train_ds.card.det_classes)
    preds = yolo.predict(ckpt, source_set(test_ds), TINY, threads=1)
    assert list(preds) == test_ds.ids
    for i, sid in enumerate(test_ds.ids):
        p = preds[sid]
        h, w = test_ds.size(i)
        assert p.ndim == 2 and p.shape[1] == 6 and p.shape[0] <= TINY.max_det
        assert np.all(p[:, 4] >= TINY.conf) and set(p[:, 5].astype(int)) <= {0, 1, 2, 3}
        assert np.all(p[:, 0] >= -0.5) and np.all(p[:, 2] <= w + 0.5) and np.all(p[:, 3] <= h + 0.5)
    assert no_network == []
    with pytest.raises(WeightsError, match="not found"):
        yolo.predict(tmp_path / "absent.pt", SimpleNamespace(paths={}), TINY)


def test_no_validation_images_train_the_same_weights_without_validating(tiny_card, tmp_path, monkeypatch):
    """``val_images=0`` (the quick preset): ultralytics validates nothing, writes one checkpoint and no best.pt,
    and the weights equal those of ultralytics' own trainer validating and saving after every epoch."""
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.engine.validator import BaseValidator

    from detectors import yolo

    monkeypatch.chdir(tmp_path)
    train_ds = PairedDataset.open(tiny_card, "train")
    p = replace(TINY, epochs=2, val_images=0)
    calls = {"validate": 0, "save": 0}
    for cls, name, key in ((BaseValidator, "__call__", "validate"), (BaseTrainer, "save_model", "save")):
        real = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _real=real, _key=key, **k:
                            (calls.__setitem__(_key, calls[_key] + 1), _real(self, *a, **k))[1])
    lean = yolo.train(source_set(train_ds), train_ds, p, tmp_path / "lean", seed=0, threads=1, progress=False)
    assert calls == {"validate": 0, "save": 1}
    assert sorted(q.name for q in lean.parent.iterdir()) == ["last.pt"]
    calls.update(validate=0, save=0)
    monkeypatch.setattr(yolo, "_trainer", lambda protocol: (None, True))
    ref = yolo.train(source_set(train_ds), train_ds, p, tmp_path / "ref", seed=0, threads=1, progress=False)
    assert calls == {"validate": 2, "save": 2}  # after the last epoch and best.pt in final_eval; every epoch
    a, b = yolo._load(ref, None, 1).model.state_dict(), yolo._load(lean, None, 1).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_refuses_gaps_before_training(tiny_card, tmp_path):
    from detectors import yolo

    ds = PairedDataset.open(tiny_card, "train")
    with pytest.raises(DataError, match="lack 12 of 12"):
        yolo.train(SimpleNamespace(paths={}), ds, TINY, tmp_path / "run")
    with pytest.raises(WeightsError, match="never downloaded"):
        yolo.train(source_set(ds), ds, replace(TINY, pretrained=str(tmp_path / "x.pt")),
                   tmp_path / "run")


@pytest.mark.slow
def test_same_seed_same_detector(tiny_card, tmp_path):
    from detectors import yolo

    train_ds = PairedDataset.open(tiny_card, "train")
    test_ds = PairedDataset.open(tiny_card, "test")
    proto = replace(TINY, epochs=3)
    out = []
    for k in range(2):
        ckpt = yolo.train(source_set(train_ds), train_ds, proto, tmp_path / f"r{k}",
                          seed=3, threads=1)
        out.append(yolo.predict(ckpt, source_set(test_ds), proto, threads=1))
    for sid in test_ds.ids:
        np.testing.assert_array_equal(out[0][sid], out[1][sid])


@pytest.mark.slow
def test_quick_protocol_ranks_fusion_above_single_modalities(tmp_path):
    """The benchmark's premise on the default synthetic data: with the ``quick`` protocol, a fusion that keeps
    the IR intensity and the visible chroma (``max``) beats IR-only and visible-only, seed by seed."""
    from detectors import yolo
    from taskeval.fusedset import fuse_split
    from taskeval.metrics.detection import dataset_ground_truth, score_predictions

    card = generate(tmp_path / "synth", SynthConfig(), progress=False)
    train_ds, test_ds = PairedDataset.open(card, "train"), PairedDataset.open(card, "test")
    gt = dataset_ground_truth(test_ds)
    proto = PRESETS["quick"]
    for seed in (0, 1):
        map50 = {}
        for method in ("ir", "vis", "max"):
            train = fuse_split(train_ds, method, tmp_path / "cache", progress=False)
            test = fuse_split(test_ds, method, tmp_path / "cache", progress=False)
            ckpt = yolo.train(train, train_ds, proto, tmp_path / f"{method}-{seed}", seed=seed)
            map50[method], _ = score_predictions(yolo.predict(ckpt, test, proto), gt)
        got = {k: v.map50 for k, v in map50.items()}
        assert got["max"] > max(got["ir"], got["vis"]), got


def test_amp_check_never_downloads(tmp_path):
    """ultralytics' AMP sanity check (it loads yolo26n.pt, a download when absent) is replaced after prepare():
    off on the CPU, on for CUDA, without touching the network; the paper preset's id is that of earlier runs."""
    import torch

    from detectors.ultralytics_env import prepare

    prepare(tmp_path / "state")
    import ultralytics.engine.trainer as trainer

    assert trainer.check_amp.__module__ == "detectors.ultralytics_env"
    assert trainer.check_amp(torch.nn.Linear(2, 2)) is False
    assert load_protocol("quick").id == "quick-12779d"  # batch 2 since issue 18 (the amp field left it alone)
    assert load_protocol("paper").id == "paper-75edc3" and load_protocol("paper").amp is True
