"""bench/gpu_check.sh, the prepared GPU check, runs green here: without CUDA it runs every step at toy size on
the CPU and skips the GPU-only parts with their reason, so it is ready when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--skip-tests", "--smoke"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["env"]["smoke"] is True and out["env"]["cpu"]
    for step in ("detection_amp_on", "detection_amp_off", "overhead_vs_ultralytics", "segmentation_amp_on",
                 "segmentation_amp_off"):
        assert out[step]["status"] == "ok", (step, out[step])
    assert out["detection_amp_on"]["images_per_s"] > 0 and "overhead_train" in out["overhead_vs_ultralytics"]
    assert out["multi_gpu"]["status"] == "skipped" and out["multi_gpu"]["reason"]
