"""``taskeval quality`` on a folder of fused images and per method on a dataset."""

import json

import numpy as np
import pytest
import torch

from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.metrics.quality_functional import entropy


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("q") / "synth", SynthConfig(n_train=2, n_test=3, height=48, width=64),
                    progress=False)


def test_folder_mode_json_matches_the_functional_metric(card, tmp_path, capsys):
    root = card.parent / "test"
    rc = main(["quality", "--fused", str(root / "vi"), "--ir", str(root / "ir"), "--vis", str(root / "vi"),
               "--metrics", "EN,CC", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(out["per_image"]) == {p.stem for p in (root / "vi").glob("*.png")}
    ds = PairedDataset(load_card(card), "test")
    _, vis = ds.read_pair(0)
    expected = float(entropy(torch.from_numpy(vis).permute(2, 0, 1)[None])[0])
    assert out["per_image"][ds.ids[0]]["EN"] == pytest.approx(expected, rel=1e-12)
    assert out["mean"]["EN"] == pytest.approx(np.mean([v["EN"] for v in out["per_image"].values()]))


def test_folder_mode_lists_missing_images(card, tmp_path, capsys):
    import shutil

    root = card.parent / "test"
    fused = tmp_path / "fused"
    shutil.copytree(root / "vi", fused)
    missing = sorted(fused.glob("*.png"))[0]
    missing.unlink()
    rc = main(["quality", "--fused", str(fused), "--ir", str(root / "ir"), "--vis", str(root / "vi")])
    assert rc == 2 and missing.stem in capsys.readouterr().err


def test_methods_mode_table(card, tmp_path, capsys):
    rc = main(["quality", "--methods", "ir,max", "--data", str(card), "--metrics", "SD,Qabf",
               "--cache", str(tmp_path / "c"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(out) == {"ir", "max"}
    # the IR row scored against its own IR source: Qabf's IR term is perfect, so it beats nothing but is finite
    assert all(np.isfinite(out[m][k]["mean"]) for m in out for k in ("SD", "Qabf"))
    rc = main(["quality", "--methods", "ir", "--data", str(card), "--metrics", "Qbaf", "--cache", str(tmp_path / "c")])
    assert rc == 2 and "did you mean 'Qabf'" in capsys.readouterr().err
