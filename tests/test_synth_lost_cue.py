"""The synthetic lost-cue variant: deterministic, the default dataset untouched, and a class (puddle) whose
only trace is an IR cue that max fusion and the unsupervised fusion loss discard, measured on the data."""

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.check import check_dataset
from taskeval.data.synth import DET_CLASSES, ORACLE_DIR, SynthConfig, SynthExistsError, generate
from taskeval.errors import ConfigError
from taskeval.fusion_train import fusion_loss
from taskeval.imageio import read_rgb

# the default size: the lost-cue property is a property of this scale (see taskeval.data.synth)
LOST = SynthConfig(n_train=6, n_test=2, variant="lost-cue", seed=3)
PUDDLE = len(DET_CLASSES) + 1  # mask value


def _digest(root, keep=lambda p: True):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and keep(p):
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module", params=[2, 1], ids=["design2", "design1"])
def lost_cfg(request):
    """The variant on the main job's design 2 and on design 1 (joint-synth's data)."""
    from dataclasses import replace

    return replace(LOST, design=request.param)


@pytest.fixture(scope="module")
def lost(tmp_path_factory, lost_cfg):
    return generate(tmp_path_factory.mktemp("lost") / "a", lost_cfg, progress=False)


def test_variant_is_deterministic_and_valid(lost, lost_cfg, tmp_path):
    again = generate(tmp_path / "b", lost_cfg, progress=False)
    assert _digest(lost.parent) == _digest(again.parent)
    card = load_card(lost)
    assert card.name == "synth-lost-cue" and tuple(card.det_classes) == DET_CLASSES + ("puddle",)
    assert len(card.seg_classes) == len(card.palette) == len(DET_CLASSES) + 2
    report = check_dataset(card, progress=False)
    assert report.ok and report.split_sizes == {"train": 6, "test": 2}
    for split in ("train", "test"):  # the oracle fusion: one fused image per pair, of the pair's size
        ids = PairedDataset(card, split).ids
        assert sorted(p.stem for p in (lost.parent / split / ORACLE_DIR).glob("*.png")) == sorted(ids)
    assert json.loads((lost.parent / "synth.json").read_text())["variant"] == "lost-cue"
    with pytest.raises(SynthExistsError):  # the default dataset never passes for the variant, nor back
        generate(lost.parent, SynthConfig(n_train=6, n_test=2, seed=3), progress=False)


def test_default_dataset_keeps_its_bytes(tmp_path):
    # design 1: the scenes before issue 18 (the default is design 2, tests/test_synth.py)
    cfg = SynthConfig(n_train=6, n_test=3, height=64, width=80, objects_min=3, objects_max=5, seed=7, design=1)
    root = generate(tmp_path / "d", cfg, progress=False).parent
    # labels, masks, card and settings of this config as the generator wrote them before the variant existed:
    # object placement follows every random draw, so a changed draw order of the default scenes shows here
    ints = _digest(root, lambda p: p.suffix in (".txt", ".json", ".yaml") or p.parent.name == "masks")
    assert ints == "c99fd388880ce88b91e7ced49f9f50e7028d5da3e8df636f43e24bf50d68e03b"
    assert not {"variant", "design"} & set(json.loads((root / "synth.json").read_text()))
    assert not any(root.rglob(ORACLE_DIR))
    assert generate(root, cfg, progress=False) == root / "card.yaml"  # recognised as the same dataset


def test_variant_settings_checked():
    with pytest.raises(ConfigError, match="lost-cue"):
        SynthConfig(variant="lost-kue")
    with pytest.raises(ConfigError, match="height >= 64"):
        SynthConfig(variant="lost-cue", height=48, width=64)


