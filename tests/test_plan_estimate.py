"""``taskeval benchmark CONFIG --plan`` on layout-faithful fixtures of every paper dataset: the cells, the
fused images to compute and an estimate whose figures are sensible for the real dataset sizes."""

from __future__ import annotations

import pytest

from taskeval.benchmark import load_benchmark_config
from taskeval.cli.main import main
from taskeval.data.fixtures import write_fixture
from taskeval.estimate import estimate, load_costs
from taskeval.rundir import RunDir
from taskeval.runner import Plan, Runner
from taskeval.tasks import Execution

CLASSIC = "methods=ir,vis,average"
# (config, fixture format, the real dataset's train/test pairs)
PAPER = [("m3fd-det", "m3fd", (3350, 850)), ("msrs-seg", "msrs", (1083, 361)), ("mfnet-seg", "mfnet", (784, 393)),
         ("fmb-seg", "fmb", (1220, 280)), ("llvip-det", "llvip", (12025, 3463))]


@pytest.mark.parametrize("config, fmt, real", PAPER)
def test_plan_on_each_layout_and_real_size_estimates(config, fmt, real, tmp_path, capsys):
    root = write_fixture(fmt, tmp_path / fmt)
    out = tmp_path / "run"
    assert main(["benchmark", config, "--root", str(root), "--plan", "--out", str(out), CLASSIC]) == 0
    text = capsys.readouterr().out
    assert "cells: 9 (0 done; to run:" in text and "total" in text and "GFLOP per image (counted)" in text
    assert "fuse average" in text and not (out / "cells").exists()   # nothing computed
    cfg = load_benchmark_config(config, [f"data.root={root}", CLASSIC])
    run = RunDir.create(tmp_path / "est", "benchmark", resume=True)
    plan = Plan(cfg, run.path, progress=False, check_data=False)
    train, test = plan.cfg.data.train_split, plan.cfg.data.test_split
    est = estimate(Runner(plan, Execution(state_dir=run.third_party_dir())), counts={train: real[0], test: real[1]})
    per_training = [x.gpu_h for x in est.lines if x.what.split()[0] in ("detection", "segmentation")]
    assert len(per_training) == 9
    # one paper-protocol training on a V100 (costs.yaml): YOLOv5s 100 epochs, or DeepLabV3+ R101 30k x 16 crops
    low, high = (0.1, 20.0) if config.endswith("det") else (3.0, 40.0)
    assert all(low < h < high for h in per_training), per_training
    assert est.disk_gb > 0 and est.cpu_h > est.gpu_h


def test_costs_name_their_sources():
    costs = load_costs()
    assert costs["gpu"]["train_tflops"] > 0 and "V100" in costs["gpu"]["name"]
    assert all(entry.get("source") for entry in costs["fusion_per_pair_640x480"].values())
