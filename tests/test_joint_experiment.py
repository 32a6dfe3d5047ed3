"""Joint-training experiments (``taskeval joint --config``): the built-in config, a fair baseline (same
initialisation, as many fusion updates and images as every arm), and the command end to end."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.errors import ConfigError
from taskeval.fusion_train import train_fusion
from taskeval.joint import JointConfig, JointTrainer, fusion_only_config
from taskeval.joint_experiment import (
    baseline_name,
    builtin_experiments,
    evaluation_config,
    experiment_from_mapping,
    fusion_updates,
    is_experiment,
    load_experiment,
)


def test_builtin_joint_synth_is_a_fair_three_seed_experiment():
    exp = load_experiment("joint-synth")
    assert exp.data.card == "synth" and exp.data.synth.variant == "lost-cue"
    assert exp.seg.schedule == "alternating" and exp.det.schedule == "end2end" and len(exp.seeds) >= 3
    n = SynthConfig().n_train
    for cfg in exp.arms().values():  # the effect cannot come from a longer training
        u = fusion_updates(cfg, n)
        assert u["joint"] == u["fusion-only"] == {"updates": 120, "images": 960}
    assert fusion_only_config(exp.seg) == fusion_only_config(exp.det)  # one baseline serves both arms
    assert is_experiment("joint-synth") and "joint-synth" in builtin_experiments()
    # the comparison on the default data is an override away
    other = load_experiment("joint-synth", ["data.synth.variant=default", "seeds=0,1", "references=ir,vis"])
    assert other.data.synth.variant == "default" and other.seeds == (0, 1)
    assert [r.name for r in other.references] == ["ir", "vis"]


def test_arms_that_need_different_baselines_are_refused():
    raw = {"seg": {"schedule": "alternating", "rounds": 3, "fusion_epochs": 2},
           "det": {"schedule": "end2end", "epochs": 8}}
    with pytest.raises(ConfigError, match="epochs: 6 vs 8"):
        experiment_from_mapping(raw)
    experiment_from_mapping({**raw, "baseline": False})  # without a baseline there is nothing to match
    with pytest.raises(ConfigError, match="no joint arm"):
        experiment_from_mapping({"fusion": "seafusion"})
    with pytest.raises(ConfigError, match="no trainable parameters"):
        experiment_from_mapping({"fusion": "max", "seg": {}})
    with pytest.raises(ConfigError, match="name of a trained method"):
        experiment_from_mapping({"seg": {}, "references": [{"name": "seafusion@fusion-only"}]})


def test_evaluation_config_names_methods_and_per_seed_weights(tmp_path):
    exp = load_experiment("joint-synth")
    data = exp.data.__class__(card="synth", root=str(tmp_path), synth=exp.data.synth)
    base = {s: f"b{s}.pth" for s in exp.seeds}
    joint = {t: {s: f"{t}{s}.pth" for s in exp.seeds} for t in exp.arms()}
    bench = evaluation_config(exp, data, base, joint)
    names = [m.name for m in bench.methods]
    assert names == ["ir", "vis", "oracle", baseline_name("seafusion"), "seafusion@joint-seg",
                     "seafusion@joint-det"]
    oracle = bench.methods[2]
    assert oracle.folder == f"{tmp_path}/{{split}}/oracle" and oracle.seeds == (0,)
    assert bench.methods[4].weights_for(2) == "seg2.pth" and bench.tasks == ("segmentation", "detection")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    card = generate(tmp_path_factory.mktemp("jx") / "synth",
                    SynthConfig(n_train=4, n_test=2, height=64, width=96, variant="lost-cue"), progress=False)
    return PairedDataset(load_card(card), "train")


@pytest.mark.parametrize("task,schedule", [("seg", "alternating"), ("det", "end2end")])
def test_joint_arm_and_baseline_start_from_the_same_weights(tiny, tmp_path, task, schedule):
    cfg = JointConfig(schedule=schedule, batch=2, crop=32, seed=5)
    joint = JointTrainer("seafusion", task, tiny, tmp_path / "j", cfg, progress=False).fusion.state_dict()
    # the baseline's training with no update writes its initialisation
    zero = train_fusion("seafusion", tiny, tmp_path / "b", replace(fusion_only_config(cfg), epochs=0), progress=False)
    base = torch.load(zero, weights_only=True)
    assert joint.keys() == base.keys() and all(torch.equal(joint[k], base[k]) for k in joint)


@pytest.mark.slow
def test_joint_experiment_command_end_to_end(tmp_path):
    from taskeval.cli.main import main

    out = tmp_path / "run"
    args = ["joint", "--config", "joint-synth", "--out", str(out), "--threads", "1", "--quiet", "--device", "cpu",
            "data.synth.n_train=4", "data.synth.n_test=3", "data.synth.height=64", "data.synth.width=96",
            "seeds=0", "seg.rounds=2", "seg.fusion_epochs=1", "seg.task_epochs=1", "seg.batch=2",
            "det.epochs=2", "det.warmup_epochs=1", "det.batch=2", "references=ir", "n_boot=20",
            "options.segmentation.epochs=1", "options.segmentation.batch=2", "options.detection.epochs=1"]
    assert main(args) == 0
    records = json.loads((out / "stats" / "joint.json").read_text())["records"]
    assert {(r["task"], r["method"]) for r in records} == {
        (t, f"seafusion@joint-{a}") for t in ("segmentation", "detection") for a in ("seg", "det")}
    assert all(r["reference"] == "seafusion@fusion-only" and len(r["per_seed"]) == 1 for r in records)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fusion_updates"]["seg"]["joint"] == prov["fusion_updates"]["seg"]["fusion-only"]
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()
    assert main(args) == 0  # again: everything resumed, nothing trained or computed twice


@pytest.mark.parametrize("task", ["seg", "det"])
def test_joint_losses_match_separate_fusion_and_task_passes(tiny, tmp_path, task):
    """One forward pass feeds both losses: the same values and fusion gradients as the fusion loss on
    fused_luminance plus the task loss on apply_fusion, each from its own pass."""
    from taskeval.color import luminance
    from taskeval.fusing import apply_fusion
    from taskeval.fusion_train import fused_luminance, fusion_loss

    tr = JointTrainer("seafusion", task, tiny, tmp_path / "j", JointConfig(batch=2, crop=32, seed=1), progress=False)
    # train mode: batch norm normalises with the batch's statistics and the dropout masks (DeepLabV3+'s ASPP)
    # come from the same generator state, so both computations see the same network
    ir, vis, target = tr.batch([0, 1], np.random.default_rng(0))

    def grads(loss):
        tr.fusion.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in tr.fusion.parameters() if p.grad is not None]

    torch.manual_seed(0)
    lt = tr.losses(ir, vis, target, with_task=True, detach_fused=False)
    one = grads(lt["fusion"] + lt["task"])
    torch.manual_seed(0)
    fus = fusion_loss(fused_luminance(tr.fusion, ir, vis), ir, luminance(vis))["total"]
    fused = apply_fusion(tr.fusion, ir, vis)
    tsk = tr.task_net(fused.expand(-1, 3, -1, -1) if fused.shape[1] == 1 else fused, target)
    two = grads(fus + tsk)
    assert torch.allclose(lt["fusion"], fus) and torch.allclose(lt["task"], tsk)
    assert len(one) == len(two) > 0 and all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(one, two))


def test_trainings_in_two_processes_give_the_weights_of_one(tiny, tmp_path):
    """``jobs=2``: the trainings run in two spawned single-thread processes, each in its own folder, and
    give the weights one process gives with one thread, bit for bit; a second call resumes them all."""
    from taskeval.joint_experiment import train_arms, trainings

    exp = experiment_from_mapping({
        "seeds": [0, 1], "seg": {"rounds": 2, "fusion_epochs": 1, "task_epochs": 1, "batch": 2, "crop": 32}})
    assert trainings(exp) == [(0, "seg"), (0, "fusion-only"), (1, "seg"), (1, "fusion-only")]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_arms(exp, tiny, tmp_path / "one", "cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    two = train_arms(exp, tiny, tmp_path / "two", "cpu", progress=False, jobs=2, threads=1)
    assert sorted(two[0]) == [0, 1] and sorted(two[1]["seg"]) == [0, 1]
    pairs = [(one[0][s], two[0][s]) for s in (0, 1)] + [(one[1]["seg"][s], two[1]["seg"][s]) for s in (0, 1)]
    for a, b in pairs:
        assert "/one/" in a and "/two/" in b
        wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    stamps = {p: (tmp_path / "two").joinpath(p).stat().st_mtime_ns for p in (
        "joint-seg-s0/fusion.pth", "joint-seg-s0/fusion.json", "fusion-only-s1/fusion.pth", "fusion-only-s1/last.pt")}
    assert train_arms(exp, tiny, tmp_path / "two", "cpu", progress=False, jobs=2, threads=1) == two
    assert stamps == {p: (tmp_path / "two").joinpath(p).stat().st_mtime_ns for p in stamps}


def test_a_failing_training_keeps_the_others(tiny, tmp_path):
    """One training that raises (here: a checkpoint of other settings in its folder) does not stop the
    others in the pool; they are kept, and the error names the training."""
    from taskeval.errors import TaskevalError
    from taskeval.joint_experiment import train_arms

    exp = experiment_from_mapping({
        "seeds": [0, 1], "seg": {"rounds": 1, "fusion_epochs": 1, "task_epochs": 1, "batch": 2, "crop": 32}})
    other = replace(exp, seg=replace(exp.seg, lam=3.0), baseline=False, seeds=(1,))
    train_arms(other, tiny, tmp_path, "cpu", progress=False)  # joint-seg-s1 now holds a training with lam 3
    with pytest.raises(TaskevalError, match="fusion training seg, seed 1: .*other settings"):
        train_arms(exp, tiny, tmp_path, "cpu", progress=False, jobs=2, threads=1)
    for done in ("joint-seg-s0", "fusion-only-s0", "fusion-only-s1"):
        assert (tmp_path / done / "fusion.pth").is_file()


def test_evaluation_jobs_load_the_run_s_evaluation_config(tmp_path):
    """The local jobs of a joint run are ``taskeval benchmark RUN/joint-evaluation.yaml --shard i/N``: that
    file must load back as the very configuration (per-seed weights, oracle folder, protocols), or the jobs
    would compute other cells."""
    import argparse

    from taskeval.cli.joint_cmd import evaluation_job_args
    from taskeval.rundir import RunDir

    exp = load_experiment("joint-synth")
    data = exp.data.__class__(card="synth", root=str(tmp_path / "data"), synth=exp.data.synth)
    bench = evaluation_config(exp, data, {s: f"/w/b{s}.pth" for s in exp.seeds},
                              {t: {s: f"/w/{t}{s}.pth" for s in exp.seeds} for t in exp.arms()})
    args = argparse.Namespace(config="joint-synth", overrides=["seeds=0"], out=None, root="/x", device=None,
                              threads=2, workers=0, fail_fast=False, quiet=True)
    job = evaluation_job_args(args, bench, RunDir.create(tmp_path / "run", "joint"))
    assert job.config == str(tmp_path / "run" / "joint-evaluation.yaml") and job.overrides == []
    assert job.out == str(tmp_path / "run") and job.root is None and job.threads == 2
    from taskeval.benchmark import load_benchmark_config

    assert load_benchmark_config(job.config) == bench


@pytest.mark.slow
def test_joint_command_in_two_jobs_gives_the_rows_of_one_process(tmp_path):
    """``taskeval joint --jobs 2``: trainings and evaluation cells in two single-thread processes; the same
    results.csv and comparison as one process with one thread."""
    from taskeval.cli.main import main

    common = ["joint", "--config", "joint-synth", "--quiet", "--device", "cpu", "data.synth.n_train=4",
              "data.synth.n_test=2", "data.synth.height=64", "data.synth.width=96", "seeds=[0,1]", "det=null",
              "references=[]", "seg.rounds=1", "seg.fusion_epochs=1", "seg.task_epochs=1", "seg.batch=2",
              "seg.crop=32", "n_boot=20", "options.segmentation.epochs=1", "options.segmentation.batch=2"]
    assert main(common + ["--out", str(tmp_path / "one"), "--jobs", "1", "--threads", "1"]) == 0
    assert main(common + ["--out", str(tmp_path / "two"), "--jobs", "2", "--threads", "2"]) == 0
    assert (tmp_path / "one" / "results.csv").read_text() == (tmp_path / "two" / "results.csv").read_text()
    one, two = (json.loads((tmp_path / d / "stats" / "joint.json").read_text()) for d in ("one", "two"))
    assert one == two and len(one["records"][0]["per_seed"]) == 2
    prov = json.loads((tmp_path / "two" / "provenance.json").read_text())
    assert prov["jobs"] == 2 and prov["job_threads"] == 1
