"""One GPU check in minutes: the ``gpu`` tests, a paper-protocol detection cell and segmentation cell on a
scaled-up synthetic set (AMP on and off), the harness's overhead against ultralytics called directly on
the same images, a multi-GPU launch where there are several GPUs; images/s, seconds per epoch per 100
images and peak GPU memory into one JSON (``$OUT/gpu_check.json`` when ``OUT`` is set).

Without CUDA it runs the same steps at toy size on the CPU (marked ``"smoke"``: they test the script, they
measure nothing) and skips the GPU-only parts with the reason.

    bash bench/gpu_check.sh                 # on a GPU machine: at most ~10 minutes
    python bench/gpu_check.py --smoke       # force the toy sizes (what the test suite runs)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def step(results: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn()}
    except Skip as exc:
        results[name] = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one failed part must not hide the others
        results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"[gpu_check] {name}: {results[name]['status']} ({results[name]['seconds']} s)"
          + (f" - {results[name].get('reason') or results[name].get('error')}" if results[name]["status"] != "ok"
             else ""), flush=True)


class Skip(Exception):
    pass


def gpu_tests() -> dict:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    last = (res.stdout.strip().splitlines() or [""])[-1]
    if res.returncode not in (0, 5):
        raise RuntimeError(f"gpu tests failed: {last}")
    return {"summary": last, "cuda": torch.cuda.is_available()}


def dataset(root: Path, smoke: bool) -> Path:
    from taskeval.data.synth import SynthConfig, generate

    cfg = (SynthConfig(n_train=8, n_test=4, height=64, width=80) if smoke
           else SynthConfig(n_train=256, n_test=64, height=512, width=640))
    return generate(root / "synth", cfg, progress=False)


def _peak_mb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_cell(task: str, card: Path, work: Path, overrides: dict, device: str) -> dict:
    """One cell of ``task`` (method ``vis``) through the runner; wall time, peak memory, its numbers."""
    from taskeval.benchmark import config_from_mapping
    from taskeval.rundir import RunDir
    from taskeval.runner import Plan, Runner, make_execution

    cfg = config_from_mapping({"name": f"gpu-{task}", "data": {"card": str(card)}, "methods": ["vis"], "tasks": [task],
                               "seeds": [0], "protocols": {task: "paper"}, "options": {task: overrides},
                               "device": device}, "gpu_check")
    run = RunDir.create(work, "gpu_check", resume=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    exe = make_execution(device, None, 2, False, "auto", run.third_party_dir())
    if task == "detection":
        from detectors.ultralytics_env import prepare

        prepare(exe.state_dir)
    runner = Runner(Plan(cfg, run.path, progress=False), exe)
    t0 = time.perf_counter()
    report = runner.execute(keep_going=False)
    wall = time.perf_counter() - t0
    (cell,) = report.computed
    meta = runner.store.meta(cell)
    headline = {r.metric: r.value for r in runner.store.rows() if r.cls == "" and r.task == task}
    return {"wall_s": round(wall, 2), "train_s": meta.get("train_seconds"), "peak_gpu_mb": _peak_mb(),
            "cell_dir": meta["dir"] if "dir" in meta else str(runner.store.cells_dir / cell.id),
            "headline": headline, "protocol": cell.protocol}


def detection(card: Path, work: Path, smoke: bool, amp: bool) -> dict:
    n_train = 8 if smoke else 256
    epochs = 1 if smoke else 3
    over = {"epochs": epochs, "amp": amp, **({"model": "yolov8n.yaml", "imgsz": 64, "batch": 4} if smoke else {})}
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    out = run_cell("detection", card, work, over, device)
    images = epochs * n_train
    out.update(images_per_s=round(images / out["train_s"], 2), s_per_epoch_per_100=round(
        out["train_s"] / epochs * 100 / n_train, 2), amp=amp)
    return out


def raw_ultralytics(cell: dict, smoke: bool) -> dict:
    """ultralytics alone on the data folder the cell wrote, with the same arguments: the harness's overhead."""
    from detectors.protocol import load_protocol
    from detectors.ultralytics_env import prepare, quiet

    work = Path(cell["cell_dir"]) / "work"
    data_yaml = work / "data" / "data.yaml"
    epochs = 1 if smoke else 3
    p = replace(load_protocol("paper"), epochs=epochs,
                **({"model": "yolov8n.yaml", "imgsz": 64, "batch": 4} if smoke else {}))
    prepare(work.parent.parent.parent / "third_party")
    from ultralytics import YOLO

    if cell.get("status") != "ok":
        raise Skip("the detection cell did not run")
    device = "0" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    with quiet():
        YOLO(p.model, task="detect").train(**p.train_args(), data=str(data_yaml), device=device, seed=0,
                                            deterministic=True, project=str(work.parent / "raw"), name="train",
                                            exist_ok=True, workers=2, amp=p.amp, plots=False, val=False,
                                            verbose=False, patience=0, pretrained=False)
    raw = time.perf_counter() - t0
    return {"raw_train_s": round(raw, 2), "harness_train_s": cell["train_s"],
            "overhead_train": round(cell["train_s"] / raw - 1, 3), "harness_cell_s": cell["wall_s"],
            "overhead_cell": round(cell["wall_s"] / raw - 1, 3)}


