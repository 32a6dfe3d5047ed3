"""Joint fusion + task training: task-loss gradients reach the fusion network, NaN stops, resume."""

import numpy as np
import pytest
import torch

from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import TrainingError
from taskeval.joint import JointConfig, JointTrainer, fusion_only_config, joint_name

TINY = JointConfig(rounds=2, fusion_epochs=1, task_epochs=1, epochs=2, warmup_epochs=1, batch=2, crop=32,
                   max_pairs=2, seg_encoder="resnet18", det_model="yolov8n.yaml")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    card = generate(tmp_path_factory.mktemp("j") / "synth",
                    SynthConfig(n_train=4, n_test=2, height=64, width=64, objects_min=2, objects_max=3), progress=False)
    return PairedDataset(load_card(card), "train")


@pytest.mark.parametrize("task", ["seg", "det"])
@pytest.mark.parametrize("schedule", ["alternating", "end2end"])
def test_task_gradients_reach_the_fusion_network(ds, tmp_path, task, schedule):
    cfg = JointConfig(**{**TINY.__dict__, "schedule": schedule})
    jt = JointTrainer("seafusion", task, ds, tmp_path, cfg, progress=False)
    rng = np.random.default_rng(0)
    ir, vis, target = jt.batch([0, 1], rng)
    # the task loss alone, through the recoloured fused image, must move every learned fusion layer
    lt = jt.losses(ir, vis, target, with_task=True, detach_fused=False)
    jt.fusion.zero_grad()
    lt["task"].backward()
    grads = [p.grad for n, p in jt.fusion.named_parameters() if "bn" not in n]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(jt.fusion.decode1.conv.weight.grad.abs().sum()) > 0  # the output layer of SeAFusion
    # detached (warm-up / task stage): no task gradient reaches the fusion network
    jt.fusion.zero_grad(set_to_none=True)
    jt.losses(ir, vis, target, with_task=True, detach_fused=True)["task"].backward()
    assert all(p.grad is None for p in jt.fusion.parameters())


def test_schedules_run_and_write_a_derived_method(ds, tmp_path):
    from fusion_models import create_fusion_model

    path = JointTrainer("seafusion", "seg", ds, tmp_path, TINY, progress=False).train()
    stages = torch.load(tmp_path / "last.pt", weights_only=True)["history"]
    assert [h["stage"] for h in stages] == ["fusion", "task", "fusion", "task"]
    model = create_fusion_model(joint_name("seafusion", "seg"), weights=str(path))
    assert model.spec.name == "seafusion@joint-seg"
    assert fusion_only_config(TINY).epochs == TINY.rounds * TINY.fusion_epochs


def test_nan_stops_and_resume_continues(ds, tmp_path, monkeypatch):
    jt = JointTrainer("seafusion", "seg", ds, tmp_path, TINY, progress=False)
    calls = {"n": 0}
    real = jt.task_net.forward

    def poisoned(images, masks):
        calls["n"] += 1
        out = real(images, masks)
        return out * float("nan") if calls["n"] >= 2 else out

    monkeypatch.setattr(jt.task_net, "forward", poisoned)
    with pytest.raises(TrainingError, match="became nan"):
        jt.train()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    # round 0 (fusion loss only, then the task stage: first task-loss call) survived; the NaN came in round 1
    assert saved["step"] == 2 and not (tmp_path / "fusion.pth").exists()
    monkeypatch.undo()
    other = JointConfig(**{**TINY.__dict__, "lam": 5.0})
    with pytest.raises(TrainingError, match="other settings"):  # a resume must not change the recipe
        JointTrainer("seafusion", "seg", ds, tmp_path, other, progress=False).train()
    again = JointTrainer("seafusion", "seg", ds, tmp_path, TINY, progress=False)
    again.train()
    hist = torch.load(tmp_path / "last.pt", weights_only=True)["history"]
    assert len(hist) == 4 and hist[0] == saved["history"][0]


def test_untrainable_fusion_rejected(ds, tmp_path):
    from taskeval.errors import ConfigError

    with pytest.raises(ConfigError, match="no trainable parameters"):
        JointTrainer("max", "seg", ds, tmp_path, TINY, progress=False)


def _plugin_name():
    """A user's plug-in: registered with the decorator, trained jointly like the ports."""
    from fusion_models import register_fusion_model
    from fusion_models.registry import FUSION_MODELS

    name = "test-joint-plugin"
    if name not in FUSION_MODELS:
        class TwoLayer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(),
                                               torch.nn.Conv2d(8, 1, 3, padding=1), torch.nn.Sigmoid())

            def forward(self, ir, vis_y):
                return self.net(torch.cat([ir, vis_y], dim=1))

        @register_fusion_model(name, vis_input="y", output="y", trainable=True, paper="test")
        def _plugin():
            return TwoLayer()
    return name


@pytest.mark.parametrize("fusion", ["tardal", "mlfuse", "ignet", "smfnet", "film", "ifcnn", "didfuse", "cddfuse",
                                    "emma", "plugin"])
def test_task_gradients_reach_every_trainable_model(ds, tmp_path, fusion):
    """Seed models, ports and a plug-in: the segmentation loss of the fused image moves the fusion weights."""
    name = _plugin_name() if fusion == "plugin" else fusion
    jt = JointTrainer(name, "seg", ds, tmp_path, TINY, progress=False)
    ir, vis, target = jt.batch([0, 1], np.random.default_rng(0))
    jt.fusion.zero_grad(set_to_none=True)
    jt.losses(ir, vis, target, with_task=True, detach_fused=False)["task"].backward()
    grads = {n: p.grad for n, p in jt.fusion.named_parameters() if p.requires_grad}
    reached = [n for n, g in grads.items() if g is not None and float(g.abs().sum()) > 0]
    assert len(reached) >= 0.5 * len(grads), (fusion, sorted(set(grads) - set(reached))[:10])