def _luma(rgb):
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _puddles(card_path, split="train"):
    """Per puddle (one connected component of the mask): (ir, vis Y, oracle Y, inside, ring) on the pair."""
    ds = PairedDataset(load_card(card_path), split)
    k = np.ones((3, 3), np.uint8)
    out = []
    for i in range(len(ds)):
        s = ds[i]
        mask = s.mask.numpy()
        n, comp = cv2.connectedComponents((mask == PUDDLE).astype(np.uint8))
        oracle = read_rgb(card_path.parent / split / ORACLE_DIR / f"{s.id}.png").transpose(2, 0, 1)
        for c in range(1, n):
            inside = (comp == c).astype(np.uint8)
            # 2-5 px around it: inside the glare (puddles lie >= 5 px inside), unlabelled
            ring = cv2.dilate(inside, k, iterations=5).astype(bool) & ~cv2.dilate(inside, k, iterations=2).astype(bool)
            out.append((s.ir[0].numpy(), _luma(s.vis.numpy()), _luma(oracle), inside.astype(bool),
                        ring & (mask == 0)))
    return out


def _contrast(img, inside, ring):
    return float(img[inside].mean() - img[ring].mean())


def test_puddles_are_seen_in_ir_alone_and_lost_by_max(lost):
    puddles = _puddles(lost)
    assert len(puddles) >= 4
    c = {k: [] for k in ("ir", "vis", "max", "average", "oracle")}
    for ir, y, oracle, inside, ring in puddles:
        near = cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=5).astype(bool)
        assert (y[near] > ir[near]).all()  # under the glare: max(IR, Y) is the visible image, puddle or not
        for name, img in (("ir", ir), ("vis", y), ("max", np.maximum(ir, y)), ("average", (ir + y) / 2),
                          ("oracle", oracle)):
            c[name].append(_contrast(img, inside, ring))
    c = {k: np.array(v) for k, v in c.items()}
    assert (c["ir"] < -0.1).all()                                       # cold: clear in IR, every one
    assert abs(c["vis"].mean()) < 0.03 and np.abs(c["vis"]).max() < 0.08  # nothing but the glare's grain
    assert np.array_equal(c["max"], c["vis"])                           # max fusion drops it entirely
    assert 0.3 < (c["average"] / c["ir"]).mean() < 0.7                  # average keeps about half
    assert (c["oracle"] < -0.3).all()                                   # the oracle keeps it


def test_the_fusion_loss_optimum_drops_the_puddle(lost):
    """Minimise the fusion loss over a free image around each of three puddles, starting from the average
    (half the cue): the optimum keeps the glare and loses what the average had of the puddle."""
    torch.manual_seed(0)
    kept = []
    for ir, y, _, inside, ring in _puddles(lost)[:3]:
        ys, xs = np.nonzero(inside)
        y0 = int(np.clip((ys.min() + ys.max()) // 2 - 24, 0, ir.shape[0] - 48))
        x0 = int(np.clip((xs.min() + xs.max()) // 2 - 32, 0, ir.shape[1] - 64))
        crop = (slice(y0, y0 + 48), slice(x0, x0 + 64))
        t_ir, t_y = (torch.from_numpy(np.ascontiguousarray(a[crop]))[None, None] for a in (ir, y))
        f = ((t_ir + t_y) / 2).requires_grad_(True)
        opt = torch.optim.Adam([f], lr=0.03)
        for _ in range(100):
            loss = fusion_loss(f.clamp(0, 1), t_ir, t_y)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        fused = f.detach().clamp(0, 1)[0, 0].numpy()
        cue = _contrast(ir[crop], inside[crop], ring[crop]) - _contrast(y[crop], inside[crop], ring[crop])
        kept.append((_contrast(fused, inside[crop], ring[crop]) - _contrast(y[crop], inside[crop], ring[crop])) / cue)
    assert np.mean(kept) < 0.2 and max(kept) < 0.3, kept  # the average started at 0.5


def test_cli_synth_variant(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["data", "synth", "--out", str(out), "variant=lost-cue", "n_train=2", "n_test=1"]) == 0
    assert "oracle" in capsys.readouterr().out
    assert len(list((out / "test" / ORACLE_DIR).glob("*.png"))) == 1
    assert main(["data", "synth", "--out", str(tmp_path / "w"), "variant=lost"]) == 2