def segmentation(card: Path, work: Path, smoke: bool, amp: bool) -> dict:
    n_train = 8 if smoke else 256
    epochs = 1 if smoke else 2
    over = {"epochs": epochs, "amp": amp, "batch": 4 if smoke else 16,
            **({"encoder": "tu-mobilenetv3_small_100", "decoder_channels": 32, "crop_size": [64, 80]} if smoke
               else {"crop_size": [512, 512]})}
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    out = run_cell("segmentation", card, work, over, device)
    images = epochs * (n_train // over["batch"]) * over["batch"]
    out.update(images_per_s=round(images / out["train_s"], 2), s_per_epoch_per_100=round(
        out["train_s"] / epochs * 100 / n_train, 2), amp=amp)
    return out


def multi_gpu(card: Path, work: Path, smoke: bool) -> dict:
    if smoke:
        raise Skip("no CUDA" if not torch.cuda.is_available() else "smoke run")
    n = torch.cuda.device_count()
    if n < 2:
        raise Skip(f"{n} GPU(s): a multi-GPU launch needs at least 2")
    env = {**os.environ, "OMP_NUM_THREADS": "4"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "taskeval.cli.main", "segment", "--methods", "vis", "--no-refs", "--data", str(card),
                          "--protocol", "paper", "--out", str(work / "ddp-seg"), "--device", "cuda", "--quiet",
                          "epochs=1", "batch=16"], cwd=REPO, capture_output=True, text=True, env=env, timeout=400)
    seg = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-500:])
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "taskeval.cli.main", "detect", "--methods", "vis", "--no-refs", "--data",
                          str(card), "--protocol", "paper", "--out", str(work / "ddp-det"), "--device", "0,1",
                          "--quiet", "epochs=1"], cwd=REPO, capture_output=True, text=True, env=env, timeout=400)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-500:])
    return {"torchrun_segmentation_s": round(seg, 2), "ultralytics_ddp_detection_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="toy sizes even on a GPU (tests the script)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the test suite's gpu tests")
    args = ap.parse_args(argv)
    smoke = args.smoke or not torch.cuda.is_available()
    results: dict = {"env": {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                             "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                             "cpu": cpu_model(), "cpus": os.cpu_count(), "smoke": smoke}}
    print(f"[gpu_check] {'smoke run at toy sizes (no CUDA or --smoke): measures nothing' if smoke else 'GPU run'}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        work = Path(tmp)
        if not args.skip_tests:
            step(results, "gpu_tests", gpu_tests)
        card = dataset(work, smoke)
        for amp in (True, False):
            step(results, f"detection_amp_{'on' if amp else 'off'}",
                 lambda amp=amp: detection(card, work / f"det-{amp}", smoke, amp))
        step(results, "overhead_vs_ultralytics", lambda: raw_ultralytics(results["detection_amp_on"], smoke))
        for amp in (True, False):
            step(results, f"segmentation_amp_{'on' if amp else 'off'}",
                 lambda amp=amp: segmentation(card, work / f"seg-{amp}", smoke, amp))
        step(results, "multi_gpu", lambda: multi_gpu(card, work, smoke))
    for r in results.values():
        r.pop("cell_dir", None)
    text = json.dumps(results, indent=1)
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(text + "\n")
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
