"""A toy task as a plug-in (``--plugin tests/counting_task.py``, task ``boxcount``): count the objects of
each image.

It shows what a new task is: this one module (its spec, its reader of the labels, train / evaluate /
evaluation) and nothing edited elsewhere. The "network" is one number per training run: the mean object
count of the training images scaled by the image's brightness relative to theirs, so it trains in
milliseconds and the fused images still change the result. Its metric, the mean absolute count error
``mae``, is lower-is-better and not a fraction.

Test hooks (environment variables, so that they also reach subprocesses): ``COUNTING_FAIL=<method>``
makes that method's evaluation raise; ``COUNTING_SLEEP=<s>`` sleeps in every training (to interrupt one).
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from taskeval.config import load_config
from taskeval.errors import DataError
from taskeval.results import OVERALL, Row
from taskeval.rundir import atomic_write_json, atomic_write_text
from taskeval.tasks import TASKS, Metric, Task, TaskSpec, register_task


@dataclass(frozen=True)
class CountProtocol:
    name: str = "quick"
    scale: float = 1.0      # multiplies the predicted counts (a protocol field that changes the numbers)
    seed: int = 0

    @property
    def id(self) -> str:
        from taskeval.fingerprint import digest

        return f"{self.name}-{digest({k: v for k, v in asdict(self).items() if k not in ('name', 'seed')}, 6)}"


def true_counts(ds) -> np.ndarray:
    """The task's reader: objects per image from the dataset's boxes."""
    return np.array([len(ds.boxes(i)) for i in range(len(ds))], np.float64)


def brightness(fused, ids) -> np.ndarray:
    return np.array([float(fused.read(i).mean()) for i in ids])


class CountEvaluation:
    def __init__(self, cell_dir):
        with open(Path(cell_dir) / "per_image.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.ids = [r["id"] for r in rows]
        self._err = np.array([float(r["abs_error"]) for r in rows])

    def scores(self, idx):
        return {"mae": self._err[idx].mean(axis=-1)}

    def same_images(self, other):
        if sorted(self.ids) != sorted(other.ids):
            raise DataError("not the same test images")
        pos = {s: k for k, s in enumerate(other.ids)}
        other._err = other._err[[pos[s] for s in self.ids]]
        other.ids = list(self.ids)


class CountingTask(Task):
    spec = TaskSpec(name="boxcount", short="boxcount", labels="boxes",
                    metrics=(Metric("mae", higher_is_better=False, percent=False,
                                    definition="mean absolute error of the object count per image"),),
                    headline=("mae",), radar=("mae",), paired=("mae",), n_boot=200, distributed=True,
                    caption="Mean absolute error of the predicted object count per test image (lower is better).",
                    summary="count MAE")

    def load_protocol(self, preset, overrides=None):
        return load_config(CountProtocol, None, None, base={"name": preset or "quick", **dict(overrides or {})})

    def protocol_id(self, protocol) -> str:
        return protocol.id

    def with_seed(self, protocol, seed):
        from dataclasses import replace

        return protocol if seed is None else replace(protocol, seed=int(seed))

    def train(self, ctx) -> Path:
        if os.environ.get("COUNTING_SLEEP"):
            time.sleep(float(os.environ["COUNTING_SLEEP"]))
        counts = true_counts(ctx.ds)
        rng = np.random.default_rng(ctx.seed)
        model = {"mean_count": float(counts.mean()) + float(rng.normal(0, 0.05)),
                 "mean_brightness": float(brightness(ctx.fused, ctx.ds.ids).mean()),
                 "rank": ctx.exe.rank, "world": ctx.exe.world}
        ctx.work.mkdir(parents=True, exist_ok=True)
        path = ctx.work / f"model-rank{ctx.exe.rank}.json"
        atomic_write_json(path, model)
        return ctx.work / "model-rank0.json"

    def evaluate(self, ctx, checkpoint) -> list:
        if os.environ.get("COUNTING_FAIL") == ctx.cell.method:
            raise RuntimeError(f"planted failure in {ctx.cell.method}")
        model = json.loads(Path(checkpoint).read_text())
        ids = ctx.ds.ids
        pred = ctx.protocol.scale * model["mean_count"] * brightness(ctx.fused, ids) / model["mean_brightness"]
        err = np.abs(pred - true_counts(ctx.ds))
        lines = ["id,pred,abs_error"] + [f"{i},{float(p)!r},{float(e)!r}" for i, p, e in zip(ids, pred, err)]
        atomic_write_text(ctx.cell_dir / "per_image.csv", "\n".join(lines) + "\n")
        c = ctx.cell
        return [Row(c.method, "boxcount", c.dataset, c.protocol, c.seed, "mae", OVERALL, float(err.mean()), ctx.note)]

    def evaluation(self, cell_dir):
        return CountEvaluation(cell_dir)


if "boxcount" not in TASKS:
    register_task(CountingTask)
