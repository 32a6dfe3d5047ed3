"""The bill before the run (``taskeval benchmark CONFIG --plan``): cells to run, fused images to compute,
GPU-hours, CPU-hours and disk, each from a per-image cost whose source is printed beside it.

Costs (``taskeval/benchmarks/costs.yaml``, or ``$TASKEVAL_COSTS`` key by key):

* task-network training and prediction: the network's forward FLOPs per image, counted here with
  :class:`torch.utils.flop_counter.FlopCounterMode` on the protocol's own model and image size, x3 for a
  training step, divided by an effective GPU throughput derived from a published measurement (YOLOv5's
  training time on a V100), or scaled from the CPU time measured for the quick protocols on 2 cores;
* fusion: GFLOP or CPU seconds per 640x480 pair as measured for each port, scaled by pixel count;
* fusion-quality metrics: CPU seconds per image as measured;
* disk: fused images at about twice the dataset's own visible-image file size (PNG + HDF5 cache), task
  checkpoints from the network's parameter count (ultralytics keeps fp16 weights without optimiser;
  segmentation fp32), predicted label maps at about one byte per pixel / 5.

An estimate, not a measurement: the plan says so, and ``bench/gpu_check.sh`` measures your GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from taskeval.errors import TaskevalError

COSTS = Path(__file__).parent / "benchmarks" / "costs.yaml"


def load_costs() -> dict:
    costs = yaml.safe_load(COSTS.read_text())
    extra = os.environ.get("TASKEVAL_COSTS")
    if extra:
        from taskeval.config import deep_merge

        costs = deep_merge(costs, yaml.safe_load(Path(extra).read_text()) or {})
    return costs


@dataclass
class Line:
    what: str
    count: str
    gpu_h: float = 0.0
    cpu_h: float = 0.0
    disk_gb: float = 0.0
    source: str = ""


@dataclass
class Estimate:
    cells_total: int
    cells_done: int
    cells_todo: dict = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    gpu: str = ""

    @property
    def gpu_h(self) -> float:
        return sum(x.gpu_h for x in self.lines)

    @property
    def cpu_h(self) -> float:
        return sum(x.cpu_h for x in self.lines)

    @property
    def disk_gb(self) -> float:
        return sum(x.disk_gb for x in self.lines)


def _mean_file_size(ds, role: str = "vis", sample: int = 50) -> float:
    files = [getattr(r, role) for r in ds.records[:: max(1, len(ds) // sample)]]
    return sum(Path(f).stat().st_size for f in files) / max(1, len(files))


def estimate(runner, counts: dict[str, int] | None = None) -> Estimate:
    """What the runner's plan still has to compute, and its cost.

    Args:
        runner: a :class:`taskeval.runner.Runner` (nothing is computed; the fusion cache is only read).
        counts: ``{split: number of pairs}`` to estimate for other dataset sizes than the one on disk.
    """
    from taskeval.fusedset import cached_ids

    plan, costs = runner.plan, load_costs()
    gpu = costs["gpu"]
    every = plan.cells()
    todo = runner.pending(every)
    est = Estimate(len(every), len(every) - len(todo), gpu=gpu["name"])
    for c in todo:
        est.cells_todo[c.task] = est.cells_todo.get(c.task, 0) + 1
    splits = {ds.split: ds for ds in plan.splits}
    n = {s: (counts or {}).get(s, len(ds)) for s, ds in splits.items()}
    size_hw = {s: ds.size(0) for s, ds in splits.items()}
    test, train = plan.test_ds.split, plan.cfg.data.train_split

    # ---- fusion
    needed: dict[tuple, int] = {}
    for c in todo:
        entry = plan.entries[c.method]
        needed[(entry.name, test, c.seed if entry.seed_weights else None)] = 1
        if plan.trains_per_method(c.task):
            needed[(entry.name, train, c.seed if entry.seed_weights else None)] = 1
        elif plan.tasks[c.task].spec.trains and c.task not in plan.checkpoints:
            needed[(plan.cfg.fixed, train, c.seed if plan.entries[plan.cfg.fixed].seed_weights else None)] = 1
    fusion = costs.get("fusion_per_pair_640x480", {})
    for (name, split, seed) in needed:
        entry = plan.entries[name]
        if entry.folder is not None or name in ("ir", "vis"):
            continue
        weights = entry.weights_for(seed)
        try:
            have = set() if weights == "train" else cached_ids(splits[split], name, runner.cache, weights,
                                                                entry.text_dir, plan.cfg.io_of(entry))
        except TaskevalError:  # e.g. official weights not here yet: the plan lists them
            have = set()
        missing = max(0, n[split] - len(have)) if not counts else n[split]
        if not missing:
            continue
        h, w = size_hw[split]
        scale = h * w / (640 * 480)
        known = fusion.get(name.split("@")[0], {})
        g = known.get("gflop")
        line = Line(f"fuse {name} {split}", f"{missing} pairs",
                    gpu_h=(missing * g * scale / (gpu["infer_tflops"] * 1e3) / 3600) if g else 0.0,
                    cpu_h=missing * known.get("cpu_seconds", 0.0) * scale / 3600,
                    disk_gb=missing * 2 * _mean_file_size(splits[split]) / 1e9,
                    source=known.get("source", "classic fusion: negligible" if not get_trainable(name)
                                     else "no cost figure"))
        if get_trainable(name) and not known:
            est.unknown.append(f"fusion cost of {name}")
        est.lines.append(line)

    # ---- task networks
    trained: set = set()
    for c in todo:
        task = plan.tasks[c.task]
        key = (c.task, c.seed) if not plan.trains_per_method(c.task) else (c.task, c.method, c.seed)
        train_again = task.spec.trains and c.task not in plan.checkpoints and key not in trained
        trained.add(key)
        cost = task.cost(plan.cell_protocol(c), plan.card, size_hw[test], plan.cfg.task_options(c.task), costs)
        what = f"{c.task} {c.method}" + (f" seed {c.seed}" if c.seed is not None else "")
        if cost is None:
            est.unknown.append(f"cost of task {c.task}")
            est.lines.append(Line(what, "?", source="no cost model for this task"))
            continue
        images = cost.train_images(n.get(train, 0)) if train_again else 0
        gpu_s = images * 3 * cost.train_gflop / (gpu["train_tflops"] * 1e3) \
            + n[test] * cost.infer_gflop / (gpu["infer_tflops"] * 1e3)
        cpu_s = (images * cost.train_gflop + n[test] * cost.infer_gflop / 3) * cost.cpu_seconds_per_gflop \
            + n[test] * cost.cpu_seconds_per_test_image
        disk = (cost.checkpoint_bytes if train_again else 0) + n[test] * cost.bytes_per_test_image
        count = f"{images} training images + {n[test]} test images" if images else f"{n[test]} test images"
        est.lines.append(Line(what, count, gpu_h=gpu_s / 3600, cpu_h=cpu_s / 3600, disk_gb=disk / 1e9,
                              source=cost.source))
    return est


def get_trainable(name: str) -> bool:
    from fusion_models import get_fusion_spec

    return get_fusion_spec(name).trainable


def print_estimate(est: Estimate, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from taskeval.console import print_table

    console = console or Console()
    todo = ", ".join(f"{k} {v}" for k, v in est.cells_todo.items()) or "none"
    console.print(f"cells: {est.cells_total} ({est.cells_done} done; to run: {todo})", highlight=False)
    t = Table(title=f"estimate (GPU: {est.gpu}; CPU: 2 cores as measured)")
    for col in ("what", "count", "GPU h", "CPU h", "disk GB", "from"):
        t.add_column(col, justify="right" if col in ("GPU h", "CPU h", "disk GB") else "left")
    for x in est.lines:
        t.add_row(escape(x.what), x.count, f"{x.gpu_h:.2f}", f"{x.cpu_h:.2f}", f"{x.disk_gb:.2f}", escape(x.source))
    t.add_row("total", "", f"{est.gpu_h:.1f}", f"{est.cpu_h:.1f}", f"{est.disk_gb:.1f}", "", style="bold")
    print_table(t, console)
    if est.unknown:
        console.print("not counted (no cost figure): " + ", ".join(est.unknown), highlight=False)
    console.print("An estimate from per-image costs (taskeval/benchmarks/costs.yaml: sources beside each figure); "
                  "newer GPUs than a V100 are 2-6x faster. bench/gpu_check.sh measures yours.", highlight=False)
