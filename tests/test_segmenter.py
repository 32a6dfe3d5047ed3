"""The DeepLabV3+ adapter: protocol, augmentation, schedule, training, exact resume, NaN stop, prediction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from segmenters import deeplab
from segmenters import train as train_mod
from segmenters.protocol import PRESETS, SegProtocol, load_protocol, protocol_id, with_seed
from segmenters.transforms import MEAN, STD, pad_to_multiple, random_scale_crop_flip
from taskeval.data.dataset import PairedDataset
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import ConfigError, DataError, TrainingError, WeightsError
from taskeval.fusedset import fuse_split

TINY = {"epochs": 1, "batch": 4, "crop_size": (64, 80), "scale_range": (0.75, 1.25), "decoder_channels": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_tiny")
    card = generate(root / "synth", SynthConfig(n_train=8, n_test=4, height=64, width=80), progress=False)
    tr, te = PairedDataset.open(card, "train"), PairedDataset.open(card, "test")
    cache = root / "cache"
    return {"card": card, "train": tr, "test": te,
            "ftrain": fuse_split(tr, "vis", cache, progress=False),
            "ftest": fuse_split(te, "vis", cache, progress=False), "root": root}


def tiny_protocol(**kw) -> SegProtocol:
    return load_protocol("quick", [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                                   for k, v in {**TINY, **kw}.items()])


# ----------------------------------------------------------------------------------------- protocol

def test_protocol_presets_overrides_and_hash(tmp_path):
    quick = load_protocol("quick")
    assert quick == PRESETS["quick"]
    assert protocol_id(quick).startswith("quick-")
    assert protocol_id(with_seed(quick, 5)) == protocol_id(quick)  # the seed has its own column
    longer = load_protocol("quick", ["epochs=99"])
    assert longer.epochs == 99 and protocol_id(longer) != protocol_id(quick)
    assert load_protocol("paper").encoder == "resnet101"
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_protocol("quick", ["epoch=3"])
    with pytest.raises(ConfigError, match="divisible by 16"):
        load_protocol("quick", ["crop_size=100,160"])
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        load_protocol("quik")
    f = tmp_path / "mine.yaml"
    f.write_text("preset: paper\nepochs: 3\n")
    mine = load_protocol(f)
    assert (mine.name, mine.epochs, mine.encoder) == ("mine", 3, "resnet101")


def test_protocol_hash_follows_encoder_weight_content(tmp_path):
    w = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, w)
    p1 = load_protocol("quick", [f"encoder_weights={w}"])
    h1 = protocol_id(p1)
    torch.save({"a": torch.ones(2)}, w)
    assert protocol_id(p1) != h1


# ----------------------------------------------------------------------------------------- transforms

def test_augmentation_keeps_image_and_mask_aligned():
    rng0 = np.random.default_rng(0)
    mask = np.kron(rng0.integers(0, 5, (5, 6)), np.ones((8, 10), np.int64))  # blocks: interiors exist
    img = np.repeat((mask[..., None] / 10.0).astype(np.float32), 3, axis=2)  # colour encodes the class
    for seed in range(6):
        x, y = random_scale_crop_flip(img, mask, np.random.default_rng(seed), (48, 64), (0.5, 1.5),
                                      hflip=True, vflip=True, ignore_index=255)
        assert x.shape == (3, 48, 64) and y.shape == (48, 64) and y.dtype == np.int64
        red = x[0] * STD[0] + MEAN[0]
        labelled = y != 255
        # nearest-neighbour mask vs bilinear image: compare where the 3x3 mask neighbourhood is uniform
        pad = np.pad(y, 1, mode="edge")
        uniform = np.all([pad[1 + dy:1 + dy + y.shape[0], 1 + dx:1 + dx + y.shape[1]] == y
                          for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        interior = labelled & uniform
        assert interior.sum() > 300
        np.testing.assert_allclose(red[interior], y[interior] / 10.0, atol=1e-5)
        assert np.all(x[:, ~labelled] == 0)  # padding is the normalised mean


def test_augmentation_is_a_function_of_the_seed():
    img = np.random.default_rng(1).random((30, 40, 3), dtype=np.float32)
    mask = np.zeros((30, 40), np.int64)
    a = random_scale_crop_flip(img, mask, np.random.default_rng([0, 2, 7]), (32, 32), (0.8, 1.2), True, False, 255)
    b = random_scale_crop_flip(img, mask, np.random.default_rng([0, 2, 7]), (32, 32), (0.8, 1.2), True, False, 255)
    np.testing.assert_array_equal(a[0], b[0])


def test_pad_to_multiple():
    x, hw = pad_to_multiple(torch.ones(1, 3, 50, 70), 16)
    assert hw == (50, 70) and x.shape == (1, 3, 64, 80) and float(x[..., 50:, :].abs().sum()) == 0


def test_poly_lr_and_warmup():
    assert train_mod.poly_lr(0.01, 0, 100, 0.9, 0) == pytest.approx(0.01)
    assert train_mod.poly_lr(0.01, 50, 100, 0.9, 0) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert train_mod.poly_lr(0.01, 100, 100, 0.9, 0) == 0.0
    assert train_mod.poly_lr(0.01, 0, 100, 0.9, 10) == pytest.approx(1e-5)
    assert train_mod.poly_lr(0.01, 5, 100, 0.9, 10) == pytest.approx(0.01 * (1e-3 + 0.999 * 0.5))


def test_ddp_shards_cover_the_single_process_batches():
    single = train_mod.epoch_batches(22, 8, seed=3, epoch=1)
    assert len(single) == 2 and all(len(b) == 8 for b in single)
    shards = [train_mod.epoch_batches(22, 8, seed=3, epoch=1, rank=r, world=4) for r in range(4)]
    for b in range(2):
        assert [i for s in shards for i in s[b]] == single[b]
    assert train_mod.epoch_batches(22, 8, 3, 2) != single  # a new order every epoch


def test_ohem_keeps_hard_pixels():
    p = load_protocol("quick", ["loss=ohem", "ohem_min_kept=0.25"])
    loss = train_mod.SegLoss(p, 2, 255)
    target = torch.zeros(1, 1, 4, dtype=torch.int64)
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0] = torch.tensor([10.0, 10.0, 10.0, -10.0])  # three easy pixels, one hard
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    assert float(loss(logits, target)) == pytest.approx(float(per_pixel[3]))
    assert float(loss(logits, torch.full_like(target, 255))) == 0.0  # all ignored: no NaN


# ----------------------------------------------------------------------------------------- encoder weights

def test_encoder_weights_from_local_file(tmp_path):
    import segmentation_models_pytorch as smp

    donor = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=3).encoder.state_dict()
    donor = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in donor.items()}
    donor["fc.weight"] = torch.zeros(1000, 512)  # the ImageNet head is dropped
    path = tmp_path / "resnet18.pth"
    torch.save(donor, path)
    m = deeplab.build_model(load_protocol("quick", ["encoder=resnet18", f"encoder_weights={path}"]), 3)
    assert torch.all(m.encoder.conv1.weight == 0.5)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(WeightsError, match="missing keys"):
        deeplab.build_model(load_protocol("quick", ["encoder=resnet18", f"encoder_weights={bad}"]), 3)


@pytest.mark.parametrize("encoder", ["resnet18", "tu-mobilenetv3_small_100"])
def test_imagenet_download_is_opt_in_and_fails_cleanly_offline(encoder):
    with pytest.raises(WeightsError, match="encoder_weights=PATH"):
        deeplab.build_model(load_protocol("quick", [f"encoder={encoder}", "encoder_weights=imagenet"]), 3)


# ----------------------------------------------------------------------------------------- training

def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_predict_and_reuse(tiny, tmp_path):
    p = tiny_protocol()
    ck = deeplab.train(tiny["ftrain"], tiny["train"], p, tmp_path / "run", "cpu", progress=False)
    assert ck.name == "model.pt" and not (tmp_path / "run" / "last.pt").exists()
    assert (tmp_path / "run" / "train_log.csv").read_text().startswith("epoch,loss")
    stamp = ck.stat().st_mtime_ns
    assert deeplab.train(tiny["ftrain"], tiny["train"], p, tmp_path / "run", "cpu", progress=False) == ck
    assert ck.stat().st_mtime_ns == stamp  # finished training is not repeated
    preds = deeplab.predict(ck, tiny["ftest"], device="cpu", progress=False)
    assert list(preds) == tiny["test"].ids
    for lab in preds.values():
        assert lab.dtype == np.uint8 and lab.shape == (64, 80) and lab.max() < 5
    with pytest.raises(TrainingError, match=r"protocol\.epochs: 1 -> 2"):
        deeplab.train(tiny["ftrain"], tiny["train"], tiny_protocol(epochs=2), tmp_path / "run", "cpu", progress=False)


def test_interrupted_training_resumes_exactly(tiny, tmp_path, monkeypatch):
    p = tiny_protocol(epochs=2)
    whole = deeplab.train(tiny["ftrain"], tiny["train"], p, tmp_path / "whole", "cpu", progress=False)

    real = train_mod.TrainPairs.set_epoch

    def stop_at_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        real(self, epoch)

    monkeypatch.setattr(train_mod.TrainPairs, "set_epoch", stop_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        deeplab.train(tiny["ftrain"], tiny["train"], p, tmp_path / "cut", "cpu", progress=False)
    assert (tmp_path / "cut" / "last.pt").is_file() and not (tmp_path / "cut" / "model.pt").exists()
    monkeypatch.setattr(train_mod.TrainPairs, "set_epoch", real)
    # an execution-only setting may change between the interruption and the resumption
    resumed = deeplab.train(tiny["ftrain"], tiny["train"], replace(p, eval_batch=1), tmp_path / "cut", "cpu",
                            progress=False)
    a = torch.load(whole, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert _states_equal(a["model"], b["model"])


def test_nan_loss_stops_with_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    p = tiny_protocol(epochs=2)
    real = train_mod.SegLoss.forward
    calls = {"n": 0}

    def nan_in_second_epoch(self, logits, target):
        calls["n"] += 1
        loss = real(self, logits, target)
        return loss * float("nan") if calls["n"] > 2 else loss  # 2 iterations per epoch

    monkeypatch.setattr(train_mod.SegLoss, "forward", nan_in_second_epoch)
    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 2, iteration 3 .*last good checkpoint"):
        deeplab.train(tiny["ftrain"], tiny["train"], p, tmp_path / "nan", "cpu", progress=False)
    kept = torch.load(tmp_path / "nan" / "last.pt", weights_only=True)
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "model.pt").exists()


def test_small_split_is_decoded_once_with_the_same_samples(tiny, monkeypatch):
    p = tiny_protocol()
    reads = []
    real = type(tiny["ftrain"]).read
    monkeypatch.setattr(type(tiny["ftrain"]), "read", lambda self, sid: reads.append(sid) or real(self, sid))
    kept, disk = train_mod.TrainPairs(tiny["ftrain"], tiny["train"], p), \
        train_mod.TrainPairs(tiny["ftrain"], tiny["train"], p, ram_budget=0)
    n = len(tiny["train"])
    samples = {}
    for data in (kept, disk):
        before = len(reads)
        for epoch in range(2):
            data.set_epoch(epoch)
            for k in range(n):
                samples.setdefault((epoch, k), []).append(data[k])
        samples["reads", id(data)] = len(reads) - before
    assert samples["reads", id(kept)] == n and samples["reads", id(disk)] == 2 * n
    for key, pair in samples.items():
        if key[0] != "reads":
            (xa, ya), (xb, yb) = pair
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    img, mask = kept.load(0)
    with pytest.raises(ValueError, match="read-only"):
        img[0, 0, 0] = 0.5  # a kept image cannot be changed by an augmentation in place


@pytest.mark.parametrize("every, saved", [(1e9, [1]), (0.0, [1, 2])])
def test_resumable_checkpoint_after_the_first_epoch_then_by_time(tiny, tmp_path, monkeypatch, every, saved):
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", every)
    epochs = []
    real = train_mod._atomic_save
    monkeypatch.setattr(train_mod, "_atomic_save",
                        lambda obj, path: (epochs.append((path.name, obj["epoch"])), real(obj, path))[1])
    deeplab.train(tiny["ftrain"], tiny["train"], tiny_protocol(epochs=3), tmp_path / "run", "cpu", progress=False)
    assert epochs == [("last.pt", e) for e in saved] + [("model.pt", 3)]


def test_fused_image_of_another_size_is_an_error(tiny, tmp_path):
    from taskeval.fusedset import FusedSet
    from taskeval.imageio import write_png

    paths = dict(tiny["ftrain"].paths)
    odd = tmp_path / f"{tiny['train'].ids[0]}.png"
    write_png(odd, np.zeros((32, 40, 3), np.uint8))
    paths[tiny["train"].ids[0]] = odd
    fs = FusedSet("odd", "synth", "train", "k", paths)
    data = train_mod.TrainPairs(fs, tiny["train"], tiny_protocol())
    with pytest.raises(DataError, match=r"fused image is 40x32 but the mask .* is 80x64"):
        data[0]


def test_too_few_images_for_a_batch(tiny, tmp_path):
    with pytest.raises(ConfigError, match="fewer than one batch"):
        deeplab.train(tiny["ftrain"], tiny["train"], tiny_protocol(batch=16), tmp_path / "x", "cpu", progress=False)
