"""``taskeval fuse`` / FusedSet caching / precomputed folders / ``taskeval fuse train``."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import DataError, TrainingError, WeightsError
from taskeval.fusedset import fuse_split, precomputed_set
from taskeval.fusion_train import FusionTrainConfig, fusion_loss, train_fusion
from taskeval.imageio import read_rgb


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("s") / "synth",
                    SynthConfig(n_train=6, n_test=3, height=32, width=40), progress=False)


def test_fuse_split_caches_and_matches_the_rule(card, tmp_path):
    ds = PairedDataset(load_card(card), "test")
    fused = fuse_split(ds, "max", tmp_path / "cache", progress=False)
    assert fused.ids == ds.ids
    s = ds[0]
    y = 0.299 * s.vis[0] + 0.587 * s.vis[1] + 0.114 * s.vis[2]
    expected_y = torch.maximum(s.ir[0], y).numpy()
    got = read_rgb(fused.paths[ds.ids[0]])
    got_y = 0.299 * got[..., 0] + 0.587 * got[..., 1] + 0.114 * got[..., 2]
    # Luminance kept up to the 8-bit rounding of each RGB channel, except where recolouring the fused
    # luminance with the visible chroma leaves the RGB cube: there a channel is clipped at 0 or 255.
    off = np.abs(got_y - expected_y) >= 3 / 255
    clipped = ((got <= 0) | (got >= 1)).any(axis=-1)
    assert not (off & ~clipped).any(), f"{int((off & ~clipped).sum())} unclipped pixels lost their luminance"
    assert off.mean() < 0.05
    h5 = fused.meta["h5"]
    mtime = {p: p.stat().st_mtime_ns for p in fused.paths.values()}
    again = fuse_split(ds, "max", tmp_path / "cache", progress=False)   # second run: nothing recomputed
    assert again.key == fused.key and again.meta["h5"] == h5
    assert {p: p.stat().st_mtime_ns for p in again.paths.values()} == mtime


def test_changed_weights_invalidate_the_cache(card, tmp_path):
    from fusion_models import create_fusion_model

    ds = PairedDataset(load_card(card), "test")
    m = create_fusion_model("seafusion")
    torch.save(m.state_dict(), tmp_path / "a.pth")
    k1 = fuse_split(ds, "seafusion", tmp_path / "c", weights=str(tmp_path / "a.pth"), progress=False).key
    with torch.no_grad():
        next(m.parameters()).add_(0.1)
    torch.save(m.state_dict(), tmp_path / "a.pth")
    k2 = fuse_split(ds, "seafusion", tmp_path / "c", weights=str(tmp_path / "a.pth"), progress=False).key
    assert k1 != k2
    with pytest.raises(WeightsError, match="needs weights"):
        fuse_split(ds, "seafusion", tmp_path / "c", progress=False)


def test_precomputed_folder_errors_list_names(card, tmp_path):
    ds = PairedDataset(load_card(card), "test")
    folder = tmp_path / "mine"
    folder.mkdir()
    for sid in ds.ids:
        shutil.copy(ds.records[ds.index(sid)].vis, folder / f"{sid}.png")
    fs = precomputed_set(folder, ds, name="mine")
    assert fs.ids == ds.ids and fs.method == "mine"
    (folder / f"{ds.ids[1]}.png").unlink()
    cv2.imwrite(str(folder / "stray.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as exc:
        precomputed_set(folder, ds)
    assert ds.ids[1] in str(exc.value) and "stray" in str(exc.value)
    (folder / "stray.png").unlink()
    shutil.copy(ds.records[1].vis, folder / f"{ds.ids[1]}.png")
    cv2.imwrite(str(folder / f"{ds.ids[0]}.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=f"{ds.ids[0]}.png is 8x8, source 40x32"):
        precomputed_set(folder, ds)


def test_cli_fuse_folders_and_dataset(card, tmp_path, capsys):
    root = card.parent / "test"
    out = tmp_path / "out"
    rc = main(["fuse", "--method", "average", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
               "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 0 and sorted(p.stem for p in out.glob("*.png")) == sorted(p.stem for p in (root / "ir").glob("*"))
    rc = main(["fuse", "--method", "average", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
               "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err   # never overwritten silently
    rc = main(["fuse", "--method", "laplacian", "--data", str(card), "--split", "train",
               "--cache", str(tmp_path / "cache")])
    assert rc == 0 and "laplacian on synth/train: fused 6 pair(s)" in capsys.readouterr().out


def test_fusion_loss_prefers_the_informative_fusion():
    g = torch.Generator().manual_seed(0)
    ir, y = torch.rand(2, 1, 24, 24, generator=g), torch.rand(2, 1, 24, 24, generator=g)
    good = fusion_loss(torch.maximum(ir, y), ir, y)["total"]
    bad = fusion_loss(torch.full_like(ir, 0.5), ir, y)["total"]
    assert good < bad


def test_fuse_train_learns_resumes_and_labels(card, tmp_path, capsys):
    ds = PairedDataset(load_card(card), "train")
    cfg = FusionTrainConfig(epochs=2, batch=3, crop=32, lr=1e-3)
    path = train_fusion("seafusion", ds, tmp_path / "run", cfg, progress=False)
    meta = json.loads((tmp_path / "run" / "fusion.json").read_text())
    assert meta["note"] == "trained by taskeval (fusion loss)" and len(meta["history"]) == 2
    from fusion_models import create_fusion_model

    create_fusion_model("seafusion", weights=str(path))  # loads strictly
    cfg3 = FusionTrainConfig(epochs=3, batch=3, crop=32, lr=1e-3)
    train_fusion("seafusion", ds, tmp_path / "run", cfg3, progress=False)  # resumes at epoch 3
    meta = json.loads((tmp_path / "run" / "fusion.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]  # the history of the first call is kept
    # finished: a further call trains nothing and rewrites nothing (the history stays whole)
    files = {f: (tmp_path / "run" / f).read_bytes() for f in ("fusion.pth", "fusion.json", "last.pt")}
    stamps = {f: (tmp_path / "run" / f).stat().st_mtime_ns for f in files}
    assert train_fusion("seafusion", ds, tmp_path / "run", cfg3, progress=False) == path
    assert {f: (tmp_path / "run" / f).read_bytes() for f in files} == files
    assert {f: (tmp_path / "run" / f).stat().st_mtime_ns for f in files} == stamps
    rc = main(["fuse", "train", "--method", "max", "--data", str(card), "--out", str(tmp_path / "x")])
    assert rc == 2 and "no trainable parameters" in capsys.readouterr().err


def test_nan_loss_stops_with_last_checkpoint(card, tmp_path, monkeypatch):
    import taskeval.fusion_train as ft

    ds = PairedDataset(load_card(card), "train")
    real, calls = ft.fusion_loss, {"n": 0}

    def poisoned(*args, **kwargs):  # the third step (epoch 2 of 2 batches per epoch) returns NaN
        calls["n"] += 1
        terms = real(*args, **kwargs)
        if calls["n"] > 2:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(ft, "fusion_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2"):
        train_fusion("seafusion", ds, tmp_path / "run", FusionTrainConfig(epochs=3, batch=3, crop=32), progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and not (tmp_path / "run" / "fusion.pth").exists()
