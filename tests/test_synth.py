"""The synthetic benchmark: deterministic, valid, and built so that fusion matters."""

import hashlib

import numpy as np
import pytest

from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.check import check_dataset
from taskeval.data.synth import DET_CLASSES, SynthConfig, generate, make_scene
from taskeval.errors import ConfigError

CFG = SynthConfig(n_train=10, n_test=4, height=64, width=80, objects_min=4, objects_max=6)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return generate(root / "a", CFG, progress=False)


def test_deterministic_and_valid(synth, tmp_path):
    again = generate(tmp_path / "b", CFG, progress=False)
    assert _digest(synth.parent) == _digest(again.parent)
    report = check_dataset(load_card(synth), progress=False)
    assert report.ok and report.split_sizes == {"train": 10, "test": 4}
    with pytest.raises(FileExistsError):
        generate(synth.parent, SynthConfig(n_train=3), progress=False)


def test_modalities_carry_different_classes(synth):
    ds = PairedDataset(load_card(synth), "train")
    contrast = {c: {"ir": [], "vis": []} for c in DET_CLASSES}
    hue = {"cone": [], "sign": []}
    for i in range(len(ds)):
        s = ds[i]
        ir, vis, mask = s.ir[0].numpy(), s.vis.numpy(), s.mask.numpy()
        for x1, y1, x2, y2, cls in [(*b[1:].astype(int), int(b[0])) for b in s.boxes]:
            inside = mask[y1:y2, x1:x2] == cls + 1
            ring = np.zeros_like(mask, bool)
            ring[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
            ring[y1:y2, x1:x2] = False
            name = DET_CLASSES[cls]
            contrast[name]["ir"].append(abs(ir[y1:y2, x1:x2][inside].mean() - ir[ring].mean()))
            if not s.id.endswith("N") or name in ("cone", "sign"):
                contrast[name]["vis"].append(np.abs(vis[:, y1:y2, x1:x2][:, inside].mean(1)
                                                    - vis[:, ring].mean(1)).max())
            if name in hue:
                hue[name].append(vis[0, y1:y2, x1:x2][inside].mean() - vis[2, y1:y2, x1:x2][inside].mean())
    mean = {c: {m: float(np.mean(v)) if v else 0.0 for m, v in d.items()} for c, d in contrast.items()}
    assert mean["person"]["ir"] > 0.3 and mean["person"]["vis"] < 0.05      # IR-only class
    assert mean["cone"]["ir"] < 0.05 and mean["sign"]["ir"] < 0.05          # cold: invisible in IR
    assert mean["cone"]["vis"] > 0.1 and mean["sign"]["vis"] > 0.1
    assert min(hue["cone"]) > 0.2 and max(hue["sign"]) < -0.2              # told apart by hue only


def test_cli_synth(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "n_train=3", "n_test=2", "height=32",
                 "width=48"]) == 0
    assert (tmp_path / "s" / "card.yaml").is_file()
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "n_trian=3"]) == 2
    assert "did you mean 'n_train'" in capsys.readouterr().err


def test_synth_card_name_generates_once(tmp_path, monkeypatch):
    # `--data synth` works in every command: the default synthetic set is generated on first use
    monkeypatch.setenv("TASKEVAL_SYNTH_DIR", str(tmp_path / "env"))
    card = load_card("synth", tmp_path / "given")
    assert tuple(card.det_classes) == DET_CLASSES and (tmp_path / "given" / "synth.json").is_file()
    n = len(PairedDataset(card, "train"))
    assert n == SynthConfig().n_train
    stamp = (tmp_path / "given" / "train").stat().st_mtime_ns
    assert len(PairedDataset(load_card("synth", tmp_path / "given"), "train")) == n  # reused, not rewritten
    assert (tmp_path / "given" / "train").stat().st_mtime_ns == stamp
    assert not (tmp_path / "env").exists()
    with pytest.raises(Exception, match="synth"):
        load_card("synht")


def _warm_contrast(design: int) -> dict[str, float]:
    """Mean contrast (object minus a 3-px ring around its box) of people and cars in IR, and of people and
    night cars in the mean of IR and visible luminance (what ``average`` fusion gives the detector)."""
    cfg = SynthConfig(height=64, width=80, objects_min=4, objects_max=6, design=design)
    rng = np.random.default_rng(0)
    out = {"person_ir": [], "car_ir": [], "person_avg": [], "night_car_avg": []}
    for i in range(40):
        night = i % 2 == 1
        ir, vis, boxes, mask = make_scene(cfg, rng, night)
        fused = 0.5 * (ir + vis @ np.array([0.299, 0.587, 0.114], np.float32))
        for cls, x1, y1, x2, y2 in boxes.astype(int):
            name = DET_CLASSES[cls]
            if name not in ("person", "car"):
                continue
            inside = mask[y1:y2, x1:x2] == cls + 1
            ring = np.zeros_like(mask, bool)
            ring[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
            ring[y1:y2, x1:x2] = False
            out[f"{name}_ir"].append(ir[y1:y2, x1:x2][inside].mean() - ir[ring].mean())
            if name == "person" or night:
                key = "person_avg" if name == "person" else "night_car_avg"
                out[key].append(fused[y1:y2, x1:x2][inside].mean() - fused[ring].mean())
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_design_2_keeps_warm_objects_plain_after_averaging():
    # design 2 (the default): people and cars warm enough that averaging IR with the visible image (half their
    # contrast) still leaves them plain, so a naive fusion trains to its ceiling (README: spread and margins)
    assert SynthConfig().design == 2
    new, old = _warm_contrast(2), _warm_contrast(1)
    assert new["person_ir"] > 0.42 and new["car_ir"] > 0.3
    assert new["person_avg"] > 0.2 and new["night_car_avg"] > 0.15
    assert old["car_ir"] < 0.25 and old["night_car_avg"] < 0.12        # design 1: night cars faint after averaging
    with pytest.raises(ConfigError, match="design"):
        SynthConfig(design=3)
