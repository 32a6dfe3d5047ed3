"""IFCNN and DIDFuse with their official weights through the harness: ``taskeval benchmark`` (detection,
segmentation, quality) on tiny synthetic data, and detection-guided joint training (``x@joint-det``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from fusion_models import create_fusion_model
from taskeval.cli.main import main
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.joint import JointConfig, JointTrainer, joint_name
from taskeval.results import read_rows

TINY = SynthConfig(n_train=6, n_test=3, height=64, width=64, objects_min=2, objects_max=3)
METHODS = ("ifcnn", "didfuse")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ports") / "synth"
    generate(root, TINY, progress=False)
    return root


@pytest.mark.parametrize("fusion", METHODS)
def test_official_image_on_the_harness_data(shared, synth_root, fusion):
    """official_image takes what the data layer reads (8-bit files / 255) and returns grey uint8 images."""
    ds = PairedDataset(load_card(synth_root / "card.yaml"), "test")
    pairs = [ds.read_pair(i) for i in range(2)]
    ir = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    vis = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2)
    model = create_fusion_model(fusion)
    out = model.spec.official_image(model, ir, vis)
    assert out.shape == (2, TINY.height, TINY.width) and out.dtype == np.uint8


@pytest.mark.slow
def test_benchmark_runs_the_ports_with_official_weights(shared, tmp_path, synth_root, monkeypatch, capsys):
    """One weights path given as a file, one as ``official`` (looked up in TASKEVAL_WEIGHTS_DIR)."""
    monkeypatch.setenv("TASKEVAL_WEIGHTS_DIR", str(shared / "weights"))
    synth = {k: getattr(TINY, k) for k in ("n_train", "n_test", "height", "width", "objects_min",
                                           "objects_max")}
    cfg = {"name": "ports", "data": {"card": "synth", "root": str(synth_root), "synth": synth},
           "methods": [{"name": "ifcnn", "weights": str(shared / "weights" / "IFCNN" / "IFCNN-MAX.pth")},
                       {"name": "didfuse", "weights": "official"}],
           "tasks": ["detection", "segmentation", "quality"], "seeds": [0],
           "seg": {"crop_size": [64, 64], "epochs": 1, "batch": 3},
           "det": {"imgsz": 64, "epochs": 1, "batch": 3},
           "quality_metrics": ["EN", "SD"], "device": "cpu"}
    path = tmp_path / "ports.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "run"
    assert main(["benchmark", str(path), "--out", str(out), "--no-report", "--quiet"]) == 0
    rows = read_rows(out / "results.csv")
    assert {(r.method, r.task) for r in rows} == {(m, t) for m in METHODS
                                                  for t in ("detection", "segmentation", "quality")}
    for metric in ("mAP50", "mIoU", "EN"):
        values = [r.value for r in rows if r.metric == metric]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), metric
    capsys.readouterr()


@pytest.mark.parametrize("fusion", METHODS)
def test_joint_detection_training_gives_a_derived_method(shared, tmp_path, synth_root, fusion):
    """The YOLO loss reaches the port's trained layers; the result loads as ``<name>@joint-det``."""
    ds = PairedDataset(load_card(synth_root / "card.yaml"), "train")
    cfg = JointConfig(schedule="end2end", epochs=1, warmup_epochs=0, batch=2, max_pairs=2,
                      det_model="yolov8n.yaml")
    weights = {"ifcnn": shared / "weights" / "IFCNN" / "IFCNN-MAX.pth",
               "didfuse": shared / "weights" / "DIDFuse" / "Encoder.pkl"}[fusion]
    jt = JointTrainer(fusion, "det", ds, tmp_path, cfg, init_weights=str(weights), progress=False)
    ir, vis, target = jt.batch([0, 1], np.random.default_rng(0))
    jt.fusion.zero_grad(set_to_none=True)
    jt.losses(ir, vis, target, with_task=True, detach_fused=False)["task"].backward()
    trained = {n: p.grad for n, p in jt.fusion.named_parameters() if p.requires_grad}
    assert all(g is not None and float(g.abs().sum()) > 0 for g in trained.values()), \
        sorted(n for n, g in trained.items() if g is None or not float(g.abs().sum()))
    path = jt.train()
    model = create_fusion_model(joint_name(fusion, "det"), weights=str(path))
    assert model.spec.name == f"{fusion}@joint-det"
    start = create_fusion_model(fusion, weights=str(weights)).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if v.is_floating_point())
